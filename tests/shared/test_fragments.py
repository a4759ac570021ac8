"""Fragments between the apps: signed /internal/ routes, the concurrent cached fetcher, metrics.

Two real apps talk over HTTP in process: "cart" serves fragment types, "blog" composes them
through its pooled client for cart, whose transport is httpx.ASGITransport(cart). Redis is the
test suite's real server (flushed per test). Every test is bounded by ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from urllib.parse import urlencode

import httpx
import pytest
import redis.asyncio as aioredis
from jinja2 import ChoiceLoader, DictLoader
from pydantic import SecretStr
from quart import Quart, render_template_string
from quart.typing import TestClientProtocol as QuartClient
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.config import FragmentSettings, Settings
from shared.infrastructure.context import get_state
from shared.infrastructure.factory import create_base_app
from shared.infrastructure.fragment_cache import (
    CachedFragment,
    do_purge_fragments,
    fragment_cache_key,
    write_cached,
)
from shared.infrastructure.fragments import (
    FragmentContext,
    FragmentSpec,
    add_layout_fragments,
    declare_fragment,
    do_purge_fragment,
    fetch_fragments,
    get_fetcher,
    render_composed,
)
from shared.infrastructure.internal_auth import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    build_signed_headers,
    canonical_query,
    get_internal_secret,
)
from shared.infrastructure.metrics import METRICS_REGISTRY
from tests.conftest import serving

BOUND = 10.0  # seconds any one test may take
TIMEOUT_MS = 200  # the configured timeout of the "slow" types
HEALTHY_TIMEOUT_MS = 5000
# A hung fragment must end at its timeout, not when the hang ends (BOUND): this margin
# absorbs a loaded machine's scheduling delays and still proves the timeout cut it off.
TIMEOUT_MARGIN_SECONDS = 1.5


@dataclass
class Upstream:
    """What the cart app's fragment handlers saw."""

    calls: Counter[str] = field(default_factory=Counter)
    contexts: list[FragmentContext] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: int = 0
    most_in_flight: int = 0


@dataclass
class Pair:
    blog: Quart
    cart: Quart
    blog_client: QuartClient
    cart_client: QuartClient
    upstream: Upstream


def fragment_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "fragments": FragmentSettings(
                # Healthy fragments get a generous timeout so a loaded test machine never
                # turns them into fallbacks; the "slow" ones hang until their timeout.
                default_timeout_ms=HEALTHY_TIMEOUT_MS,
                timeouts_ms={"slow": TIMEOUT_MS, "slow-*": TIMEOUT_MS},
                ttls_seconds={"counter": 60},
            )
        }
    )


def create_cart(settings: Settings, upstream: Upstream) -> Quart:
    app = create_base_app("cart", settings=settings)

    async def cart_mini(context: FragmentContext) -> str:
        upstream.calls["cart-mini"] += 1
        upstream.contexts.append(context)
        return f"<p>cart of member {context.member_id}</p>"

    async def counter(context: FragmentContext) -> str:
        upstream.calls["counter"] += 1
        upstream.contexts.append(context)
        upstream.in_flight += 1
        upstream.most_in_flight = max(upstream.most_in_flight, upstream.in_flight)
        try:
            await asyncio.sleep(0.05)  # long enough for concurrent requests to pile up
        finally:
            upstream.in_flight -= 1
        return f"<p>counter #{upstream.calls['counter']} {context.container} {context.variant}</p>"

    async def hang(context: FragmentContext) -> str:
        upstream.calls[context.type] += 1
        await asyncio.wait_for(upstream.release.wait(), BOUND)
        return "<p>too late</p>"

    async def broken(context: FragmentContext) -> str:
        upstream.calls["broken"] += 1
        raise RuntimeError("the cart is on fire")

    declare_fragment(app, "cart-mini", cart_mini, personalised=True)
    declare_fragment(app, "counter", counter)
    declare_fragment(app, "container-calendar", counter)
    declare_fragment(app, "slow", hang)
    declare_fragment(app, "slow-required", hang)
    declare_fragment(app, "broken", broken)
    return app


