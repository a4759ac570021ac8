"""The identity and key-value services against the real database."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from shared.contracts.errors import ConflictError, InvalidInputError, NotFoundError
from shared.services.identity.users import SqlUserService
from shared.services.key_values import SqlKeyValueService


@pytest.fixture
def users(session: AsyncSession) -> SqlUserService:
    return SqlUserService(session)


@pytest.fixture
def values(session: AsyncSession) -> SqlKeyValueService:
    return SqlKeyValueService(session)


async def test_create_and_read_a_member(users: SqlUserService) -> None:
    created = await users.create_user(" Ann@Example.org ", username="Ann_B", display_name="Ann")
    assert created.email == "Ann@Example.org"
    assert created.username == "ann_b"
    assert created.created_at is not None
    assert created.last_login_at is None
    assert await users.get_user(created.id) == created
    assert await users.get_user_by_email("ann@example.ORG") == created
    assert await users.get_user_by_email("nobody@example.org") is None


async def test_email_is_unique_regardless_of_case(users: SqlUserService) -> None:
    await users.create_user("ann@example.org")
    with pytest.raises(ConflictError, match=r"ANN@EXAMPLE\.ORG already has an account"):
        await users.create_user("ANN@EXAMPLE.ORG")
    # the failed insert rolled back to its savepoint: the session goes on working
    assert await users.count_users() == 1


async def test_username_is_unique_regardless_of_case(users: SqlUserService) -> None:
    await users.create_user("a@example.org", username="rose")
    with pytest.raises(ConflictError, match="the username 'rose' is taken"):
        await users.create_user("b@example.org", username="ROSE")


@pytest.mark.parametrize(
    ("email", "username"),
    [("not-an-email", None), ("a@b", None), ("a@example.org", "has space"), ("a@example.org", "")],
)
async def test_malformed_input_is_refused(
    users: SqlUserService, email: str, username: str | None
) -> None:
    with pytest.raises(InvalidInputError):
        await users.create_user(email, username=username)


async def test_missing_member_is_not_found(users: SqlUserService) -> None:
    with pytest.raises(NotFoundError, match="no member with id 999999"):
        await users.get_user(999_999)
    with pytest.raises(NotFoundError):
        await users.do_record_login(999_999)


async def test_record_login_sets_last_login(users: SqlUserService) -> None:
    member = await users.create_user("c@example.org")
    logged_in = await users.do_record_login(member.id)
    assert logged_in.last_login_at is not None
    assert logged_in.last_login_at >= member.created_at


async def test_list_members_oldest_first_with_paging(users: SqlUserService) -> None:
    for letter in "abc":
        await users.create_user(f"{letter}@example.org", username=letter)
    listed = await users.list_users(limit=2, offset=1)
    assert [member.username for member in listed] == ["b", "c"]
    assert await users.count_users() == 3


async def test_key_values_round_trip_json(values: SqlKeyValueService) -> None:
    assert await values.get_value("site.title", "fallback") == "fallback"
    stored = await values.do_set_value("site.title", {"text": "Rose", "n": [1, 2]})
    assert stored.value == {"text": "Rose", "n": [1, 2]}
    assert await values.get_value("site.title") == {"text": "Rose", "n": [1, 2]}
    replaced = await values.do_set_value("site.title", "Ash")
    assert replaced.value == "Ash"
    assert (await values.get_entry("site.title")).value == "Ash"
    assert await values.do_delete_value("site.title") is True
    assert await values.do_delete_value("site.title") is False
    with pytest.raises(NotFoundError):
        await values.get_entry("site.title")
    with pytest.raises(InvalidInputError):
        await values.do_set_value("", 1)
