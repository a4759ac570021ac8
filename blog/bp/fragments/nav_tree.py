"""``nav-tree``: the site navigation every app's layout shows (not personalised).

Paths of menu nodes ("/about") are paths on blog, so they are made absolute with blog's public
URL: the fragment is shown on every app's host. ``full`` renders the whole tree (nested
lists), ``compact`` the top level only. An empty navigation renders nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from quart import render_template

from shared.contracts.navigation import MenuNodeDTO, NavigationService
from shared.infrastructure.context import get_service, get_settings
from shared.infrastructure.fragments import FragmentContext


@dataclass(frozen=True)
class NavLink:
    label: str
    href: str
    children: tuple[NavLink, ...]


def build_links(nodes: tuple[MenuNodeDTO, ...], blog_url: str, depth: int) -> tuple[NavLink, ...]:
    return tuple(
        NavLink(
            label=node.label,
            href=blog_url + node.url if node.url.startswith("/") else node.url,
            children=build_links(node.children, blog_url, depth - 1) if depth > 1 else (),
        )
        for node in nodes
    )


async def render_nav_tree(context: FragmentContext) -> str:
    tree = await get_service(NavigationService).list_tree()
    if not tree:
        return ""
    depth = 1 if context.variant == "compact" else 8
    links = build_links(tuple(tree), get_settings().url_of("blog"), depth)
    return await render_template("fragments/nav_tree.html", links=links)
