"""The grant status cache: Redis for at most 60 s, purged on revocation, PostgreSQL when
Redis is down."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from sqlalchemy import func, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import Settings
from shared.infrastructure.grant_cache import (
    GRANT_STATUS_TTL_SECONDS,
    check_grant_active,
    do_purge_grants,
    grant_cache_key,
)
from shared.models.identity import OAuthGrant
from shared.services.identity.oauth_clients import FIRST_PARTY_SCOPE, do_sync_first_party_clients
from shared.services.identity.sso import SqlSsoService
from shared.services.identity.users import SqlUserService


@pytest.fixture
async def grant_id(session: AsyncSession, settings: Settings) -> int:
    await do_sync_first_party_clients(session, settings)
    user = await SqlUserService(session).create_user("cache@example.org")
    started = await SqlSsoService(session).do_start_session(user.id)
    grant = OAuthGrant(
        user_id=user.id,
        client_id="blog",
        sso_session_id=started.session.id,
        scope=FIRST_PARTY_SCOPE,
    )
    session.add(grant)
    await session.commit()
    return grant.id


async def revoke(session: AsyncSession, grant_id: int) -> None:
    await session.execute(
        update(OAuthGrant).where(OAuthGrant.id == grant_id).values(revoked_at=func.now())
    )
    await session.commit()


@pytest.fixture
async def broken_redis() -> AsyncIterator[aioredis.Redis]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = aioredis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
    yield client
    await client.aclose()


def test_the_cache_window_is_at_most_a_minute() -> None:
    assert 0 < GRANT_STATUS_TTL_SECONDS <= 60


async def test_status_is_cached_for_at_most_60_seconds(
    session: AsyncSession, redis: aioredis.Redis, grant_id: int
) -> None:
    sso = SqlSsoService(session)
    assert await check_grant_active(redis, sso, grant_id) is True
    key = grant_cache_key(grant_id)
    assert await redis.get(key) == b"1"
    assert 0 < await redis.ttl(key) <= 60


async def test_a_purge_makes_the_revocation_visible_at_once(
    session: AsyncSession, redis: aioredis.Redis, grant_id: int
) -> None:
    sso = SqlSsoService(session)
    assert await check_grant_active(redis, sso, grant_id)
    await revoke(session, grant_id)
    assert await check_grant_active(redis, sso, grant_id)  # the cached answer, until purged
    await do_purge_grants(redis, [grant_id])
    assert await redis.get(grant_cache_key(grant_id)) is None
    assert await check_grant_active(redis, sso, grant_id) is False
    assert await redis.get(grant_cache_key(grant_id)) == b"0"  # revoked is cached too


async def test_an_unknown_grant_is_not_active(session: AsyncSession, redis: aioredis.Redis) -> None:
    assert await check_grant_active(redis, SqlSsoService(session), 987654321) is False


async def test_postgresql_answers_when_redis_is_down(
    session: AsyncSession,
    redis: aioredis.Redis,
    broken_redis: aioredis.Redis,
    grant_id: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sso = SqlSsoService(session)
    assert await check_grant_active(redis, sso, grant_id)  # "active" cached in the real Redis
    await revoke(session, grant_id)
    with caplog.at_level(logging.WARNING, logger="rose_ash.grant_cache"):
        assert await check_grant_active(broken_redis, sso, grant_id) is False
        await do_purge_grants(broken_redis, [grant_id])  # logged, not raised
    messages = [record.getMessage() for record in caplog.records]
    assert any("reading grant" in m and "PostgreSQL" in m for m in messages)
    assert any("could not purge" in m for m in messages)
    assert await check_grant_active(None, sso, grant_id) is False  # not serving: database
