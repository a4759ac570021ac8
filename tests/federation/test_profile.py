"""Following the link that confirms a new email address."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from federation.app import create_app
from shared.models.outbox import OutboxEvent
from shared.services.accounts import SqlAccountService
from shared.services.users import SqlUserService
from tests.conftest import ClientMaker


async def test_the_new_address_confirms_the_change_once(
    make_client: ClientMaker, session: AsyncSession
) -> None:
    ann = await SqlUserService(session).create_user("ann@old.example")
    await SqlAccountService(session).do_request_email_change(ann.id, "ann@new.example")
    await session.commit()
    event = await session.scalar(select(OutboxEvent))
    assert event is not None
    token = event.payload["data"]["token"]
    client = await make_client(create_app)
    response = await client.get(f"/email/confirm/{token}")
    assert response.status_code == 200
    page = await response.get_data(as_text=True)
    assert "Your email address is changed" in page
    assert "ann@new.example" in page
    assert 'href="http://account.localhost/"' in page
    assert (await SqlUserService(session).get_user(ann.id)).email == "ann@new.example"
    replay = await client.get(f"/email/confirm/{token}")
    assert replay.status_code == 400
    assert "expired or has already been used" in await replay.get_data(as_text=True)
