"""The EventProcessor: outbox activities become deliveries, deliveries become signed POSTs.

Takahē-style state machines over rows, each step one testable cycle:

- ``process_activities``: claims due pending ``ap_activities`` (FOR UPDATE SKIP LOCKED, so
  several workers never take one row) and, in the same transaction, fans each public,
  unlisted or followers activity out into one ``ap_deliveries`` row per distinct inbox (the
  app's followers deduplicated by shared inbox, plus the activity's target inboxes; direct
  activities go to their targets only) with one set-based INSERT ... SELECT, then marks it
  done. Internal activities go to the handlers registered in ``publish`` instead.
- ``process_deliveries``: claims a modest batch of due pending deliveries and POSTs them
  concurrently while holding the row locks. A worker killed mid-batch leaves its rows pending
  (its dead connection releases the locks) and another worker delivers them again: every
  inbox gets the activity at least once. 2xx → delivered; 404/410 or a refused (unsafe)
  address → failed at once; anything else is retried after ``n**4 + 15`` s plus jitter, and
  after ``max_delivery_attempts`` the row is failed: the dead letter operators see with
  ``rose-ash ap deliveries --failed`` and re-queue with ``rose-ash ap retry``.
  With ``features.federation_enabled`` off nothing is POSTed: deliveries are still
  created and stay pending until federation is switched on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from shared.config import Settings
from shared.infrastructure.activitypub.remote import (
    DeliveryResponse,
    GuardedTransport,
    RemoteClient,
    Signer,
    UnsafeUrlError,
    get_actor_signer,
)
from shared.models.social.outbox import ApActivity, ApDelivery
from shared.services.outbox import retry_delay
from shared.services.social.publish import ACTIVITIES_CHANNEL, get_internal_handlers

logger = logging.getLogger("rose_ash.activitypub.delivery")
ACTIVITY_BATCH = 50
# Small enough that a crash redelivers few, large enough to keep the concurrency busy.
DELIVERY_BATCH = 50
# Batches delivered side by side by one worker, each in its own transaction: an inbox that
# takes its whole timeout holds up only its own batch while the other lanes move on.
DELIVERY_LANES = 4
PERMANENT_STATUSES = frozenset({404, 410})
ERROR_TEXT_LIMIT = 500
# Requests in flight per connection pool of a DeliveryPool (see there).
REQUESTS_PER_POOL = 8

# One row per distinct inbox: followers by shared inbox when they have one (deleted and
# blocked actors left out), plus the activity's own target inboxes. UNION deduplicates, and
# ON CONFLICT keeps a re-run from adding a second row for an inbox.
FAN_OUT_SQL = text(
    """
    INSERT INTO ap_deliveries (activity_id, inbox)
    SELECT :activity_id, inboxes.inbox FROM (
        SELECT COALESCE(f.shared_inbox, f.inbox) AS inbox
        FROM ap_followers AS f
        JOIN ap_remote_actors AS r ON r.id = f.remote_actor_id
        WHERE :to_followers AND f.app = :app AND r.deleted_at IS NULL
          AND NOT EXISTS (
              SELECT 1 FROM ap_blocks AS b
              WHERE (b.kind = 'domain' AND b.value = r.domain)
                 OR (b.kind = 'actor' AND b.value = r.uri)
          )
        UNION
        SELECT jsonb_array_elements_text(a.target_inboxes)
        FROM ap_activities AS a WHERE a.id = :activity_id
    ) AS inboxes
    ON CONFLICT (activity_id, inbox) DO NOTHING
    """
)


class InboxPoster(Protocol):
    """What delivers: a RemoteClient, or a DeliveryPool of them."""

    async def post_json(self, url: str, body: bytes, *, signer: Signer) -> DeliveryResponse: ...


class DeliveryPool:
    """Several RemoteClients with small connection pools, each inbox always on the same one.

    httpcore's connection pool scans all of its connections (and, for each, all of them
    again) on every request it starts or finishes, so one pool serving 64 concurrent
    deliveries spends most of the worker's CPU there; pools of a few connections each keep
    that cost small. The guarded transport (the SSRF checks) is the same as RemoteClient's.
    """

    def __init__(self, settings: Settings, *, concurrency: int | None = None) -> None:
        wanted = concurrency or settings.activitypub.delivery_concurrency
        shards = max(1, math.ceil(wanted / REQUESTS_PER_POOL))
        self.clients = [
            RemoteClient(
                settings,
                transport=GuardedTransport.for_settings(
                    settings, max_connections=2 * REQUESTS_PER_POOL
                ),
            )
            for _ in range(shards)
        ]

    def client_for(self, url: str) -> RemoteClient:
        return self.clients[zlib.crc32(url.encode()) % len(self.clients)]

    async def post_json(self, url: str, body: bytes, *, signer: Signer) -> DeliveryResponse:
        return await self.client_for(url).post_json(url, body, signer=signer)

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()


@dataclass(frozen=True)
class ClaimedDelivery:
    id: int
    activity_id: int
    inbox: str
    attempts: int


@dataclass(frozen=True)
class Payload:
    """What every delivery of one activity sends: the body serialised once, and its signer."""

    body: bytes
    signer: Signer


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    permanent: bool = False
    status: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class DeliveryView:
    """One delivery as operators see it."""

    id: int
    activity_uri: str
    inbox: str
    state: str
    attempts: int
    last_status: int | None
    last_error: str | None
    next_attempt_at: datetime


def utc_now() -> datetime:
    return datetime.now(UTC)


# --- activities -------------------------------------------------------------------------


async def process_activities(
    session_factory: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    limit: int = ACTIVITY_BATCH,
) -> int:
    """One cycle: fan out (or hand to internal handlers) up to ``limit`` due activities, in
    one transaction. Returns how many were claimed."""
    async with session_factory() as session, session.begin():
        activities = (
            await session.scalars(
                select(ApActivity)
                .where(ApActivity.state == "pending", ApActivity.next_attempt_at <= func.now())
                .order_by(ApActivity.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        ).all()
        for activity in activities:
            if activity.visibility == "internal":
                await run_internal_handlers(session, settings, activity)
            else:
                await fan_out(session, activity)
    return len(activities)


async def fan_out(session: AsyncSession, activity: ApActivity) -> int:
    """Create the activity's deliveries (set-based) and mark it done; returns rows added."""
    result = await session.execute(
        FAN_OUT_SQL,
        {
            "activity_id": activity.id,
            "app": activity.app,
            "to_followers": activity.visibility != "direct",
        },
    )
    activity.state = "done"
    activity.processed_at = utc_now()
    added: int = getattr(result, "rowcount", 0)
    if added:
        # Sent at commit: every worker's delivery job wakes for the new rows at once, not
        # only the one that fanned out (the others would sleep until their next poll).
        await session.execute(
            text("SELECT pg_notify(:channel, '')"), {"channel": ACTIVITIES_CHANNEL}
        )
    logger.info("activity %s (%s) fanned out to %s inboxes", activity.id, activity.uri, added)
    return added


