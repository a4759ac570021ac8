"""The page cache: anonymous pages whole from Redis, never a member's page, purges, 304s.

A probe app (create_base_app("market") plus routes that count their renderings) checks the
rules; the six real home pages check the decorator where it is used. Members sign in through
the fake federation of test_oauth_client; PostgreSQL is broken for real (an engine aimed at a
closed port) to show that a hit never needs it.
"""

from __future__ import annotations

import asyncio
import importlib
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from quart import Quart, Response, request
from quart.typing import TestClientProtocol as QuartClient
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from shared.config import APP_NAMES, CookieSettings, PageCacheSettings, Settings
from shared.contracts.key_values import KeyValueService
from shared.db import Database, create_session_factory
from shared.infrastructure.context import get_service, get_state
from shared.infrastructure.factory import create_base_app
from shared.infrastructure.fragments import (
    FragmentSpec,
    do_purge_fragment,
    fetch_fragments,
    get_fetcher,
)
from shared.infrastructure.oauth import get_app_sign_in
from shared.infrastructure.page_cache import (
    CACHE_HEADER,
    KEY_PREFIX,
    cache_page,
    cacheable_query,
    do_purge_pages,
    etag_of,
)
from shared.infrastructure.security import csrf_exempt, get_csrf_token
from shared.services.registry import ServiceRegistry
from tests.conftest import ClientMaker
from tests.sso_support import (
    NAVIGATE,
    FakeFederation,
    Member,
    add_grant,
    make_member,
    sign_in,
    with_federation,
)

HTML = {"Accept": "text/html"}


