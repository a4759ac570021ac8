"""POST inboxes: verify, store, answer 202; the worker applies the effect later
(shared.services.social.inbox_processing).

    POST {base}/ap/actors/<actor>/inbox   the actor's inbox (its app's host; "instance" on
                                          federation's host)
    POST {base}/ap/inbox                  the host's shared inbox

In the order a POST meets them:

    404  federation is switched off (``features.federation_enabled``): nothing is read
    413  the body is over ``inbox_max_bytes``
    401  no signature (no keyId to go on), whatever the body is
    400  not JSON (deeply nested JSON included), or not an activity (string id, type and
         actor; id and actor on one host)
    202  blocked: nothing stored (below)
    429  the key must be fetched, and the client's address (IPv6 by /64) had more than
         ``inbox_unverified_rate_limit_per_minute`` POSTs refused as unverified
    503  the key must be fetched, and ``key_fetch_concurrency`` fetches are under way
         (Retry-After)
    401  the signature does not verify (forged, stale Date, digest mismatch, unknown or
         unfetchable key), or the signer is not the activity's actor
    429  the verified signing host (the keyId's) sent more than ``inbox_rate_limit_per_minute``
    202  stored, or already stored (a redelivery: stored once, applied once)

Every 400 and 401 counts against the client's address, never against the host its keyId
names: junk naming another server's keys cannot spend that server's rate, and an address
that keeps failing stops making us fetch keys for a while.

Federation switched off answers 404, as Pleroma and Akkoma answer their federation
endpoints with ``federating: false``: senders drop the delivery instead of retrying it for
days against a server that chose not to federate.

Blocked domains and actors get **202 and nothing is stored**, as Mastodon answers them: a
403 would tell the blocked server it is blocked and make it retry; 202 makes it stop.
That check comes before any key lookup, so a blocked server never makes us fetch anything.

Hot path: the signer's key is kept in process memory for ``KEY_CACHE_SECONDS`` by key id (no
database round trip per POST); when a signature fails against a cached key, the key is
fetched again once (key rotation), at most once per ``KEY_REFRESH_SECONDS`` per key so that
forged POSTs cannot make us hammer a server. What remains per POST is the RSA verification,
one Redis pipeline (the host's rate) and one ``INSERT ... ON CONFLICT DO NOTHING``.

Key fetches: the request's database connection is given back before a key is fetched (the
transaction so far only read) and a new one taken to store the actor, so POSTs whose keys
sit on slow servers hold no connection while they wait; at most ``key_fetch_concurrency``
fetches run at once per process (beyond that 503 with Retry-After: a temporary condition
that every sender retries, where a 401 would say the signature is bad), each within
``key_fetch_timeout_seconds``, and a keyId that could not be fetched is answered 401 without
fetching for ``key_failure_cache_seconds``.

Deleted actors: Mastodon sends ``Delete`` of an actor after the actor's key is gone (its
document answers 410). Such a Delete is verified against the key we already hold (memory or
``ap_remote_actors``), never fetched; if we never knew the key, it is answered 202 and
dropped (there is nothing of that actor to delete).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from quart import Blueprint, Quart, Response, current_app, request
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from shared.config import Settings
from shared.infrastructure.activitypub import urls
from shared.infrastructure.activitypub.remote import (
    RemoteActorDTO,
    RemoteClient,
    RemoteFetchError,
    fetch_actor_for_key,
    get_cached_actor_for_key,
    get_instance_signer,
    store_actor,
)
from shared.infrastructure.activitypub.signatures import (
    Headers,
    IncomingRequest,
    SignatureError,
    signature_key_id,
    verify_request,
)
from shared.infrastructure.context import get_session, get_state, get_state_redis
from shared.infrastructure.rate_limit import (
    RateDecision,
    RateLimit,
    RateLimiter,
    client_subject,
)
from shared.infrastructure.security import csrf_exempt
from shared.models.social.actors import ApRemoteActor
from shared.services.social.blocks import get_block_list, host_of
from shared.services.social.inbox_processing import INBOX_CHANNEL

logger = logging.getLogger("rose_ash.activitypub.inbox")
inbox_bp = Blueprint("ap_inbox", __name__)

KEY_CACHE_SECONDS = 300.0
KEY_REFRESH_SECONDS = 60.0
REMOTE_CLIENT_KEY = "rose_ash_ap_inbox_client"
MAX_URI_LENGTH = 2000  # ap_inbox_items.activity_uri / actor_uri
MAX_TYPE_LENGTH = 40  # ap_inbox_items.activity_type
NOTIFY_INTERVAL_SECONDS = 0.2
# Where the fast path (inbox_fast.py) leaves the rate decision it already counted for a POST it
# hands to this view, so that a refused POST is counted once.
RATE_DECISION_SCOPE_KEY = "rose_ash.inbox_rate_decision"
# Refusals that count against the client's address (see the module docstring).
UNVERIFIED_STATUSES = frozenset({400, 401, 413})
MAX_FAILED_KEYS = 10_000  # keyIds remembered as unfetchable (beyond it, expired ones go)
FEDERATION_OFF = "federation is switched off on this server"


class RefusedPostError(Exception):
    """The POST is answered ``status`` with the short ``reason`` as its body."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers


