"""The client side of SSO in every app: sign-in, silent SSO, grant checks, logout.

Federation is replaced by a small fake of the contract (discovery, JWKS, a token endpoint that
checks client_secret_basic, the redirect URI and PKCE, and signs RS256 id_tokens with joserfc),
reached through the httpx transport the apps keep for federation. Members, SSO sessions and
grants are real rows in the test's transaction.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis.asyncio as aioredis
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from itsdangerous import TimestampSigner
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from quart import Quart
from quart.typing import TestClientProtocol as QuartClient
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from blog.app import create_app as create_blog_app
from federation.app import create_app as create_federation_app
from federation.services.member_session import SSO_COOKIE
from market.app import create_app as create_market_app
from shared.config import CookieSettings, SessionSettings, Settings
from shared.infrastructure.context import get_state
from shared.infrastructure.grant_cache import grant_cache_key
from shared.infrastructure.oauth import (
    PENDING_KEY_PREFIX,
    check_next,
    get_oauth,
    is_bot,
)
from shared.models.identity import OAuthGrant, SsoSession
from shared.models.outbox import OutboxEvent
from shared.services.identity.backchannel import build_logout_handler
from shared.services.identity.sso import LOGOUT_EVENT, SqlSsoService
from shared.services.outbox import process_due_events
from tests.conftest import ClientMaker
from tests.sso_support import (
    BROWSER_UA,
    NAVIGATE,
    FakeFederation,
    Member,
    add_grant,
    cookie_header,
    csrf_of,
    make_member,
    new_device,
    sign_in,
    signed_in_as,
    with_federation,
)


@pytest.fixture
async def blog(make_client: ClientMaker, fake: FakeFederation) -> QuartClient:
    return await make_client(with_federation(create_blog_app, fake))


@pytest.fixture
async def market(make_client: ClientMaker, fake: FakeFederation) -> QuartClient:
    return await make_client(with_federation(create_market_app, fake))


# --- next: no open redirect ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/posts/1?page=2", "/posts/1?page=2"),
        ("http://blog.localhost/posts", "/posts"),
        ("HTTP://BLOG.LOCALHOST/posts?x=1", "/posts?x=1"),
        ("https://evil.example/", "/"),
        ("//evil.example/path", "/"),
        ("///evil.example", "/"),
        ("/\\evil.example", "/"),
        ("\\\\evil.example", "/"),
        ("http://blog.localhost@evil.example/", "/"),
        ("http://blog.localhost.evil.example/", "/"),
        ("http://market.localhost/", "/"),
        ("https://blog.localhost/", "/"),  # another origin: other scheme
        ("http://blog.localhost//evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("posts", "/"),
        ("/\t/evil.example", "/"),
        (" //evil.example", "/"),
        ("/ok path", "/"),  # a raw space: not a URL this app makes
        ("", "/"),
        (None, "/"),
    ],
)
def test_next_is_only_a_path_of_the_apps_own_host(value: str | None, expected: str) -> None:
    assert check_next(value, "http://blog.localhost") == expected


@pytest.mark.parametrize(
    "evil", ["https://evil.example/", "//evil.example", "/\\evil.example", "http://x@evil.example"]
)
async def test_sign_in_never_redirects_off_site_through_next(
    blog: QuartClient, fake: FakeFederation, member: Member, session: AsyncSession, evil: str
) -> None:
    grant_id = await add_grant(session, member, "blog")
    done = await sign_in(blog, fake, member, grant_id, next_path=evil)
    assert done.status_code == 302
    assert done.headers["Location"] == "/"


async def test_sign_in_returns_to_a_page_of_the_app(
    blog: QuartClient, fake: FakeFederation, member: Member, session: AsyncSession
) -> None:
    grant_id = await add_grant(session, member, "blog")
    done = await sign_in(blog, fake, member, grant_id, next_path="http://blog.localhost/a?b=1")
    assert done.headers["Location"] == "/a?b=1"


async def test_logout_never_redirects_off_site(
    blog: QuartClient, fake: FakeFederation, member: Member, session: AsyncSession
) -> None:
    await sign_in(blog, fake, member, await add_grant(session, member, "blog"))
    token = await csrf_of(blog)
    done = await blog.post("/auth/logout", form={"csrf_token": token, "next": "//evil.example"})
    assert done.status_code == 302
    assert done.headers["Location"] == "/"


# --- the authorization request and the callback ---------------------------------------------


async def test_login_sends_pkce_and_nonce_and_keeps_the_verifier_server_side(
    blog: QuartClient, fake: FakeFederation, redis: aioredis.Redis
) -> None:
    login = await blog.get("/auth/login", query_string={"next": "/posts"})
    assert login.status_code == 302
    assert login.headers["Cache-Control"] == "no-store"
    params = fake.authorization_request(login.headers["Location"])
    assert params["client_id"] == "blog"
    assert params["redirect_uri"] == "http://blog.localhost/auth/callback"
    assert params["code_challenge_method"] == "S256"
    assert len(params["state"]) >= 32
    assert len(params["nonce"]) >= 32
    assert "prompt" not in params
    keys = [key.decode() async for key in redis.scan_iter(PENDING_KEY_PREFIX + "*")]
    assert keys == [f"{PENDING_KEY_PREFIX}blog:{params['state']}"]
    assert 0 < await redis.ttl(keys[0]) <= 600
    pending = (await redis.get(keys[0])).decode()
    assert params["nonce"] in pending
    # The verifier stays on the server: only its S256 challenge travels.
    assert "verifier" in pending
    session_cookie = cookie_header(login, "blog_session")
    verifier = pending.split('"verifier": "', 1)[1].split('"', 1)[0]
    assert verifier not in session_cookie
    assert verifier not in login.headers["Location"]
    assert create_s256_code_challenge(verifier) == params["code_challenge"]


async def test_sign_in_sets_the_apps_first_party_cookies(
    blog: QuartClient, fake: FakeFederation, member: Member, session: AsyncSession
) -> None:
    grant_id = await add_grant(session, member, "blog")
    first = await blog.get("/")
    device = cookie_header(first, "blog_device")  # a per-app device id, on the first visit
    assert "HttpOnly" in device
    assert "SameSite=Lax" in device
    assert f"Max-Age={2 * 365 * 24 * 3600}" in device
    done = await sign_in(blog, fake, member, grant_id, next_path="/posts")
    assert done.status_code == 302
    assert done.headers["Location"] == "/posts"
    session_cookie = cookie_header(done, "blog_session")
    assert "HttpOnly" in session_cookie
    assert "SameSite=Lax" in session_cookie
    assert "Secure" not in session_cookie  # test settings: no https
    assert not [h for h in done.headers.getlist("Set-Cookie") if h.startswith("blog_device=")]
    assert await signed_in_as(blog) == "Ada Hartley"
    # client_secret_basic, the exact redirect URI and the PKCE verifier reached federation
    (request,) = fake.token_requests
    assert request["redirect_uri"] == "http://blog.localhost/auth/callback"
    assert request["code_verifier"]
    assert "client_secret" not in request


async def test_cookies_are_secure_outside_development(
    make_client: ClientMaker,
    fake: FakeFederation,
    member: Member,
    session: AsyncSession,
    settings: Settings,
) -> None:
    secure = settings.model_copy(update={"cookies": CookieSettings(secure=True, samesite="Lax")})
    client = await make_client(lambda _: with_federation(create_blog_app, fake)(secure))
    login = await client.get("/auth/login")
    # Host-only, Secure, Path=/: named __Host- so no sibling subdomain can plant or replace them.
    for name in ("blog_session", "blog_device"):
        cookie = cookie_header(login, f"__Host-{name}")
        assert "Secure" in cookie
        assert "Path=/" in cookie
        assert "Domain" not in cookie
    silent = await client.get("/", headers=NAVIGATE)
    assert silent.status_code == 302
    assert "Secure" in cookie_header(silent, "__Host-blog_sso_checked")
    # Read back under the name in force: no second device cookie, no second silent trip.
    again = await client.get("/", headers=NAVIGATE)
    assert again.status_code == 200
    assert not [c for c in again.headers.getlist("Set-Cookie") if "blog_device=" in c]


async def test_callback_refuses_a_state_this_browser_did_not_start(
    make_client: ClientMaker,
    blog: QuartClient,
    fake: FakeFederation,
    member: Member,
    session: AsyncSession,
) -> None:
    grant_id = await add_grant(session, member, "blog")
    # The attacker starts a sign-in and hands the answer to the victim's browser.
    attacker = await make_client(with_federation(create_blog_app, fake))
    login = await attacker.get("/auth/login")
    callback = fake.authorize(
        login.headers["Location"], user_id=member.user.id, grant_id=grant_id, sid=member.sid
    )
    refused = await blog.get(callback, headers={"Accept": "text/html"})
    assert refused.status_code == 400
    assert "not started in this browser" in await refused.get_data(as_text=True)
    assert await signed_in_as(blog) is None
    assert fake.token_requests == []  # the code was never redeemed


async def test_callback_refuses_an_unknown_or_missing_state(blog: QuartClient) -> None:
    await blog.get("/auth/login")
    for query in ("?code=x&state=made-up", "?code=x", "?error=login_required"):
        assert (await blog.get("/auth/callback" + query)).status_code == 400


async def test_callback_cannot_be_replayed(
    blog: QuartClient, fake: FakeFederation, member: Member, session: AsyncSession
) -> None:
    grant_id = await add_grant(session, member, "blog")
    login = await blog.get("/auth/login")
    callback = fake.authorize(
        login.headers["Location"], user_id=member.user.id, grant_id=grant_id, sid=member.sid
    )
    assert (await blog.get(callback)).status_code == 302
    replay = await blog.get(callback)
    assert replay.status_code == 400
    assert len(fake.token_requests) == 1


async def test_callback_refuses_an_expired_sign_in(
    blog: QuartClient,
    fake: FakeFederation,
    member: Member,
    session: AsyncSession,
    redis: aioredis.Redis,
) -> None:
    grant_id = await add_grant(session, member, "blog")
    login = await blog.get("/auth/login")
    callback = fake.authorize(
        login.headers["Location"], user_id=member.user.id, grant_id=grant_id, sid=member.sid
    )
    await redis.delete(*[key async for key in redis.scan_iter(PENDING_KEY_PREFIX + "*")])
    response = await blog.get(callback, headers={"Accept": "text/html"})
    assert response.status_code == 400
    assert "expired or was already used" in await response.get_data(as_text=True)


@pytest.mark.parametrize(
    "tamper",
    [
        {"nonce": "another-nonce"},
        {"aud": "market"},
        {"iss": "http://evil.example"},
        {"exp": int(time.time()) - 3600},
        {"at_hash": "AAAAAAAAAAAAAAAAAAAAAA"},
        {"grant_id": "not-a-number"},
        {"foreign_key": True},
    ],
    ids=["nonce", "aud", "iss", "expired", "at_hash", "grant_id", "foreign_key"],
)
async def test_callback_refuses_an_id_token_that_does_not_check_out(
    blog: QuartClient,
    fake: FakeFederation,
    member: Member,
    session: AsyncSession,
    tamper: dict[str, Any],
) -> None:
    grant_id = await add_grant(session, member, "blog")
    login = await blog.get("/auth/login")
    key = None
    if tamper.pop("foreign_key", False):
        key = RSAKey.generate_key(2048, parameters={"kid": "fake-1"})  # same kid, other key
    callback = fake.authorize(
        login.headers["Location"],
        user_id=member.user.id,
        grant_id=grant_id,
        sid=member.sid,
        key=key,
        claims=tamper,
    )
    assert (await blog.get(callback)).status_code == 400
    assert await signed_in_as(blog) is None


async def test_callback_refuses_a_grant_of_another_app_or_a_revoked_one(
    blog: QuartClient, fake: FakeFederation, member: Member, session: AsyncSession
) -> None:
    market_grant = await add_grant(session, member, "market")
    assert (await sign_in(blog, fake, member, market_grant)).status_code == 400
    revoked = await add_grant(session, member, "blog")
    await session.execute(
        update(OAuthGrant).where(OAuthGrant.id == revoked).values(revoked_at=func.now())
    )
    await session.commit()
    assert (await sign_in(blog, fake, member, revoked)).status_code == 400
    assert await signed_in_as(blog) is None


async def test_federation_unreachable_is_a_502_not_a_crash(
    make_client: ClientMaker, fake: FakeFederation
) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    def build(settings: Settings) -> Quart:
        app = create_blog_app(settings)
        get_oauth(app).transport = httpx.MockTransport(down)
        return app

    client = await make_client(build)
    assert (await client.get("/auth/login", headers={"Accept": "text/html"})).status_code == 502
    # silent SSO gives up quietly: the page is served
    assert (await client.get("/", headers=NAVIGATE)).status_code == 200


# --- silent SSO ------------------------------------------------------------------------------


async def test_first_visit_makes_one_silent_round_trip_when_not_signed_in_at_federation(
    blog: QuartClient, fake: FakeFederation
) -> None:
    first = await blog.get("/?page=2", headers=NAVIGATE)
    assert first.status_code == 302
    params = fake.authorization_request(first.headers["Location"])
    assert params["prompt"] == "none"
    marker = cookie_header(first, "blog_sso_checked")
    assert "Max-Age=300" in marker
    assert "HttpOnly" in marker
    back = await blog.get(fake.refuse(first.headers["Location"]), headers=NAVIGATE)
    assert back.status_code == 302
    assert back.headers["Location"] == "/?page=2"
    # The marker stops a loop: the next navigations are served as they are.
    for _ in range(3):
        again = await blog.get("/?page=2", headers=NAVIGATE)
        assert again.status_code == 200
    assert await signed_in_as(blog) is None


async def test_first_visit_signs_in_silently_when_signed_in_at_federation(
    blog: QuartClient, fake: FakeFederation, member: Member, session: AsyncSession
) -> None:
    grant_id = await add_grant(session, member, "blog")
    first = await blog.get("/", headers=NAVIGATE)
    assert fake.authorization_request(first.headers["Location"])["prompt"] == "none"
    callback = fake.authorize(
        first.headers["Location"], user_id=member.user.id, grant_id=grant_id, sid=member.sid
    )
    back = await blog.get(callback, headers=NAVIGATE)
    assert back.status_code == 302
    assert back.headers["Location"] == "/"
    assert (await blog.get("/", headers=NAVIGATE)).status_code == 200
    assert await signed_in_as(blog) == "Ada Hartley"


async def test_silent_sign_in_that_federation_cannot_grant_is_not_an_error(
    blog: QuartClient, fake: FakeFederation
) -> None:
    first = await blog.get("/", headers=NAVIGATE)
    back = await blog.get(fake.refuse(first.headers["Location"], "consent_required"))
    assert back.status_code == 302
    assert back.headers["Location"] == "/"


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET", "/", {**NAVIGATE, "User-Agent": "Googlebot/2.1 (+http://www.google.com/bot.html)"}),
        ("GET", "/", {**NAVIGATE, "User-Agent": "Mozilla/5.0 (compatible; bingbot/2.0)"}),
        ("GET", "/", {**NAVIGATE, "User-Agent": "curl/8.5.0"}),
        ("GET", "/", {**NAVIGATE, "User-Agent": ""}),
        ("GET", "/", {**NAVIGATE, "Accept": "application/json"}),
        ("GET", "/", {**NAVIGATE, "Accept": "application/json, text/html;q=0.5"}),
        ("GET", "/", {**NAVIGATE, "Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"}),
        ("GET", "/", {**NAVIGATE, "Sec-Fetch-Dest": "iframe"}),
        ("GET", "/", {**NAVIGATE, "Sec-Purpose": "prefetch"}),
        ("GET", "/", {"Accept": "text/html", "User-Agent": BROWSER_UA}),  # no fetch metadata
        ("POST", "/", NAVIGATE),
        ("HEAD", "/", NAVIGATE),
        ("GET", "/healthz", NAVIGATE),
        ("GET", "/readyz", NAVIGATE),
        ("GET", "/static/site.css", NAVIGATE),
        ("GET", "/auth/callback", NAVIGATE),
        ("GET", "/internal/anything", NAVIGATE),
        ("GET", "/no/such/page", NAVIGATE),
    ],
    ids=[
        "googlebot",
        "bingbot",
        "curl",
        "no-user-agent",
        "json",
        "prefers-json",
        "fetch",
        "iframe",
        "prefetch",
        "no-fetch-metadata",
        "post",
        "head",
        "healthz",
        "readyz",
        "static",
        "auth",
        "internal",
        "404",
    ],
)
async def test_no_silent_redirect_for_bots_json_non_get_and_infrastructure(
    blog: QuartClient, method: str, path: str, headers: dict[str, str]
) -> None:
    response = await blog.open(path, method=method, headers=headers)
    location = response.headers.get("Location", "")
    assert "federation.localhost" not in location
    assert response.status_code != 302


def test_bot_patterns() -> None:
    assert is_bot("Mozilla/5.0 (compatible; YandexBot/3.0)")
    assert is_bot("facebookexternalhit/1.1")
    assert is_bot("Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/120.0")
    assert not is_bot(BROWSER_UA)
    assert not is_bot(
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
    )


# --- the grant, checked on every request ------------------------------------------------------


async def revoke_in_database(session: AsyncSession, grant_id: int) -> None:
    """Revoke a grant behind the cache's back (as if its purge had been lost)."""
    await session.execute(
        update(OAuthGrant).where(OAuthGrant.id == grant_id).values(revoked_at=func.now())
    )
    await session.commit()


