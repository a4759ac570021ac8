"""Wire ActivityPub into an app: every app serves its actor, discovery, collections and inboxes."""

from __future__ import annotations

from quart import Quart

from shared.infrastructure.activitypub.inbox import inbox_bp
from shared.infrastructure.activitypub.routes import activitypub_bp


def install_activitypub(app: Quart) -> None:
    app.register_blueprint(activitypub_bp)
    app.register_blueprint(inbox_bp)
