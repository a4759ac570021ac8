"""Signing in at federation over HTTP: magic links, passwords, rate limits, CSRF, sign-out."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
import redis.asyncio as aioredis
from quart.typing import TestClientProtocol as QuartClient
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from werkzeug.datastructures import Headers

from federation.app import create_app
from federation.bp.login import (
    LINKS_PER_EMAIL,
    LINKS_PER_IP,
    PASSWORD_FAILURES_PER_EMAIL,
    PASSWORD_FAILURES_PER_IP,
    safe_next,
)
from federation.services.member_session import SSO_COOKIE
from shared.config import CookieSettings, SessionSettings, Settings
from shared.infrastructure.rate_limit import RateLimiter
from shared.models.identity import MagicLink, SsoSession, User
from shared.models.outbox import OutboxEvent
from shared.services.identity.accounts import MAIL_EVENT, SqlAccountService
from shared.services.identity.sso import SqlSsoService, hash_token
from shared.services.identity.users import SqlUserService
from tests.conftest import ClientMaker, serving

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
HTML = {"Accept": "text/html"}


@pytest.fixture
async def client(make_client: ClientMaker) -> QuartClient:
    return await make_client(create_app)


@pytest.fixture
async def pooled_client(settings: Settings, redis: aioredis.Redis) -> AsyncIterator[QuartClient]:
    """A client of an app with its own connection pool, for concurrent requests (the test's
    one connection serves one request at a time). Nothing it does may be committed.
    Its pool lets a whole burst (below) hold a connection each (16 + 16 overflow)."""
    pooled = settings.model_copy(update={"db_pool_size": 16})
    async with serving(create_app(pooled)) as client:
        yield client


async def csrf_token(client: QuartClient) -> str:
    page = await (await client.get("/login")).get_data(as_text=True)
    match = CSRF.search(page)
    assert match is not None
    return match.group(1)


def from_address(address: str | None) -> dict[str, Any]:
    """A request's scope from the client at ``address`` (the test client has none by default)."""
    return {"client": (address, 40000)} if address else {}


async def request_link(
    client: QuartClient,
    email: str,
    next_url: str = "/",
    token: str | None = None,
    address: str | None = None,
) -> tuple[int, str]:
    form = {"email": email, "next": next_url, "csrf_token": token or await csrf_token(client)}
    response = await client.post(
        "/login", form=form, headers=HTML, scope_base=from_address(address)
    )
    return response.status_code, await response.get_data(as_text=True)


async def mailed_tokens(session: AsyncSession) -> list[str]:
    rows = await session.scalars(
        select(OutboxEvent).where(OutboxEvent.kind == MAIL_EVENT).order_by(OutboxEvent.id)
    )
    return [row.payload["data"]["token"] for row in rows if "token" in row.payload["data"]]


async def mail_count(session: AsyncSession) -> int:
    count = await session.scalar(
        select(func.count()).select_from(OutboxEvent).where(OutboxEvent.kind == MAIL_EVENT)
    )
    return int(count or 0)


async def password_login(
    client: QuartClient,
    email: str,
    password: str,
    next_url: str = "/",
    *,
    address: str | None = None,
    token: str | None = None,
) -> tuple[int, str, Headers]:
    form = {
        "email": email,
        "password": password,
        "next": next_url,
        "csrf_token": token or await csrf_token(client),
    }
    response = await client.post(
        "/login/password", form=form, headers=HTML, scope_base=from_address(address)
    )
    return response.status_code, await response.get_data(as_text=True), response.headers


async def test_the_login_page_has_both_forms_with_csrf_tokens(client: QuartClient) -> None:
    response = await client.get("/login?next=" + quote("/oauth/authorize?client_id=blog&x=1"))
    assert response.status_code == 200
    page = await response.get_data(as_text=True)
    assert '<form method="post" action="/login"' in page
    assert '<form method="post" action="/login/password"' in page
    assert len(CSRF.findall(page)) == 2
    assert 'name="next" value="/oauth/authorize?client_id=blog&amp;x=1"' in page
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    ("path", "form"),
    [
        ("/login", {"email": "ann@example.org"}),
        ("/login/password", {"email": "ann@example.org", "password": "correct horse battery"}),
        ("/logout", {}),
    ],
)
async def test_login_forms_refuse_posts_without_a_valid_csrf_token(
    client: QuartClient, session: AsyncSession, path: str, form: dict[str, str]
) -> None:
    await csrf_token(client)  # the visitor has a token, but does not send it
    for sent in [form, {**form, "csrf_token": "forged"}]:
        response = await client.post(path, form=sent, headers=HTML)
        assert response.status_code == 403
        assert SSO_COOKIE not in response.headers.get("Set-Cookie", "")
    assert await mail_count(session) == 0


