"""The GET endpoints every app serves: actors, WebFinger, NodeInfo, host-meta, collections."""

from __future__ import annotations

from quart import Blueprint

activitypub_bp = Blueprint("activitypub", __name__)
