"""The transactional outbox (shared.models.outbox.OutboxEvent): enqueue in the caller's
transaction, process after commit.

Processing claims due rows with ``FOR UPDATE SKIP LOCKED`` so that several workers (and the
after-commit kick in the apps) never handle one row twice at once. A handler that raises is
retried with Mastodon's schedule (n**4 + 15 s, about 16 attempts); one that raises
PermanentOutboxError is not retried. Rows that gave up stay with ``failed_at`` set for operators.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.models.outbox import OutboxEvent

logger = logging.getLogger("rose_ash.outbox")
MAX_ATTEMPTS = 16
PENDING_FLAG = "outbox_pending"


class PermanentOutboxError(Exception):
    """The side effect can never succeed (e.g. 404/410 from the target); do not retry."""


OutboxHandler = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class ProcessReport:
    completed: list[int] = field(default_factory=list)
    retried: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


def retry_delay(attempts: int) -> timedelta:
    """n**4 + 15 seconds plus up to 10% jitter (Mastodon's delivery schedule)."""
    base = attempts**4 + 15
    return timedelta(seconds=base + random.uniform(0, base / 10))  # noqa: S311 (jitter)


async def do_enqueue(session: AsyncSession, kind: str, payload: dict[str, Any]) -> OutboxEvent:
    """Add a side effect to the caller's transaction; it runs only if that commits."""
    event = OutboxEvent(kind=kind, payload=payload)
    session.add(event)
    await session.flush()
    session.info[PENDING_FLAG] = True
    return event


def has_pending_events(session: AsyncSession) -> bool:
    """Whether this session enqueued events (the app kicks the processor after commit)."""
    return bool(session.info.get(PENDING_FLAG))


async def process_due_events(
    session_factory: async_sessionmaker[AsyncSession],
    handlers: Mapping[str, OutboxHandler],
    *,
    limit: int = 50,
) -> ProcessReport:
    """Run the handlers of due events once; each event in its own transaction."""
    report = ProcessReport()
    for _ in range(limit):
        async with session_factory() as session, session.begin():
            event = await session.scalar(
                select(OutboxEvent)
                .where(
                    OutboxEvent.completed_at.is_(None),
                    OutboxEvent.failed_at.is_(None),
                    OutboxEvent.next_attempt_at <= func.now(),
                    OutboxEvent.kind.in_(list(handlers)),
                )
                .order_by(OutboxEvent.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            if event is None:
                break
            await run_handler(event, handlers[event.kind], report)
    return report


async def run_handler(event: OutboxEvent, handler: OutboxHandler, report: ProcessReport) -> None:
    now = datetime.now(UTC)
    event.attempts += 1
    try:
        await handler(event.payload)
    except PermanentOutboxError as exc:
        event.failed_at = now
        event.last_error = str(exc) or type(exc).__name__
        report.failed.append(event.id)
        logger.warning("outbox event %s (%s) failed for good: %s", event.id, event.kind, exc)
    except Exception as exc:  # any other failure is retried on the schedule
        event.last_error = f"{type(exc).__name__}: {exc}"
        if event.attempts >= MAX_ATTEMPTS:
            event.failed_at = now
            report.failed.append(event.id)
        else:
            event.next_attempt_at = now + retry_delay(event.attempts)
            report.retried.append(event.id)
        logger.warning("outbox event %s (%s) attempt %s failed: %r", event.id, event.kind,
                       event.attempts, exc)  # fmt: skip
    else:
        event.completed_at = now
        event.last_error = None
        report.completed.append(event.id)
