"""Readiness follows PostgreSQL and Redis; the app survives their restarts without one of its own.

These tests run an app against servers of their own (an embedded PostgreSQL cluster and an
embedded Redis) so that they can stop and restart them without touching the shared ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.connection import AbstractConnection

from federation.app import create_app as create_federation_app
from shared.config import PageCacheSettings, Settings, load_settings
from shared.embedded import EmbeddedPostgres, EmbeddedRedis
from shared.migrations import do_upgrade
from tests.conftest import TEST_SECRET_KEY, serving
from tests.shared.test_page_cache import with_layout

RESILIENCE_DATABASE = "rose_ash_resilience"


@pytest.fixture(scope="module")
async def resilience_database(scratch_postgres: EmbeddedPostgres) -> str:
    scratch_postgres.create_database(RESILIENCE_DATABASE, replace=True)
    url = scratch_postgres.url(RESILIENCE_DATABASE)
    await asyncio.to_thread(do_upgrade, url)
    return url


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def resilience_settings(resilience_database: str, own_redis: EmbeddedRedis) -> Settings:
    return load_settings(
        env="test",
        database_url=resilience_database,
        redis_url=own_redis.url(0),
        secret_key=TEST_SECRET_KEY,
        readiness_timeout_seconds=1.0,
    )


async def test_readyz_turns_503_while_redis_is_down_and_back_without_restart(
    resilience_settings: Settings, own_redis: EmbeddedRedis
) -> None:
    async with serving(create_federation_app(resilience_settings)) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert (await ready.get_json())["checks"] == {"postgres": "ok", "redis": "ok"}

        await asyncio.to_thread(own_redis.stop)
        down = await client.get("/readyz")
        assert down.status_code == 503
        body = await down.get_json()
        assert body["status"] == "unavailable"
        assert body["checks"]["postgres"] == "ok"
        assert body["checks"]["redis"].startswith("error: ")
        # liveness is not readiness: the process still answers
        assert (await client.get("/healthz")).status_code == 200

        await asyncio.to_thread(own_redis.start)
        back = await client.get("/readyz")
        assert back.status_code == 200, await back.get_data(as_text=True)


async def test_readyz_turns_503_while_postgres_is_down(
    resilience_settings: Settings, scratch_postgres: EmbeddedPostgres
) -> None:
    async with serving(create_federation_app(resilience_settings)) as client:
        assert (await client.get("/readyz")).status_code == 200
        await asyncio.to_thread(scratch_postgres.halt)
        try:
            down = await client.get("/readyz")
            assert down.status_code == 503
            assert (await down.get_json())["checks"]["postgres"].startswith("error: ")
        finally:
            await asyncio.to_thread(scratch_postgres.resume)
        assert (await client.get("/readyz")).status_code == 200


async def test_the_first_request_after_a_postgresql_restart_succeeds(
    resilience_settings: Settings, scratch_postgres: EmbeddedPostgres
) -> None:
    async with serving(create_federation_app(resilience_settings)) as client:
        # Warm the pool so that it holds connections the restart will cut.
        first = await asyncio.gather(*(client.get("/") for _ in range(3)))
        assert [response.status_code for response in first] == [200, 200, 200]

        await asyncio.to_thread(scratch_postgres.restart)

        after = await client.get("/")
        assert after.status_code == 200
        assert "Members (0)" in await after.get_data(as_text=True)


# Within this a page must answer while PostgreSQL hangs: the settings below sum to ~2.5 s.
HUNG_DATABASE_BOUND_SECONDS = 15.0


async def test_a_page_answers_503_while_postgresql_hangs_and_200_once_it_answers(
    resilience_settings: Settings, scratch_postgres: EmbeddedPostgres
) -> None:
    settings = resilience_settings.model_copy(
        update={
            "db_connect_timeout_seconds": 1.0,
            "db_pool_timeout_seconds": 0.5,
            "db_statement_timeout_ms": 500,
            "page_cache": PageCacheSettings(enabled=False),  # every request needs PostgreSQL
        }
    )
    async with serving(create_federation_app(settings)) as client:
        warm = await asyncio.gather(*(client.get("/") for _ in range(3)))
        assert [response.status_code for response in warm] == [200, 200, 200]

        await asyncio.to_thread(scratch_postgres.freeze)
        try:
            pages = await asyncio.wait_for(
                asyncio.gather(*(client.get("/") for _ in range(4))),
                HUNG_DATABASE_BOUND_SECONDS,
            )
        finally:
            await asyncio.to_thread(scratch_postgres.thaw)
        for page in pages:
            assert page.status_code == 503
            assert page.headers["Retry-After"].isdigit()
            assert "Service unavailable" in await page.get_data(as_text=True)

        back = await asyncio.wait_for(client.get("/"), HUNG_DATABASE_BOUND_SECONDS)
        assert back.status_code == 200
        assert "Members (0)" in await back.get_data(as_text=True)


@pytest.fixture
def redis_sends(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every command written to any Redis connection of this process (counted, then sent)."""
    sent: list[bytes] = []
    send = AbstractConnection.send_packed_command

    async def counting_send(
        self: AbstractConnection, command: Any, check_health: bool = True
    ) -> None:
        sent.append(command if isinstance(command, bytes) else b"".join(command))
        await send(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting_send)
    return sent


async def test_pages_leave_a_hung_redis_alone_for_a_moment_then_probe_and_use_it_again(
    resilience_settings: Settings, own_redis: EmbeddedRedis, redis_sends: list[bytes]
) -> None:
    memo_seconds = 3.0
    settings = resilience_settings.model_copy(update={"redis_failure_memo_seconds": memo_seconds})
    async with serving(with_layout(create_federation_app)(settings)) as client:
        assert (await client.get("/")).headers["X-Page-Cache"] == "miss"
        assert (await client.get("/")).headers["X-Page-Cache"] == "hit"

        await asyncio.to_thread(own_redis.freeze)
        try:
            first = await client.get("/")  # waits out the cache's timeout once
            assert first.status_code == 200
            redis_sends.clear()
            while_away = [await client.get("/") for _ in range(5)]
            assert [page.status_code for page in while_away] == [200] * 5
            assert "Members (0)" in await while_away[-1].get_data(as_text=True)
            assert redis_sends == []  # rendered without trying Redis at all
        finally:
            await asyncio.to_thread(own_redis.thaw)

        await asyncio.sleep(memo_seconds)
        outcomes = []
        for _ in range(20):  # the first request probes; the cache serves again
            outcomes.append((await client.get("/")).headers["X-Page-Cache"])
            if outcomes[-1] == "hit":
                break
        assert outcomes[-1] == "hit", outcomes
        assert redis_sends
