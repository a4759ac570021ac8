"""The federation app.

create_app is what Hypercorn serves: `hypercorn "federation.app:create_app()"`.
"""

from __future__ import annotations

from quart import Quart

from federation.bp.dev_mail import dev_mail_bp
from federation.bp.home import home_bp
from federation.bp.login import login_bp
from federation.bp.oauth import oauth_bp
from federation.bp.profile import profile_bp
from federation.services.header import get_header_account, get_signed_in_member_id
from federation.services.startup import prepare_authorization_server
from shared.config import Settings
from shared.infrastructure.context import get_state
from shared.infrastructure.factory import create_base_app
from shared.infrastructure.fragments import set_member_provider
from shared.infrastructure.oauth import install_header_provider


def create_app(settings: Settings | None = None) -> Quart:
    app = create_base_app("federation", settings=settings)
    app.register_blueprint(home_bp)
    app.register_blueprint(login_bp)
    app.register_blueprint(profile_bp)
    if get_state(app).settings.env == "development":
        app.register_blueprint(dev_mail_bp)  # the outbox's mail; never outside development
    app.register_blueprint(oauth_bp)
    app.before_serving(prepare_authorization_server(app))
    install_header_provider(app, get_header_account)
    set_member_provider(app, get_signed_in_member_id)  # the header's auth-menu
    return app