def fragment_transport(calls: list[str]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        member = request.url.params.get("member", "-")
        return httpx.Response(200, text=f"<nav>{request.url.path} for {member}</nav>")

    return httpx.MockTransport(handle)


def create_probe_app(settings: Settings, renders: list[str]) -> Quart:
    """Routes under cache_page that record each rendering in ``renders``."""
    app = create_base_app("market", settings=settings)
    calls: list[str] = []
    get_fetcher(app).transports["blog"] = fragment_transport(calls)
    get_fetcher(app).transports["cart"] = fragment_transport(calls)

    def rendered(name: str) -> str:
        renders.append(name)
        return f"{name} #{len(renders)}"

    @app.get("/page")
    @cache_page(ttl=30)
    async def page() -> str:
        return rendered("page")

    @app.get("/me")
    @cache_page(ttl=30)
    async def me() -> str:
        sign_in = get_app_sign_in()
        return rendered(f"member {sign_in.user_id}" if sign_in else "anonymous")

    @app.get("/short")
    @cache_page(ttl=1)
    async def short() -> str:
        return rendered("short")

    @app.get("/value")
    @cache_page(ttl=30)
    async def value() -> str:
        renders.append("value")
        return str(await get_service(KeyValueService).get_value("probe.value", "unset"))

    @app.route("/both", methods=["GET", "POST"])
    @csrf_exempt
    @cache_page(ttl=30)
    async def both() -> str:
        return rendered(request.method)

    @app.get("/status/<int:code>")
    @cache_page(ttl=30)
    async def status(code: int) -> tuple[str, int]:
        return rendered(f"status {code}"), code

    @app.get("/cookie")
    @cache_page(ttl=30)
    async def cookie() -> Response:
        response = Response(rendered("cookie"))
        response.set_cookie("flavour", "oat")
        return response

    @app.get("/form")
    @cache_page(ttl=30)
    async def form() -> str:
        return rendered("form " + get_csrf_token())

    @app.get("/nav")
    @cache_page(ttl=30)
    async def nav() -> str:
        found = await fetch_fragments({"nav": FragmentSpec("blog", "nav-tree")})
        return rendered(f"nav {found['nav']}")

    @app.get("/personal")
    @cache_page(ttl=30)
    async def personal() -> str:
        spec = FragmentSpec("cart", "cart-mini", personalised=True)
        found = await fetch_fragments({"cart": spec})
        return rendered(f"cart {found['cart']}")

    @app.get("/fallback")
    @cache_page(ttl=30)
    async def fallback() -> str:
        spec = FragmentSpec("events", "container-calendar", fallback="<p>later</p>")
        found = await fetch_fragments({"calendar": spec})  # events is not reachable
        return rendered(f"calendar {found['calendar']}")

    @app.get("/tagged")
    @cache_page(ttl=30, tags=("posts",))
    async def tagged() -> str:
        return rendered("tagged")

    @app.get("/racing")
    @cache_page(ttl=30, tags=("racing",))
    async def racing() -> str:
        await do_purge_pages("racing")  # a domain change committed while this page rendered
        return rendered("racing")

    return app


@pytest.fixture
def renders() -> list[str]:
    return []


@pytest.fixture
async def probe(make_client: ClientMaker, renders: list[str], fake: FakeFederation) -> QuartClient:
    return await make_client(with_federation(lambda s: create_probe_app(s, renders), fake))


def new_client(client: QuartClient) -> QuartClient:
    """Another browser (no cookies) of the same running app."""
    app: Quart = client.app  # type: ignore[attr-defined]
    return app.test_client()


async def body(response: Any) -> str:
    return str(await response.get_data(as_text=True))


def session_cookie(client: QuartClient, value: dict[str, Any]) -> str:
    """A validly signed session cookie of the probe app holding ``value``."""
    app: Quart = client.app  # type: ignore[attr-defined]
    serializer = app.session_interface.get_signing_serializer(app)  # type: ignore[attr-defined]
    assert serializer is not None
    return f"market_session={serializer.dumps(value)}"


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- anonymous visitors share one page -------------------------------------------------------


async def test_anonymous_page_is_rendered_once_then_served_from_redis(
    probe: QuartClient, renders: list[str], redis: aioredis.Redis
) -> None:
    first = await probe.get("/page")
    assert first.status_code == 200
    assert first.headers[CACHE_HEADER] == "miss"
    second = await new_client(probe).get("/page")
    assert second.headers[CACHE_HEADER] == "hit"
    assert await body(second) == await body(first) == "page #1"
    assert second.headers["Content-Type"] == first.headers["Content-Type"]
    assert renders == ["page"]
    assert len([key async for key in redis.scan_iter(match=KEY_PREFIX + "market:*")]) == 1
    # a query string the cache does not know is rendered, not stored
    assert (await probe.get("/page?p=2")).headers[CACHE_HEADER] == "bypass"
    assert renders == ["page", "page"]


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (b"", b""),
        (b"p=2", b"p=2"),
        (b"q=a+b&p=2", b"p=2&q=a+b"),  # sorted
        (b"p=%32&q=a%20b", b"p=2&q=a+b"),  # as the view reads them
        (b"p=2&q=&q", b"p=2"),  # empty ones dropped
        (b"p=2&r=1", None),  # an unknown parameter: not cached
        (b"p=1&p=2", None),  # repeated: the view reads the first one
    ],
)
def test_the_query_string_counts_in_the_key_by_its_allowed_parameters_only(
    raw: bytes, key: bytes | None
) -> None:
    assert cacheable_query(raw, ("p", "q")) == key


async def test_random_query_strings_are_rendered_and_never_stored(
    counted: QuartClient, renders: list[str], reached: list[str], redis: aioredis.Redis
) -> None:
    for n in range(5):
        response = await counted.get(f"/page?r={n}")
        assert response.status_code == 200
        assert response.headers[CACHE_HEADER] == "bypass"
        assert response.headers["Cache-Control"] == "private, no-store"
    assert renders == ["page"] * 5
    assert len(reached) == 5
    assert [key async for key in redis.scan_iter(match=KEY_PREFIX + "*")] == []


def allowing_p(factory: Callable[[Settings], Quart]) -> Callable[[Settings], Quart]:
    def build(settings: Settings) -> Quart:
        page_cache = PageCacheSettings(query_parameters=("p",))
        return factory(settings.model_copy(update={"page_cache": page_cache}))

    return build


