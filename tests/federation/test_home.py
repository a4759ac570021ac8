"""Federation's home page lists members with their fediverse handles."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from federation.app import create_app
from federation.services.member_session import SSO_COOKIE
from shared.services.sso import SqlSsoService
from shared.services.users import SqlUserService
from tests.conftest import ClientMaker


async def test_directory_lists_members_and_handles(
    make_client: ClientMaker, session: AsyncSession
) -> None:
    users = SqlUserService(session)
    await users.create_user("ada@example.org", username="ada", display_name="Ada Hartley")
    await users.create_user("nohandle@example.org")
    await session.commit()
    page = await (await (await make_client(create_app)).get("/")).get_data(as_text=True)
    assert "Members (2)" in page
    assert 'Ada Hartley <span class="handle">@ada@federation.localhost</span>' in page
    assert "<li>nohandle</li>" in page


async def test_empty_directory_says_so(make_client: ClientMaker) -> None:
    page = await (await (await make_client(create_app)).get("/")).get_data(as_text=True)
    assert "Members (0)" in page
    assert "No members yet." in page


async def test_header_shows_the_member_signed_in_at_federation(
    make_client: ClientMaker, session: AsyncSession
) -> None:
    client = await make_client(create_app)
    anonymous = await (await client.get("/")).get_data(as_text=True)
    assert '<a class="sign-in" href="/login">Sign in</a>' in anonymous
    member = await SqlUserService(session).create_user("ada@example.org", display_name="Ada")
    started = await SqlSsoService(session).do_start_session(member.id)
    await session.commit()
    client.set_cookie("localhost", SSO_COOKIE, started.token)
    page = await (await client.get("/")).get_data(as_text=True)
    assert 'href="http://account.localhost/" title="Your account">Ada</a>' in page
    assert 'action="/logout"' in page
