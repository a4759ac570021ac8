"""Rate limits in Redis: fixed windows counted with INCR, shared by every process of an app.

Why not the ``limits`` library: its asynchronous Redis storage builds a client of its own from
a URI (coredis by default), while the apps already hold a configured ``redis.asyncio`` client
(timeouts, retry on a dropped connection) made in the serving lifecycle; and what sign-in
needs is small: count hits per key in a window, say when the window ends (``Retry-After``),
clear a key after a success. A fixed window is three commands in one MULTI:
``SET key 0 EX window NX`` (start the window once), ``INCR key``, ``TTL key``.

An attempt is counted *before* it is judged (never "check, then count after"): a burst of
concurrent requests each gets its own count from INCR, so no more than the limit go through.
What turns out not to count (a right password) is taken back with ``undo``.

Per-address limits count an IPv4 client by its address and an IPv6 client by its /64 (a
host picks any address of its /64 at will): ``client_subject()``.

Keys hold a SHA-256 of what they count (an email, an address), never the value itself.

When Redis is down, the limiter **fails open**: the request goes on and a warning is logged.
Sign-in pages stay usable through a Redis outage; what protects accounts then is that magic
links go only to the address's owner and that argon2id makes each password guess slow.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from dataclasses import dataclass

from quart import request
from redis.asyncio import Redis
from redis.exceptions import RedisError

logger = logging.getLogger("rose_ash.rate_limit")
KEY_PREFIX = "rose_ash:rate:"
# DECR keeps the key's TTL; a missing key (its window ended) is not recreated at -1.
UNDO_SCRIPT = """
if (tonumber(redis.call('GET', KEYS[1])) or 0) > 0 then
    return redis.call('DECR', KEYS[1])
end
return 0
"""


@dataclass(frozen=True)
class RateLimit:
    """At most ``limit`` hits per ``window_seconds`` for each key, under ``name``."""

    name: str
    limit: int
    window_seconds: int


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    # Seconds until the window that refused ends (0 when allowed).
    retry_after: int = 0


ALLOWED = RateDecision(True)


def limit_key(rule: RateLimit, subject: str) -> str:
    digest = hashlib.sha256(subject.strip().lower().encode()).hexdigest()
    return f"{KEY_PREFIX}{rule.name}:{digest}"


class RateLimiter:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def hit(self, rule: RateLimit, subject: str) -> RateDecision:
        """Count one hit, then judge it: refused once the window has seen more than
        ``rule.limit`` (so of concurrent hits, exactly ``rule.limit`` are allowed)."""
        key = limit_key(rule, subject)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.set(key, 0, ex=rule.window_seconds, nx=True)
                pipe.incr(key)
                pipe.ttl(key)
                _, count, ttl = await pipe.execute()
        except RedisError as exc:
            logger.warning("rate limit %s not checked, Redis failed: %r", rule.name, exc)
            return ALLOWED
        return self._decide(rule, int(count), int(ttl))

    async def check(self, rule: RateLimit, subject: str) -> RateDecision:
        """Whether the window is already full (counts nothing). Only for limits whose hits are
        counted afterwards, when a request turns out to count (the inbox's unverified POSTs:
        only refusals count); an attempt itself is limited with ``hit``."""
        key = limit_key(rule, subject)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.get(key)
                pipe.ttl(key)
                raw, ttl = await pipe.execute()
        except RedisError as exc:
            logger.warning("rate limit %s not checked, Redis failed: %r", rule.name, exc)
            return ALLOWED
        count = int(raw) if raw is not None else 0
        return self._decide(rule, count + 1, int(ttl))

    async def reset(self, rule: RateLimit, subject: str) -> None:
        """Forget the key's hits (e.g. failed passwords once the right one is given)."""
        try:
            await self.redis.delete(limit_key(rule, subject))
        except RedisError as exc:
            logger.warning("rate limit %s not reset, Redis failed: %r", rule.name, exc)

    async def undo(self, rule: RateLimit, subject: str) -> None:
        """Take back one hit (an attempt that turned out not to count, e.g. a right password).

        Only a key that still exists is decremented: one that expired meanwhile is not made
        again without an expiry."""
        try:
            await self.redis.eval(UNDO_SCRIPT, 1, limit_key(rule, subject))
        except RedisError as exc:
            logger.warning("rate limit %s not undone, Redis failed: %r", rule.name, exc)

    @staticmethod
    def _decide(rule: RateLimit, count: int, ttl: int) -> RateDecision:
        if count <= rule.limit:
            return ALLOWED
        # TTL is -1 only if the key lost its expiry somehow: wait a whole window then.
        return RateDecision(False, ttl if ttl > 0 else rule.window_seconds)


def describe_wait(decision: RateDecision) -> str:
    """How long a refused client is to wait, in whole minutes rounded up ("1 minute")."""
    minutes = max(1, -(-decision.retry_after // 60))
    return f"{minutes} minute{'s' * (minutes != 1)}"


def client_ip() -> str:
    """The address of the client of this request.

    Behind the edge proxy (Caddy, which replaces any X-Forwarded-For a client sends with the
    address it saw), the peer is a private or loopback address and the last X-Forwarded-For
    entry is the client's. From any other peer the header is ignored, so a client talking to
    an app directly cannot choose its address.
    """
    peer = request.remote_addr or ""
    forwarded = request.headers.get("X-Forwarded-For", "")
    if forwarded and _is_internal(peer):
        last = forwarded.split(",")[-1].strip()
        if _is_address(last):
            return last
    return peer


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_internal(value: str) -> bool:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return False
    return address.is_private or address.is_loopback


def subject_of_address(address: str) -> str:
    """What per-address limits count for ``address``: an IPv4 address itself (also when
    written IPv4-mapped), an IPv6 address's /64 network; anything else as it is."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


def client_subject() -> str:
    """The subject of this request's client for per-address limits (see subject_of_address)."""
    return subject_of_address(client_ip())
