"""Federation's home page lists members with their fediverse handles."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from federation.app import create_app
from federation.services.authorization import Member, build_user_info
from federation.services.member_session import SSO_COOKIE
from shared.contracts.identity import UserDTO
from shared.services.identity.sso import SqlSsoService
from shared.services.identity.users import SqlUserService
from tests.conftest import ClientMaker


async def test_directory_lists_members_and_handles(
    make_client: ClientMaker, session: AsyncSession
) -> None:
    users = SqlUserService(session)
    await users.create_user("ada@example.org", username="ada", display_name="Ada Hartley")
    await users.create_user("ben@example.org", username="ben")
    await session.commit()
    page = await (await (await make_client(create_app)).get("/")).get_data(as_text=True)
    assert "Members (2)" in page
    assert 'Ada Hartley <span class="handle">@ada@federation.localhost</span>' in page
    assert '<li>ben <span class="handle">@ben@federation.localhost</span></li>' in page


async def test_the_directory_lists_only_members_who_chose_a_username(
    make_client: ClientMaker, session: AsyncSession
) -> None:
    """Nobody's email shows in the directory: members without a username (the public handle
    they choose) are not listed, whatever their display name."""
    users = SqlUserService(session)
    await users.create_user("ada@example.org", username="ada")
    await users.create_user("john.smith@example.org")
    await users.create_user("jo@example.org", display_name="Jo Private")
    await session.commit()
    page = await (await (await make_client(create_app)).get("/")).get_data(as_text=True)
    assert "Members (1)" in page
    assert "john.smith" not in page
    assert "Jo Private" not in page
    members = page.split('<ul class="members">', 1)[1].split("</ul>", 1)[0]
    assert members.count("<li>") == 1


def test_no_name_shown_to_others_is_taken_from_an_email() -> None:
    now = datetime.now(UTC)
    anonymous = UserDTO(7, "john.smith@example.org", None, "", now, None)
    assert anonymous.public_name is None
    assert anonymous.name == "john.smith"  # to the member themselves only
    assert UserDTO(8, "a@example.org", "ada", "", now, None).public_name == "ada"
    # An app given the profile scope but not the email one learns no part of the address.
    member = Member(7, "john.smith@example.org", True, None, "", None, 0)
    assert "name" not in build_user_info(member, "openid profile")
    named = Member(8, "a@example.org", True, "ada", "Ada Hartley", None, 0)
    assert build_user_info(named, "openid profile")["name"] == "Ada Hartley"


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
