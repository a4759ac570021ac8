"""Readiness follows PostgreSQL and Redis; the app survives their restarts without one of its own.

These tests run an app against servers of their own (an embedded PostgreSQL cluster and an
embedded Redis) so that they can stop and restart them without touching the shared ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from sqlalchemy.ext.asyncio import AsyncConnection

from blog.app import create_app as create_blog_app
from federation.app import create_app as create_federation_app
from shared.config import PageCacheSettings, Settings, load_settings
from shared.embedded import EmbeddedPostgres, EmbeddedRedis
from shared.infrastructure.context import get_state_redis
from shared.infrastructure.oauth import PENDING_KEY_PREFIX
from shared.infrastructure.page_cache import KEY_PREFIX as PAGE_KEY_PREFIX
from shared.infrastructure.rate_limit import KEY_PREFIX as RATE_KEY_PREFIX
from shared.infrastructure.rate_limit import RateLimit, RateLimiter
from shared.migrations import do_upgrade
from tests.conftest import TEST_SECRET_KEY, serving
from tests.shared.test_page_cache import with_layout
from tests.sso_support import FakeFederation, with_federation

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


def next_database(url: str) -> str:
    """The URL of the Redis database after ``url``'s on the same server (db 7 -> db 8)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    if "db" in query:
        query["db"] = str(int(query["db"]) + 1)
        return urlunsplit(parts._replace(query=urlencode(query)))
    return urlunsplit(parts._replace(path=f"/{int(parts.path.strip('/') or 0) + 1}"))


@pytest.fixture
async def state_redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(next_database(redis_url))
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


async def keys(redis: aioredis.Redis, prefix: str) -> list[bytes]:
    return [key async for key in redis.scan_iter(match=prefix + "*")]


async def test_what_must_not_be_evicted_lives_apart_from_the_cache(
    settings: Settings,
    connection: AsyncConnection,
    redis: aioredis.Redis,
    state_redis: aioredis.Redis,
    fake: FakeFederation,
) -> None:
    """Pages fill the cache (evictable); pending sign-ins and rate-limit counters go to the
    state store (REDIS_STATE_URL, never evicted), where cache pressure cannot drop them."""
    state_url = next_database(settings.redis_url)
    split = settings.model_copy(update={"redis_state_url": state_url})
    app = with_federation(with_layout(create_blog_app), fake)(split)
    async with serving(app, connection) as client:
        assert (await client.get("/")).headers["X-Page-Cache"] == "miss"
        assert (await client.get("/auth/login")).status_code == 302
        async with app.app_context():
            await RateLimiter(get_state_redis()).hit(RateLimit("probe", 5, 60), "someone")

    assert len(await keys(redis, PAGE_KEY_PREFIX)) == 1
    assert await keys(state_redis, PAGE_KEY_PREFIX) == []
    assert len(await keys(state_redis, PENDING_KEY_PREFIX)) == 1
    assert await keys(redis, PENDING_KEY_PREFIX) == []
    assert len(await keys(state_redis, RATE_KEY_PREFIX)) == 1
    assert await keys(redis, RATE_KEY_PREFIX) == []