class DroppedPostError(Exception):
    """The POST is answered 202 but nothing is stored (blocked; an unknown actor's Delete)."""


@dataclass(frozen=True)
class Activity:
    """What the inbox needs of a posted activity (the document is stored as received)."""

    id: str
    type: str
    actor: str
    object_id: str | None
    document: dict[str, Any]

    @property
    def is_actor_delete(self) -> bool:
        return self.type == "Delete" and self.object_id == self.actor


@dataclass(frozen=True)
class SignerKey:
    key_id: str
    actor_uri: str
    public_key_pem: str


# Signer keys by (database URL, key id): (monotonic expiry, key).
_keys: dict[tuple[str, str], tuple[float, SignerKey]] = {}
# When each key was last fetched again because a signature failed (monotonic).
_refreshed: dict[tuple[str, str], float] = {}
# KeyIds whose fetch failed, by (database URL, key id): until when (monotonic) they are
# refused without fetching.
_failed_keys: dict[tuple[str, str], float] = {}
# Key fetches under way in this process (see key_fetch_slot).
_fetching = 0
# When this process last woke the workers (monotonic; see store_activity).
_last_notify = -NOTIFY_INTERVAL_SECONDS


def forget_remote_keys() -> None:
    """Drop this process's cached signer keys (tests; an operator's key reset)."""
    _keys.clear()
    _refreshed.clear()
    _failed_keys.clear()


# -- routes -----------------------------------------------------------------------------------


@inbox_bp.post("/ap/actors/<actor>/inbox")
@csrf_exempt
async def actor_inbox(actor: str) -> Response:
    """An actor's own inbox; 404 for an actor this host does not serve."""
    if actor not in served_actors(get_state().name):
        return refuse(404, "no such actor here")
    return await receive_activity(actor)


@inbox_bp.post("/ap/inbox")
@csrf_exempt
async def shared_inbox() -> Response:
    return await receive_activity(None)


@inbox_bp.after_app_serving
async def close_remote_client() -> None:
    client = current_app.extensions.pop(REMOTE_CLIENT_KEY, None)
    if client is not None:
        await client.aclose()


def served_actors(app_name: str) -> tuple[str, ...]:
    """The actors whose inbox this app serves: its own, and the instance actor on its host."""
    if app_name == urls.INSTANCE_HOST_APP:
        return (app_name, urls.INSTANCE_ACTOR)
    return (app_name,)


def refuse(status: int, reason: str, headers: dict[str, str] | None = None) -> Response:
    return Response(reason, status=status, mimetype="text/plain", headers=headers)


def accepted() -> Response:
    return Response(b"", status=202)


