"""The account dashboard: profile, devices and sessions with revoke, sign out everywhere."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from quart import Response
from quart.typing import TestClientProtocol as QuartClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from account.app import create_app as create_account_app
from account.bp.home import EMAIL_CHANGES_PER_ADDRESS, EMAIL_CHANGES_PER_MEMBER
from account.services.dashboard import describe_user_agent, do_revoke_device
from blog.app import create_app as create_blog_app
from shared.config import Settings
from shared.contracts.errors import NotFoundError
from shared.infrastructure.fragment_cache import CacheAddress, fragment_cache_key
from shared.infrastructure.grant_cache import grant_cache_key
from shared.infrastructure.member_views import MEMBERS_PAGE_TAG
from shared.infrastructure.page_cache import page_purged_key
from shared.models.identity import OAuthGrant, SsoSession
from shared.models.outbox import OutboxEvent
from shared.services.identity.accounts import MAIL_EVENT
from shared.services.identity.sso import SqlSsoService
from shared.services.identity.users import SqlUserService
from tests.conftest import ClientMaker
from tests.sso_support import (
    FakeFederation,
    Member,
    add_grant,
    make_member,
    new_device,
    sign_in,
    signed_in_as,
    with_federation,
)

PHONE_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)
HTML = {"Accept": "text/html"}


@pytest.fixture
async def account(
    make_client: ClientMaker, fake: FakeFederation, member: Member, session: AsyncSession
) -> QuartClient:
    """The account app, signed in as the member on their laptop (member.sid)."""
    client = await make_client(with_federation(create_account_app, fake))
    await sign_in(client, fake, member, await add_grant(session, member, "account"))
    return client


@pytest.fixture
async def blog(
    make_client: ClientMaker, fake: FakeFederation, member: Member, session: AsyncSession
) -> QuartClient:
    """The blog, signed in on the same laptop."""
    client = await make_client(with_federation(create_blog_app, fake))
    await sign_in(client, fake, member, await add_grant(session, member, "blog"))
    return client


async def dashboard(client: QuartClient) -> str:
    response = await client.get("/", headers=HTML)
    assert response.status_code == 200
    return await response.get_data(as_text=True)


def csrf_in(page: str) -> str:
    return page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]


def device_ids(page: str) -> list[int]:
    return [int(part.split('"', 1)[0]) for part in page.split('id="device-')[1:]]


async def test_anonymous_visitors_get_the_introduction_and_a_sign_in_link(
    make_client: ClientMaker, fake: FakeFederation
) -> None:
    client = await make_client(with_federation(create_account_app, fake))
    page = await dashboard(client)
    assert "Your membership in one place" in page
    assert 'href="/auth/login?next=%2F"' in page
    assert 'class="sign-in"' in page  # and the header offers it too
    assert "Devices and sessions" not in page


async def test_the_dashboard_shows_the_profile(account: QuartClient, member: Member) -> None:
    page = await dashboard(account)
    assert '<dd class="display-name">Ada Hartley</dd>' in page
    assert '<dd class="username">@ada</dd>' in page
    assert "ada@example.org" in page
    assert 'title="Your account">Ada Hartley</a>' in page  # the header


async def test_the_dashboard_lists_devices_and_the_apps_signed_in_from_each(
    account: QuartClient, blog: QuartClient, member: Member, session: AsyncSession
) -> None:
    phone = await new_device(session, member, PHONE_UA)
    await add_grant(session, member, "market", phone)
    page = await dashboard(account)
    assert set(device_ids(page)) == {member.sid, phone}
    laptop_item = page.split(f'id="device-{member.sid}"', 1)[1].split("</li>", 1)[0]
    phone_item = page.split(f'id="device-{phone}"', 1)[1].split("</li>", 1)[0]
    assert "Firefox on Linux" in laptop_item
    assert "(this device)" in laptop_item
    assert "Signed in to: Rose Ash Account, Rose Ash Blog" in laptop_item
    assert "Safari on iPhone" in phone_item
    assert "(this device)" not in phone_item
    assert "Signed in to: Rose Ash Market" in phone_item


async def test_revoking_another_device_signs_it_out_of_every_app(
    make_client: ClientMaker,
    fake: FakeFederation,
    account: QuartClient,
    member: Member,
    session: AsyncSession,
) -> None:
    phone = await new_device(session, member, PHONE_UA)
    phone_blog = await make_client(with_federation(create_blog_app, fake))
    await sign_in(
        phone_blog, fake, member, await add_grant(session, member, "blog", phone), sid=phone
    )
    assert await signed_in_as(phone_blog) == "Ada Hartley"

    page = await dashboard(account)
    refused = await account.post(f"/devices/{phone}/revoke")  # no CSRF token
    assert refused.status_code == 403
    done = await account.post(f"/devices/{phone}/revoke", form={"csrf_token": csrf_in(page)})
    assert done.status_code == 302
    assert done.headers["Location"] == "/?done=device"
    page = await (await account.get(done.headers["Location"], headers=HTML)).get_data(as_text=True)
    assert "The device was signed out." in page
    assert device_ids(page) == [member.sid]  # this device stays signed in
    assert await signed_in_as(phone_blog) is None  # the phone's blog follows at once
    phone_row = await session.get(SsoSession, phone, populate_existing=True)
    assert phone_row is not None
    assert phone_row.revoked_at is not None


async def test_a_member_cannot_revoke_someone_elses_device(
    account: QuartClient, session: AsyncSession, settings: Settings
) -> None:
    other = await make_member(session, settings, "bob@example.org", username="bob")
    page = await dashboard(account)
    response = await account.post(
        f"/devices/{other.sid}/revoke", form={"csrf_token": csrf_in(page)}, headers=HTML
    )
    assert response.status_code == 404
    row = await session.get(SsoSession, other.sid, populate_existing=True)
    assert row is not None
    assert row.revoked_at is None


async def test_revoke_device_service_checks_ownership(
    session: AsyncSession, settings: Settings
) -> None:
    ada = await make_member(session, settings)
    bob = await make_member(session, settings, "bob@example.org", username="bob")
    sso = SqlSsoService(session)
    with pytest.raises(NotFoundError):
        await do_revoke_device(sso, ada.user.id, bob.sid)
    grant = await add_grant(session, ada, "blog")
    assert await do_revoke_device(sso, ada.user.id, ada.sid) == [grant]
    with pytest.raises(NotFoundError):  # already signed out
        await do_revoke_device(sso, ada.user.id, ada.sid)


async def test_revoking_this_device_signs_out_here_too(
    account: QuartClient, blog: QuartClient, member: Member
) -> None:
    page = await dashboard(account)
    done = await account.post(f"/devices/{member.sid}/revoke", form={"csrf_token": csrf_in(page)})
    assert done.status_code == 302
    assert done.headers["Location"] == "/"
    assert await signed_in_as(account) is None
    assert await signed_in_as(blog) is None


async def test_sign_out_everywhere_revokes_every_device(
    make_client: ClientMaker,
    fake: FakeFederation,
    account: QuartClient,
    blog: QuartClient,
    member: Member,
    session: AsyncSession,
    redis: aioredis.Redis,
) -> None:
    phone = await new_device(session, member, PHONE_UA)
    phone_blog = await make_client(with_federation(create_blog_app, fake))
    await sign_in(
        phone_blog, fake, member, await add_grant(session, member, "blog", phone), sid=phone
    )
    assert await signed_in_as(phone_blog) == "Ada Hartley"
    page = await dashboard(account)
    assert (await account.post("/devices/sign-out-everywhere")).status_code == 403
    done = await account.post("/devices/sign-out-everywhere", form={"csrf_token": csrf_in(page)})
    assert done.status_code == 302
    assert done.headers["Location"] == "/"
    for client in (account, blog, phone_blog):
        assert await signed_in_as(client) is None
    active = await session.scalars(
        select(SsoSession.id).where(
            SsoSession.user_id == member.user.id, SsoSession.revoked_at.is_(None)
        )
    )
    assert list(active) == []
    grants = await session.scalars(
        select(OAuthGrant.id).where(
            OAuthGrant.user_id == member.user.id, OAuthGrant.revoked_at.is_(None)
        )
    )
    assert list(grants) == []
    for grant_id in (await session.scalars(select(OAuthGrant.id))).all():
        assert await redis.get(grant_cache_key(grant_id)) in (None, b"0")


async def test_username_change_and_its_errors(
    account: QuartClient, session: AsyncSession, settings: Settings
) -> None:
    await make_member(session, settings, "bob@example.org", username="bob")
    page = await dashboard(account)
    token = csrf_in(page)
    done = await account.post("/profile/username", form={"csrf_token": token, "username": "ada_h"})
    assert done.headers["Location"] == "/?done=username"
    assert '<dd class="username">@ada_h</dd>' in await dashboard(account)
    taken = await account.post("/profile/username", form={"csrf_token": token, "username": "bob"})
    assert taken.status_code == 409
    assert "is taken" in await taken.get_data(as_text=True)
    bad = await account.post("/profile/username", form={"csrf_token": token, "username": "A B"})
    assert bad.status_code == 422
    assert '<dd class="username">@ada_h</dd>' in await dashboard(account)


async def test_a_username_change_purges_the_members_menu_and_the_member_directory(
    account: QuartClient, member: Member, redis: aioredis.Redis
) -> None:
    """The header's auth-menu (cached per member) and federation's directory (a cached
    anonymous page) show the member by name: both are dropped once the change is committed."""
    mine = fragment_cache_key(CacheAddress("account", "auth-menu", None, "full", member.user.id))
    others = fragment_cache_key(CacheAddress("account", "auth-menu", None, "full", 999_999))
    await redis.set(mine, '{"html": "<div>ada</div>", "at": 1}')
    await redis.set(others, '{"html": "<div>someone</div>", "at": 1}')
    token = csrf_in(await dashboard(account))
    await account.post("/profile/username", form={"csrf_token": token, "username": "ada_h"})
    assert await redis.get(mine) is None
    assert await redis.get(others) is not None  # other members' menus are still good
    assert await redis.get(page_purged_key(MEMBERS_PAGE_TAG)) is not None


async def test_email_change_asks_for_confirmation(account: QuartClient) -> None:
    token = csrf_in(await dashboard(account))
    done = await account.post("/profile/email", form={"csrf_token": token, "email": "ada@new.org"})
    assert done.headers["Location"] == "/?done=email"
    page = await dashboard(account)
    assert "Waiting for confirmation: ada@new.org" in page
    assert '<dd class="email">ada@example.org' in page
    bad = await account.post("/profile/email", form={"csrf_token": token, "email": "nope"})
    assert bad.status_code == 422


async def test_an_email_change_answers_alike_whether_or_not_the_address_has_an_account(
    account: QuartClient, session: AsyncSession
) -> None:
    """The dashboard must not tell whether an address belongs to a member."""
    await SqlUserService(session).create_user("bob@example.org")
    await session.commit()
    token = csrf_in(await dashboard(account))
    pages = {}
    for address in ("free@example.org", "bob@example.org"):
        answer = await account.post("/profile/email", form={"csrf_token": token, "email": address})
        assert (answer.status_code, answer.headers["Location"]) == (302, "/?done=email")
        page = await dashboard(account)
        assert f"Waiting for confirmation: {address}" in page
        pages[address] = page.replace(address, "ADDRESS")
    assert pages["free@example.org"] == pages["bob@example.org"]


async def test_email_change_requests_are_rate_limited_per_member_and_per_address(
    account: QuartClient, session: AsyncSession
) -> None:
    token = csrf_in(await dashboard(account))

    async def ask(address: str) -> Response:
        return await account.post("/profile/email", form={"csrf_token": token, "email": address})

    for _ in range(EMAIL_CHANGES_PER_ADDRESS.limit):
        assert (await ask("target@example.org")).headers["Location"] == "/?done=email"
    refused = await ask("Target@Example.org")
    assert refused.status_code == 429
    assert 0 < int(refused.headers["Retry-After"]) <= EMAIL_CHANGES_PER_ADDRESS.window_seconds
    assert "Too many requests to change your email address" in await refused.get_data(as_text=True)
    sent = EMAIL_CHANGES_PER_ADDRESS.limit + 1
    for index in range(EMAIL_CHANGES_PER_MEMBER.limit - sent):
        assert (await ask(f"other{index}@example.org")).headers["Location"] == "/?done=email"
    assert (await ask("fresh@example.org")).status_code == 429  # the member's own limit
    mails = await session.scalar(
        select(func.count()).select_from(OutboxEvent).where(OutboxEvent.kind == MAIL_EVENT)
    )
    assert mails == EMAIL_CHANGES_PER_MEMBER.limit - 1


async def test_password_set_and_removed(account: QuartClient) -> None:
    token = csrf_in(await dashboard(account))
    differ = await account.post(
        "/profile/password",
        form={"csrf_token": token, "password": "correct horse", "password_again": "other one"},
    )
    assert differ.status_code == 422
    saved = await account.post(
        "/profile/password",
        form={"csrf_token": token, "password": "correct horse", "password_again": "correct horse"},
    )
    assert saved.headers["Location"] == "/?done=password"
    assert "<dd>set</dd>" in await dashboard(account)
    removed = await account.post("/profile/password", form={"csrf_token": token, "remove": "1"})
    assert removed.headers["Location"] == "/?done=password-removed"
    assert "none: you sign in with email links" in await dashboard(account)


async def test_done_messages_are_fixed_texts(account: QuartClient) -> None:
    page = await (await account.get("/?done=Your+account+is+locked", headers=HTML)).get_data(
        as_text=True
    )
    assert "Your account is locked" not in page


async def test_signed_out_visitors_are_sent_to_sign_in(
    make_client: ClientMaker, fake: FakeFederation
) -> None:
    client = await make_client(with_federation(create_account_app, fake))
    async with client.session_transaction() as quart_session:
        quart_session["csrf_token"] = "t"
    response = await client.post("/devices/sign-out-everywhere", form={"csrf_token": "t"})
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/auth/login")


def test_device_labels() -> None:
    assert describe_user_agent(PHONE_UA) == "Safari on iPhone"
    assert describe_user_agent("Mozilla/5.0 (Windows NT 10.0) Chrome/120.0 Edg/120.0") == (
        "Edge on Windows"
    )
    assert describe_user_agent("") == "Unknown device"
