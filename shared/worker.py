"""The background processor (`rose-ash worker`).

A worker runs registered jobs, each on its own interval, until it is told to stop (SIGTERM or
SIGINT), finishing the job in hand first. Later issues register their processors here (the
ActivityPub outbox, mail, cache purges). Every cycle it records a heartbeat in Redis, with a
TTL, so operators and health checks can see which workers are alive.
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

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.config import Settings
from shared.db import create_engine, create_session_factory
from shared.infrastructure.outbox_handlers import build_outbox_handlers
from shared.services.outbox import process_due_events

logger = logging.getLogger("rose_ash.worker")
HEARTBEAT_KEY_PREFIX = "rose_ash:worker:heartbeat:"
HEARTBEAT_TTL_SECONDS = 30
OUTBOX_INTERVAL_SECONDS = 2.0


@dataclass
class WorkerContext:
    settings: Settings
    session_factory: async_sessionmaker[AsyncSession]
    redis: aioredis.Redis
    worker_id: str


JobFunction = Callable[[WorkerContext], Awaitable[None]]


@dataclass
class Job:
    name: str
    interval_seconds: float
    run: JobFunction
    next_run: float = 0.0


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

    def add_job(self, name: str, interval_seconds: float, run: JobFunction) -> None:
        self.jobs.append(Job(name, interval_seconds, run))

    async def run_due_jobs(self, context: WorkerContext) -> list[str]:
        """One cycle: run every job whose time has come; a failing job does not stop others."""
        ran = []
        now = time.monotonic()
        for job in self.jobs:
            if job.next_run > now:
                continue
            try:
                await job.run(context)
            except Exception:
                logger.exception("job %s failed", job.name)
            job.next_run = time.monotonic() + job.interval_seconds
            ran.append(job.name)
        return ran

    async def run(self, *, once: bool = False) -> None:
        engine: AsyncEngine = create_engine(self.settings, "worker")
        redis = aioredis.Redis.from_url(self.settings.redis_url, socket_connect_timeout=2)
        context = WorkerContext(
            self.settings, create_session_factory(engine), redis, self.worker_id
        )
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stopping.set)
        logger.info("worker %s started with jobs %s", self.worker_id, [j.name for j in self.jobs])
        try:
            while not self.stopping.is_set():
                await self.run_due_jobs(context)
                if once:
                    break
                due = min((job.next_run for job in self.jobs), default=time.monotonic() + 1)
                delay = max(0.05, due - time.monotonic())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), timeout=delay)
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            await redis.delete(HEARTBEAT_KEY_PREFIX + self.worker_id)
            await redis.aclose()
            await engine.dispose()
            logger.info("worker %s stopped", self.worker_id)


async def process_outbox(context: WorkerContext) -> None:
    """Perform due outbox events: retries, and anything an app's after-commit kick missed."""
    handlers = build_outbox_handlers(context.settings, context.redis, context.session_factory)
    await process_due_events(context.session_factory, handlers, limit=200)


def build_worker(settings: Settings) -> Worker:
    """The worker with every registered job."""
    worker = Worker(settings)
    worker.add_job("heartbeat", HEARTBEAT_TTL_SECONDS / 3, record_heartbeat)
    worker.add_job("outbox", OUTBOX_INTERVAL_SECONDS, process_outbox)
    return worker