def get_remote_client(app: Quart | None = None) -> RemoteClient:
    """The app's client for fetching signer keys (made on first use, closed after serving)."""
    app = app or current_app
    client: RemoteClient | None = app.extensions.get(REMOTE_CLIENT_KEY)
    if client is None:
        client = RemoteClient(get_state(app).settings)
        app.extensions[REMOTE_CLIENT_KEY] = client
    return client


async def receive_activity(actor: str | None) -> Response:
    """Verify and store one POSTed activity (see the module docstring for the answers)."""
    settings = get_state().settings
    if not settings.features.federation_enabled:
        return refuse(404, FEDERATION_OFF)
    try:
        body = await read_body(settings.activitypub.inbox_max_bytes)
        incoming = IncomingRequest(
            method=request.method,
            url=received_url(settings, get_state().name),
            headers=Headers(request.headers.items()),
            body=body,
        )
        key_id = find_key_id(incoming)  # unsigned: 401 whatever the body holds
        activity = parse_activity(body)
        session = get_session()
        blocks = await get_block_list(session, settings.database_url)
        if blocks.blocks(key_id, activity.actor):
            raise DroppedPostError("blocked")
        await check_signature(session, settings, incoming, activity, key_id)
        await check_rate(settings, key_id)
    except RefusedPostError as refusal:
        if refusal.status in UNVERIFIED_STATUSES:
            await count_unverified(settings)
        return refuse(refusal.status, refusal.reason, refusal.headers)
    except DroppedPostError as drop:
        logger.info("inbox POST dropped: %s", drop)
        return accepted()
    await store_activity(session, activity, actor, body)
    return accepted()


# -- steps ------------------------------------------------------------------------------------


async def read_body(limit: int) -> bytes:
    """The body, refused (413) as soon as it is known to be over ``limit`` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise RefusedPostError(413, "body too large")
    data = bytearray()
    async for chunk in request.body:
        data.extend(chunk)
        if len(data) > limit:
            raise RefusedPostError(413, "body too large")
    return bytes(data)


def parse_activity(body: bytes) -> Activity:
    """The posted activity, or 400: a JSON object with a string id, type and actor."""
    try:
        document = json.loads(body.decode("utf-8"))  # stored as this text (store_activity)
    except (ValueError, UnicodeDecodeError):
        raise RefusedPostError(400, "not JSON (UTF-8)") from None
    except RecursionError:  # [[[[... nested deeper than the parser recurses
        raise RefusedPostError(400, "JSON nested too deeply") from None
    if b"\\u0000" in body:  # PostgreSQL's jsonb cannot hold a NUL character
        raise RefusedPostError(400, "NUL characters are not accepted")
    if not isinstance(document, dict):
        raise RefusedPostError(400, "not an activity")
    activity_id, kind = document.get("id"), document.get("type")
    actor = reference_id(document.get("actor"))
    if not isinstance(activity_id, str) or not isinstance(kind, str) or actor is None:
        raise RefusedPostError(400, "an activity needs an id, a type and an actor")
    if len(activity_id) > MAX_URI_LENGTH or len(actor) > MAX_URI_LENGTH:
        raise RefusedPostError(400, "id too long")
    if len(kind) > MAX_TYPE_LENGTH:
        raise RefusedPostError(400, "type too long")
    if not host_of(actor) or host_of(activity_id) != host_of(actor):
        # Otherwise a server could store an activity under another server's id first, and
        # the real one would be taken for a redelivery.
        raise RefusedPostError(400, "the activity id is not on the actor's host")
    object_id = reference_id(document.get("object"))
    return Activity(activity_id, kind, actor, object_id, document)


def reference_id(value: Any) -> str | None:
    """A reference's id: the string itself, or an embedded object's ``id``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return str(value["id"])
    return None