async def test_a_known_and_an_unknown_email_get_identical_answers(
    client: QuartClient, session: AsyncSession
) -> None:
    await SqlUserService(session).create_user("ann@example.org")
    await session.commit()
    token = await csrf_token(client)
    answers = []
    # Addresses of one length: the page echoes the address typed, and Content-Length counts it.
    for email in ["ann@example.org", "cat@example.org"]:
        response = await client.post(
            "/login", form={"email": email, "next": "/", "csrf_token": token}, headers=HTML
        )
        headers = {k: v for k, v in response.headers.items() if k.lower() != "x-request-id"}
        body = (await response.get_data(as_text=True)).replace(email, "<email>")
        answers.append((response.status_code, body, headers))
    assert answers[0] == answers[1]
    assert answers[0][0] == 200
    assert "Check your mail" in answers[0][1]
    assert len(await mailed_tokens(session)) == 2


async def test_closed_registration_answers_the_same_too(
    make_client: ClientMaker, settings: Settings, session: AsyncSession
) -> None:
    closed = settings.model_copy(
        update={"features": settings.features.model_copy(update={"registration_open": False})}
    )
    client = await make_client(lambda _: create_app(closed))
    await SqlUserService(session).create_user("ann@example.org")
    await session.commit()
    token = await csrf_token(client)
    answers = []
    for email in ["ann@example.org", "cat@example.org"]:
        response = await client.post(
            "/login", form={"email": email, "csrf_token": token}, headers=HTML
        )
        headers = {k: v for k, v in response.headers.items() if k.lower() != "x-request-id"}
        body = (await response.get_data(as_text=True)).replace(email, "<email>")
        answers.append((response.status_code, body, headers))
    assert answers[0] == answers[1]
    assert len(await mailed_tokens(session)) == 1  # the member's link; the stranger is told
    assert await SqlUserService(session).get_user_by_email("cat@example.org") is None


async def test_a_magic_link_signs_in_once_and_goes_on_to_next(
    client: QuartClient, session: AsyncSession
) -> None:
    next_url = "/oauth/authorize?client_id=blog&state=abc"
    status, _ = await request_link(client, "New@Example.org", next_url)
    assert status == 200
    [token] = await mailed_tokens(session)
    response = await follow_magic_link(client, token)
    assert response.status_code == 303
    assert response.headers["Location"] == next_url
    cookie = response.headers["Set-Cookie"]
    assert f"{SSO_COOKIE}=" in cookie
    assert "HttpOnly" in cookie
    sso_token = re.search(rf"{SSO_COOKIE}=([^;]+)", cookie)
    assert sso_token is not None
    sso = await session.scalar(
        select(SsoSession).where(SsoSession.token_hash == hash_token(sso_token.group(1)))
    )
    assert sso is not None
    user = await session.get(User, sso.user_id)
    assert user is not None
    await session.refresh(user)
    assert user.email == "New@Example.org"
    assert user.email_verified_at is not None
    assert user.last_login_at is not None
    # Signed in now: the login page says so.
    page = await (await client.get("/login")).get_data(as_text=True)
    assert "You are signed in as" in page
    # Replayed: refused with a way forward, and no second session.
    assert (await client.get(f"/login/magic/{token}")).status_code == 400
    replay = await press_sign_in(client, token)
    assert replay.status_code == 400
    assert "expired or has already been used" in await replay.get_data(as_text=True)
    assert await session.scalar(select(func.count()).select_from(SsoSession)) == 1


async def test_an_expired_magic_link_is_refused(client: QuartClient, session: AsyncSession) -> None:
    await request_link(client, "late@example.org")
    [token] = await mailed_tokens(session)
    await session.execute(update(MagicLink).values(expires_at=func.now() - timedelta(seconds=1)))
    await session.commit()
    assert (await client.get(f"/login/magic/{token}")).status_code == 400
    response = await press_sign_in(client, token)
    assert response.status_code == 400
    page = await response.get_data(as_text=True)
    assert "expired or has already been used" in page
    assert 'action="/login"' in page  # ask for a new one right there
    assert SSO_COOKIE not in response.headers.get("Set-Cookie", "")
    assert await SqlUserService(session).get_user_by_email("late@example.org") is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/oauth/authorize?x=1", "/oauth/authorize?x=1"),
        ("/", "/"),
        ("", "/"),
        (None, "/"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("javascript:alert(1)", "/"),
        ("evil.example", "/"),
        ("/ok\r\nSet-Cookie: x=1", "/"),
    ],
)
def test_next_must_be_a_path_on_this_host(value: str | None, expected: str) -> None:
    assert safe_next(value) == expected


