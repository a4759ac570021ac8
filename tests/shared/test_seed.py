"""Demo data: seeds members and site values once; running it again adds nothing."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import load_settings
from shared.contracts.identity import AccountService, UserService
from shared.contracts.key_values import KeyValueService
from shared.seed import DEMO_MEMBERS, check_seeded, do_seed_demo_data
from shared.services.registry import ServiceRegistry


async def test_seed_is_idempotent(session: AsyncSession, registry: ServiceRegistry) -> None:
    assert await check_seeded(session, registry) is False
    first = await do_seed_demo_data(session, registry)
    assert first.members_added == len(DEMO_MEMBERS)
    assert first.values_set == 2
    assert await check_seeded(session, registry) is True
    second = await do_seed_demo_data(session, registry)
    assert (second.members_added, second.values_set) == (0, 0)
    users = registry.get(UserService, session)
    assert await users.count_users() == len(DEMO_MEMBERS)
    ada = await users.get_user_by_email("ADA@rose-ash.localhost")
    assert ada is not None
    assert ada.username == "ada"


async def test_seed_keeps_values_an_operator_changed(
    session: AsyncSession, registry: ServiceRegistry
) -> None:
    values = registry.get(KeyValueService, session)
    await values.do_set_value("site.title", "Our Own Co-op")
    await do_seed_demo_data(session, registry)
    assert await values.get_value("site.title") == "Our Own Co-op"


async def test_the_demo_editor_is_an_editor_in_development(
    session: AsyncSession, registry: ServiceRegistry
) -> None:
    """Development names Ada by her address; the seed verifies the demo addresses, so it counts."""
    await do_seed_demo_data(session, registry)
    ada = await registry.get(UserService, session).get_user_by_email("ada@rose-ash.localhost")
    assert ada is not None
    account = await registry.get(AccountService, session).get_account(ada.id)
    assert account.email_verified_at is not None
    development = load_settings(
        env="development",
        database_url="postgresql://x@localhost/x",
        redis_url="redis://localhost/0",
        secret_key="s" * 40,
    )
    assert development.is_editor(ada.id, account.user.email)