async def run_internal_handlers(
    session: AsyncSession, settings: Settings, activity: ApActivity
) -> None:
    """Run the handlers of an internal activity in a savepoint; on failure undo their work
    and retry on the delivery schedule, then give up (state failed)."""
    handlers = get_internal_handlers(activity.activity_type)
    now = utc_now()
    activity.attempts += 1
    if not handlers:
        logger.warning("no handler for internal activity %s", activity.activity_type)
        mark_activity_done(activity, now, error="no handler registered")
        return
    try:
        async with session.begin_nested():
            for handler in handlers:
                await handler(session, settings, activity.document)
    except Exception as exc:  # any handler failure is retried
        activity.last_error = f"{type(exc).__name__}: {exc}"[:ERROR_TEXT_LIMIT]
        if activity.attempts >= settings.activitypub.max_delivery_attempts:
            activity.state = "failed"
            activity.processed_at = now
        else:
            activity.next_attempt_at = now + retry_delay(activity.attempts)
        logger.warning("internal activity %s attempt %s failed: %r", activity.id,
                       activity.attempts, exc)  # fmt: skip
    else:
        mark_activity_done(activity, now)


def mark_activity_done(activity: ApActivity, now: datetime, error: str | None = None) -> None:
    activity.state = "done"
    activity.processed_at = now
    activity.last_error = error


# --- deliveries -------------------------------------------------------------------------


