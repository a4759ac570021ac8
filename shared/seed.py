"""Demo data: a few members, the site's title and a navigation, so a fresh platform has
something to show.

Idempotent: running it again adds nothing that is already there.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from shared.contracts.identity import UserService
from shared.contracts.key_values import KeyValueService
from shared.contracts.navigation import NavigationService
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

# The demo navigation (label, URL, children); paths are pages of the blog.
DEMO_MENU: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    ("Home", "/", ()),
    (
        "About us",
        "/about",
        (("Our story", "/about/story"), ("How the co-op works", "/about/co-op")),
    ),
    ("Join", "/join", ()),
    ("Contact", "/contact", ()),
)


@dataclass(frozen=True)
class SeedReport:
    members_added: int
    values_set: int
    menu_nodes_added: int = 0


async def do_seed_demo_menu(navigation: NavigationService) -> int:
    """The demo navigation, only when the navigation is empty (an editor's menu is kept)."""
    if await navigation.list_tree():
        return 0
    added = 0
    for label, url, children in DEMO_MENU:
        parent = await navigation.create_node(label, url)
        added += 1
        for child_label, child_url in children:
            await navigation.create_node(child_label, child_url, parent_id=parent.id)
            added += 1
    return added


async def do_seed_demo_data(session: AsyncSession, registry: ServiceRegistry) -> SeedReport:
    users = registry.get(UserService, session)
    values = registry.get(KeyValueService, session)
    added = 0
    for member in DEMO_MEMBERS:
        if await users.get_user_by_email(member.email) is None:
            await users.create_user(
                member.email,
                username=member.username,
                display_name=member.display_name,
                email_verified=True,  # the demo's own addresses (an editor is named by one)
            )
            added += 1
    values_set = 0
    for key, value in DEMO_VALUES.items():
        if await values.get_value(key) is None:
            await values.do_set_value(key, value)
            values_set += 1
    menu_added = await do_seed_demo_menu(registry.get(NavigationService, session))
    await values.do_set_value(SEEDED_MARKER, True)
    return SeedReport(members_added=added, values_set=values_set, menu_nodes_added=menu_added)


async def check_seeded(session: AsyncSession, registry: ServiceRegistry) -> bool:
    return bool(await registry.get(KeyValueService, session).get_value(SEEDED_MARKER, False))