async def test_revocation_is_observed_once_the_cache_is_purged(
    blog: QuartClient,
    fake: FakeFederation,
    member: Member,
    session: AsyncSession,
    redis: aioredis.Redis,
) -> None:
    grant_id = await add_grant(session, member, "blog")
    await sign_in(blog, fake, member, grant_id)
    assert await signed_in_as(blog) == "Ada Hartley"
    key = grant_cache_key(grant_id)
    assert await redis.get(key) == b"1"
    assert 0 < await redis.ttl(key) <= 60  # the cache window
    await revoke_in_database(session, grant_id)
    assert await signed_in_as(blog) == "Ada Hartley"  # within the window, from the cache
    await redis.delete(key)  # what a purge does
    assert await signed_in_as(blog) is None
    assert await redis.get(key) == b"0"
    # and the app's own session forgot the sign-in
    await session.execute(
        update(OAuthGrant).where(OAuthGrant.id == grant_id).values(revoked_at=None)
    )
    await session.commit()
    await redis.delete(key)
    assert await signed_in_as(blog) is None


# --- lifetimes: an app's sign-in cannot outlive the device's SSO session -----------------------


async def set_device_last_seen(session: AsyncSession, member: Member, ago: timedelta) -> None:
    await session.execute(
        update(SsoSession)
        .where(SsoSession.id == member.sid)
        .values(last_seen_at=datetime.now(UTC) - ago)
    )
    await session.commit()


