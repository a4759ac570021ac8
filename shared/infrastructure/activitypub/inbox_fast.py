"""Inbox POSTs from senders we already know, answered in front of Quart.

Most POSTs come from servers that have posted before: their key is in memory, the block list
is recent, the signature verifies. For those, this ASGI layer runs the same checks as the
inbox view (inbox.py) with the same functions, stores the activity and answers 202 without
Quart's request context and hooks (measured: about a third of a POST's time in the view).
Anything else - an unknown or expired key, a failing signature (which may mean a rotated
key), a blocked sender, a rate limit (the view is handed the decision, so the POST is
counted once), a malformed body, an actor's Delete, an oversized or streamed body,
federation switched off, an error - goes on to the inbox view with the body replayed, which
answers it exactly as before. The fast path never refuses anything itself, so it cannot
answer differently from the view; it only accepts what the view would accept. The rate
limits are the view's: a verified POST counts against its keyId's host (host_rate_rule),
after its signature verified; what is refused as unverified is answered, and counted against
the client's address, by the view.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import timedelta
from typing import cast
from urllib.parse import urlsplit

from quart import Quart
from redis.exceptions import RedisError

from shared.config import APP_NAMES
from shared.infrastructure.activitypub.inbox import (
    RATE_DECISION_SCOPE_KEY,
    RefusedPostError,
    get_cached_signer,
    host_rate_rule,
    parse_activity,
    served_actors,
    store_activity,
)
from shared.infrastructure.activitypub.signatures import (
    Headers,
    IncomingRequest,
    SignatureError,
    signature_key_id,
    verify_request,
)
from shared.infrastructure.asgi import (
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    encode_security_headers,
    header_of,
    install_in_front,
    send_answer,
)
from shared.infrastructure.context import get_state
from shared.infrastructure.rate_limit import RateLimiter
from shared.services.social.blocks import get_held_block_list, host_of

logger = logging.getLogger("rose_ash.activitypub.inbox")
ACTOR_INBOX = re.compile(r"^/ap/actors/([^/]+)/inbox$")
SHARED_INBOX = "/ap/inbox"


class InboxFastPath:
    """ASGI middleware: ``app.asgi_app = InboxFastPath(app, app.asgi_app)``."""

    def __init__(self, app: Quart, inner: ASGIApp) -> None:
        self.app = app
        self.inner = inner
        state = get_state(app)
        self.name = state.name
        self.settings = state.settings
        self.scheme = urlsplit(self.settings.url_of(self.name)).scheme
        self.window = timedelta(seconds=self.settings.activitypub.signature_window_seconds)
        self.rule = host_rate_rule(self.settings)
        self.federating = self.settings.features.federation_enabled
        self.static_headers = encode_security_headers(self.settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        inbox = self.inbox_of(scope)
        if inbox is None:
            await self.inner(scope, receive, send)
            return
        body, complete = await self.read_body(scope, receive)
        accepted = False
        if complete:
            started = time.perf_counter()
            try:
                accepted = await self.accept(scope, body, inbox[0])
            except Exception:  # the view answers instead, with its own error handling
                logger.exception("inbox fast path failed; the view answers")
            if accepted:
                await self.send_accepted(scope, send, started)
                return
        await self.inner(scope, replay(body, complete, receive), send)

    def inbox_of(self, scope: Scope) -> tuple[str | None] | None:
        """(the actor, or None for the shared inbox) when this is a POST to an inbox here (with
        federation switched off, none is: the view answers them)."""
        if scope["type"] != "http" or scope["method"] != "POST" or not self.federating:
            return None
        path: str = scope["path"]
        if path == SHARED_INBOX:
            return (None,)
        match = ACTOR_INBOX.match(path)
        if match is not None and match.group(1) in served_actors(self.name):
            return (match.group(1),)
        return None

    async def read_body(self, scope: Scope, receive: Receive) -> tuple[bytes, bool]:
        """The whole body when it is within the inbox's limit (else what was read, with False:
        the view reads the rest and answers 413)."""
        limit = self.settings.activitypub.inbox_max_bytes
        declared = header_of(scope, b"content-length")
        if declared and (not declared.isdigit() or int(declared) > limit):
            return b"", False
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks), False
            chunk = cast(bytes, message.get("body", b""))
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                return b"".join(chunks), False
            if not message.get("more_body", False):
                return b"".join(chunks), True

    async def accept(self, scope: Scope, body: bytes, actor: str | None) -> bool:
        """Store the activity and return True when every check of the view passes here."""
        settings = self.settings
        query = bytes(scope.get("query_string", b"")).decode("latin-1")
        raw_path = scope.get("raw_path")
        path = raw_path.decode("latin-1") if isinstance(raw_path, bytes) else scope["path"]
        url = f"{self.scheme}://{header_of(scope, b'host')}{path}" + (f"?{query}" if query else "")
        headers = Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]])
        incoming = IncomingRequest(method="POST", url=url, headers=headers, body=body)
        try:
            key_id = signature_key_id(incoming)
            activity = parse_activity(body)
        except (SignatureError, RefusedPostError):
            return False
        signer = get_cached_signer(settings, key_id)
        blocks = get_held_block_list(settings.database_url)
        if signer is None or blocks is None or activity.is_actor_delete or not host_of(key_id):
            return False
        if blocks.blocks(key_id, activity.actor) or signer.actor_uri != activity.actor:
            return False
        try:
            verify_request(incoming, signer.public_key_pem, window=self.window)
        except SignatureError:
            return False  # perhaps a rotated key: the view fetches it again
        state = get_state(self.app)
        if state.state_redis is None or state.database is None:
            return False
        try:
            decision = await RateLimiter(state.state_redis).hit(self.rule, host_of(key_id))
        except RedisError:
            return False
        if not decision.allowed:
            # The view answers the 429 with this decision instead of counting the POST again.
            scope[RATE_DECISION_SCOPE_KEY] = decision
            return False
        async with state.database.autocommit() as connection:
            await store_activity(connection, activity, actor, body)
        return True

    async def send_accepted(self, scope: Scope, send: Send, started: float) -> None:
        headers = [(b"content-length", b"0"), *self.static_headers]
        await send_answer(
            scope, send, app_name=self.name, status=202, headers=headers, body=b"", started=started
        )


def replay(body: bytes, complete: bool, receive: Receive) -> Receive:
    """``receive`` with what was already read of the body given back first."""
    given = False

    async def replaying() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": not complete}
        return await receive()

    return replaying


def install_inbox_fast_path(app: Quart) -> None:
    if get_state(app).name not in APP_NAMES:
        return  # not one of the platform's apps: it has no actor, so no inbox
    install_in_front(app, InboxFastPath)