def received_url(settings: Settings, app_name: str) -> str:
    """The URL as the sender addressed it: the Host header as received (some servers sign
    ``host`` without the port), the raw path and query; the scheme is the app's public one
    (TLS ends at the edge proxy, so the request we see is plain HTTP)."""
    scheme = urlsplit(settings.url_of(app_name)).scheme
    host = request.headers.get("Host", "")
    raw_path = request.scope.get("raw_path")
    path = raw_path.decode("latin-1") if isinstance(raw_path, bytes) else request.path
    query = request.query_string.decode("latin-1")
    return f"{scheme}://{host}{path}" + (f"?{query}" if query else "")


def find_key_id(incoming: IncomingRequest) -> str:
    try:
        key_id = signature_key_id(incoming)
    except SignatureError as exc:
        raise RefusedPostError(401, f"signature: {exc}") from None
    if not host_of(key_id):
        raise RefusedPostError(401, "signature: the keyId is not a URL")
    return key_id


def host_rate_rule(settings: Settings) -> RateLimit:
    """Verified POSTs per signing host (the keyId's), the view's and the fast path's."""
    return RateLimit("ap-inbox", settings.activitypub.inbox_rate_limit_per_minute, 60)


def unverified_rate_rule(settings: Settings) -> RateLimit:
    """POSTs refused as unverified, per client address."""
    limit = settings.activitypub.inbox_unverified_rate_limit_per_minute
    return RateLimit("ap-inbox-unverified", limit, 60)


async def check_rate(settings: Settings, key_id: str) -> None:
    """At most ``inbox_rate_limit_per_minute`` verified POSTs per signing host (fails open on
    Redis). Counted only once the signature verified, so that nobody else's POSTs spend it."""
    decision = request.scope.get(RATE_DECISION_SCOPE_KEY)
    if not isinstance(decision, RateDecision):  # not already counted in front of Quart
        decision = await RateLimiter(get_state_redis()).hit(
            host_rate_rule(settings), host_of(key_id)
        )
    refuse_over_rate(decision)


def refuse_over_rate(decision: RateDecision) -> None:
    if not decision.allowed:
        raise RefusedPostError(429, "rate limited", {"Retry-After": str(decision.retry_after)})


async def check_unverified_rate(settings: Settings) -> None:
    """429 when the client's address already had its fill of unverified POSTs this minute."""
    limiter = RateLimiter(get_state_redis())
    refuse_over_rate(await limiter.check(unverified_rate_rule(settings), client_subject()))


async def count_unverified(settings: Settings) -> None:
    await RateLimiter(get_state_redis()).hit(unverified_rate_rule(settings), client_subject())


async def check_signature(
    session: AsyncSession,
    settings: Settings,
    incoming: IncomingRequest,
    activity: Activity,
    key_id: str,
) -> None:
    """401 unless the activity's actor signed the request (see the module docstring)."""
    window = timedelta(seconds=settings.activitypub.signature_window_seconds)
    if activity.is_actor_delete:
        signer = await find_held_key(session, settings, key_id)
        if signer is None:
            raise DroppedPostError("a Delete of an actor whose key we never held")
        verify_with(incoming, signer, window)
    else:
        signer = await find_signer(session, settings, key_id, refresh=False)
        try:
            verify_request(incoming, signer.public_key_pem, window=window)
        except SignatureError as first_error:
            if not claim_refresh(settings, key_id):
                raise RefusedPostError(401, f"signature: {first_error}") from None
            refreshed = await find_signer(session, settings, key_id, refresh=True)
            if refreshed.public_key_pem == signer.public_key_pem:
                raise RefusedPostError(401, f"signature: {first_error}") from None
            signer = refreshed
            verify_with(incoming, signer, window)
    if signer.actor_uri != activity.actor:
        raise RefusedPostError(401, "signature: the signer is not the activity's actor")


def verify_with(incoming: IncomingRequest, signer: SignerKey, window: timedelta) -> None:
    try:
        verify_request(incoming, signer.public_key_pem, window=window)
    except SignatureError as exc:
        raise RefusedPostError(401, f"signature: {exc}") from None


