"""The blog app: create_app is what Hypercorn serves (`hypercorn "blog.app:create_app()"`)."""

from __future__ import annotations

from quart import Quart

from blog.bp.fragments import install_blog_fragments
from blog.bp.home import home_bp
from blog.bp.navigation import navigation_bp
from shared.config import Settings
from shared.infrastructure.factory import create_base_app


def create_app(settings: Settings | None = None) -> Quart:
    app = create_base_app("blog", settings=settings)
    app.register_blueprint(home_bp)
    app.register_blueprint(navigation_bp)
    install_blog_fragments(app)
    return app