async def test_allowed_parameters_key_pages_alike_in_the_fast_path_and_the_view(
    make_client: ClientMaker, renders: list[str], fake: FakeFederation, redis: aioredis.Redis
) -> None:
    reached: list[str] = []
    build = with_federation(
        allowing_p(lambda s: count_requests(create_probe_app(s, renders), reached)), fake
    )
    client = await make_client(build)
    assert (await client.get("/page?p=2")).headers[CACHE_HEADER] == "miss"
    # the same page however the query is written: a hit in front of the stack
    for query in ("p=2", "p=%32&e=", "e=&p=2"):
        assert (await client.get(f"/page?{query}")).headers[CACHE_HEADER] == "hit"
    assert len(reached) == 1
    # ...and through the stack (a first visit, without the device cookie)
    assert (await new_client(client).get("/page?p=%32")).headers[CACHE_HEADER] == "hit"
    assert len(reached) == 2
    assert (await client.get("/page?p=3")).headers[CACHE_HEADER] == "miss"
    for query in ("p=2&r=1", "p=2&p=3"):
        assert (await client.get(f"/page?{query}")).headers[CACHE_HEADER] == "bypass"
    assert renders == ["page"] * 4
    assert len([key async for key in redis.scan_iter(match=KEY_PREFIX + "*")]) == 2


async def test_headers_of_a_shared_page(probe: QuartClient) -> None:
    first = await probe.get("/page")
    etag = first.headers["ETag"]
    assert etag.startswith('"')  # strong: not W/"..."
    assert first.headers["Vary"] == "Cookie"
    # the first answer carries this browser's new device cookie: not for shared caches
    assert any(c.startswith("market_device=") for c in first.headers.getlist("Set-Cookie"))
    assert first.headers["Cache-Control"] == "private, no-cache"
    again = await probe.get("/page")  # the device cookie is known now: nothing is set
    assert "Set-Cookie" not in again.headers
    assert again.headers["Cache-Control"] == "public, no-cache"
    assert again.headers["ETag"] == etag
    assert again.headers["Vary"] == "Cookie"


async def test_device_cookie_is_never_stored_or_shared(probe: QuartClient) -> None:
    def device_of(response: Any) -> str:
        found = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("market_")]
        assert len(found) == 1, found
        return str(found[0].split(";", 1)[0])

    first = await probe.get("/page")
    other = await new_client(probe).get("/page")
    assert other.headers[CACHE_HEADER] == "hit"
    assert device_of(first) != device_of(other)


async def test_conditional_requests_get_304_from_the_cache_and_after_rendering(
    probe: QuartClient, renders: list[str]
) -> None:
    first = await probe.get("/page")
    etag = first.headers["ETag"]
    cached = await probe.get("/page", headers={"If-None-Match": etag})
    assert cached.status_code == 304
    assert await body(cached) == ""
    assert cached.headers["ETag"] == etag
    assert cached.headers["Vary"] == "Cookie"
    assert cached.headers["Cache-Control"] == "public, no-cache"
    weak = await probe.get("/page", headers={"If-None-Match": f'"other", W/{etag}'})
    assert weak.status_code == 304
    changed = await probe.get("/page", headers={"If-None-Match": '"something-else"'})
    assert changed.status_code == 200
    assert await body(changed) == "page #1"
    # a freshly rendered page answers the same way (its previous copy was purged)
    async with probe.app.app_context():  # type: ignore[attr-defined]
        await do_purge_pages("market")
    next_etag = f'"{etag_of(b"page #2")}"'  # what the next rendering will be
    fresh = await probe.get("/page", headers={"If-None-Match": next_etag})
    assert fresh.headers[CACHE_HEADER] == "miss"
    assert fresh.headers["ETag"] == next_etag
    assert fresh.status_code == 304
    assert renders == ["page", "page"]


@pytest.mark.parametrize(
    "cookie",
    [
        "market_sso_checked=1",  # the silent sign-in marker only
        "market_device=abc",  # the device cookie only
        "market_sso_checked=1; market_device=abc",
    ],
)
async def test_marker_and_device_cookies_count_as_anonymous(
    probe: QuartClient, renders: list[str], cookie: str
) -> None:
    await probe.get("/page")
    response = await new_client(probe).get("/page", headers={"Cookie": cookie})
    assert response.headers[CACHE_HEADER] == "hit"
    assert renders == ["page"]


async def test_a_session_left_by_the_silent_round_trip_counts_as_anonymous(
    probe: QuartClient, renders: list[str]
) -> None:
    await probe.get("/page")
    cookie = session_cookie(probe, {"oauth_states": []}) + "; market_sso_checked=1"
    response = await new_client(probe).get("/page", headers={"Cookie": cookie})
    assert response.headers[CACHE_HEADER] == "hit"