async def test_app_sign_in_ends_when_its_sso_session_is_past_its_lifetime(
    blog: QuartClient,
    fake: FakeFederation,
    member: Member,
    session: AsyncSession,
    redis: aioredis.Redis,
) -> None:
    grant_id = await add_grant(session, member, "blog")
    await sign_in(blog, fake, member, grant_id)
    assert await signed_in_as(blog) == "Ada Hartley"
    # The device was not used for over 30 days (the idle lifetime) at federation or any app.
    await set_device_last_seen(session, member, timedelta(days=30, minutes=1))
    await redis.delete(grant_cache_key(grant_id))  # past the cache window
    assert await signed_in_as(blog) is None


async def test_app_use_keeps_the_sso_session_from_idling_out(
    blog: QuartClient,
    fake: FakeFederation,
    member: Member,
    session: AsyncSession,
    redis: aioredis.Redis,
) -> None:
    grant_id = await add_grant(session, member, "blog")
    await sign_in(blog, fake, member, grant_id)
    await set_device_last_seen(session, member, timedelta(days=29))
    await redis.delete(grant_cache_key(grant_id))
    assert await signed_in_as(blog) == "Ada Hartley"
    last_seen = await session.scalar(
        select(SsoSession.last_seen_at).where(SsoSession.id == member.sid)
    )
    assert last_seen is not None
    assert last_seen > datetime.now(UTC) - timedelta(days=1)


