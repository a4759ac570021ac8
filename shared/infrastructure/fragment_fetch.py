"""Fetching other apps' fragments: concurrent, bounded in time, cached, never fatal.

- All fragments of a page are fetched at once (``fetch_all``), never one after another.
- One pooled httpx client per target app, created in the serving lifecycle; redirects are
  not followed; tests inject a transport per app (``FragmentFetcher.transports``).
- Each fetch is bounded by its type's timeout (``FragmentSettings.timeout_for``) with
  ``asyncio.wait_for``, so a hung app costs a page at most that long.
- Redis cache with a TTL per type; an expired copy is served at once (stale) while one
  background task (one process of all replicas, by a Redis lock) refreshes it.
- Single-flight: concurrent requests in a process for the same cold key share one fetch.
- A failed optional fragment renders its fallback; a failed required one makes the page
  raise ``RequiredFragmentError`` (a 503 page). With Redis down, fragments are fetched directly
  (and Redis is left alone for a moment: shared.infrastructure.redis_client's failure memo).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Literal
from urllib.parse import urlencode

import httpx
from markupsafe import Markup
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.config import FragmentSettings
from shared.infrastructure.fragment_cache import (
    CacheAddress,
    CachedFragment,
    fragment_cache_key,
    read_cached,
    take_refresh_lock,
    write_cached,
)
from shared.infrastructure.http import LocalhostTransport
from shared.infrastructure.internal_auth import build_signed_headers
from shared.infrastructure.metrics import observe_fragment_fetch, record_fragment_event
from shared.infrastructure.redis_client import RedisUnavailableError, record_redis_failure

logger = logging.getLogger("rose_ash.fragments")

Variant = Literal["compact", "full", "inline", "card"]
VARIANTS: tuple[Variant, ...] = ("compact", "full", "inline", "card")
Outcome = Literal["hit", "miss", "stale", "timeout", "error"]
FRAGMENT_PATH = "/internal/fragments/"
# A cache call slower than this counts as a failure of Redis (remembered by its client).
CACHE_TIMEOUT_SECONDS = 0.25


@dataclass(frozen=True)
class FragmentSpec:
    """A fragment a page wants: which app and type, for which container and variant.

    ``personalised`` fragments are fetched (and cached) for the signed-in member; ``required``
    ones take the page down with a 503 when they fail, optional ones render ``fallback``."""

    app: str
    type: str
    container: str | None = None
    variant: Variant = "full"
    personalised: bool = False
    required: bool = False
    fallback: str = ""

    def address(self, member_id: int | None) -> CacheAddress:
        return CacheAddress(
            app=self.app,
            type=self.type,
            container=self.container,
            variant=self.variant,
            member_id=member_id if self.personalised else None,
        )


@dataclass(frozen=True)
class FragmentResult:
    """A fragment ready to render: its HTML (or its fallback) and how it was obtained."""

    spec: FragmentSpec
    html: Markup
    outcome: Outcome

    @property
    def ok(self) -> bool:
        return self.outcome in ("hit", "miss", "stale")

    def __html__(self) -> str:
        return str(self.html)

    def __str__(self) -> str:
        return str(self.html)


# How long past its timeout a probe of a failed app may take before others try too.
PROBE_GRACE_SECONDS = 0.5


class FragmentFetchError(Exception):
    """An upstream fetch failed: ``outcome`` is "timeout" or "error"."""

    def __init__(
        self, message: str, outcome: Literal["timeout", "error"], *, remembered: bool = False
    ) -> None:
        super().__init__(message)
        self.outcome: Literal["timeout", "error"] = outcome
        # True when no request was made: the app failed moments ago (failure memo).
        self.remembered = remembered


class RequiredFragmentError(Exception):
    """A fragment the page cannot do without failed: the page is answered 503."""

    def __init__(self, failed: list[FragmentResult]) -> None:
        names = ", ".join(f"{r.spec.app}/{r.spec.type} ({r.outcome})" for r in failed)
        super().__init__(f"required fragments failed: {names}")
        self.failed = failed


def query_params(address: CacheAddress) -> list[tuple[str, str]]:
    """The query string of a fragment request, sorted (it is signed as is)."""
    params = [("variant", address.variant)]
    if address.container is not None:
        params.append(("container", address.container))
    if address.member_id is not None:
        params.append(("member", str(address.member_id)))
    return sorted(params)


def no_cookies_jar() -> CookieJar:
    """Fragment responses' cookies are never kept (nor sent back with the next fetch)."""
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