@pytest.mark.parametrize(
    "session_value",
    [{"csrf_token": "a-token-of-this-visitor"}, {"oauth_states": [], "csrf_token": "t"}],
)
async def test_a_session_with_a_csrf_token_is_not_anonymous(
    probe: QuartClient, renders: list[str], session_value: dict[str, Any]
) -> None:
    await probe.get("/page")
    response = await new_client(probe).get(
        "/page", headers={"Cookie": session_cookie(probe, session_value)}
    )
    assert response.headers[CACHE_HEADER] == "bypass"
    assert response.headers["Cache-Control"] == "private, no-store"
    assert "ETag" not in response.headers
    assert renders == ["page", "page"]


@pytest.mark.parametrize("cookie", ["federation_sso=token", "somebody=else"])
async def test_any_other_cookie_bypasses_the_cache(
    probe: QuartClient, renders: list[str], cookie: str
) -> None:
    await probe.get("/page")
    response = await new_client(probe).get("/page", headers={"Cookie": cookie})
    assert response.headers[CACHE_HEADER] == "bypass"
    assert renders == ["page", "page"]


async def test_a_first_navigation_still_takes_the_silent_sign_in_round_trip(
    probe: QuartClient, renders: list[str], fake: FakeFederation
) -> None:
    await probe.get("/page")
    browser = new_client(probe)
    first = await browser.get("/page", headers=NAVIGATE)
    assert first.status_code == 302
    assert first.headers["Location"].startswith(fake.issuer + "/oauth/authorize?")
    back = await browser.get(fake.refuse(first.headers["Location"]), headers=NAVIGATE)
    assert back.status_code == 302
    # back from federation, not signed in: marker and pending-state session only
    page = await browser.get("/page", headers=NAVIGATE)
    assert page.status_code == 200
    assert page.headers[CACHE_HEADER] == "hit"
    assert renders == ["page"]


# --- members ---------------------------------------------------------------------------------


async def test_never_one_members_page_to_another_or_to_anonymous_visitors(
    probe: QuartClient,
    renders: list[str],
    fake: FakeFederation,
    session: AsyncSession,
    settings: Settings,
) -> None:
    ada = await make_member(session, settings)
    bob = await make_member(
        session, settings, "bob@example.org", username="bob", display_name="Bob"
    )
    anonymous = await probe.get("/me")  # an anonymous copy is in the cache first
    assert await body(anonymous) == "anonymous #1"

    async def signed_in(member: Member) -> QuartClient:
        client = new_client(probe)
        done = await sign_in(client, fake, member, await add_grant(session, member, "market"))
        assert done.status_code == 302
        return client

    ada_client, bob_client = await signed_in(ada), await signed_in(bob)
    for _ in range(2):
        for client, member in ((ada_client, ada), (bob_client, bob)):
            response = await client.get("/me")
            assert (await body(response)).startswith(f"member {member.user.id} #")
            assert response.headers[CACHE_HEADER] == "bypass"
            assert response.headers["Cache-Control"] == "private, no-store"
            assert "ETag" not in response.headers
            assert response.headers["Vary"] == "Cookie"
            # a member never gets a 304 for the shared copy either
            conditional = await client.get(
                "/me", headers={"If-None-Match": anonymous.headers["ETag"]}
            )
            assert conditional.status_code == 200
    later = await new_client(probe).get("/me")
    assert await body(later) == "anonymous #1"
    assert later.headers[CACHE_HEADER] == "hit"
    assert not any(name.startswith("member") and name.endswith("#1") for name in renders)


async def test_members_pages_are_never_stored(
    probe: QuartClient,
    renders: list[str],
    fake: FakeFederation,
    session: AsyncSession,
    settings: Settings,
    redis: aioredis.Redis,
) -> None:
    ada = await make_member(session, settings)
    await sign_in(probe, fake, ada, await add_grant(session, ada, "market"))
    await probe.get("/me")
    await probe.get("/me")
    assert [key async for key in redis.scan_iter(match=KEY_PREFIX + "*")] == []
    anonymous = await new_client(probe).get("/me")
    assert await body(anonymous) == "anonymous #3"
    assert anonymous.headers[CACHE_HEADER] == "miss"


