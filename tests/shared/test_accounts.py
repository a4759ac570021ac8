"""The account service against the real database: magic links (single use, 15 minutes,
hashed), implicit sign-up, passwords (argon2id), usernames and email changes."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import pytest
from argon2 import PasswordHasher
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.contracts.errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
)
from shared.models.identity import MagicLink, User
from shared.models.outbox import OutboxEvent
from shared.services.identity.accounts import (
    INVALID_LINK,
    MAIL_EVENT,
    WRONG_CREDENTIALS,
    WRONG_MEMBER,
    SqlAccountService,
)
from shared.services.identity.users import SqlUserService

# Cheap argon2id parameters: the tests check behaviour, not cost.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)


@pytest.fixture
def accounts(session: AsyncSession) -> SqlAccountService:
    return SqlAccountService(session, hasher=FAST_HASHER)


async def queued_mail(session: AsyncSession) -> list[dict[str, Any]]:
    rows = await session.scalars(
        select(OutboxEvent).where(OutboxEvent.kind == MAIL_EVENT).order_by(OutboxEvent.id)
    )
    return [row.payload for row in rows]


async def last_token(session: AsyncSession) -> str:
    mail = await queued_mail(session)
    return str(mail[-1]["data"]["token"])


async def expire_links(session: AsyncSession) -> None:
    await session.execute(update(MagicLink).values(expires_at=func.now() - timedelta(seconds=1)))


async def test_a_link_is_random_hashed_at_rest_and_valid_for_15_minutes(
    accounts: SqlAccountService, session: AsyncSession
) -> None:
    await accounts.do_request_sign_in_link("New@Example.org", next_url="/oauth/authorize?x=1")
    [mail] = await queued_mail(session)
    token = mail["data"]["token"]
    assert mail["to"] == "New@Example.org"
    assert mail["template"] == "sign_in_link"
    assert mail["data"]["new_account"] is True
    assert len(token) >= 43  # 32 random bytes, URL-safe base64
    link = await session.scalar(select(MagicLink))
    assert link is not None
    assert link.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in (link.token_hash, link.email, link.next_url)
    assert link.purpose == "sign_in"
    assert link.user_id is None
    assert link.next_url == "/oauth/authorize?x=1"
    assert link.expires_at - link.created_at == timedelta(minutes=15)


async def test_following_a_link_creates_the_member_once(
    accounts: SqlAccountService, session: AsyncSession
) -> None:
    await accounts.do_request_sign_in_link("new@example.org", next_url="/somewhere")
    token = await last_token(session)
    result = await accounts.do_consume_sign_in_link(token)
    assert result.new_account is True
    assert result.next_url == "/somewhere"
    assert result.user.email == "new@example.org"
    user = await session.get(User, result.user.id)
    assert user is not None
    assert user.email_verified_at is not None
    # Replayed: refused, and nothing else changes.
    with pytest.raises(InvalidInputError, match=INVALID_LINK):
        await accounts.do_consume_sign_in_link(token)
    assert await SqlUserService(session).count_users() == 1


async def test_an_existing_member_is_signed_in_not_created(
    accounts: SqlAccountService, session: AsyncSession
) -> None:
    member = await SqlUserService(session).create_user("ann@example.org", username="ann")
    await accounts.do_request_sign_in_link("ANN@example.org")
    [mail] = await queued_mail(session)
    assert mail["data"]["new_account"] is False
    result = await accounts.do_consume_sign_in_link(mail["data"]["token"])
    assert result.user.id == member.id
    assert result.new_account is False
    assert result.next_url is None


async def test_an_expired_link_is_refused(
    accounts: SqlAccountService, session: AsyncSession
) -> None:
    await accounts.do_request_sign_in_link("late@example.org")
    token = await last_token(session)
    await expire_links(session)
    with pytest.raises(InvalidInputError, match=INVALID_LINK):
        await accounts.do_consume_sign_in_link(token)
    assert await SqlUserService(session).get_user_by_email("late@example.org") is None


async def test_unknown_tokens_and_other_purposes_are_refused(
    accounts: SqlAccountService, session: AsyncSession
) -> None:
    with pytest.raises(InvalidInputError):
        await accounts.do_consume_sign_in_link("not-a-token")
    member = await SqlUserService(session).create_user("ann@example.org")
    await accounts.do_request_email_change(member.id, "ann@new.example")
    change_token = await last_token(session)
    with pytest.raises(InvalidInputError):
        await accounts.do_consume_sign_in_link(change_token)  # a change link signs no one in


async def test_a_link_to_an_address_the_member_left_is_refused(
    accounts: SqlAccountService, session: AsyncSession
) -> None:
    member = await SqlUserService(session).create_user("old@example.org")
    await accounts.do_request_sign_in_link("old@example.org")
    stale = await last_token(session)
    await accounts.do_request_email_change(member.id, "new@example.org")
    await accounts.do_confirm_email_change(await last_token(session), member.id)
    with pytest.raises(InvalidInputError):
        await accounts.do_consume_sign_in_link(stale)


async def test_closed_registration_mails_newcomers_no_link(
    accounts: SqlAccountService, session: AsyncSession
) -> None:
    await SqlUserService(session).create_user("member@example.org")
    await accounts.do_request_sign_in_link("stranger@example.org", registration_open=False)
    await accounts.do_request_sign_in_link("member@example.org", registration_open=False)
    stranger, member = await queued_mail(session)
    assert stranger == {"to": "stranger@example.org", "template": "registration_closed", "data": {}}
    assert member["template"] == "sign_in_link"
    links = list(await session.scalars(select(MagicLink.email)))
    assert links == ["member@example.org"]


async def test_a_malformed_email_is_invalid_input(accounts: SqlAccountService) -> None:
    with pytest.raises(InvalidInputError):
        await accounts.do_request_sign_in_link("not an address")


async def test_passwords_are_argon2id_and_fail_alike(
    accounts: SqlAccountService, session: AsyncSession
) -> None:
    users = SqlUserService(session)
    ann = await users.create_user("ann@example.org")
    await users.create_user("nopass@example.org")
    await accounts.do_set_password(ann.id, "correct horse battery")
    stored = await session.scalar(select(User.password_hash).where(User.id == ann.id))
    assert stored is not None
    assert stored.startswith("$argon2id$")
    assert "correct horse" not in stored
    assert (await accounts.check_password("ANN@example.org", "correct horse battery")).id == ann.id
    for email, password in [
        ("ann@example.org", "wrong password!"),
        ("nopass@example.org", "whatever it is"),
        ("nobody@example.org", "correct horse battery"),
        ("ann@example.org", "x" * 5000),
    ]:
        with pytest.raises(InvalidInputError) as caught:
            await accounts.check_password(email, password)
        assert str(caught.value) == WRONG_CREDENTIALS
    account = await accounts.get_account(ann.id)
    assert account.has_password is True
    await accounts.do_remove_password(ann.id)
    assert (await accounts.get_account(ann.id)).has_password is False
    with pytest.raises(InvalidInputError):
        await accounts.check_password("ann@example.org", "correct horse battery")


async def test_password_rules_and_rehash(
    accounts: SqlAccountService, session: AsyncSession
) -> None:
    ann = await SqlUserService(session).create_user("ann@example.org")
    with pytest.raises(InvalidInputError, match="at least 10"):
        await accounts.do_set_password(ann.id, "short")
    with pytest.raises(InvalidInputError, match="at most"):
        await accounts.do_set_password(ann.id, "x" * 1025)
    with pytest.raises(NotFoundError):
        await accounts.do_set_password(999_999, "long enough password")
    await accounts.do_set_password(ann.id, "long enough password")
    stronger = SqlAccountService(
        session, hasher=PasswordHasher(time_cost=2, memory_cost=64, parallelism=1)
    )
    await stronger.check_password("ann@example.org", "long enough password")
    stored = await session.scalar(select(User.password_hash).where(User.id == ann.id))
    assert stored is not None
    assert ",t=2," in stored  # upgraded to the current parameters on a successful sign-in


async def test_choosing_a_username(accounts: SqlAccountService, session: AsyncSession) -> None:
    users = SqlUserService(session)
    ann = await users.create_user("ann@example.org")
    bob = await users.create_user("bob@example.org", username="bob")
    assert (await accounts.do_change_username(ann.id, " Ann_H ")).username == "ann_h"
    assert await accounts.check_username_available("ANN_H", user_id=ann.id) == "ann_h"
    with pytest.raises(ConflictError, match="taken"):
        await accounts.do_change_username(ann.id, "Bob")
    with pytest.raises(ConflictError, match="reserved"):
        await accounts.do_change_username(ann.id, "admin")
    with pytest.raises(ConflictError, match="reserved"):
        await accounts.check_username_available("federation")
    with pytest.raises(InvalidInputError):
        await accounts.do_change_username(ann.id, "has space")
    assert (await users.get_user(ann.id)).username == "ann_h"
    assert (await users.get_user(bob.id)).username == "bob"


async def test_changing_the_email_is_confirmed_by_the_new_address(
    accounts: SqlAccountService, session: AsyncSession
) -> None:
    ann = await SqlUserService(session).create_user("ann@old.example")
    await accounts.do_request_email_change(ann.id, "Ann@New.example")
    [link_mail] = await queued_mail(session)
    assert link_mail["to"] == "Ann@New.example"
    assert link_mail["template"] == "change_email_link"
    assert (await accounts.get_account(ann.id)).pending_email == "Ann@New.example"
    assert (await accounts.get_account(ann.id)).user.email == "ann@old.example"
    changed = await accounts.do_confirm_email_change(link_mail["data"]["token"], ann.id)
    assert changed.email == "Ann@New.example"
    account = await accounts.get_account(ann.id)
    assert account.email_verified_at is not None
    assert account.pending_email is None
    notice = (await queued_mail(session))[-1]
    assert notice == {
        "to": "ann@old.example",
        "template": "email_changed",
        "data": {"new": "Ann@New.example"},
    }
    with pytest.raises(InvalidInputError, match=INVALID_LINK):
        await accounts.do_confirm_email_change(link_mail["data"]["token"], ann.id)


async def test_an_email_change_to_a_taken_address_tells_that_address_only(
    accounts: SqlAccountService, session: AsyncSession
) -> None:
    users = SqlUserService(session)
    ann = await users.create_user("ann@example.org")
    await users.create_user("bob@example.org")
    await accounts.do_request_email_change(ann.id, "BOB@example.org")  # no error: no leak
    [mail] = await queued_mail(session)
    assert mail == {"to": "BOB@example.org", "template": "email_taken", "data": {}}
    with pytest.raises(InvalidInputError, match="already your email"):
        await accounts.do_request_email_change(ann.id, "ANN@example.org")


async def test_an_email_change_to_a_taken_address_looks_pending_like_any_other(
    accounts: SqlAccountService, session: AsyncSession
) -> None:
    """Whether an address has an account must not show on the requester's dashboard."""
    users = SqlUserService(session)
    ann = await users.create_user("ann@example.org")
    await users.create_user("bob@example.org")
    await accounts.do_request_email_change(ann.id, "free@example.org")
    assert (await accounts.get_account(ann.id)).pending_email == "free@example.org"
    await accounts.do_request_email_change(ann.id, "BOB@example.org")
    assert (await accounts.get_account(ann.id)).pending_email == "BOB@example.org"
    # ... but no mail carries a token that could move Ann's account to Bob's address.
    taken = (await queued_mail(session))[-1]
    assert taken == {"to": "BOB@example.org", "template": "email_taken", "data": {}}


