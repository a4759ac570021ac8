"""The site navigation (implements shared.contracts.navigation.NavigationService).

Menu nodes form a tree (``parent_id``); siblings are ordered by ``position``. The whole tree
is small (a site menu), so it is read in one query and assembled in Python.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Literal
from urllib.parse import urlsplit

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.contracts.errors import ConflictError, InvalidInputError, NotFoundError
from shared.contracts.navigation import MenuNodeDTO
from shared.models.navigation import MenuNode

MAX_LABEL_LENGTH = 100
MAX_URL_LENGTH = 2000


def check_label(label: str) -> str:
    label = " ".join(label.split())
    if not label:
        raise InvalidInputError("a menu entry needs a label")
    if len(label) > MAX_LABEL_LENGTH:
        raise InvalidInputError(f"a label is at most {MAX_LABEL_LENGTH} characters")
    return label


def check_url(url: str) -> str:
    """An absolute http(s) URL with a host, or a path on blog starting with one "/"."""
    url = url.strip()
    if not url or len(url) > MAX_URL_LENGTH:
        raise InvalidInputError(f"a URL is 1 to {MAX_URL_LENGTH} characters")
    if any(ord(ch) <= 32 or ch in "\\\x7f" for ch in url):
        raise InvalidInputError("a URL has no spaces, control characters or backslashes")
    if url.startswith("/"):
        if url.startswith("//"):
            raise InvalidInputError("a path starts with a single /")
        return url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInputError("a URL is an http(s) address or a path such as /about")
    return url


def build_tree(nodes: list[MenuNode], parent_id: int | None) -> tuple[MenuNodeDTO, ...]:
    by_parent: dict[int | None, list[MenuNode]] = defaultdict(list)
    for node in nodes:
        by_parent[node.parent_id].append(node)

    def build(parent: int | None) -> tuple[MenuNodeDTO, ...]:
        # No cycles: a node's parent is chosen when it is created, among existing nodes.
        ordered = sorted(by_parent.get(parent, []), key=lambda n: (n.position, n.id))
        return tuple(
            MenuNodeDTO(
                id=node.id,
                parent_id=node.parent_id,
                label=node.label,
                url=node.url,
                position=node.position,
                children=build(node.id),
            )
            for node in ordered
        )

    return build(parent_id)


class SqlNavigationService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def load_all(self) -> list[MenuNode]:
        return list(await self.session.scalars(select(MenuNode)))

    async def load_node(self, node_id: int) -> MenuNode:
        node = await self.session.get(MenuNode, node_id)
        if node is None:
            raise NotFoundError(f"there is no menu entry {node_id}")
        return node

    async def to_dto(self, node: MenuNode) -> MenuNodeDTO:
        return MenuNodeDTO(
            id=node.id,
            parent_id=node.parent_id,
            label=node.label,
            url=node.url,
            position=node.position,
            children=build_tree(await self.load_all(), node.id),
        )

    async def list_tree(self) -> list[MenuNodeDTO]:
        return list(build_tree(await self.load_all(), None))

    async def get_node(self, node_id: int) -> MenuNodeDTO:
        return await self.to_dto(await self.load_node(node_id))

    async def create_node(
        self, label: str, url: str, *, parent_id: int | None = None
    ) -> MenuNodeDTO:
        label, url = check_label(label), check_url(url)
        if parent_id is not None:
            await self.load_node(parent_id)
        # "== None" renders as IS NULL: the top level's siblings.
        last = await self.session.scalar(
            select(func.max(MenuNode.position)).where(MenuNode.parent_id == parent_id)
        )
        node = MenuNode(
            parent_id=parent_id, label=label, url=url, position=0 if last is None else last + 1
        )
        self.session.add(node)
        await self.session.flush()
        return await self.to_dto(node)

    async def do_update_node(self, node_id: int, *, label: str, url: str) -> MenuNodeDTO:
        label, url = check_label(label), check_url(url)
        node = await self.load_node(node_id)
        node.label, node.url = label, url
        await self.session.flush()
        return await self.to_dto(node)

    async def do_move_node(self, node_id: int, direction: Literal["up", "down"]) -> MenuNodeDTO:
        node = await self.load_node(node_id)
        siblings = sorted(
            (n for n in await self.load_all() if n.parent_id == node.parent_id),
            key=lambda n: (n.position, n.id),
        )
        # Positions are renumbered 0..n-1 first, so gaps and ties never stop a move.
        index = siblings.index(node)
        other = index - 1 if direction == "up" else index + 1
        if 0 <= other < len(siblings):
            siblings[index], siblings[other] = siblings[other], siblings[index]
        for position, sibling in enumerate(siblings):
            sibling.position = position
        await self.session.flush()
        return await self.to_dto(node)

    async def do_delete_node(self, node_id: int, *, with_children: bool = False) -> int:
        node = await self.load_node(node_id)
        descendants = build_tree(await self.load_all(), node.id)
        if descendants and not with_children:
            raise ConflictError(
                f"{node.label!r} has entries below it: delete them too, or move them first"
            )
        count = 1 + count_nodes(descendants)
        # The foreign key cascades to the descendants.
        await self.session.execute(delete(MenuNode).where(MenuNode.id == node.id))
        self.session.expunge(node)
        return count


def count_nodes(nodes: tuple[MenuNodeDTO, ...]) -> int:
    return sum(1 + count_nodes(node.children) for node in nodes)