# --- what is never cached --------------------------------------------------------------------


async def test_unsafe_methods_are_never_cached(probe: QuartClient, renders: list[str]) -> None:
    for _ in range(2):
        response = await probe.post("/both")
        assert response.status_code == 200
        assert CACHE_HEADER not in response.headers
    assert renders == ["POST", "POST"]
    get = await probe.get("/both")
    assert await body(get) == "GET #3"  # a GET after POSTs is rendered, not a POST's page
    assert (await probe.get("/both")).headers[CACHE_HEADER] == "hit"
    after = await probe.post("/both")
    assert await body(after) == "POST #4"


@pytest.mark.parametrize("code", [201, 203, 404, 500])
async def test_non_200_responses_are_never_cached(
    probe: QuartClient, renders: list[str], code: int
) -> None:
    for _ in range(2):
        response = await probe.get(f"/status/{code}")
        assert response.status_code == code
        assert response.headers[CACHE_HEADER] == "bypass"
        assert response.headers["Cache-Control"] == "private, no-store"
    assert len(renders) == 2


async def test_responses_that_set_cookies_are_never_cached(
    probe: QuartClient, renders: list[str]
) -> None:
    for _ in range(2):
        response = await new_client(probe).get("/cookie")
        assert any(c.startswith("flavour=") for c in response.headers.getlist("Set-Cookie"))
        assert response.headers[CACHE_HEADER] == "bypass"
    assert len(renders) == 2


async def test_pages_with_a_csrf_token_are_never_cached(
    probe: QuartClient, renders: list[str]
) -> None:
    first = await new_client(probe).get("/form")
    second = await new_client(probe).get("/form")
    assert first.headers[CACHE_HEADER] == second.headers[CACHE_HEADER] == "bypass"
    assert await body(first) != await body(second)  # each visitor's own token
    assert any(c.startswith("market_session=") for c in first.headers.getlist("Set-Cookie"))


async def test_pages_with_a_personalised_fragment_are_never_cached(
    probe: QuartClient, renders: list[str], redis: aioredis.Redis
) -> None:
    for _ in range(2):
        response = await new_client(probe).get("/personal")
        assert "cart-mini" in await body(response)
        assert response.headers[CACHE_HEADER] == "bypass"
    assert len(renders) == 2
    assert [key async for key in redis.scan_iter(match=KEY_PREFIX + "*")] == []


async def test_pages_whose_fragment_fell_back_are_not_cached(
    probe: QuartClient, renders: list[str]
) -> None:
    response = await probe.get("/fallback")
    assert "later" in await body(response)
    assert response.headers[CACHE_HEADER] == "bypass"
    assert (await probe.get("/fallback")).headers[CACHE_HEADER] == "bypass"


# --- TTL and purge ---------------------------------------------------------------------------


async def test_an_entry_lives_for_its_ttl(probe: QuartClient, renders: list[str]) -> None:
    assert await body(await probe.get("/short")) == "short #1"
    assert (await probe.get("/short")).headers[CACHE_HEADER] == "hit"
    await asyncio.sleep(1.1)
    late = await probe.get("/short")
    assert late.headers[CACHE_HEADER] == "miss"
    assert await body(late) == "short #2"


def test_ttl_settings_by_endpoint_over_the_decorator_over_the_default() -> None:
    table = PageCacheSettings(
        default_ttl_seconds=20, ttls_seconds={"home.home": 5, "blog:home.home": 0}
    )
    assert table.ttl_for("blog", "home.home", 30) == 0
    assert table.ttl_for("market", "home.home", 30) == 5
    assert table.ttl_for("market", "product", 30) == 30
    assert table.ttl_for("market", "product") == 20
    with pytest.raises(ValueError, match="TTL"):
        cache_page(ttl=7200)


async def test_a_route_with_ttl_0_or_the_cache_disabled_is_not_cached(
    make_client: ClientMaker, settings: Settings, renders: list[str]
) -> None:
    for page_cache in (
        PageCacheSettings(enabled=False),
        PageCacheSettings(ttls_seconds={"market:page": 0}),
    ):
        tuned = settings.model_copy(update={"page_cache": page_cache})
        client = await make_client(lambda _s, tuned=tuned: create_probe_app(tuned, renders))
        await client.get("/page")
        response = await client.get("/page")
        assert CACHE_HEADER not in response.headers
    assert len(renders) == 4


