"""The background worker: runs due jobs, survives a failing one, records its heartbeat."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.config import Settings
from shared.db import create_session_factory
from shared.worker import HEARTBEAT_KEY_PREFIX, Worker, WorkerContext, build_worker
from tests.conftest import TEST_SECRET_KEY


def make_context(
    settings: Settings, connection: AsyncConnection, redis: aioredis.Redis
) -> WorkerContext:
    return WorkerContext(settings, create_session_factory(connection), redis, "test-worker")


async def test_due_jobs_run_and_a_failing_job_does_not_stop_the_others(
    settings: Settings, connection: AsyncConnection, redis: aioredis.Redis
) -> None:
    calls: list[str] = []

    async def broken(_context: WorkerContext) -> None:
        calls.append("broken")
        raise RuntimeError("job failed")

    async def fine(_context: WorkerContext) -> None:
        calls.append("fine")

    worker = Worker(settings)
    worker.add_job("broken", 60, broken)
    worker.add_job("fine", 60, fine)
    context = make_context(settings, connection, redis)
    assert await worker.run_due_jobs(context) == ["broken", "fine"]
    assert calls == ["broken", "fine"]
    # neither is due again within its interval
    assert await worker.run_due_jobs(context) == []


async def test_heartbeat_job_records_the_worker_in_redis(
    settings: Settings, connection: AsyncConnection, redis: aioredis.Redis
) -> None:
    worker = build_worker(settings)
    context = make_context(settings, connection, redis)
    assert await worker.run_due_jobs(context) == [
        "heartbeat",
        "outbox",
        "ap-activities",
        "ap-deliveries",
        "ap-inbox",
    ]
    key = HEARTBEAT_KEY_PREFIX + "test-worker"
    assert float(await redis.get(key)) <= time.time()
    assert 0 < await redis.ttl(key) <= 30


async def test_worker_process_stops_cleanly_on_sigterm(
    database_url: str, redis_url: str, redis: aioredis.Redis
) -> None:
    environment = {
        **os.environ,
        "ROSE_ASH_ENV": "test",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": TEST_SECRET_KEY,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.cli", "worker", env=environment
    )
    try:
        deadline = time.monotonic() + 30
        while not await redis.keys(HEARTBEAT_KEY_PREFIX + "*"):
            assert process.returncode is None, "the worker exited"
            assert time.monotonic() < deadline, "no heartbeat within 30 s"
            await asyncio.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    # a stopped worker takes its heartbeat with it
    assert await redis.keys(HEARTBEAT_KEY_PREFIX + "*") == []
