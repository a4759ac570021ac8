"""The account app: create_app is what Hypercorn serves (`hypercorn "account.app:create_app()"`)."""

from __future__ import annotations

from quart import Quart

from account.bp.fragments import install_account_fragments
from account.bp.home import home_bp
from shared.config import Settings
from shared.infrastructure.factory import create_base_app


def create_app(settings: Settings | None = None) -> Quart:
    app = create_base_app("account", settings=settings)
    app.register_blueprint(home_bp)
    install_account_fragments(app)
    return app