async def test_the_fragment_purge_purges_the_pages_that_show_the_fragment(
    probe: QuartClient, renders: list[str]
) -> None:
    await probe.get("/nav")
    await probe.get("/page")
    assert (await probe.get("/nav")).headers[CACHE_HEADER] == "hit"
    async with probe.app.app_context():  # type: ignore[attr-defined]
        await do_purge_fragment("blog", "nav-tree")  # what a change of the navigation does
    assert (await probe.get("/nav")).headers[CACHE_HEADER] == "miss"
    assert (await probe.get("/page")).headers[CACHE_HEADER] == "hit"  # does not show it
    async with probe.app.app_context():  # type: ignore[attr-defined]
        await do_purge_fragment("blog", "nav-tree", container="page:7")  # any copy of it
    assert (await probe.get("/nav")).headers[CACHE_HEADER] == "miss"


async def test_purge_by_tag_and_by_app(probe: QuartClient, renders: list[str]) -> None:
    await probe.get("/tagged")
    await probe.get("/page")
    async with probe.app.app_context():  # type: ignore[attr-defined]
        assert await do_purge_pages("posts")
    assert (await probe.get("/tagged")).headers[CACHE_HEADER] == "miss"
    assert (await probe.get("/page")).headers[CACHE_HEADER] == "hit"
    async with probe.app.app_context():  # type: ignore[attr-defined]
        await do_purge_pages("market")  # every page of the app
    assert (await probe.get("/tagged")).headers[CACHE_HEADER] == "miss"
    assert (await probe.get("/page")).headers[CACHE_HEADER] == "miss"


async def test_a_page_rendered_across_a_purge_is_not_served_afterwards(
    probe: QuartClient, renders: list[str]
) -> None:
    first = await probe.get("/racing")
    assert first.headers[CACHE_HEADER] == "miss"
    assert (await probe.get("/racing")).headers[CACHE_HEADER] == "miss"
    assert renders == ["racing", "racing"]


# --- PostgreSQL and Redis --------------------------------------------------------------------


def break_database(client: QuartClient) -> Callable[[], Any]:
    """Aim the app at a PostgreSQL that is not there; returns the engine's dispose."""
    app: Quart = client.app  # type: ignore[attr-defined]
    engine = create_async_engine(
        f"postgresql+asyncpg://nobody@127.0.0.1:{unused_port()}/nowhere",
        connect_args={"timeout": 2},
    )
    get_state(app).database = Database(
        engine=engine, session_factory=create_session_factory(engine)
    )
    return engine.dispose


async def test_a_cached_page_is_served_without_postgresql(
    probe: QuartClient,
    renders: list[str],
    session: AsyncSession,
    registry: ServiceRegistry,
) -> None:
    await registry.get(KeyValueService, session).do_set_value("probe.value", "from postgres")
    await session.commit()
    assert await body(await probe.get("/value")) == "from postgres"
    dispose = break_database(probe)
    try:
        cached = await new_client(probe).get("/value")
        assert cached.status_code == 200
        assert cached.headers[CACHE_HEADER] == "hit"
        assert await body(cached) == "from postgres"
        # the database really is gone: a page that has to be rendered is unavailable
        assert (await probe.get("/value?fresh=1")).status_code == 503
        assert renders == ["value", "value"]
    finally:
        await dispose()


async def test_a_real_home_page_is_served_without_postgresql(
    make_client: ClientMaker, session: AsyncSession, registry: ServiceRegistry
) -> None:
    await registry.get(KeyValueService, session).do_set_value("site.title", "Cached Co-op")
    await session.commit()
    client = await make_client(with_layout(importlib.import_module("blog.app").create_app))
    first = await client.get("/", headers=HTML)
    assert first.headers[CACHE_HEADER] == "miss"
    assert "Cached Co-op" in await body(first)
    dispose = break_database(client)
    try:
        again = await new_client(client).get("/", headers=HTML)
        assert again.status_code == 200
        assert again.headers[CACHE_HEADER] == "hit"
        assert await body(again) == await body(first)
        assert (await new_client(client).get("/?page=2", headers=HTML)).status_code == 503
    finally:
        await dispose()