def create_blog(settings: Settings) -> Quart:
    app = create_base_app("blog", settings=settings)

    @app.get("/optional")
    async def optional_page() -> str:
        page = await fetch_fragments(
            {
                "slow": FragmentSpec("cart", "slow", fallback="<a href='/cart'>Cart</a>"),
                "counter": FragmentSpec("cart", "counter"),
            }
        )
        return await render_template_string(
            "<main>{{ fragments.slow }}|{{ fragments.counter }}</main>", fragments=page
        )

    @app.get("/required")
    async def required_page() -> str:
        page = await fetch_fragments(
            {
                "counter": FragmentSpec("cart", "counter"),
                "broken": FragmentSpec("cart", "broken", required=True),
            }
        )
        return await render_template_string("{{ fragments.broken }}", fragments=page)

    @app.get("/required-slow")
    async def required_slow_page() -> str:
        page = await fetch_fragments({"slow": FragmentSpec("cart", "slow-required", required=True)})
        return await render_template_string("{{ fragments.slow }}", fragments=page)

    @app.get("/template")
    async def template_page() -> str:
        # The view prefetches one spec; the template asks for it and for one more.
        await fetch_fragments({"c": FragmentSpec("cart", "counter", variant="card")})
        return await render_template_string(
            "{{ fragment('cart', 'counter', variant='card') }}|"
            "{{ fragment('cart', 'container-calendar', container='page:1', variant='inline') }}"
        )

    @app.get("/composed")
    async def composed_page() -> str:
        return await render_composed(
            "shell.html", {"counter": FragmentSpec("cart", "counter")}, title="composed"
        )

    add_layout_fragments(app, {"nav": FragmentSpec("cart", "container-calendar", "nav")})
    shell = "{{ title }}:{{ fragments.nav }}/{{ fragments.counter }}"
    app.jinja_loader = ChoiceLoader([DictLoader({"shell.html": shell}), app.jinja_loader])
    return app


@pytest.fixture
async def pair(
    settings: Settings, connection: AsyncConnection, redis: aioredis.Redis
) -> AsyncIterator[Pair]:
    configured = fragment_settings(settings)
    upstream = Upstream()
    cart = create_cart(configured, upstream)
    blog = create_blog(configured)
    async with AsyncExitStack() as stack:
        cart_client = await stack.enter_async_context(serving(cart, connection))
        get_fetcher(blog).transports["cart"] = httpx.ASGITransport(app=cart)
        blog_client = await stack.enter_async_context(serving(blog, connection))
        try:
            yield Pair(blog, cart, blog_client, cart_client, upstream)
        finally:
            upstream.release.set()  # let hung handlers finish


def signed(path: str, params: dict[str, str], *, secret: bytes, now: float | None = None) -> dict:
    return build_signed_headers(secret, "GET", path, urlencode(params), now=now)


def events(outcome: str, fragment_type: str, app: str = "blog") -> float:
    value = METRICS_REGISTRY.get_sample_value(
        "rose_ash_fragment_events_total", {"app": app, "type": fragment_type, "outcome": outcome}
    )
    return value or 0.0


async def settle(pair: Pair) -> None:
    """Wait for the blog's background refreshes."""
    fetcher = get_fetcher(pair.blog)
    while fetcher.background:
        await asyncio.gather(*fetcher.background, return_exceptions=True)


# ---------------------------------------------------------------------------------------------
# Signed internal routes


async def test_a_signed_request_gets_the_fragment(pair: Pair, settings: Settings) -> None:
    async with asyncio.timeout(BOUND):
        secret = get_internal_secret(settings)
        path = "/internal/fragments/cart-mini"
        params = {"variant": "compact", "member": "7", "container": "page:3"}
        response = await pair.cart_client.get(
            path, query_string=params, headers=signed(path, params, secret=secret)
        )
        assert response.status_code == 200
        assert await response.get_data(as_text=True) == "<p>cart of member 7</p>"
        assert response.headers["Cache-Control"] == "no-store"
        assert pair.upstream.contexts == [
            FragmentContext(type="cart-mini", variant="compact", container="page:3", member_id=7)
        ]