async def test_a_foreign_next_is_not_followed_after_sign_in(
    client: QuartClient, session: AsyncSession
) -> None:
    await request_link(client, "ann@example.org", "//evil.example/steal")
    [token] = await mailed_tokens(session)
    response = await follow_magic_link(client, token)
    assert response.status_code == 303
    assert response.headers["Location"] == "/"


async def test_an_invalid_email_is_422_on_the_form(
    client: QuartClient, session: AsyncSession
) -> None:
    status, page = await request_link(client, "not an address")
    assert status == 422
    assert "Please enter a valid email address." in page
    assert await mail_count(session) == 0


async def test_link_requests_are_limited_per_email(
    client: QuartClient, session: AsyncSession
) -> None:
    token = await csrf_token(client)
    for _ in range(LINKS_PER_EMAIL.limit):
        assert (await request_link(client, "ann@example.org", token=token))[0] == 200
    response = await client.post(
        "/login", form={"email": "ANN@example.org", "csrf_token": token}, headers=HTML
    )
    assert response.status_code == 429
    assert 0 < int(response.headers["Retry-After"]) <= LINKS_PER_EMAIL.window_seconds
    assert "Too many attempts" in await response.get_data(as_text=True)
    assert await mail_count(session) == LINKS_PER_EMAIL.limit
    # Another address from the same client is still served.
    assert (await request_link(client, "bob@example.org", token=token))[0] == 200


async def set_up_password(session: AsyncSession, email: str, password: str) -> int:
    member = await SqlUserService(session).create_user(email)
    await SqlAccountService(session).do_set_password(member.id, password)
    await session.commit()
    return member.id


async def test_password_sign_in(client: QuartClient, session: AsyncSession) -> None:
    member_id = await set_up_password(session, "ann@example.org", "correct horse battery")
    status, _, headers = await password_login(
        client, "Ann@Example.org", "correct horse battery", "/oauth/authorize?x=1"
    )
    assert status == 303
    assert headers["Location"] == "/oauth/authorize?x=1"
    assert f"{SSO_COOKIE}=" in headers["Set-Cookie"]
    sso = await session.scalar(select(SsoSession).where(SsoSession.user_id == member_id))
    assert sso is not None


async def test_wrong_passwords_and_unknown_emails_fail_alike(
    client: QuartClient, session: AsyncSession
) -> None:
    await set_up_password(session, "ann@example.org", "correct horse battery")
    await SqlUserService(session).create_user("bob@example.org")  # no password
    await session.commit()
    answers = []
    for email, password in [
        ("ann@example.org", "wrong password"),
        ("bob@example.org", "wrong password"),
        ("cat@example.org", "wrong password"),
    ]:
        status, page, _ = await password_login(client, email, password)
        assert status == 422
        assert "do not match an account with a password" in page
        answers.append(page.replace(email, "<email>"))
    assert answers[0] == answers[1] == answers[2]


async def test_password_lockout_and_recovery(
    client: QuartClient, session: AsyncSession, redis: aioredis.Redis
) -> None:
    await set_up_password(session, "ann@example.org", "correct horse battery")
    for _ in range(PASSWORD_FAILURES_PER_EMAIL.limit):
        assert (await password_login(client, "ann@example.org", "wrong guess!"))[0] == 422
    # Locked out: even the right password is not tried now.
    status, page, headers = await password_login(client, "ann@example.org", "correct horse battery")
    assert status == 429
    assert 0 < int(headers["Retry-After"]) <= PASSWORD_FAILURES_PER_EMAIL.window_seconds
    assert "Too many attempts" in page
    assert SSO_COOKIE not in headers.get("Set-Cookie", "")
    # The window ends (made to end now, rather than waiting 15 minutes): the member gets in.
    for key in await redis.keys("rose_ash:rate:login-password-email:*"):
        await redis.pexpire(key, 1)
    await asyncio.sleep(0.05)
    assert await redis.keys("rose_ash:rate:login-password-email:*") == []
    status, _, headers = await password_login(client, "ann@example.org", "correct horse battery")
    assert status == 303
    assert f"{SSO_COOKIE}=" in headers["Set-Cookie"]
    # ... and the failures are forgotten on success.
    assert await redis.keys("rose_ash:rate:login-password-email:*") == []