def claim_refresh(settings: Settings, key_id: str) -> bool:
    """Whether the key may be fetched again now (once per KEY_REFRESH_SECONDS)."""
    cache_key = (settings.database_url, key_id)
    now = time.monotonic()
    last = _refreshed.get(cache_key)
    if last is not None and now - last < KEY_REFRESH_SECONDS:
        return False
    _refreshed[cache_key] = now
    return True


async def find_signer(
    session: AsyncSession, settings: Settings, key_id: str, *, refresh: bool
) -> SignerKey:
    """The key ``key_id`` names and its owner: from memory, else the actor cache, else
    fetched (``refresh`` fetches it again: the remote may have rotated it)."""
    cache_key = (settings.database_url, key_id)
    now = time.monotonic()
    cached = _keys.get(cache_key)
    if cached is not None and not refresh and cached[0] > now:
        return cached[1]
    try:
        actor = None if refresh else await get_cached_actor_for_key(session, key_id)
        if actor is None:
            actor = await fetch_signer_actor(session, settings, key_id)
    except RemoteFetchError as exc:
        raise RefusedPostError(401, f"signature: the key could not be fetched ({exc})") from None
    if actor.deleted or not actor.public_key_pem:
        raise RefusedPostError(401, "signature: the key's actor has no key")
    if actor.key_id not in (None, key_id):
        raise RefusedPostError(401, "signature: the actor does not present that key")
    signer = SignerKey(key_id, actor.uri, actor.public_key_pem)
    _keys[cache_key] = (now + KEY_CACHE_SECONDS, signer)
    return signer


async def fetch_signer_actor(
    session: AsyncSession, settings: Settings, key_id: str
) -> RemoteActorDTO:
    """Fetch and store the actor presenting ``key_id``, holding no database connection while
    the remote answers (see "Key fetches" in the module docstring)."""
    check_failed_key(settings, key_id)
    await check_unverified_rate(settings)
    signer = await get_instance_signer(session, settings)  # a query only on first use
    await session.commit()  # the request has only read so far: its connection goes back
    with key_fetch_slot(settings):
        try:
            fetched = await fetch_actor_for_key(
                settings,
                get_remote_client(),
                signer,
                key_id,
                seconds=settings.activitypub.key_fetch_timeout_seconds,
            )
        except RemoteFetchError:
            remember_failed_key(settings, key_id)
            raise
    await store_actor(session, fetched.actor, fetched.document)  # a new transaction
    return fetched.actor


@contextmanager
def key_fetch_slot(settings: Settings) -> Iterator[None]:
    """One of the process's ``key_fetch_concurrency`` key fetches, or 503 at once when all
    are taken (a semaphore that never waits: a waiting POST would hold its sender anyway)."""
    global _fetching
    config = settings.activitypub
    if _fetching >= config.key_fetch_concurrency:
        retry = str(math.ceil(config.key_fetch_timeout_seconds))
        raise RefusedPostError(503, "too many key fetches under way", {"Retry-After": retry})
    _fetching += 1
    try:
        yield
    finally:
        _fetching -= 1


def check_failed_key(settings: Settings, key_id: str) -> None:
    """401 without fetching when fetching ``key_id`` failed within key_failure_cache_seconds."""
    until = _failed_keys.get((settings.database_url, key_id))
    if until is not None and until > time.monotonic():
        raise RefusedPostError(401, "signature: the key could not be fetched (lately)")


def remember_failed_key(settings: Settings, key_id: str) -> None:
    now = time.monotonic()
    if len(_failed_keys) >= MAX_FAILED_KEYS:
        for expired in [key for key, until in _failed_keys.items() if until <= now]:
            del _failed_keys[expired]
        if len(_failed_keys) >= MAX_FAILED_KEYS:
            _failed_keys.clear()
    seconds = settings.activitypub.key_failure_cache_seconds
    _failed_keys[(settings.database_url, key_id)] = now + seconds