async def test_missing_wrong_expired_or_altered_signatures_get_404(
    pair: Pair, settings: Settings
) -> None:
    async with asyncio.timeout(BOUND):
        secret = get_internal_secret(settings)
        path = "/internal/fragments/cart-mini"
        params = {"variant": "full", "member": "1"}
        good = signed(path, params, secret=secret)
        cases: dict[str, tuple[dict[str, str], dict[str, str]]] = {
            "missing": ({}, params),
            "timestamp only": ({TIMESTAMP_HEADER: good[TIMESTAMP_HEADER]}, params),
            "wrong key": (signed(path, params, secret=b"not the internal secret"), params),
            "garbage": ({**good, SIGNATURE_HEADER: "0" * 64}, params),
            "expired": (signed(path, params, secret=secret, now=time.time() - 31), params),
            "from the future": (signed(path, params, secret=secret, now=time.time() + 31), params),
            "other member": (good, {"variant": "full", "member": "2"}),
            "other path": (signed("/internal/fragments/counter", params, secret=secret), params),
        }
        for case, (headers, query) in cases.items():
            response = await pair.cart_client.get(path, query_string=query, headers=headers)
            assert response.status_code == 404, case
        assert pair.upstream.calls["cart-mini"] == 0
        # Within the window, and with the query in another order, it is accepted.
        within = signed(path, params, secret=secret, now=time.time() - 25)
        reordered = {"member": "1", "variant": "full"}
        response = await pair.cart_client.get(path, query_string=reordered, headers=within)
        assert response.status_code == 200


async def test_unknown_types_and_bad_variants_are_refused(pair: Pair, settings: Settings) -> None:
    async with asyncio.timeout(BOUND):
        secret = get_internal_secret(settings)
        unknown = "/internal/fragments/nothing-here"
        response = await pair.cart_client.get(
            unknown, query_string={}, headers=signed(unknown, {}, secret=secret)
        )
        assert response.status_code == 404
        path, params = "/internal/fragments/counter", {"variant": "poster"}
        response = await pair.cart_client.get(
            path, query_string=params, headers=signed(path, params, secret=secret)
        )
        assert response.status_code == 400


def test_the_internal_secret_is_configured_or_derived(settings: Settings) -> None:
    derived = get_internal_secret(settings)
    assert derived == get_internal_secret(settings.model_copy())  # every app agrees
    assert derived != settings.secret_key.get_secret_value().encode()
    configured = settings.model_copy(update={"internal_secret": SecretStr("s" * 40)})
    assert get_internal_secret(configured) == b"s" * 40
    assert canonical_query("b=2&a=1&a=0") == "a=0&a=1&b=2"


async def test_metrics_are_internal_and_in_prometheus_format(
    pair: Pair, settings: Settings
) -> None:
    async with asyncio.timeout(BOUND):
        await pair.blog_client.get("/optional")
        assert (await pair.blog_client.get("/metrics")).status_code == 404
        stale = signed("/metrics", {}, secret=get_internal_secret(settings), now=time.time() - 60)
        assert (await pair.blog_client.get("/metrics", headers=stale)).status_code == 404
        headers = signed("/metrics", {}, secret=get_internal_secret(settings))
        response = await pair.blog_client.get("/metrics", headers=headers)
        assert response.status_code == 200
        assert response.content_type.startswith("text/plain")
        body = await response.get_data(as_text=True)
        assert 'rose_ash_fragment_events_total{app="blog",outcome="timeout",type="slow"}' in body
        assert 'rose_ash_fragment_events_total{app="blog",outcome="miss",type="counter"}' in body
        assert 'rose_ash_fragment_fetch_seconds_bucket{app="blog",le="0.3",type="counter"}' in body


# ---------------------------------------------------------------------------------------------
# Composition: timeouts, fallbacks, required fragments


async def test_a_hanging_app_gets_its_fallback_within_the_timeout(pair: Pair) -> None:
    async with asyncio.timeout(BOUND):
        timeouts = events("timeout", "slow")
        started = time.perf_counter()
        response = await pair.blog_client.get("/optional")
        elapsed = time.perf_counter() - started
        assert response.status_code == 200
        body = await response.get_data(as_text=True)
        assert body == "<main><a href='/cart'>Cart</a>|<p>counter #1 None full</p></main>"
        assert (
            elapsed < TIMEOUT_MS / 1000 + TIMEOUT_MARGIN_SECONDS
        )  # fetched side by side, bounded by the timeout
        assert pair.upstream.calls["slow"] == 1
        assert events("timeout", "slow") == timeouts + 1


async def test_fragments_of_a_page_are_fetched_concurrently(pair: Pair) -> None:
    async with asyncio.timeout(BOUND):
        fetcher = get_fetcher(pair.blog)
        specs = [FragmentSpec("cart", "counter", container=f"page:{n}") for n in range(10)]
        results = await fetcher.fetch_all(specs, None)
        assert [r.outcome for r in results] == ["miss"] * 10
        assert pair.upstream.calls["counter"] == 10
        # All ten were being served at the same moment: no serial waterfall.
        assert pair.upstream.most_in_flight == 10


