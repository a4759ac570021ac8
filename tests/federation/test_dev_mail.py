"""The development-only mail page: the outbox's mail, so a newcomer can follow their link."""

from __future__ import annotations

import re

from sqlalchemy.ext.asyncio import AsyncSession

from federation.app import create_app
from shared.config import Settings
from shared.services.identity.accounts import SqlAccountService
from tests.conftest import ClientMaker


async def test_the_page_does_not_exist_outside_development(
    make_client: ClientMaker, settings: Settings
) -> None:
    for env in ["test", "production"]:
        other = settings.model_copy(update={"env": env})
        client = await make_client(lambda _, other=other: create_app(other))
        assert (await client.get("/dev/mail")).status_code == 404


async def test_in_development_unsent_mail_is_shown_and_its_link_signs_in(
    make_client: ClientMaker, settings: Settings, session: AsyncSession
) -> None:
    development = settings.model_copy(update={"env": "development"})
    client = await make_client(lambda _: create_app(development))
    empty = await (await client.get("/dev/mail")).get_data(as_text=True)
    assert "No mail yet." in empty
    await SqlAccountService(session).do_request_sign_in_link("newcomer@example.org")
    await session.commit()
    response = await client.get("/dev/mail")
    assert response.status_code == 200
    page = await response.get_data(as_text=True)
    assert "No SMTP server is configured" in page
    assert "newcomer@example.org" in page
    assert "Welcome to Rose Ash: confirm your email to sign in" in page
    assert "not sent" in page
    link = re.search(
        r'class="mail-link" href="http://federation\.localhost(/login/magic/[^"]+)"', page
    )
    assert link is not None
    assert link.group(1).startswith("/login/magic/")
    confirm = await (await client.get(link.group(1))).get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', confirm)
    assert csrf is not None
    signed_in = await client.post(link.group(1), form={"csrf_token": csrf.group(1)})
    assert signed_in.status_code == 303
    assert "federation_sso=" in signed_in.headers["Set-Cookie"]