async def test_link_requests_are_limited_per_client_address(
    client: QuartClient, session: AsyncSession
) -> None:
    """Many addresses (each under its own limit) from one client: its limit holds, and an
    IPv6 client is one client across its /64."""
    token = await csrf_token(client)
    emails = [f"m{n}@example.org" for n in range(LINKS_PER_IP.limit + 1)]
    for n, email in enumerate(emails[:-1]):
        address = f"2001:db8:1:2::{n + 1:x}"  # each request from another address of one /64
        assert (await request_link(client, email, token=token, address=address))[0] == 200
    status, page = await request_link(client, emails[-1], token=token, address="2001:db8:1:2::ff")
    assert status == 429
    assert "Too many attempts" in page
    assert await mail_count(session) == LINKS_PER_IP.limit
    # Another network, and an IPv4 client, are counted apart.
    assert (await request_link(client, emails[-1], token=token, address="2001:db8:1:3::1"))[
        0
    ] == 200
    assert (await request_link(client, emails[-1], token=token, address="203.0.113.9"))[0] == 200


async def test_right_passwords_do_not_use_up_the_client_address_limit(
    client: QuartClient, session: AsyncSession, redis: aioredis.Redis
) -> None:
    """Members behind one address (an office) signing in with their passwords are no failures."""
    await set_up_password(session, "ann@example.org", "correct horse battery")
    limiter = RateLimiter(redis)
    for _ in range(PASSWORD_FAILURES_PER_IP.limit - 1):  # others failed from there before
        await limiter.hit(PASSWORD_FAILURES_PER_IP, "192.0.2.1")
    for _ in range(2):  # the last attempt left, and again: each right one is taken back
        status, _, _ = await password_login(
            client, "ann@example.org", "correct horse battery", address="192.0.2.1"
        )
        assert status == 303


async def burst_of_passwords(client: QuartClient, emails: list[str], address: str) -> list[int]:
    """Wrong passwords for ``emails``, all sent at once from ``address``: their statuses."""
    token = await csrf_token(client)
    answers = await asyncio.gather(
        *(
            password_login(client, email, "wrong guess!", address=address, token=token)
            for email in emails
        )
    )
    return [status for status, _, _ in answers]


async def test_a_burst_of_wrong_passwords_gets_no_more_checks_than_the_limit(
    pooled_client: QuartClient,
) -> None:
    """Concurrent guesses at one address's password: each is counted before it is checked.
    (An address without an account fails alike, after a password check all the same.)"""
    burst = PASSWORD_FAILURES_PER_EMAIL.limit + 10
    statuses = await burst_of_passwords(pooled_client, ["ann@example.org"] * burst, "203.0.113.5")
    # 422: the password was checked (and wrong); 429: refused before any check.
    assert statuses.count(422) == PASSWORD_FAILURES_PER_EMAIL.limit
    assert statuses.count(429) == burst - PASSWORD_FAILURES_PER_EMAIL.limit


async def test_a_burst_across_members_gets_no_more_checks_than_the_address_limit(
    pooled_client: QuartClient,
) -> None:
    """Concurrent guesses at many addresses' passwords (each under its own limit) from one
    client, an IPv6 one: the limit per client address holds, for its whole /64."""
    burst = PASSWORD_FAILURES_PER_IP.limit + 10
    emails = [f"m{n}@example.org" for n in range(burst)]
    statuses = await burst_of_passwords(pooled_client, emails, "2001:db8:9::1")
    assert statuses.count(422) == PASSWORD_FAILURES_PER_IP.limit
    assert statuses.count(429) == burst - PASSWORD_FAILURES_PER_IP.limit
    status, page, headers = await password_login(
        pooled_client, "x@example.org", "guess", address="2001:db8:9::2"
    )
    assert status == 429
    assert "Too many attempts" in page
    assert 0 < int(headers["Retry-After"]) <= PASSWORD_FAILURES_PER_IP.window_seconds
    # Another network is not held back.
    status, _, _ = await password_login(
        pooled_client, "x@example.org", "guess", address="2001:db8:a::1"
    )
    assert status == 422


