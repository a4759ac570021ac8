"""What federation makes sure of before it serves: the six apps' OAuth clients match the
configuration, and a key exists to sign id_tokens with."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from quart import Quart

from shared.infrastructure.context import get_state
from shared.services.identity.oauth_clients import do_sync_first_party_clients
from shared.services.identity.signing_keys import get_active_signing_key


def prepare_authorization_server(app: Quart) -> Callable[[], Awaitable[None]]:
    async def prepare() -> None:
        state = get_state(app)
        assert state.database is not None, "runs after the database is connected"
        async with state.database.session_factory() as session:
            await do_sync_first_party_clients(session, state.settings)
            await get_active_signing_key(session, state.settings)
            await session.commit()

    return prepare