async def test_only_the_member_who_asked_confirms_an_email_change(
    accounts: SqlAccountService, session: AsyncSession
) -> None:
    """A link opened by someone else (a visitor, or the member the new address belongs to)
    neither changes the address nor spends the link."""
    users = SqlUserService(session)
    mallory = await users.create_user("mallory@example.org")
    victim = await users.create_user("someone@example.org")
    await accounts.do_set_password(mallory.id, "mallory's password")
    await accounts.do_request_email_change(mallory.id, "victim@example.org")
    token = await last_token(session)
    for stranger in (None, victim.id):
        with pytest.raises(ForbiddenError, match=WRONG_MEMBER):
            await accounts.check_email_change(token, stranger)
        with pytest.raises(ForbiddenError, match=WRONG_MEMBER):
            await accounts.do_confirm_email_change(token, stranger)
    assert (await users.get_user(mallory.id)).email == "mallory@example.org"
    assert await accounts.check_email_change(token, mallory.id) == "victim@example.org"
    changed = await accounts.do_confirm_email_change(token, mallory.id)
    assert changed.email == "victim@example.org"


async def test_an_email_change_removes_the_password(
    accounts: SqlAccountService, session: AsyncSession
) -> None:
    ann = await SqlUserService(session).create_user("ann@example.org")
    await accounts.do_set_password(ann.id, "ann's old password")
    await accounts.do_request_email_change(ann.id, "ann@new.example")
    await accounts.do_confirm_email_change(await last_token(session), ann.id)
    assert (await accounts.get_account(ann.id)).has_password is False
    with pytest.raises(InvalidInputError, match=WRONG_CREDENTIALS):
        await accounts.check_password("ann@new.example", "ann's old password")


async def test_an_email_change_loses_to_a_member_who_took_the_address_meanwhile(
    accounts: SqlAccountService, session: AsyncSession
) -> None:
    users = SqlUserService(session)
    ann = await users.create_user("ann@example.org")
    await accounts.do_request_email_change(ann.id, "contested@example.org")
    token = await last_token(session)
    await users.create_user("Contested@example.org")
    with pytest.raises(ConflictError):
        await accounts.do_confirm_email_change(token, ann.id)
    assert (await users.get_user(ann.id)).email == "ann@example.org"


async def test_expired_email_change_links_are_refused(
    accounts: SqlAccountService, session: AsyncSession
) -> None:
    ann = await SqlUserService(session).create_user("ann@example.org")
    await accounts.do_request_email_change(ann.id, "later@example.org")
    token = await last_token(session)
    await expire_links(session)
    assert (await accounts.get_account(ann.id)).pending_email is None
    with pytest.raises(InvalidInputError, match=INVALID_LINK):
        await accounts.do_confirm_email_change(token, ann.id)
