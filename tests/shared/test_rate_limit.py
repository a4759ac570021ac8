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
    RateLimit,
    RateLimiter,
    client_ip,
    client_subject,
    limit_key,
    subject_of_address,
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


async def test_of_concurrent_hits_exactly_the_limit_pass(redis: aioredis.Redis) -> None:
    """Each hit is counted before it is judged, so a burst cannot slip in under the limit."""
    limiter = RateLimiter(redis)
    decisions = await asyncio.gather(*(limiter.hit(RULE, "ann@example.org") for _ in range(20)))
    assert [decision.allowed for decision in decisions].count(True) == RULE.limit


async def test_undo_takes_back_one_hit_and_never_makes_a_key(redis: aioredis.Redis) -> None:
    limiter = RateLimiter(redis)
    for _ in range(3):
        await limiter.hit(RULE, "ann@example.org")
    await limiter.undo(RULE, "ann@example.org")
    assert (await limiter.hit(RULE, "ann@example.org")).allowed is True  # the 3rd again
    assert (await limiter.hit(RULE, "ann@example.org")).allowed is False
    assert 0 < await redis.ttl(limit_key(RULE, "ann@example.org")) <= 60  # the window's TTL kept
    # No key (its window ended): nothing is made, certainly not a key without expiry.
    await limiter.undo(RULE, "bob@example.org")
    assert await redis.exists(limit_key(RULE, "bob@example.org")) == 0


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
        await limiter.undo(RULE, "ann@example.org")
        await limiter.reset(RULE, "ann@example.org")
    assert len([r for r in caplog.records if "Redis failed" in r.getMessage()]) == 3
    await down.aclose()


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


@pytest.mark.parametrize(
    ("address", "subject"),
    [
        ("203.0.113.9", "203.0.113.9"),  # an IPv4 client: its address
        ("::ffff:203.0.113.9", "203.0.113.9"),  # the same client, written IPv4-mapped
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),  # an IPv6 client: its /64
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:0DB8:0001:0002::7", "2001:db8:1:2::/64"),  # however it is written
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),  # the next network is another client
        ("<local>", "<local>"),  # no address (a test client): as it is
    ],
)
def test_subject_of_address(address: str, subject: str) -> None:
    assert subject_of_address(address) == subject


async def test_client_subject_is_the_clients_network() -> None:
    app = Quart(__name__)
    headers = {"Remote-Addr": "10.0.1.5", "X-Forwarded-For": "2001:db8:5:6:7:8:9:a"}
    async with app.test_request_context("/", headers=headers):
        assert client_subject() == "2001:db8:5:6::/64"
