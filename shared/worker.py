"""The background processor (`rose-ash worker`).

A worker runs registered jobs, each on its own interval, until it is told to stop (SIGTERM or
SIGINT), finishing the job in hand first. Later issues register their processors here (the
ActivityPub outbox, mail, cache purges). Every cycle it records a heartbeat in Redis, with a
TTL, so operators and health checks can see which workers are alive.

A job may also wake on a PostgreSQL NOTIFY channel: the worker LISTENs on a connection of its
own and runs such a job as soon as a notification arrives (sent at commit by whoever queued
work), so polling is only the fallback. A job that returns True has more work at hand and is
run again at once instead of after its interval. Several workers run safely side by side: the
jobs claim their rows with FOR UPDATE SKIP LOCKED.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg  # type: ignore[import-untyped]  # (no stubs; the LISTEN connection only)
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.config import Settings
from shared.db import create_engine, create_session_factory
from shared.infrastructure.activitypub.remote import RemoteClient
from shared.infrastructure.outbox_handlers import build_outbox_handlers
from shared.infrastructure.redis_client import open_redis
from shared.services.outbox import process_due_events
from shared.services.social.delivery import (
    ACTIVITY_BATCH,
    DeliveryPool,
    drain_deliveries,
    process_activities,
)
from shared.services.social.inbox_processing import (
    INBOX_CHANNEL,
    process_inbox_items,
)
from shared.services.social.publish import ACTIVITIES_CHANNEL

logger = logging.getLogger("rose_ash.worker")
HEARTBEAT_KEY_PREFIX = "rose_ash:worker:heartbeat:"
HEARTBEAT_TTL_SECONDS = 30
OUTBOX_INTERVAL_SECONDS = 2.0
# Fallbacks for a missed NOTIFY (e.g. while the listening connection was being re-made);
# deliveries also poll for retries that have come due.
ACTIVITIES_POLL_SECONDS = 5.0
DELIVERIES_POLL_SECONDS = 2.0
# A deliveries job returns after this long with work left (and runs again at once), so
# the heartbeat and the other jobs keep their turns during a large fan-out.
DELIVERY_SLICE_SECONDS = 5.0
INBOX_POLL_SECONDS = 1.0
INBOX_BATCH = 100
LISTEN_CHECK_SECONDS = 15.0
LISTEN_RETRY_SECONDS = 2.0


@dataclass
class WorkerContext:
    settings: Settings
    session_factory: async_sessionmaker[AsyncSession]
    redis: aioredis.Redis
    worker_id: str


# A job returns True when it has more work at hand (run it again at once), else None/False.
JobFunction = Callable[[WorkerContext], Awaitable[bool | None]]
CleanupFunction = Callable[[], Awaitable[None]]


@dataclass
class Job:
    name: str
    interval_seconds: float
    run: JobFunction
    next_run: float = 0.0
    wake_on: tuple[str, ...] = ()  # NOTIFY channels that make the job due at once
    woken: bool = False

    def is_due(self, now: float) -> bool:
        return self.woken or self.next_run <= now


async def record_heartbeat(context: WorkerContext) -> None:
    await context.redis.set(
        HEARTBEAT_KEY_PREFIX + context.worker_id, str(time.time()), ex=HEARTBEAT_TTL_SECONDS
    )


@dataclass
class Worker:
    settings: Settings
    jobs: list[Job] = field(default_factory=list)
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    # Set by a notification or a stop request: cuts the wait between cycles short.
    alarm: asyncio.Event = field(default_factory=asyncio.Event)
    cleanups: list[CleanupFunction] = field(default_factory=list)

    def add_job(
        self,
        name: str,
        interval_seconds: float,
        run: JobFunction,
        *,
        wake_on: tuple[str, ...] = (),
    ) -> None:
        self.jobs.append(Job(name, interval_seconds, run, wake_on=wake_on))

    def add_cleanup(self, cleanup: CleanupFunction) -> None:
        """Run ``cleanup`` when the worker stops (close clients the jobs keep)."""
        self.cleanups.append(cleanup)

    def stop(self) -> None:
        self.stopping.set()
        self.alarm.set()

    def wake(self, channel: str) -> None:
        """Make every job listening on ``channel`` due now."""
        for job in self.jobs:
            if channel in job.wake_on:
                job.woken = True
        self.alarm.set()

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(channel for job in self.jobs for channel in job.wake_on))

    async def run_due_jobs(self, context: WorkerContext) -> list[str]:
        """One cycle: run every job whose time has come; a failing job does not stop others."""
        ran = []
        now = time.monotonic()
        for job in self.jobs:
            if not job.is_due(now):
                continue
            job.woken = False
            more = False
            try:
                more = bool(await job.run(context))
            except Exception:
                logger.exception("job %s failed", job.name)
            # Woken again while it ran, or more at hand: due again at once.
            job.next_run = time.monotonic() + (0 if more else job.interval_seconds)
            ran.append(job.name)
        return ran

    def seconds_until_due(self) -> float:
        now = time.monotonic()
        due = min((now if job.woken else job.next_run for job in self.jobs), default=now + 1)
        return max(0.0, due - now)

    async def listen(self) -> None:
        """Wake jobs on NOTIFY, over a connection of the worker's own; re-made when lost."""
        channels = self.channels
        while not self.stopping.is_set():
            connection: asyncpg.Connection | None = None
            try:
                connection = await asyncpg.connect(
                    self.settings.sync_database_url,
                    timeout=5,
                    server_settings={"application_name": "rose-ash-worker-listen"},
                )
                for channel in channels:
                    await connection.add_listener(channel, self.on_notification)
                # Catch up on anything notified while no one listened.
                for channel in channels:
                    self.wake(channel)
                while not self.stopping.is_set() and not connection.is_closed():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stopping.wait(), LISTEN_CHECK_SECONDS)
                    if not self.stopping.is_set():
                        await connection.execute("SELECT 1")  # notice a dead connection
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                logger.warning("listening for notifications failed (%s); polling meanwhile", exc)
            finally:
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(connection.close(), 2)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), LISTEN_RETRY_SECONDS)

    def on_notification(
        self, _connection: object, _pid: int, channel: str, _payload: object
    ) -> None:
        self.wake(channel)

    async def run(self, *, once: bool = False) -> None:
        engine: AsyncEngine = create_engine(
            self.settings,
            "worker",
            statement_timeout_ms=self.settings.db_worker_statement_timeout_ms,
        )
        # Heartbeats and grant purges: the store that is never evicted.
        redis = open_redis(
            self.settings.state_redis_url,
            failure_memo_seconds=self.settings.redis_failure_memo_seconds,
        )
        context = WorkerContext(
            self.settings, create_session_factory(engine), redis, self.worker_id
        )
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop)
        listener = asyncio.create_task(self.listen()) if self.channels and not once else None
        logger.info("worker %s started with jobs %s", self.worker_id, [j.name for j in self.jobs])
        try:
            while not self.stopping.is_set():
                self.alarm.clear()
                await self.run_due_jobs(context)
                if once:
                    break
                delay = max(0.01, self.seconds_until_due())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.alarm.wait(), timeout=delay)
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
            for cleanup in self.cleanups:
                try:
                    await cleanup()
                except Exception:
                    logger.exception("worker cleanup failed")
            await redis.delete(HEARTBEAT_KEY_PREFIX + self.worker_id)
            await redis.aclose()
            await engine.dispose()
            logger.info("worker %s stopped", self.worker_id)