async def test_sign_out_ends_the_session_and_clears_the_cookie(
    client: QuartClient, session: AsyncSession
) -> None:
    await request_link(client, "ann@example.org")
    [token] = await mailed_tokens(session)
    await follow_magic_link(client, token)
    response = await client.post("/logout", form={"csrf_token": await csrf_token(client)})
    assert response.status_code == 303
    assert response.headers["Location"] == "/"
    assert (
        f'{SSO_COOKIE}="";' in response.headers["Set-Cookie"]
        or "Max-Age=0" in (response.headers["Set-Cookie"])
    )
    sso = await session.scalar(select(SsoSession))
    assert sso is not None
    await session.refresh(sso)
    assert sso.revoked_at is not None
    page = await (await client.get("/login")).get_data(as_text=True)
    assert "You are signed in as" not in page


async def follow_magic_link(
    client: QuartClient, token: str, headers: dict[str, str] | None = None
) -> Any:
    """What a member does: open the mailed link, then press "Sign in" on that page."""
    page = await client.get(f"/login/magic/{token}", headers=headers)
    assert page.status_code == 200
    text = await page.get_data(as_text=True)
    assert f'action="/login/magic/{token}"' in text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', text)
    assert csrf is not None
    return await client.post(
        f"/login/magic/{token}", form={"csrf_token": csrf.group(1)}, headers=headers
    )


async def press_sign_in(client: QuartClient, token: str) -> Any:
    """The link page's button pressed without opening the page now (it was open before)."""
    form = {"csrf_token": await csrf_token(client)}
    return await client.post(f"/login/magic/{token}", form=form, headers=HTML)


async def test_opening_the_link_does_not_use_it(client: QuartClient, session: AsyncSession) -> None:
    """Mail scanners open links before the member does: only the button's POST signs in."""
    await request_link(client, "scanned@example.org")
    [token] = await mailed_tokens(session)
    for _ in range(3):  # the scanner, a preview, the member
        assert (await client.get(f"/login/magic/{token}")).status_code == 200
    assert await session.scalar(select(func.count()).select_from(SsoSession)) == 0
    response = await follow_magic_link(client, token)
    assert response.status_code == 303
    assert f"{SSO_COOKIE}=" in response.headers["Set-Cookie"]


# Sessions end on the server: idle and absolute lifetimes (Settings.sessions).


async def signed_in_device(client: QuartClient, session: AsyncSession) -> int:
    """A member signed in on this client's device; the SSO session's id."""
    member = await SqlUserService(session).create_user("ann@example.org", display_name="Ann")
    started = await SqlSsoService(session).do_start_session(member.id, user_agent="test")
    await session.commit()
    client.set_cookie("localhost", SSO_COOKIE, started.token)
    return started.session.id


async def shows_signed_in(client: QuartClient) -> bool:
    return "You are signed in as" in await (await client.get("/login")).get_data(as_text=True)


async def age_session(session: AsyncSession, sso_session_id: int, **ages: timedelta) -> None:
    now = datetime.now(UTC)
    await session.execute(
        update(SsoSession)
        .where(SsoSession.id == sso_session_id)
        .values({column: now - age for column, age in ages.items()})
    )
    await session.commit()


@pytest.mark.parametrize(
    "ages",
    [
        {"last_seen_at": timedelta(days=30, minutes=1)},  # idle for longer than 30 days
        {"created_at": timedelta(days=90, minutes=1)},  # in use, but started over 90 days ago
    ],
)
async def test_an_sso_session_past_its_lifetime_is_refused_on_the_server(
    client: QuartClient, session: AsyncSession, ages: dict[str, timedelta]
) -> None:
    sso_session_id = await signed_in_device(client, session)
    assert await shows_signed_in(client)
    await age_session(session, sso_session_id, **ages)
    assert not await shows_signed_in(client)  # the cookie is still sent; the server says no


async def test_using_the_sso_session_keeps_it_from_idling_out(
    client: QuartClient, session: AsyncSession
) -> None:
    sso_session_id = await signed_in_device(client, session)
    await age_session(session, sso_session_id, last_seen_at=timedelta(days=29))
    assert await shows_signed_in(client)
    row = await session.get(SsoSession, sso_session_id)
    assert row is not None
    await session.refresh(row)
    assert row.last_seen_at > datetime.now(UTC) - timedelta(days=1)


async def test_session_lifetimes_are_configurable(
    make_client: ClientMaker, session: AsyncSession, settings: Settings
) -> None:
    short = settings.model_copy(
        update={
            "sessions": SessionSettings(idle_lifetime_seconds=3600, absolute_lifetime_seconds=7200)
        }
    )
    client = await make_client(lambda _: create_app(short))
    sso_session_id = await signed_in_device(client, session)
    await age_session(session, sso_session_id, last_seen_at=timedelta(minutes=59))
    assert await shows_signed_in(client)
    await age_session(session, sso_session_id, last_seen_at=timedelta(minutes=61))
    assert not await shows_signed_in(client)


