"""Fixed-window rate limits in the real Redis: lockout, recovery, reset, failing open."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest
import redis.asyncio as aioredis
from quart import Quart
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from shared.infrastructure.rate_limit import (
    ALLOWED,
    RateDecision,
    RateLimit,
    RateLimiter,
    client_ip,
    limit_key,
    most_restrictive,
)

RULE = RateLimit("test-rule", limit=3, window_seconds=60)


async def test_hits_within_the_limit_pass_then_the_key_is_locked_out(
    redis: aioredis.Redis,
) -> None:
    limiter = RateLimiter(redis)
    for _ in range(3):
        assert await limiter.hit(RULE, "ann@example.org") == ALLOWED
    refused = await limiter.hit(RULE, "ANN@example.org ")  # the same subject, normalised
    assert refused.allowed is False
    assert 0 < refused.retry_after <= 60
    # Other subjects are counted apart.
    assert (await limiter.hit(RULE, "bob@example.org")).allowed is True


async def test_check_counts_nothing(redis: aioredis.Redis) -> None:
    limiter = RateLimiter(redis)
    for _ in range(5):
        assert (await limiter.check(RULE, "ann@example.org")).allowed is True
    for _ in range(3):
        await limiter.hit(RULE, "ann@example.org")
    decision = await limiter.check(RULE, "ann@example.org")
    assert decision.allowed is False
    assert decision.retry_after > 0


async def test_a_locked_out_key_recovers_when_its_window_ends(redis: aioredis.Redis) -> None:
    limiter = RateLimiter(redis)
    short = RateLimit("short", limit=1, window_seconds=1)
    assert (await limiter.hit(short, "x")).allowed is True
    assert (await limiter.hit(short, "x")).allowed is False
    await asyncio.sleep(1.2)
    assert (await limiter.hit(short, "x")).allowed is True


async def test_reset_forgets_the_hits(redis: aioredis.Redis) -> None:
    limiter = RateLimiter(redis)
    for _ in range(4):
        await limiter.hit(RULE, "ann@example.org")
    await limiter.reset(RULE, "ann@example.org")
    assert (await limiter.hit(RULE, "ann@example.org")).allowed is True


async def test_keys_hold_no_email_and_expire(redis: aioredis.Redis) -> None:
    await RateLimiter(redis).hit(RULE, "ann@example.org")
    keys = [key.decode() for key in await redis.keys("*")]
    assert keys == [limit_key(RULE, "ann@example.org")]
    assert "ann" not in keys[0]
    assert 0 < await redis.ttl(keys[0]) <= 60


async def test_redis_down_fails_open_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = aioredis.Redis(
        host="127.0.0.1", port=port, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    limiter = RateLimiter(down)
    with caplog.at_level(logging.WARNING, logger="rose_ash.rate_limit"):
        assert await limiter.hit(RULE, "ann@example.org") == ALLOWED
        assert await limiter.check(RULE, "ann@example.org") == ALLOWED
        await limiter.reset(RULE, "ann@example.org")
    assert len([r for r in caplog.records if "Redis failed" in r.getMessage()]) == 3
    await down.aclose()


def test_most_restrictive_waits_longest() -> None:
    assert most_restrictive([ALLOWED, ALLOWED]) == ALLOWED
    assert most_restrictive(
        [ALLOWED, RateDecision(False, 10), RateDecision(False, 30)]
    ) == RateDecision(False, 30)


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("127.0.0.1", None, "127.0.0.1"),
        ("10.0.1.5", "203.0.113.9", "203.0.113.9"),  # behind the edge proxy
        ("10.0.1.5", "1.1.1.1, 203.0.113.9", "203.0.113.9"),  # the proxy's entry counts
        ("10.0.1.5", "garbage", "10.0.1.5"),
        ("93.184.216.34", "203.0.113.9", "93.184.216.34"),  # a public peer cannot choose
    ],
)
async def test_client_ip(peer: str, forwarded: str | None, expected: str) -> None:
    app = Quart(__name__)
    # Quart's ASGI layer puts the peer's address (scope["client"]) in Remote-Addr.
    headers = {"Remote-Addr": peer} | ({"X-Forwarded-For": forwarded} if forwarded else {})
    async with app.test_request_context("/", headers=headers):
        assert client_ip() == expected
