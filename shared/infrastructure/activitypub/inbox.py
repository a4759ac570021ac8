"""POST inboxes: verify, store, answer 202."""

from __future__ import annotations

from quart import Blueprint

inbox_bp = Blueprint("ap_inbox", __name__)