async def test_app_sign_in_older_than_the_absolute_lifetime_is_dropped(
    blog: QuartClient, fake: FakeFederation, member: Member, session: AsyncSession
) -> None:
    grant_id = await add_grant(session, member, "blog")
    await sign_in(blog, fake, member, grant_id)
    async with blog.session_transaction() as quart_session:
        quart_session["auth"] = {
            **quart_session["auth"],
            "at": int(time.time()) - 90 * 24 * 3600 - 60,
        }
    assert await signed_in_as(blog) is None
    async with blog.session_transaction() as quart_session:
        assert "auth" not in quart_session


async def test_app_session_cookie_idle_past_the_idle_lifetime_is_refused(
    make_client: ClientMaker,
    fake: FakeFederation,
    member: Member,
    session: AsyncSession,
    settings: Settings,
) -> None:
    lifetimes = SessionSettings(idle_lifetime_seconds=3600, absolute_lifetime_seconds=7200)
    short = settings.model_copy(update={"sessions": lifetimes})
    blog = await make_client(lambda _: with_federation(create_blog_app, fake)(short))
    grant_id = await add_grant(session, member, "blog")
    await sign_in(blog, fake, member, grant_id)
    async with blog.session_transaction() as quart_session:
        data = dict(quart_session)

    def cookie_signed(seconds_ago: int) -> str:
        """The same session cookie, as the app would have signed it ``seconds_ago``."""

        class PastSigner(TimestampSigner):
            def get_timestamp(self) -> int:
                return int(time.time()) - seconds_ago

        app = blog.app  # type: ignore[attr-defined]
        serializer = app.session_interface.get_signing_serializer(app)
        serializer.signer = PastSigner
        return str(serializer.dumps(data))

    for seconds_ago, expected in [(3500, "Ada Hartley"), (3700, None)]:
        blog.cookie_jar.clear()  # type: ignore[attr-defined]
        blog.set_cookie("localhost", "blog_session", cookie_signed(seconds_ago))
        assert await signed_in_as(blog) == expected


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
async def broken_redis() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(host="127.0.0.1", port=unused_port(), socket_connect_timeout=0.5)
    yield client
    await client.aclose()


