"""The apps' Redis clients: two stores, and a memo of the last failure of each.

Two stores, because one eviction policy cannot suit both kinds of keys:

- the **cache** (``REDIS_URL``; ``AppState.redis``): whole pages and their purge markers
  (shared.infrastructure.page_cache), fragments, their purge markers and refresh locks
  (shared.infrastructure.fragment_cache). Anything here may be evicted when memory runs out:
  a lost entry is rendered again. In the Swarm stack it runs with ``volatile-lru``.
- the **state** (``REDIS_STATE_URL``, the cache's server when unset; ``AppState.state_redis``):
  rate-limit counters (shared.infrastructure.rate_limit), pending OAuth sign-ins (the PKCE
  verifier and nonce, shared.infrastructure.oauth), the grant cache whose purges end a
  revoked sign-in (shared.infrastructure.grant_cache) and the worker's heartbeats. Evicting
  these would reset a rate limit, break a sign-in in progress or bring back a revoked grant's
  "active" answer, and visitors can fill the cache at will (every page they request), so the
  state lives where cache pressure cannot reach it: a server run with ``noeviction`` (it
  refuses writes when full instead of dropping keys; every key here has a TTL).

The failure memo. A hung Redis (a paused host: connections open, nothing answers) would cost
every page its timeouts. After a failure (a refused or lost connection, a socket timeout, or
a caller's own deadline: ``record_redis_failure``), each client is left alone for
``Settings.redis_failure_memo_seconds``: every command fails at once with
``RedisUnavailableError`` (a ``RedisError``, which every caller already survives: pages render
without the cache, rate limits fail open, the grant is read from PostgreSQL), without a
connection attempt. After that time one command probes the server (a half-open circuit; the
others still fail at once until its answer): an answer clears the memo, a failure renews it.
"""

from __future__ import annotations

import time
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

SOCKET_TIMEOUT_SECONDS = 2.0
# How long past the socket timeout a probe may take before another command probes instead.
PROBE_GRACE_SECONDS = 0.5
MEMO_KWARG = "failure_memo"


class RedisUnavailableError(RedisError):
    """Redis failed moments ago: the command was not sent (see the failure memo above)."""


class FailureMemo:
    """Whether a server failed moments ago, and which caller probes it when that time is up."""

    def __init__(self, seconds: float, probe_seconds: float) -> None:
        self.seconds = seconds
        self.probe_seconds = probe_seconds
        self.failing_until = 0.0
        self.prober: object | None = None
        self.failed = False

    def allows(self, caller: object) -> bool:
        """Whether ``caller`` may talk to the server now; the first caller after the memo's
        time becomes the probe (until its answer or ``probe_seconds``)."""
        if not self.failed or caller is self.prober:
            return True
        now = time.monotonic()
        if now < self.failing_until:
            return False
        self.prober = caller
        self.failing_until = now + self.probe_seconds
        return True

    def record_failure(self) -> None:
        if self.seconds <= 0:
            return  # the memo is switched off: every command tries the server
        self.failed = True
        self.prober = None
        self.failing_until = time.monotonic() + self.seconds

    def record_success(self) -> None:
        if self.failed:
            self.failed = False
            self.prober = None
            self.failing_until = 0.0


class GuardedConnectionMixin:
    """A redis-py connection that consults its pool's FailureMemo before each exchange and
    tells it how the exchange went."""

    failure_memo: FailureMemo

    def __init__(self, *, failure_memo: FailureMemo, **kwargs: Any) -> None:
        self.failure_memo = failure_memo
        super().__init__(**kwargs)

    def check_allowed(self) -> None:
        if not self.failure_memo.allows(self):
            raise RedisUnavailableError("Redis failed moments ago; not tried again yet")

    async def connect(self) -> None:
        self.check_allowed()
        try:
            await super().connect()  # type: ignore[misc]
        except (RedisConnectionError, RedisTimeoutError, OSError):
            self.failure_memo.record_failure()
            raise

    async def send_packed_command(self, *args: Any, **kwargs: Any) -> None:
        self.check_allowed()
        try:
            await super().send_packed_command(*args, **kwargs)  # type: ignore[misc]
        except (RedisConnectionError, RedisTimeoutError, OSError):
            self.failure_memo.record_failure()
            raise

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            response = await super().read_response(*args, **kwargs)  # type: ignore[misc]
        except (RedisConnectionError, RedisTimeoutError, OSError):
            self.failure_memo.record_failure()
            raise
        self.failure_memo.record_success()
        return response


class GuardedConnection(GuardedConnectionMixin, Connection):
    pass


class GuardedSSLConnection(GuardedConnectionMixin, SSLConnection):
    pass


class GuardedUnixConnection(GuardedConnectionMixin, UnixDomainSocketConnection):
    pass


GUARDED_CLASSES: dict[type[AbstractConnection], type[AbstractConnection]] = {
    Connection: GuardedConnection,
    SSLConnection: GuardedSSLConnection,
    UnixDomainSocketConnection: GuardedUnixConnection,
}


def open_redis(url: str, *, failure_memo_seconds: float) -> Redis:
    """A client of the Redis at ``url`` (redis://, rediss://, unix://) with its failure memo.
    Connections are made on first use."""
    client = Redis.from_url(
        url,
        socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
        socket_timeout=SOCKET_TIMEOUT_SECONDS,
        health_check_interval=15,
        # One quick retry on a dropped connection: a restarted Redis is reconnected to by the
        # next command instead of failing it (RedisUnavailableError is not retried).
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=1),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    pool = client.connection_pool
    pool.connection_class = GUARDED_CLASSES[pool.connection_class]
    pool.connection_kwargs[MEMO_KWARG] = FailureMemo(
        failure_memo_seconds, SOCKET_TIMEOUT_SECONDS + PROBE_GRACE_SECONDS
    )
    return client


def failure_memo_of(redis: Redis) -> FailureMemo | None:
    memo = redis.connection_pool.connection_kwargs.get(MEMO_KWARG)
    return memo if isinstance(memo, FailureMemo) else None


async def ping_past_memo(redis: Redis) -> None:
    """PING the server on a connection of its own, whatever the failure memo says (readiness
    must tell how Redis is now, not how it was); an answer clears the memo."""
    pool = redis.connection_pool
    connection = pool.connection_class(**{**pool.connection_kwargs, MEMO_KWARG: FailureMemo(0, 0)})
    try:
        await connection.send_command("PING")
        await connection.read_response()
    finally:
        await connection.disconnect()
    memo = failure_memo_of(redis)
    if memo is not None:
        memo.record_success()


def record_redis_failure(redis: Redis) -> None:
    """A caller's own deadline passed while waiting for ``redis``: remember it as failing."""
    memo = failure_memo_of(redis)
    if memo is not None:
        memo.record_failure()