@dataclass
class FragmentFetcher:
    """What an app keeps for fetching fragments; lives in ``app.extensions``."""

    app_name: str
    settings: FragmentSettings
    secret: bytes
    base_urls: dict[str, str]
    get_redis: Callable[[], Redis | None]
    transports: dict[str, httpx.AsyncBaseTransport] = field(default_factory=dict)
    clients: dict[str, httpx.AsyncClient] = field(default_factory=dict)
    inflight: dict[str, asyncio.Task[str]] = field(default_factory=dict)
    background: set[asyncio.Task[None]] = field(default_factory=set)
    # Fragments whose app just failed: until when, and how. While an app is down or hanging,
    # pages render the fallback at once instead of each waiting out the timeout again.
    failing_until: dict[str, tuple[float, Literal["timeout", "error"]]] = field(
        default_factory=dict
    )

    # -- lifecycle ---------------------------------------------------------------------------

    def open_clients(self) -> None:
        for app in self.base_urls:
            self.clients[app] = self.open_client(app)

    def open_client(self, app: str) -> httpx.AsyncClient:
        """The pooled client for ``app``: its injected transport, else the *.localhost-aware
        one; redirects are not followed and cookies never kept."""
        limits = httpx.Limits(
            max_connections=self.settings.max_connections_per_app,
            max_keepalive_connections=self.settings.max_connections_per_app,
        )
        client = httpx.AsyncClient(
            base_url=self.base_urls[app],
            transport=self.transports.get(app) or LocalhostTransport(limits=limits),
            follow_redirects=False,
            timeout=self.settings.default_timeout_ms / 1000,
        )
        client.cookies = no_cookies_jar()  # (passed to the constructor, the jar is copied)
        return client

    async def close_clients(self) -> None:
        for task in list(self.background):
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        for client in self.clients.values():
            await client.aclose()
        self.clients.clear()

    # -- fetching ----------------------------------------------------------------------------

    async def fetch_all(
        self, specs: Sequence[FragmentSpec], member_id: int | None
    ) -> list[FragmentResult]:
        """Every fragment of ``specs`` at once; raise RequiredFragmentError when a required
        one failed (after all of them finished)."""
        results = await asyncio.gather(*(self.fetch_one(spec, member_id) for spec in specs))
        failed = [result for result in results if not result.ok and result.spec.required]
        if failed:
            raise RequiredFragmentError(failed)
        return list(results)

    async def fetch_one(self, spec: FragmentSpec, member_id: int | None) -> FragmentResult:
        address = spec.address(member_id)
        try:
            html, outcome = await self.get_html(address)
        except FragmentFetchError as exc:
            # One warning per failed fetch; the requests the failure memo answers meanwhile
            # only count in the metrics (a warning each would flood the log of a busy page).
            log = logger.debug if exc.remembered else logger.warning
            log("fragment %s/%s failed: %s", spec.app, spec.type, exc)
            if not exc.remembered:
                until = time.monotonic() + self.settings.failure_memo_seconds
                self.failing_until[fragment_cache_key(address)] = (until, exc.outcome)
            return FragmentResult(spec, Markup(spec.fallback), exc.outcome)  # noqa: S704
        except Exception:  # a fragment never takes the page down with it
            logger.exception("fragment %s/%s failed unexpectedly", spec.app, spec.type)
            self.record(address, "error")
            return FragmentResult(spec, Markup(spec.fallback), "error")  # noqa: S704
        return FragmentResult(spec, Markup(html), outcome)  # noqa: S704  (our apps' HTML)

    async def get_html(self, address: CacheAddress) -> tuple[str, Outcome]:
        key = fragment_cache_key(address)
        redis = self.get_redis()
        cached: CachedFragment | None = None
        if redis is not None:
            try:
                cached = await asyncio.wait_for(read_cached(redis, key), CACHE_TIMEOUT_SECONDS)
            except (RedisError, TimeoutError) as exc:
                self.mark_cache_down(exc)
                redis = None
        if cached is not None:
            if cached.is_fresh(self.settings.ttl_for(address.type)):
                self.record(address, "hit")
                return cached.html, "hit"
            self.record(address, "stale")
            self.schedule_refresh(address, key)
            return cached.html, "stale"
        failing = self.failing_until.get(key)
        probing = False
        if failing is not None:
            until, outcome = failing
            if time.monotonic() < until:
                self.record(address, outcome)
                raise FragmentFetchError(
                    f"failed {outcome} moments ago; retried after {until - time.monotonic():.1f} s",
                    outcome,
                    remembered=True,
                )
            # This request tries the app again (a half-open circuit): until it has its answer
            # the others keep showing the fallback instead of all waiting out the timeout.
            probe_seconds = self.settings.timeout_for(address.type) + PROBE_GRACE_SECONDS
            self.failing_until[key] = (time.monotonic() + probe_seconds, outcome)
            probing = True
        self.record(address, "miss")
        html = await asyncio.shield(self.join_fetch(address, key, cache=redis is not None))
        if probing:
            self.failing_until.pop(key, None)  # the app answers again
        return html, "miss"

    def join_fetch(self, address: CacheAddress, key: str, *, cache: bool) -> asyncio.Task[str]:
        """The fetch of ``key`` in progress in this process, started if there is none."""
        task = self.inflight.get(key)
        if task is None:
            task = asyncio.create_task(self.fetch_and_store(address, cache=cache))
            self.inflight[key] = task
            task.add_done_callback(lambda done: self.forget_fetch(key, done))
        return task

    def forget_fetch(self, key: str, task: asyncio.Task[str]) -> None:
        if self.inflight.get(key) is task:
            del self.inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved: waiters (if any) have had it; nobody else needs it

    def schedule_refresh(self, address: CacheAddress, key: str) -> None:
        if key in self.inflight:
            return
        refresh = asyncio.create_task(self.refresh(address, key))
        self.background.add(refresh)
        refresh.add_done_callback(self.background.discard)

    async def refresh(self, address: CacheAddress, key: str) -> None:
        redis = self.get_redis()
        seconds = self.settings.timeout_for(address.type) + 1
        try:
            if redis is not None and not await asyncio.wait_for(
                take_refresh_lock(redis, key, seconds), CACHE_TIMEOUT_SECONDS
            ):
                return  # another process is refreshing it
        except (RedisError, TimeoutError) as exc:
            self.mark_cache_down(exc)
        try:
            await self.join_fetch(address, key, cache=True)
        except Exception as exc:  # logged; the stale copy stays until it is replaced
            logger.warning("refresh of fragment %s failed: %r", key, exc)

    async def fetch_and_store(self, address: CacheAddress, *, cache: bool) -> str:
        started_at = time.time()
        html = await self.request_upstream(address)
        redis = self.get_redis()
        if cache and redis is not None:
            keep_seconds = self.settings.ttl_for(address.type) + self.settings.stale_seconds
            fragment = CachedFragment(html=html, fetched_at=time.time())
            try:
                await asyncio.wait_for(
                    write_cached(
                        redis,
                        address,
                        fragment,
                        keep_seconds=keep_seconds,
                        started_at=started_at,
                    ),
                    CACHE_TIMEOUT_SECONDS,
                )
            except (RedisError, TimeoutError) as exc:
                self.mark_cache_down(exc)
        return html

    def mark_cache_down(self, error: BaseException) -> None:
        redis = self.get_redis()
        if isinstance(error, TimeoutError) and redis is not None:
            record_redis_failure(redis)
        log = logger.debug if isinstance(error, RedisUnavailableError) else logger.warning
        log("fragment cache unavailable, fetching directly: %r", error)

    async def request_upstream(self, address: CacheAddress) -> str:
        """GET the fragment from its app, signed, within its type's timeout."""
        client = self.clients.get(address.app)
        if client is None:
            raise FragmentFetchError(f"no client for app {address.app!r}", "error")
        timeout = self.settings.timeout_for(address.type)
        path = FRAGMENT_PATH + address.type
        query = urlencode(query_params(address))
        headers = build_signed_headers(self.secret, "GET", path, query)
        headers["Accept"] = "text/html"
        started = time.perf_counter()
        try:
            response = await asyncio.wait_for(
                client.get(f"{path}?{query}", headers=headers, timeout=timeout), timeout
            )
        except (TimeoutError, httpx.TimeoutException) as exc:
            self.record(address, "timeout")
            raise FragmentFetchError(f"no answer within {timeout:.3f} s", "timeout") from exc
        except httpx.HTTPError as exc:
            self.record(address, "error")
            raise FragmentFetchError(f"{type(exc).__name__}: {exc}", "error") from exc
        finally:
            observe_fragment_fetch(self.app_name, address.type, time.perf_counter() - started)
        if response.status_code != 200:
            self.record(address, "error")
            raise FragmentFetchError(f"answered {response.status_code}", "error")
        return response.text

    def record(self, address: CacheAddress, outcome: Outcome) -> None:
        record_fragment_event(self.app_name, address.type, outcome)