async def test_pages_are_rendered_when_redis_is_down(
    probe: QuartClient, renders: list[str]
) -> None:
    app: Quart = probe.app  # type: ignore[attr-defined]
    state = get_state(app)
    working = state.redis
    state.redis = aioredis.Redis.from_url(
        f"redis://127.0.0.1:{unused_port()}/0", socket_connect_timeout=0.2
    )
    try:
        for _ in range(2):
            response = await probe.get("/page")
            assert response.status_code == 200
            assert response.headers[CACHE_HEADER] == "miss"
        assert renders == ["page", "page"]
    finally:
        await state.redis.aclose()
        state.redis = working


# --- the six home pages ----------------------------------------------------------------------


def with_layout(factory: Callable[[Settings], Quart]) -> Callable[[Settings], Quart]:
    """The app with every other app's fragments answered (the layout's nav-tree)."""

    def build(settings: Settings) -> Quart:
        app = factory(settings)
        for name in APP_NAMES:
            get_fetcher(app).transports[name] = fragment_transport([])
        return app

    return build


@pytest.mark.parametrize("name", APP_NAMES)
async def test_every_home_page_is_cached_for_anonymous_visitors(
    make_client: ClientMaker, name: str
) -> None:
    client = await make_client(with_layout(importlib.import_module(f"{name}.app").create_app))
    first = await client.get("/", headers=HTML)
    assert first.status_code == 200
    assert first.headers[CACHE_HEADER] == "miss"
    second = await new_client(client).get("/", headers=HTML)
    assert second.headers[CACHE_HEADER] == "hit"
    assert await body(second) == await body(first)
    assert second.mimetype == "text/html"
    conditional = await client.get("/", headers={**HTML, "If-None-Match": first.headers["ETag"]})
    assert conditional.status_code == 304


async def test_the_account_dashboard_is_never_cached_nor_the_home_page_served_to_members(
    make_client: ClientMaker, fake: FakeFederation, session: AsyncSession, settings: Settings
) -> None:
    account = await make_client(
        with_layout(with_federation(importlib.import_module("account.app").create_app, fake))
    )
    anonymous = await account.get("/", headers=HTML)
    assert anonymous.headers[CACHE_HEADER] == "miss"
    ada = await make_member(session, settings)
    await sign_in(account, fake, ada, await add_grant(session, ada, "account"))
    for _ in range(2):
        dashboard = await account.get("/", headers=HTML)
        assert dashboard.status_code == 200
        assert dashboard.headers[CACHE_HEADER] == "bypass"
        assert dashboard.headers["Cache-Control"] == "private, no-store"
        assert "ada@example.org" in await body(dashboard)
    visitor = await new_client(account).get("/", headers=HTML)
    assert visitor.headers[CACHE_HEADER] == "hit"
    assert "ada@example.org" not in await body(visitor)


# --- hits answered in front of Quart (shared.infrastructure.page_cache_fast) ------------------


def count_requests(app: Quart, seen: list[str]) -> Quart:
    """``app`` with a before_request hook recording every request that reaches Quart."""

    @app.before_request
    async def record() -> None:
        seen.append(request.path)

    return app


@pytest.fixture
async def counted(
    make_client: ClientMaker, renders: list[str], fake: FakeFederation, reached: list[str]
) -> QuartClient:
    build = with_federation(lambda s: count_requests(create_probe_app(s, renders), reached), fake)
    return await make_client(build)


@pytest.fixture
def reached() -> list[str]:
    return []


async def test_a_returning_visitors_hit_never_reaches_the_request_stack(
    counted: QuartClient, renders: list[str], reached: list[str]
) -> None:
    await counted.get("/page")  # rendered; the browser gets its device cookie
    assert reached == ["/page"]
    hit = await counted.get("/page", headers={"X-Request-ID": "fast-1"})
    assert hit.headers[CACHE_HEADER] == "hit"
    assert await body(hit) == "page #1"
    assert reached == ["/page"]  # answered before Quart's hooks
    assert hit.headers["X-Request-ID"] == "fast-1"
    assert hit.headers["Cache-Control"] == "public, no-cache"
    assert hit.headers["Vary"] == "Cookie"
    assert "Set-Cookie" not in hit.headers
    assert hit.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert hit.headers["X-Frame-Options"] == "DENY"
    head = await counted.head("/page")
    assert head.status_code == 200
    assert await body(head) == ""
    not_modified = await counted.get("/page", headers={"If-None-Match": hit.headers["ETag"]})
    assert not_modified.status_code == 304
    assert await body(not_modified) == ""
    assert reached == ["/page"]
    assert renders == ["page"]


