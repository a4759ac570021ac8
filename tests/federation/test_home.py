"""Federation's home page lists members with their fediverse handles."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from federation.app import create_app
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