async def test_revocation_is_read_from_postgresql_when_redis_is_down(
    blog: QuartClient,
    fake: FakeFederation,
    member: Member,
    session: AsyncSession,
    broken_redis: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    grant_id = await add_grant(session, member, "blog")
    await sign_in(blog, fake, member, grant_id)
    assert await signed_in_as(blog) == "Ada Hartley"  # "active" is cached now
    state = get_state(blog.app)
    working, state.state_redis = state.state_redis, broken_redis
    try:
        with caplog.at_level(logging.WARNING, logger="rose_ash.grant_cache"):
            assert await signed_in_as(blog) == "Ada Hartley"  # still active, from the database
            await revoke_in_database(session, grant_id)
            assert await signed_in_as(blog) is None
        assert any("PostgreSQL" in record.getMessage() for record in caplog.records)
    finally:
        state.state_redis = working


# --- logout ----------------------------------------------------------------------------------


async def test_logout_needs_the_forms_csrf_token(
    blog: QuartClient, fake: FakeFederation, member: Member, session: AsyncSession
) -> None:
    await sign_in(blog, fake, member, await add_grant(session, member, "blog"))
    assert (await blog.post("/auth/logout")).status_code == 403
    assert (await blog.post("/auth/logout", form={"csrf_token": "forged"})).status_code == 403
    assert await signed_in_as(blog) == "Ada Hartley"
    assert (await blog.get("/auth/logout")).status_code == 405  # never a GET (no link-based CSRF)
    assert await signed_in_as(blog) == "Ada Hartley"


async def test_logout_in_one_app_signs_the_device_out_of_every_app(
    blog: QuartClient,
    market: QuartClient,
    fake: FakeFederation,
    member: Member,
    session: AsyncSession,
    redis: aioredis.Redis,
) -> None:
    blog_grant = await add_grant(session, member, "blog")
    market_grant = await add_grant(session, member, "market")
    await sign_in(blog, fake, member, blog_grant)
    await sign_in(market, fake, member, market_grant)
    # another device of the same member stays signed in
    other_sid = await new_device(session, member, "Mozilla/5.0 (iPhone) Safari/604.1")
    other_grant = await add_grant(session, member, "market", other_sid)
    assert await signed_in_as(market) == "Ada Hartley"
    assert await redis.get(grant_cache_key(market_grant)) == b"1"

    token = await csrf_of(blog)
    out = await blog.post("/auth/logout", form={"csrf_token": token})
    assert out.status_code == 302
    assert out.headers["Location"] == "/"
    assert "Max-Age=300" in cookie_header(out, "blog_sso_checked")  # no silent re-sign-in
    assert await signed_in_as(blog) is None
    assert await signed_in_as(market) is None  # at once: the cached status was purged

    device = await session.get(SsoSession, member.sid, populate_existing=True)
    assert device is not None
    assert device.revoked_at is not None
    rows = (await session.execute(select(OAuthGrant.id, OAuthGrant.revoked_at))).all()
    revoked = {grant_id: revoked_at for grant_id, revoked_at in rows}
    assert revoked[blog_grant] is not None
    assert revoked[market_grant] is not None
    assert revoked[other_grant] is None
    # the back-channel logout to the apps is queued for after the commit
    events = (
        await session.scalars(select(OutboxEvent).where(OutboxEvent.kind == "sso.logout"))
    ).all()
    assert [sorted(g["id"] for g in e.payload["grants"]) for e in events] == [
        sorted([blog_grant, market_grant])
    ]


async def test_logout_of_a_signed_out_visitor_just_goes_home(blog: QuartClient) -> None:
    token = await csrf_of_anonymous(blog)
    out = await blog.post("/auth/logout", form={"csrf_token": token})
    assert out.status_code == 302
    assert out.headers["Location"] == "/"


async def csrf_of_anonymous(client: QuartClient) -> str:
    # An anonymous page shows no form; the error page of a refused form shows none either,
    # so take the token the way a form would get it: from the session, via a page that sets it.
    async with client.session_transaction() as quart_session:
        token = quart_session.get("csrf_token")
        if token is None:
            token = "anonymous-token-for-the-test"
            quart_session["csrf_token"] = token
    return str(token)


# --- back-channel logout ----------------------------------------------------------------------


async def test_backchannel_logout_drops_the_cached_grant(
    market: QuartClient,
    fake: FakeFederation,
    member: Member,
    session: AsyncSession,
    redis: aioredis.Redis,
) -> None:
    grant_id = await add_grant(session, member, "market")
    await sign_in(market, fake, member, grant_id)
    assert await signed_in_as(market) == "Ada Hartley"
    await revoke_in_database(session, grant_id)  # federation revoked it, then notifies
    token = fake.logout_token("market", grant_id, member.sid)
    response = await market.post("/auth/backchannel-logout", form={"logout_token": token})
    assert response.status_code == 200  # no CSRF token: the signed JWT authenticates federation
    assert response.headers["Cache-Control"] == "no-store"
    assert await redis.get(grant_cache_key(grant_id)) in (None, b"0")
    assert await signed_in_as(market) is None


@pytest.mark.parametrize(
    "tamper",
    [
        {"aud": "blog"},
        {"iss": "http://evil.example"},
        {"events": None},
        {"events": {"something-else": {}}},
        {"nonce": "n"},
        {"jti": None},
        {"iat": None},
        {"grant_id": None},
        {"sid": None, "sub": None},
    ],
    ids=["aud", "iss", "no-events", "other-event", "nonce", "no-jti", "no-iat", "no-grant", "anon"],
)
async def test_backchannel_logout_refuses_bad_tokens(
    market: QuartClient,
    fake: FakeFederation,
    member: Member,
    session: AsyncSession,
    redis: aioredis.Redis,
    tamper: dict[str, Any],
) -> None:
    grant_id = await add_grant(session, member, "market")
    await sign_in(market, fake, member, grant_id)
    await signed_in_as(market)
    token = fake.logout_token("market", grant_id, member.sid, tamper)
    response = await market.post("/auth/backchannel-logout", form={"logout_token": token})
    assert response.status_code == 400
    assert await redis.get(grant_cache_key(grant_id)) == b"1"


async def test_backchannel_logout_refuses_a_token_signed_by_another_key(
    market: QuartClient, fake: FakeFederation, member: Member
) -> None:
    forger = FakeFederation(fake.settings)  # same kid, another key
    token = forger.logout_token("market", 1, member.sid)
    response = await market.post("/auth/backchannel-logout", form={"logout_token": token})
    assert response.status_code == 400
    garbage = await market.post("/auth/backchannel-logout", form={"logout_token": "a.b.c"})
    assert garbage.status_code == 400


async def test_backchannel_logout_fetches_a_new_signing_key(
    market: QuartClient, fake: FakeFederation, member: Member, session: AsyncSession
) -> None:
    grant_id = await add_grant(session, member, "market")
    await sign_in(market, fake, member, grant_id)  # the JWKS is cached now
    fake.key = RSAKey.generate_key(2048, parameters={"kid": "fake-2"})  # federation rotated
    token = fake.logout_token("market", grant_id, member.sid)
    response = await market.post("/auth/backchannel-logout", form={"logout_token": token})
    assert response.status_code == 200


def test_fake_key_set_round_trip() -> None:
    """The fake's JWKS is what joserfc reads (guards the fake itself)."""
    key = RSAKey.generate_key(2048, parameters={"kid": "k"})
    keys = KeySet.import_key_set({"keys": [key.as_dict(private=False)]})
    token = jwt.encode({"alg": "RS256", "kid": "k"}, {"a": 1}, key)
    assert jwt.decode(token, keys, algorithms=["RS256"]).claims == {"a": 1}


# --- against the real federation app, in process ----------------------------------------------


class AppsTransport(httpx.AsyncBaseTransport):
    """Routes each request to the in-process app of its host (federation.localhost, ...)."""

    def __init__(self) -> None:
        self.apps: dict[str, httpx.ASGITransport] = {}

    def add(self, host: str, app: Quart) -> None:
        self.apps[host] = httpx.ASGITransport(app=app)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.apps[request.url.host].handle_async_request(request)


@dataclass
class RealFederation:
    browser: QuartClient  # the member's browser at federation
    transport: AppsTransport
    member: Member

    async def follow(self, location: str) -> str:
        """The browser follows a redirect to federation; federation's answer (the callback)."""
        parts = urlsplit(location)
        assert parts.netloc == "federation.localhost"
        response = await self.browser.get(f"{parts.path}?{parts.query}")
        assert response.status_code == 302, await response.get_data(as_text=True)
        callback = urlsplit(response.headers["Location"])
        return f"{callback.path}?{callback.query}"


@pytest.fixture
async def real_federation(
    make_client: ClientMaker, session: AsyncSession, settings: Settings
) -> RealFederation:
    browser = await make_client(create_federation_app)  # seeds the clients and a signing key
    member = await make_member(session, settings)
    started = await SqlSsoService(session).do_start_session(member.user.id, user_agent=BROWSER_UA)
    await session.commit()
    browser.set_cookie("localhost", SSO_COOKIE, started.token)
    transport = AppsTransport()
    transport.add("federation.localhost", browser.app)
    return RealFederation(browser, transport, Member(member.user, started.session.id))


def with_real_federation(
    factory: Callable[[Settings], Quart], federation: RealFederation
) -> Callable[[Settings], Quart]:
    def build(settings: Settings) -> Quart:
        app = factory(settings)
        get_oauth(app).transport = federation.transport
        federation.transport.add(urlsplit(settings.url_of(app.name)).netloc, app)
        return app

    return build


async def test_sign_in_and_silent_sso_against_the_real_federation(
    make_client: ClientMaker, real_federation: RealFederation
) -> None:
    blog = await make_client(with_real_federation(create_blog_app, real_federation))
    login = await blog.get("/auth/login", query_string={"next": "/posts"})
    done = await blog.get(await real_federation.follow(login.headers["Location"]))
    assert done.status_code == 302, await done.get_data(as_text=True)
    assert done.headers["Location"] == "/posts"
    assert await signed_in_as(blog) == "Ada Hartley"
    # Market, first visit: one silent round trip signs the member in there too.
    market = await make_client(with_real_federation(create_market_app, real_federation))
    first = await market.get("/", headers=NAVIGATE)
    assert "prompt=none" in first.headers["Location"]
    back = await market.get(await real_federation.follow(first.headers["Location"]))
    assert back.headers["Location"] == "/"
    assert await signed_in_as(market) == "Ada Hartley"


async def test_logout_with_the_real_federation_and_its_back_channel(
    make_client: ClientMaker,
    real_federation: RealFederation,
    session: AsyncSession,
    settings: Settings,
    redis: aioredis.Redis,
) -> None:
    clients = {}
    for name, factory in (("blog", create_blog_app), ("market", create_market_app)):
        client = await make_client(with_real_federation(factory, real_federation))
        login = await client.get("/auth/login")
        await client.get(await real_federation.follow(login.headers["Location"]))
        assert await signed_in_as(client) == "Ada Hartley"
        clients[name] = client
    out = await clients["blog"].post(
        "/auth/logout", form={"csrf_token": await csrf_of(clients["blog"])}
    )
    assert out.status_code == 302
    assert await signed_in_as(clients["blog"]) is None
    assert await signed_in_as(clients["market"]) is None
    # Federation's outbox handler delivers signed logout tokens that the apps accept.
    handler = build_logout_handler(
        settings,
        redis,
        get_state(real_federation.browser.app).database.session_factory,  # type: ignore[union-attr]
        transport=real_federation.transport,
    )
    report = await process_due_events(
        get_state(real_federation.browser.app).database.session_factory,  # type: ignore[union-attr]
        {LOGOUT_EVENT: handler},
    )
    assert report.failed == []
    assert report.retried == []
    assert len(report.completed) == 1
    # and federation no longer signs this device in silently
    first = await clients["market"].get("/", headers=NAVIGATE)
    assert "prompt=none" in first.headers["Location"]
    back = await clients["market"].get(await real_federation.follow(first.headers["Location"]))
    assert back.headers["Location"] == "/"
    assert await signed_in_as(clients["market"]) is None