async def test_cookies_named_before_the_host_prefix_count_as_anonymous(
    make_client: ClientMaker,
    renders: list[str],
    fake: FakeFederation,
    reached: list[str],
    settings: Settings,
) -> None:
    """Over https the cookies are named ``__Host-…``; a returning visitor still carrying the
    plain names of an earlier version (a device cookie lasts two years) is served the shared
    page, by the fast path and by the stack alike, not a fresh render every time."""
    secure = settings.model_copy(update={"cookies": CookieSettings(secure=True, samesite="Lax")})
    build = with_federation(
        lambda _: count_requests(create_probe_app(secure, renders), reached), fake
    )
    client = await make_client(build)
    await client.get("/page")
    old = "market_device=old; market_sso_checked=1; market_session=old"
    fast = await new_client(client).get(
        "/page", headers={"Cookie": f"__Host-market_device=d; {old}"}
    )
    assert fast.headers[CACHE_HEADER] == "hit"
    assert reached == ["/page"]  # answered in front of Quart
    # Without this version's device cookie the stack answers (and sets it): a hit all the same.
    through_stack = await new_client(client).get("/page", headers={"Cookie": old})
    assert through_stack.headers[CACHE_HEADER] == "hit"
    assert reached == ["/page", "/page"]
    assert renders == ["page"]


async def test_a_fast_hit_carries_the_same_headers_as_a_hit_through_the_stack(
    counted: QuartClient, reached: list[str]
) -> None:
    await counted.get("/page")
    fast = await counted.get("/page")
    # a first-time browser has no device cookie: the stack answers (and sets one)
    through_stack = await new_client(counted).get("/page")
    assert reached == ["/page", "/page"]
    assert through_stack.headers[CACHE_HEADER] == fast.headers[CACHE_HEADER] == "hit"
    ignored = {"set-cookie", "x-request-id", "cache-control", "date", "content-length"}

    def comparable(response: Any) -> dict[str, str]:
        return {k.lower(): v for k, v in response.headers.items() if k.lower() not in ignored}

    assert comparable(fast) == comparable(through_stack)
    assert await body(fast) == await body(through_stack)


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({"Cookie": "market_device=abc; somebody=else"}, "another cookie"),
        ({"Cookie": "market_device=abc; market_session=forged"}, "a session it cannot read"),
    ],
)
async def test_requests_the_stack_must_see_are_passed_on(
    counted: QuartClient, reached: list[str], headers: dict[str, str], why: str
) -> None:
    await counted.get("/page")
    await new_client(counted).get("/page", headers=headers)
    assert reached == ["/page", "/page"], why


async def test_a_navigation_without_the_marker_takes_the_silent_sign_in_round_trip(
    counted: QuartClient,
) -> None:
    await counted.get("/page")
    response = await new_client(counted).get(
        "/page", headers={"Cookie": "market_device=abc", **NAVIGATE}
    )
    assert response.status_code == 302  # the stack's silent sign-in, not the cached page


async def test_a_members_session_is_passed_on_to_the_stack(
    counted: QuartClient, reached: list[str]
) -> None:
    await counted.get("/page")
    cookie = session_cookie(counted, {"oauth_states": [], "csrf_token": "t"})
    response = await new_client(counted).get(
        "/page", headers={"Cookie": f"{cookie}; market_device=abc; market_sso_checked=1"}
    )
    assert response.headers[CACHE_HEADER] == "bypass"
    assert reached == ["/page", "/page"]
    pending_only = session_cookie(counted, {"oauth_states": []})
    anonymous = await new_client(counted).get(
        "/page", headers={"Cookie": f"{pending_only}; market_device=abc; market_sso_checked=1"}
    )
    assert anonymous.headers[CACHE_HEADER] == "hit"
    assert reached == ["/page", "/page"]  # served in front of the stack