async def process_deliveries(
    session_factory: async_sessionmaker[AsyncSession],
    settings: Settings,
    client: InboxPoster,
    *,
    limit: int = DELIVERY_BATCH,
    concurrency: int | None = None,
) -> int:
    """One cycle: claim up to ``limit`` due deliveries, POST them concurrently while their
    locks are held, record each outcome, commit. Returns how many were claimed: none while
    federation is switched off (the deliveries wait, pending, until it is switched on)."""
    if not settings.features.federation_enabled:
        return 0
    async with session_factory() as session, session.begin():
        claimed = await claim_deliveries(session, limit)
        if not claimed:
            return 0
        payloads = await load_payloads(session, settings, {row.activity_id for row in claimed})
        outcomes = await deliver_batch(
            settings,
            client,
            claimed,
            payloads,
            concurrency=concurrency or settings.activitypub.delivery_concurrency,
        )
        await record_outcomes(session, settings, claimed, outcomes)
    return len(claimed)


async def drain_deliveries(
    session_factory: async_sessionmaker[AsyncSession],
    settings: Settings,
    client: InboxPoster,
    *,
    seconds: float,
    lanes: int = DELIVERY_LANES,
    limit: int = DELIVERY_BATCH,
) -> bool:
    """Deliver in ``lanes`` concurrent batch loops (the delivery concurrency shared between
    them) until nothing is due or ``seconds`` have passed; True when work is left."""
    if isinstance(session_factory.kw.get("bind"), AsyncConnection):
        lanes = 1  # one connection (tests) cannot hold transactions side by side
    deadline = asyncio.get_running_loop().time() + seconds
    concurrency = max(1, settings.activitypub.delivery_concurrency // lanes)

    async def lane() -> bool:
        while True:
            claimed = await process_deliveries(
                session_factory, settings, client, limit=limit, concurrency=concurrency
            )
            if claimed < limit:
                return False
            if asyncio.get_running_loop().time() >= deadline:
                return True

    return any(await asyncio.gather(*(lane() for _ in range(lanes))))


async def claim_deliveries(session: AsyncSession, limit: int) -> list[ClaimedDelivery]:
    rows = await session.execute(
        select(ApDelivery.id, ApDelivery.activity_id, ApDelivery.inbox, ApDelivery.attempts)
        .where(ApDelivery.state == "pending", ApDelivery.next_attempt_at <= func.now())
        .order_by(ApDelivery.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [ClaimedDelivery(*row) for row in rows]


def serialise(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


async def load_payloads(
    session: AsyncSession, settings: Settings, activity_ids: Iterable[int]
) -> dict[int, Payload]:
    """Each activity's body and its actor's signer, built once for the whole batch."""
    rows = await session.execute(
        select(ApActivity.id, ApActivity.app, ApActivity.document).where(
            ApActivity.id.in_(list(activity_ids))
        )
    )
    signers: dict[str, Signer] = {}
    payloads: dict[int, Payload] = {}
    for activity_id, app, document in rows:
        if app not in signers:
            signers[app] = await get_actor_signer(session, settings, app)
        payloads[activity_id] = Payload(serialise(document), signers[app])
    return payloads


async def deliver_batch(
    settings: Settings,
    client: InboxPoster,
    claimed: Sequence[ClaimedDelivery],
    payloads: dict[int, Payload],
    *,
    concurrency: int,
) -> list[Outcome]:
    """POST every claimed delivery, at most ``concurrency`` at once; outcomes in order."""
    gate = asyncio.Semaphore(concurrency)
    # The client enforces its own timeout; this guard only bounds how long locks are held
    # if something below it hangs regardless.
    guard = settings.activitypub.delivery_timeout_seconds * 2 + 5

    async def deliver(row: ClaimedDelivery) -> Outcome:
        async with gate:
            try:
                return await asyncio.wait_for(
                    deliver_one(client, row.inbox, payloads[row.activity_id]), guard
                )
            except TimeoutError:
                return Outcome(delivered=False, error="delivery timed out")

    return list(await asyncio.gather(*(deliver(row) for row in claimed)))


async def deliver_one(client: InboxPoster, inbox: str, payload: Payload) -> Outcome:
    """One signed POST, classified: delivered, permanent failure, or to be retried."""
    try:
        response = await client.post_json(inbox, payload.body, signer=payload.signer)
    except UnsafeUrlError as exc:
        return Outcome(delivered=False, permanent=True, error=str(exc))
    except Exception as exc:  # timeouts, refused connections, TLS errors: all retried
        return Outcome(delivered=False, error=f"{type(exc).__name__}: {exc}")
    status = response.status_code
    if 200 <= status < 300:
        return Outcome(delivered=True, status=status)
    return Outcome(
        delivered=False,
        permanent=status in PERMANENT_STATUSES,
        status=status,
        error=f"HTTP {status}",
    )


def next_state(
    settings: Settings, row: ClaimedDelivery, outcome: Outcome, now: datetime
) -> dict[str, Any]:
    """The row's new columns after ``outcome`` (every key always present: one executemany)."""
    attempts = row.attempts + 1
    values: dict[str, Any] = {
        "id": row.id,
        "attempts": attempts,
        "last_status": outcome.status,
        "last_error": outcome.error[:ERROR_TEXT_LIMIT] if outcome.error else None,
        "next_attempt_at": now,
        "delivered_at": None,
    }
    if outcome.delivered:
        return {**values, "state": "delivered", "delivered_at": now}
    if outcome.permanent or attempts >= settings.activitypub.max_delivery_attempts:
        return {**values, "state": "failed"}
    return {**values, "state": "pending", "next_attempt_at": now + retry_delay(attempts)}


async def record_outcomes(
    session: AsyncSession,
    settings: Settings,
    claimed: Sequence[ClaimedDelivery],
    outcomes: Sequence[Outcome],
) -> None:
    now = utc_now()
    changes = [
        next_state(settings, row, outcome, now)
        for row, outcome in zip(claimed, outcomes, strict=True)
    ]
    await session.execute(update(ApDelivery), changes)
    failed = sum(1 for change in changes if change["state"] == "failed")
    retried = sum(1 for change in changes if change["state"] == "pending")
    if failed or retried:
        logger.info("deliveries: %s delivered, %s retried, %s failed",
                    len(changes) - failed - retried, retried, failed)  # fmt: skip


# --- operators --------------------------------------------------------------------------


async def list_deliveries(
    session: AsyncSession, *, state: str | None = None, limit: int = 50
) -> list[DeliveryView]:
    """Deliveries, newest first (optionally only those in ``state``)."""
    query = (
        select(
            ApDelivery.id,
            ApActivity.uri,
            ApDelivery.inbox,
            ApDelivery.state,
            ApDelivery.attempts,
            ApDelivery.last_status,
            ApDelivery.last_error,
            ApDelivery.next_attempt_at,
        )
        .join(ApActivity, ApActivity.id == ApDelivery.activity_id)
        .order_by(ApDelivery.id.desc())
        .limit(limit)
    )
    if state is not None:
        query = query.where(ApDelivery.state == state)
    return [DeliveryView(*row) for row in await session.execute(query)]


async def do_retry_deliveries(
    session: AsyncSession, *, ids: Sequence[int] = (), all_failed: bool = False
) -> int:
    """Put failed deliveries (the given ones, or all) back to pending with fresh attempts,
    and wake the workers. Returns how many were re-queued."""
    if not ids and not all_failed:
        return 0
    statement = (
        update(ApDelivery)
        .where(ApDelivery.state == "failed")
        .values(state="pending", attempts=0, next_attempt_at=func.now(), last_error=None)
    )
    if not all_failed:
        statement = statement.where(ApDelivery.id.in_(list(ids)))
    result = await session.execute(statement)
    await session.execute(select(func.pg_notify(ACTIVITIES_CHANNEL, "")))
    count: int = getattr(result, "rowcount", 0)
    return count


async def count_by_state(session: AsyncSession) -> dict[str, dict[str, int]]:
    """Activities and deliveries per state."""
    counts: dict[str, dict[str, int]] = {"activities": {}, "deliveries": {}}
    for name, model in (("activities", ApActivity), ("deliveries", ApDelivery)):
        rows = await session.execute(
            select(model.state, func.count()).group_by(model.state).order_by(model.state)
        )
        counts[name] = {state: count for state, count in rows}
    return counts
