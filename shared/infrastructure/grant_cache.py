"""Whether an app's sign-in (an OAuth grant) still stands, cached in Redis for at most 60 s.

Every app checks its member's grant on each request. The answer is cached in the one Redis all
apps share, under one key per grant, so a purge (logout, back-channel logout, the "sso.logout"
outbox handler) is seen by every app at once, and a missed purge is outlived by the TTL.
When Redis fails the status is read from PostgreSQL (and a warning is logged): a Redis outage
slows sign-in checks down but never lets a revoked grant through.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.contracts.identity import SsoService

logger = logging.getLogger("rose_ash.grant_cache")

GRANT_STATUS_TTL_SECONDS = 60
GRANT_KEY_PREFIX = "rose_ash:grant:"
ACTIVE = b"1"
REVOKED = b"0"


def grant_cache_key(grant_id: int) -> str:
    return f"{GRANT_KEY_PREFIX}{grant_id}"


async def check_grant_active(redis: Redis | None, sso: SsoService, grant_id: int) -> bool:
    """True while the grant stands: from the cache if it answers, else from the database.

    A read from the database also records that the device is in use (its SSO session's
    last_seen_at), so a member active in the apps is not signed out for idling at federation;
    the cache makes that at most one write a minute per grant."""
    redis_up = redis is not None
    if redis is not None:
        try:
            cached = await redis.get(grant_cache_key(grant_id))
        except RedisError as exc:
            logger.warning(
                "grant cache unavailable, reading grant %s from PostgreSQL: %s", grant_id, exc
            )
            redis_up = False
        else:
            if cached is not None:
                return cached in (ACTIVE, ACTIVE.decode())
    status = await sso.get_grant_status(grant_id)
    active = status is not None and status.active
    if status is not None and active and status.sso_session_id is not None:
        await sso.do_touch_session(status.sso_session_id)
    if redis is not None and redis_up:
        try:
            await redis.set(
                grant_cache_key(grant_id),
                ACTIVE if active else REVOKED,
                ex=GRANT_STATUS_TTL_SECONDS,
            )
        except RedisError as exc:
            logger.warning("could not cache the status of grant %s: %s", grant_id, exc)
    return active


async def do_purge_grants(redis: Redis | None, grant_ids: Iterable[int]) -> None:
    """Drop the cached status of these grants, so every app reads the database next time.

    Call it after the revocation is committed (the outbox handler of "sso.logout" does; so do
    the apps' logout and back-channel logout). A failure is logged, not raised: the TTL ends a
    stale entry within a minute anyway."""
    keys = [grant_cache_key(grant_id) for grant_id in grant_ids]
    if not keys or redis is None:
        return
    try:
        await redis.delete(*keys)
    except RedisError as exc:
        logger.warning("could not purge cached grant status %s: %s", keys, exc)
