"""Following the link that confirms a new email address: a page, then a POST by the member who
asked for the change, signed in on this device."""

from __future__ import annotations

import re

from quart.typing import TestClientProtocol as QuartClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from federation.app import create_app
from federation.services.member_session import SSO_COOKIE
from shared.contracts.identity import UserDTO
from shared.models.identity import MagicLink, SsoSession
from shared.models.outbox import OutboxEvent
from shared.services.identity.accounts import MAIL_CHANGE_EMAIL_LINK, MAIL_EVENT, SqlAccountService
from shared.services.identity.sso import SqlSsoService
from shared.services.identity.users import SqlUserService
from tests.conftest import ClientMaker

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
WRONG_MEMBER_PAGE = "Only the account that asked for this change can confirm"


async def ask_for_change(session: AsyncSession, user: UserDTO, new_email: str) -> str:
    """Ask for the change as ``user``; the token of the link mailed to the new address."""
    await SqlAccountService(session).do_request_email_change(user.id, new_email)
    await session.commit()
    mails = await session.scalars(
        select(OutboxEvent).where(OutboxEvent.kind == MAIL_EVENT).order_by(OutboxEvent.id.desc())
    )
    mail = next(m for m in mails if m.payload["template"] == MAIL_CHANGE_EMAIL_LINK)
    return str(mail.payload["data"]["token"])


async def sign_in_at_federation(session: AsyncSession, client: QuartClient, user_id: int) -> int:
    """Sign ``client`` in as the member (a new device); the device's session id."""
    started = await SqlSsoService(session).do_start_session(user_id)
    await session.commit()
    client.set_cookie("localhost", SSO_COOKIE, started.token)
    return started.session.id


async def csrf_of(client: QuartClient, path: str = "/login") -> str:
    match = CSRF.search(await (await client.get(path)).get_data(as_text=True))
    assert match is not None
    return match.group(1)


async def link_used(session: AsyncSession) -> bool:
    links = await session.scalars(select(MagicLink).execution_options(populate_existing=True))
    return any(link.used_at is not None for link in links)


async def test_the_member_who_asked_confirms_the_change_with_a_post(
    make_client: ClientMaker, session: AsyncSession
) -> None:
    users = SqlUserService(session)
    ann = await users.create_user("ann@old.example")
    await SqlAccountService(session).do_set_password(ann.id, "ann's old password")
    other_device = (await SqlSsoService(session).do_start_session(ann.id)).session.id
    token = await ask_for_change(session, ann, "ann@new.example")
    client = await make_client(create_app)
    this_device = await sign_in_at_federation(session, client, ann.id)

    # Opening the link (as a mail scanner does) changes nothing: it is a page with a button.
    opened = await client.get(f"/email/confirm/{token}")
    assert opened.status_code == 200
    page = await opened.get_data(as_text=True)
    assert f'action="/email/confirm/{token}"' in page
    assert "ann@new.example" in page
    assert (await users.get_user(ann.id)).email == "ann@old.example"
    assert not await link_used(session)

    # A POST without the CSRF token is refused.
    forged = await client.post(f"/email/confirm/{token}", form={})
    assert forged.status_code in (400, 403)
    assert (await users.get_user(ann.id)).email == "ann@old.example"

    token_field = await csrf_of(client, f"/email/confirm/{token}")
    confirmed = await client.post(f"/email/confirm/{token}", form={"csrf_token": token_field})
    assert confirmed.status_code == 200
    done = await confirmed.get_data(as_text=True)
    assert "Your email address is changed" in done
    assert 'href="http://account.localhost/"' in done
    assert (await users.get_user(ann.id)).email == "ann@new.example"
    account = await SqlAccountService(session).get_account(ann.id)
    assert account.has_password is False  # the old password does not carry over
    sessions = {
        row.id: row.revoked_at
        for row in await session.scalars(
            select(SsoSession).execution_options(populate_existing=True)
        )
    }
    assert sessions[other_device] is not None  # other devices are signed out ...
    assert sessions[this_device] is None  # ... this one stays signed in

    replay = await client.post(f"/email/confirm/{token}", form={"csrf_token": token_field})
    assert replay.status_code == 400
    assert "expired or has already been used" in await replay.get_data(as_text=True)


async def test_nobody_but_the_member_who_asked_can_confirm_a_change(
    make_client: ClientMaker, session: AsyncSession
) -> None:
    """Mallory asks to move her account to an address with no account yet. A mail scanner (or
    the address's owner) opening the link, and anyone posting it without being Mallory, change
    nothing; so the owner's own sign-in link later makes them an account of their own."""
    users = SqlUserService(session)
    mallory = await users.create_user("mallory@example.org")
    await SqlAccountService(session).do_set_password(mallory.id, "mallory's password")
    token = await ask_for_change(session, mallory, "victim@example.org")

    scanner = await make_client(create_app)
    opened = await scanner.get(f"/email/confirm/{token}")
    assert opened.status_code == 403
    assert WRONG_MEMBER_PAGE in await opened.get_data(as_text=True)
    posted = await scanner.post(
        f"/email/confirm/{token}", form={"csrf_token": await csrf_of(scanner)}
    )
    assert posted.status_code == 403
    assert WRONG_MEMBER_PAGE in await posted.get_data(as_text=True)

    someone = await users.create_user("someone@example.org", display_name="Someone Else")
    other = await make_client(create_app)
    await sign_in_at_federation(session, other, someone.id)
    page = await other.get(f"/email/confirm/{token}")
    assert page.status_code == 403
    text = await page.get_data(as_text=True)
    assert WRONG_MEMBER_PAGE in text
    assert "You are signed in as <strong>Someone Else</strong>" in text
    refused = await other.post(f"/email/confirm/{token}", form={"csrf_token": await csrf_of(other)})
    assert refused.status_code == 403

    assert (await users.get_user(mallory.id)).email == "mallory@example.org"
    assert not await link_used(session)  # Mallory's own click would still work, nobody else's
    assert await users.get_user_by_email("victim@example.org") is None


async def test_an_unknown_link_is_a_clear_400(make_client: ClientMaker) -> None:
    client = await make_client(create_app)
    response = await client.get("/email/confirm/not-a-token")
    assert response.status_code == 400
    assert "expired or has already been used" in await response.get_data(as_text=True)