async def process_outbox(context: WorkerContext) -> None:
    """Perform due outbox events: retries, and anything an app's after-commit kick missed."""
    handlers = build_outbox_handlers(context.settings, context.redis, context.session_factory)
    await process_due_events(context.session_factory, handlers, limit=200)


@dataclass
class FederationJobs:
    """The ActivityPub jobs; their HTTP clients (connection pools) live as long as the worker."""

    settings: Settings
    client: RemoteClient | None = None
    delivery_pool: DeliveryPool | None = None

    def get_client(self) -> RemoteClient:
        if self.client is None:
            self.client = RemoteClient(self.settings)
        return self.client

    def get_delivery_pool(self) -> DeliveryPool:
        if self.delivery_pool is None:
            self.delivery_pool = DeliveryPool(self.settings)
        return self.delivery_pool

    async def fan_out_activities(self, context: WorkerContext) -> bool:
        claimed = await process_activities(
            context.session_factory, context.settings, limit=ACTIVITY_BATCH
        )
        return claimed >= ACTIVITY_BATCH

    async def deliver(self, context: WorkerContext) -> bool:
        return await drain_deliveries(
            context.session_factory,
            context.settings,
            self.get_delivery_pool(),
            seconds=DELIVERY_SLICE_SECONDS,
        )

    async def apply_inbox_items(self, context: WorkerContext) -> bool:
        claimed = await process_inbox_items(
            context.session_factory, context.settings, self.get_client(), limit=INBOX_BATCH
        )
        return claimed >= INBOX_BATCH

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None
        if self.delivery_pool is not None:
            await self.delivery_pool.aclose()
            self.delivery_pool = None


def build_worker(settings: Settings) -> Worker:
    """The worker with every registered job."""
    worker = Worker(settings)
    worker.add_job("heartbeat", HEARTBEAT_TTL_SECONDS / 3, record_heartbeat)
    worker.add_job("outbox", OUTBOX_INTERVAL_SECONDS, process_outbox)
    federation = FederationJobs(settings)
    # Activities first: a woken cycle fans out, then delivers what it fanned out.
    worker.add_job(
        "ap-activities",
        ACTIVITIES_POLL_SECONDS,
        federation.fan_out_activities,
        wake_on=(ACTIVITIES_CHANNEL,),
    )
    worker.add_job(
        "ap-deliveries", DELIVERIES_POLL_SECONDS, federation.deliver, wake_on=(ACTIVITIES_CHANNEL,)
    )
    worker.add_job(
        "ap-inbox", INBOX_POLL_SECONDS, federation.apply_inbox_items, wake_on=(INBOX_CHANNEL,)
    )
    worker.add_cleanup(federation.close)
    return worker
