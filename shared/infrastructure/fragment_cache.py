"""The Redis cache of fetched fragments.

One key per fragment query: ``rose_ash:fragment:<app>:<type>:<container digest>:<variant>:
<member or "-">``. A personalised fragment is keyed by its member, so one member's copy is
never served to another. An entry holds the HTML and when it was fetched; Redis keeps it for
TTL + stale window, and the reader decides whether it is fresh (age below the TTL) or stale.

A purge deletes the matching keys at once and records when it happened; a fetch that started
before the purge does not write its (older) answer back. Every function raises RedisError and
leaves it to the caller to carry on without the cache.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

from redis.asyncio import Redis

KEY_PREFIX = "rose_ash:fragment:"
PURGED_PREFIX = "rose_ash:fragment-purged:"
LOCK_PREFIX = "rose_ash:fragment-refresh:"
ANONYMOUS = "-"


@dataclass(frozen=True)
class CacheAddress:
    """Which fragment a cache entry is for (a fragment query, member resolved)."""

    app: str
    type: str
    container: str | None
    variant: str
    member_id: int | None


@dataclass(frozen=True)
class CachedFragment:
    html: str
    fetched_at: float

    def is_fresh(self, ttl_seconds: int, now: float | None = None) -> bool:
        return ((time.time() if now is None else now) - self.fetched_at) < ttl_seconds


def container_digest(container: str | None) -> str:
    if container is None:
        return ANONYMOUS
    return hashlib.sha256(container.encode()).hexdigest()[:16]


def member_part(member_id: int | None) -> str:
    return ANONYMOUS if member_id is None else str(member_id)


def fragment_cache_key(address: CacheAddress) -> str:
    return (
        f"{KEY_PREFIX}{address.app}:{address.type}:{container_digest(address.container)}:"
        f"{address.variant}:{member_part(address.member_id)}"
    )


def purged_key(app: str, fragment_type: str) -> str:
    return f"{PURGED_PREFIX}{app}:{fragment_type}"


async def read_cached(redis: Redis, key: str) -> CachedFragment | None:
    raw = await redis.get(key)
    if raw is None:
        return None
    try:
        document = json.loads(raw)
        return CachedFragment(html=str(document["html"]), fetched_at=float(document["at"]))
    except (ValueError, KeyError, TypeError):
        return None  # unreadable: treated as missing, overwritten by the next fetch


async def write_cached(
    redis: Redis,
    address: CacheAddress,
    fragment: CachedFragment,
    *,
    keep_seconds: int,
    started_at: float,
) -> bool:
    """Store ``fragment`` unless its type was purged after its fetch started."""
    purged_at = await redis.get(purged_key(address.app, address.type))
    if purged_at is not None and float(purged_at) >= started_at:
        return False
    document = json.dumps({"html": fragment.html, "at": fragment.fetched_at})
    await redis.set(fragment_cache_key(address), document, ex=max(keep_seconds, 1))
    return True


async def take_refresh_lock(redis: Redis, key: str, seconds: float) -> bool:
    """True for the one process (of all replicas) that should refresh a stale ``key`` now."""
    taken = await redis.set(LOCK_PREFIX + key, b"1", nx=True, px=max(int(seconds * 1000), 1))
    return bool(taken)


async def do_purge_fragments(
    redis: Redis,
    app: str,
    fragment_type: str,
    *,
    container: str | None = None,
    member_id: int | None = None,
    remember_seconds: int = 3600,
) -> int:
    """Delete the cached copies of ``app``'s ``fragment_type`` (of one container and/or one
    member when given); returns how many were deleted."""
    await redis.set(purged_key(app, fragment_type), repr(time.time()), ex=remember_seconds)
    container_part = "*" if container is None else container_digest(container)
    member = "*" if member_id is None else member_part(member_id)
    pattern = f"{KEY_PREFIX}{app}:{fragment_type}:{container_part}:*:{member}"
    deleted = 0
    batch: list[bytes] = []
    async for key in redis.scan_iter(match=pattern, count=500):
        batch.append(key)
        if len(batch) >= 500:
            deleted += await redis.delete(*batch)
            batch = []
    if batch:
        deleted += await redis.delete(*batch)
    return int(deleted)
