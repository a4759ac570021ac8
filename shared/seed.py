"""Demo data: a few members and the site's title, so a fresh platform has something to show.

Idempotent: running it again adds nothing that is already there.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from shared.contracts.protocols import KeyValueService, UserService
from shared.services.registry import ServiceRegistry

SEEDED_MARKER = "demo.seeded"


@dataclass(frozen=True)
class DemoMember:
    email: str
    username: str
    display_name: str


DEMO_MEMBERS = (
    DemoMember("ada@rose-ash.localhost", "ada", "Ada Hartley"),
    DemoMember("ben@rose-ash.localhost", "ben", "Ben Okafor"),
    DemoMember("cleo@rose-ash.localhost", "cleo", "Cleo Marsh"),
)
DEMO_VALUES = {
    "site.title": "Rose Ash Co-op",
    "site.tagline": "A community co-op: our shop, our events, our stories.",
}


@dataclass(frozen=True)
class SeedReport:
    members_added: int
    values_set: int


async def do_seed_demo_data(session: AsyncSession, registry: ServiceRegistry) -> SeedReport:
    users = registry.get(UserService, session)
    values = registry.get(KeyValueService, session)
    added = 0
    for member in DEMO_MEMBERS:
        if await users.get_user_by_email(member.email) is None:
            await users.create_user(
                member.email, username=member.username, display_name=member.display_name
            )
            added += 1
    values_set = 0
    for key, value in DEMO_VALUES.items():
        if await values.get_value(key) is None:
            await values.do_set_value(key, value)
            values_set += 1
    await values.do_set_value(SEEDED_MARKER, True)
    return SeedReport(members_added=added, values_set=values_set)


async def check_seeded(session: AsyncSession, registry: ServiceRegistry) -> bool:
    return bool(await registry.get(KeyValueService, session).get_value(SEEDED_MARKER, False))