async def test_a_failing_required_fragment_gives_503(pair: Pair) -> None:
    async with asyncio.timeout(BOUND):
        response = await pair.blog_client.get("/required", headers={"Accept": "text/html"})
        assert response.status_code == 503
        assert "unavailable" in await response.get_data(as_text=True)
        started = time.perf_counter()
        response = await pair.blog_client.get("/required-slow", headers={"Accept": "text/html"})
        assert response.status_code == 503
        assert time.perf_counter() - started < TIMEOUT_MS / 1000 + TIMEOUT_MARGIN_SECONDS


async def test_redirects_are_not_followed_and_no_cookies_are_kept(pair: Pair) -> None:
    async with asyncio.timeout(BOUND):
        seen: list[httpx.Request] = []

        def market(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            if request.url.path.endswith("/moved"):
                return httpx.Response(302, headers={"Location": "/internal/fragments/other"})
            return httpx.Response(200, text="<p>ok</p>", headers={"Set-Cookie": "sid=abc; Path=/"})

        fetcher = get_fetcher(pair.blog)
        await fetcher.clients["market"].aclose()
        fetcher.transports["market"] = httpx.MockTransport(market)
        fetcher.clients["market"] = fetcher.open_client("market")
        moved = await fetcher.fetch_one(FragmentSpec("market", "moved", fallback="fb"), None)
        assert (moved.outcome, str(moved)) == ("error", "fb")
        assert [r.url.path for r in seen] == ["/internal/fragments/moved"]
        for kind in ("first", "second"):
            result = await fetcher.fetch_one(FragmentSpec("market", kind), None)
            assert str(result) == "<p>ok</p>"
        assert "cookie" not in seen[-1].headers
        assert SIGNATURE_HEADER.lower() in seen[-1].headers


# ---------------------------------------------------------------------------------------------
# The cache: TTLs, stale-while-revalidate, single flight, members, purge, Redis outage


async def test_a_fresh_copy_is_served_from_the_cache(pair: Pair) -> None:
    async with asyncio.timeout(BOUND):
        fetcher = get_fetcher(pair.blog)
        first = await fetcher.fetch_one(FragmentSpec("cart", "counter"), None)
        second = await fetcher.fetch_one(FragmentSpec("cart", "counter"), None)
        assert (first.outcome, second.outcome) == ("miss", "hit")
        assert str(first) == str(second)
        assert pair.upstream.calls["counter"] == 1
        # Other containers and variants are other entries.
        other = await fetcher.fetch_one(FragmentSpec("cart", "counter", variant="card"), None)
        assert other.outcome == "miss"


async def test_a_stale_copy_is_served_while_it_is_refreshed(
    pair: Pair, redis: aioredis.Redis
) -> None:
    async with asyncio.timeout(BOUND):
        fetcher = get_fetcher(pair.blog)
        spec = FragmentSpec("cart", "counter")
        first = await fetcher.fetch_one(spec, None)
        key = fragment_cache_key(spec.address(None))
        await age_entry(redis, key, seconds=61)  # past the 60 s TTL configured for "counter"
        stale = await fetcher.fetch_one(spec, None)
        assert (stale.outcome, str(stale)) == ("stale", str(first))
        await settle(pair)
        assert pair.upstream.calls["counter"] == 2  # refreshed once, in the background
        fresh = await fetcher.fetch_one(spec, None)
        assert (fresh.outcome, str(fresh)) == ("hit", "<p>counter #2 None full</p>")


async def test_a_stale_copy_is_served_at_once_even_when_the_app_hangs(
    pair: Pair, redis: aioredis.Redis
) -> None:
    async with asyncio.timeout(BOUND):
        fetcher = get_fetcher(pair.blog)
        address = FragmentSpec("cart", "slow").address(None)
        old = CachedFragment(html="<p>yesterday</p>", fetched_at=time.time() - 3600)
        await write_cached(redis, address, old, keep_seconds=600, started_at=time.time())
        # A serving app's Redis connection is open already: opening it (under a loaded CI
        # machine, once past the 250 ms cache bound) is not what this test is about.
        state_redis = get_state(pair.blog).redis
        assert state_redis is not None
        await state_redis.ping()
        started = time.perf_counter()
        result = await fetcher.fetch_one(FragmentSpec("cart", "slow"), None)
        assert (result.outcome, str(result)) == ("stale", "<p>yesterday</p>")
        # Served without waiting for the hung app (its refresh runs in the background).
        assert time.perf_counter() - started < TIMEOUT_MS / 1000
        await settle(pair)  # the refresh times out; the stale copy stays
        again = await fetcher.fetch_one(FragmentSpec("cart", "slow"), None)
        assert str(again) == "<p>yesterday</p>"


async def test_a_cold_key_is_fetched_once_for_100_concurrent_requests(pair: Pair) -> None:
    async with asyncio.timeout(BOUND):
        fetcher = get_fetcher(pair.blog)
        spec = FragmentSpec("cart", "counter", container="page:9")
        misses = events("miss", "counter")
        results = await asyncio.gather(*(fetcher.fetch_one(spec, None) for _ in range(100)))
        assert pair.upstream.calls["counter"] == 1
        assert {str(r) for r in results} == {"<p>counter #1 page:9 full</p>"}
        assert events("miss", "counter") == misses + 100
        assert not fetcher.inflight


async def test_one_members_fragment_never_reaches_another(pair: Pair) -> None:
    async with asyncio.timeout(BOUND):
        fetcher = get_fetcher(pair.blog)
        mini = FragmentSpec("cart", "cart-mini", personalised=True)
        for _ in range(2):  # the second round comes from the cache
            a, b, anonymous = await asyncio.gather(
                fetcher.fetch_one(mini, 1),
                fetcher.fetch_one(mini, 2),
                fetcher.fetch_one(mini, None),
            )
            assert str(a) == "<p>cart of member 1</p>"
            assert str(b) == "<p>cart of member 2</p>"
            assert str(anonymous) == "<p>cart of member None</p>"
        assert pair.upstream.calls["cart-mini"] == 3
        # A type that is not personalised is never told the member, and is shared by all.
        await fetcher.fetch_one(FragmentSpec("cart", "counter"), 1)
        shared = await fetcher.fetch_one(FragmentSpec("cart", "counter"), 2)
        assert shared.outcome == "hit"
        assert pair.upstream.contexts[-1].member_id is None


async def test_a_purge_invalidates_at_once(pair: Pair, redis: aioredis.Redis) -> None:
    async with asyncio.timeout(BOUND):
        fetcher = get_fetcher(pair.blog)
        one = FragmentSpec("cart", "container-calendar", container="page:1")
        two = FragmentSpec("cart", "container-calendar", container="page:2")
        await fetcher.fetch_all([one, two], None)
        async with pair.blog.app_context():
            assert await do_purge_fragment("cart", "container-calendar", container="page:1") == 1
        assert (await fetcher.fetch_one(one, None)).outcome == "miss"
        assert (await fetcher.fetch_one(two, None)).outcome == "hit"
        async with pair.blog.app_context():
            assert await do_purge_fragment("cart", "container-calendar") == 2
        assert (await fetcher.fetch_one(two, None)).outcome == "miss"
        # A fetch that started before a purge does not write its older answer back.
        address = one.address(None)
        before = time.time() - 1
        await do_purge_fragments(redis, "cart", "container-calendar")
        old = CachedFragment(html="<p>old</p>", fetched_at=time.time())
        assert not await write_cached(redis, address, old, keep_seconds=60, started_at=before)
        assert await write_cached(redis, address, old, keep_seconds=60, started_at=time.time())


async def test_a_purge_of_one_member_keeps_the_others(pair: Pair) -> None:
    async with asyncio.timeout(BOUND):
        fetcher = get_fetcher(pair.blog)
        mini = FragmentSpec("cart", "cart-mini", personalised=True)
        await fetcher.fetch_one(mini, 1)
        await fetcher.fetch_one(mini, 2)
        async with pair.blog.app_context():
            assert await do_purge_fragment("cart", "cart-mini", member_id=1) == 1
        assert (await fetcher.fetch_one(mini, 1)).outcome == "miss"
        assert (await fetcher.fetch_one(mini, 2)).outcome == "hit"


async def test_pages_render_when_redis_is_down(pair: Pair) -> None:
    async with asyncio.timeout(BOUND):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        # Configured as create_base_app configures the apps' client, but nothing listens.
        dead = aioredis.Redis(
            host="127.0.0.1",
            port=port,
            socket_connect_timeout=2,
            socket_timeout=2,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=1),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        state = get_state(pair.blog)
        live, state.redis = state.redis, dead
        try:
            for expected in (1, 2, 3):  # nothing is cached: each page fetches directly
                started = time.perf_counter()
                response = await pair.blog_client.get("/optional")
                elapsed = time.perf_counter() - started
                assert response.status_code == 200
                body = await response.get_data(as_text=True)
                assert f"<p>counter #{expected} None full</p>" in body
                assert "Cart</a>" in body  # the hung one still falls back in time
                assert elapsed < TIMEOUT_MS / 1000 + TIMEOUT_MARGIN_SECONDS
            async with pair.blog.app_context():
                assert await do_purge_fragment("cart", "counter") == 0  # logged, not raised
        finally:
            state.redis = live
            await dead.aclose()


# ---------------------------------------------------------------------------------------------
# Templates


async def test_templates_use_prefetched_fragments_and_fetch_the_others(pair: Pair) -> None:
    async with asyncio.timeout(BOUND):
        response = await pair.blog_client.get("/template")
        assert response.status_code == 200
        assert await response.get_data(as_text=True) == (
            "<p>counter #1 None card</p>|<p>counter #2 page:1 inline</p>"
        )
        assert pair.upstream.calls["counter"] == 2  # the prefetched one was not fetched twice


async def test_render_composed_adds_the_layout_fragments(pair: Pair) -> None:
    async with asyncio.timeout(BOUND):
        response = await pair.blog_client.get("/composed")
        assert response.status_code == 200
        # Both handlers counted before either answered: they were fetched side by side.
        assert await response.get_data(as_text=True) == (
            "composed:<p>counter #2 nav full</p>/<p>counter #2 None full</p>"
        )
        assert pair.upstream.calls["counter"] == 2  # nav and counter, side by side


def test_ttls_and_timeouts_per_type() -> None:
    settings = FragmentSettings(ttls_seconds={"container-cal*": 5}, timeouts_ms={"nav*": 900})
    assert settings.ttl_for("nav-tree") == 60
    assert settings.ttl_for("auth-menu") == 60
    assert settings.ttl_for("cart-mini") == 10
    assert settings.ttl_for("container-calendar") == 5
    assert settings.ttl_for("container-market") == 30
    assert settings.ttl_for("anything-else") == 30
    assert settings.timeout_for("navigation") == 0.9
    assert settings.timeout_for("cart-mini") == 0.3


async def age_entry(redis: aioredis.Redis, key: str, *, seconds: float) -> None:
    document = json.loads(await redis.get(key))
    document["at"] -= seconds
    await redis.set(key, json.dumps(document), ex=600)


async def test_a_failing_app_is_not_waited_for_again_at_once(pair: Pair) -> None:
    """After a fetch timed out, pages show the fallback without a new request (and without
    waiting) until the failure memo expires; then one request tries the app again while the
    others go on showing the fallback."""
    async with asyncio.timeout(BOUND):
        fetcher = get_fetcher(pair.blog)
        spec = FragmentSpec("cart", "slow", fallback="<a>Cart</a>")
        first = await fetcher.fetch_one(spec, None)
        assert (first.outcome, str(first)) == ("timeout", "<a>Cart</a>")
        assert pair.upstream.calls["slow"] == 1
        timeouts = events("timeout", "slow")
        started = time.perf_counter()
        again = await fetcher.fetch_one(spec, None)
        assert (again.outcome, str(again)) == ("timeout", "<a>Cart</a>")
        assert time.perf_counter() - started < TIMEOUT_MS / 1000  # did not wait it out
        assert pair.upstream.calls["slow"] == 1  # and asked nobody
        assert events("timeout", "slow") == timeouts + 1  # still counted
        key = next(iter(fetcher.failing_until))
        fetcher.failing_until[key] = (time.monotonic() - 1, "timeout")  # the memo expires
        probe = asyncio.create_task(fetcher.fetch_one(spec, None))
        await asyncio.sleep(0.02)  # the probe is waiting on the app
        started = time.perf_counter()
        meanwhile = await fetcher.fetch_one(spec, None)  # does not queue behind the probe
        assert (meanwhile.outcome, str(meanwhile)) == ("timeout", "<a>Cart</a>")
        assert time.perf_counter() - started < TIMEOUT_MS / 2000
        assert (await probe).outcome == "timeout"
        assert pair.upstream.calls["slow"] == 2  # only the probe asked the app