def get_cached_signer(settings: Settings, key_id: str) -> SignerKey | None:
    """The signer key this process holds in memory and has not let expire, or None."""
    cached = _keys.get((settings.database_url, key_id))
    if cached is None or cached[0] <= time.monotonic():
        return None
    return cached[1]


async def find_held_key(session: AsyncSession, settings: Settings, key_id: str) -> SignerKey | None:
    """The key as we already hold it (memory, then ``ap_remote_actors``), never fetched."""
    cached = _keys.get((settings.database_url, key_id))
    if cached is not None:
        return cached[1]
    row = (
        await session.execute(
            select(ApRemoteActor.uri, ApRemoteActor.public_key_pem)
            .where(ApRemoteActor.key_id == key_id)
            .limit(1)
        )
    ).first()
    if row is None or not row.public_key_pem:
        return None
    return SignerKey(key_id, row.uri, row.public_key_pem)


# Prepared once: the statement is compiled and cached by SQLAlchemy and asyncpg, and the
# document goes in as the JSON text that was received (no re-serialising, no literal values
# for SQLAlchemy to walk per request).
INSERT_ITEM_SQL = """
    INSERT INTO ap_inbox_items (activity_uri, activity_type, app, actor_uri, document)
    VALUES (:activity_uri, :activity_type, :app, :actor_uri, CAST(:document AS jsonb))
    ON CONFLICT (activity_uri) DO NOTHING
"""
INSERT_ITEM = text(INSERT_ITEM_SQL)
INSERT_ITEM_AND_NOTIFY = text(
    f"WITH inserted AS ({INSERT_ITEM_SQL} RETURNING id) "  # noqa: S608 (constant SQL)
    "SELECT pg_notify(:channel, '') FROM inserted"
)


# An Undo frees the id of what it undoes as soon as it is stored (the worker, which applies
# items in the order they were stored, undoes the effect): a server that sends Follow, Undo and
# Follow again with one id, the second Follow arriving before the Undo is applied, has that
# Follow stored and applied. Only the same actor's item; one a worker holds is left to the
# worker's own forgetting (inbox_processing.forget_undone_item) rather than waited for.
FORGET_UNDONE_ITEM = text(
    """
    DELETE FROM ap_inbox_items WHERE id = (
        SELECT id FROM ap_inbox_items
        WHERE activity_uri = :undone AND actor_uri = :actor
        FOR UPDATE SKIP LOCKED
    )
    """
)


async def store_activity(
    session: AsyncSession | AsyncConnection, activity: Activity, actor: str | None, body: bytes
) -> None:
    """Store once: a redelivery of the same activity id changes nothing (until an Undo of it
    is stored: see FORGET_UNDONE_ITEM). ``body`` is the activity's JSON as received
    (parse_activity checked it is one JSON object).

    A new item also wakes the workers at commit (NOTIFY, in the same statement), but at most
    once per NOTIFY_INTERVAL_SECONDS per process: PostgreSQL serialises the commits of all
    transactions that NOTIFY (a database-wide lock held through the commit's WAL flush), which
    would cap ingest at one commit per flush. Items stored between two notifications are
    claimed by the batch the first one wakes, or by the workers' poll (INBOX_POLL_SECONDS).
    """
    global _last_notify
    if activity.type == "Undo" and activity.object_id and activity.object_id != activity.id:
        await session.execute(
            FORGET_UNDONE_ITEM, {"undone": activity.object_id, "actor": activity.actor}
        )
    values = {
        "activity_uri": activity.id,
        "activity_type": activity.type,
        "app": actor,
        "actor_uri": activity.actor,
        "document": body.decode("utf-8"),
    }
    now = time.monotonic()
    if now - _last_notify < NOTIFY_INTERVAL_SECONDS:
        await session.execute(INSERT_ITEM, values)
        return
    _last_notify = now
    await session.execute(INSERT_ITEM_AND_NOTIFY, {**values, "channel": INBOX_CHANNEL})