def test_the_idle_lifetime_cannot_exceed_the_absolute_one() -> None:
    with pytest.raises(ValueError, match="IDLE_LIFETIME_SECONDS"):
        SessionSettings(idle_lifetime_seconds=7200, absolute_lifetime_seconds=3600)


# __Host- cookies: host-only, Secure, Path=/, so no sibling subdomain can plant or replace them.


async def test_secure_cookies_are_host_prefixed(
    make_client: ClientMaker, session: AsyncSession, settings: Settings
) -> None:
    secure = settings.model_copy(update={"cookies": CookieSettings(secure=True, samesite="Lax")})
    client = await make_client(lambda _: create_app(secure))
    await set_up_password(session, "ann@example.org", "correct horse battery")
    page = await client.get("/login")
    [session_cookie] = [c for c in page.headers.getlist("Set-Cookie") if "_session=" in c]
    assert session_cookie.startswith("__Host-federation_session=")
    status, _, headers = await password_login(client, "ann@example.org", "correct horse battery")
    assert status == 303
    [sso] = [c for c in headers.getlist("Set-Cookie") if "federation_sso=" in c]
    assert sso.startswith(f"__Host-{SSO_COOKIE}=")
    assert "Secure" in sso
    assert "Path=/" in sso
    assert "Domain" not in sso
    assert "HttpOnly" in sso
    assert await shows_signed_in(client)  # read back under the name in force
    # The plain name is not read under secure settings (that browser just signs in again).
    token = sso.split("=", 1)[1].split(";", 1)[0]
    client.cookie_jar.clear()  # type: ignore[attr-defined]
    client.set_cookie("localhost", SSO_COOKIE, token)
    assert not await shows_signed_in(client)
    client.set_cookie("localhost", f"__Host-{SSO_COOKIE}", token)
    assert await shows_signed_in(client)


async def test_plain_cookie_names_over_http_in_development(
    client: QuartClient, session: AsyncSession
) -> None:
    await set_up_password(session, "ann@example.org", "correct horse battery")
    _, _, headers = await password_login(client, "ann@example.org", "correct horse battery")
    [sso] = [c for c in headers.getlist("Set-Cookie") if "federation_sso=" in c]
    assert sso.startswith(f"{SSO_COOKIE}=")  # browsers refuse __Host- without Secure
    assert "Secure" not in sso


async def test_the_link_page_names_the_account_it_signs_in_to(
    client: QuartClient, session: AsyncSession
) -> None:
    """Mallory mails Ann a link to Mallory's account (to have Ann use it as her own): the page
    the link opens says whose account it is before anyone presses the button."""
    member = await SqlUserService(session).create_user("Mallory@Example.org")
    await SqlAccountService(session).do_change_username(member.id, "mallory")
    await session.commit()
    await request_link(client, "mallory@example.org")
    [token] = await mailed_tokens(session)
    response = await client.get(f"/login/magic/{token}")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    page = await response.get_data(as_text=True)
    assert '<strong class="link-email">Mallory@Example.org</strong>' in page
    assert '<strong class="link-username">mallory</strong>' in page
    assert await session.scalar(select(func.count()).select_from(SsoSession)) == 0


async def test_the_link_page_of_a_newcomer_says_it_creates_their_account(
    client: QuartClient, session: AsyncSession
) -> None:
    await request_link(client, "new@example.org")
    [token] = await mailed_tokens(session)
    page = await (await client.get(f"/login/magic/{token}")).get_data(as_text=True)
    assert 'creates a Rose Ash account for <strong class="link-email">new@example.org' in page
    assert "link-username" not in page


async def test_the_page_of_a_used_link_says_so_and_names_no_one(
    client: QuartClient, session: AsyncSession
) -> None:
    await request_link(client, "ann@example.org")
    [token] = await mailed_tokens(session)
    await follow_magic_link(client, token)
    for path in [f"/login/magic/{token}", "/login/magic/not-a-token"]:
        response = await client.get(path, headers=HTML)
        assert response.status_code == 400
        page = await response.get_data(as_text=True)
        assert "expired or has already been used" in page
        assert "ann@example.org" not in page.split("You are signed in as")[0]
