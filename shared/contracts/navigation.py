"""The navigation domain's contract: the site menu tree shared by every app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class MenuNodeDTO:
    """An entry of the site navigation, with its children in order (``nav-tree``)."""

    id: int
    parent_id: int | None
    label: str
    # An absolute http(s) URL, or a path on blog ("/about").
    url: str
    position: int
    children: tuple[MenuNodeDTO, ...] = ()


@runtime_checkable
class NavigationService(Protocol):
    """The site navigation: a tree of menu nodes, edited in blog, shown by every app's layout
    (the ``nav-tree`` fragment). Siblings are ordered by position."""

    async def list_tree(self) -> list[MenuNodeDTO]:
        """The top-level nodes in order, each with its children (recursively) in order."""
        ...

    async def get_node(self, node_id: int) -> MenuNodeDTO:
        """One node with its children; NotFoundError if there is none."""
        ...

    async def create_node(
        self, label: str, url: str, *, parent_id: int | None = None
    ) -> MenuNodeDTO:
        """Add a node after its last sibling. InvalidInputError if the label is empty or too
        long, or the URL is neither an http(s) URL nor a path ("/about"); NotFoundError if
        the parent does not exist."""
        ...

    async def do_update_node(self, node_id: int, *, label: str, url: str) -> MenuNodeDTO:
        """Rename a node (and change its URL); errors as create_node."""
        ...

    async def do_move_node(self, node_id: int, direction: Literal["up", "down"]) -> MenuNodeDTO:
        """Swap a node with its previous or next sibling (nothing happens at either end);
        NotFoundError if there is no such node."""
        ...

    async def do_delete_node(self, node_id: int, *, with_children: bool = False) -> int:
        """Delete a node, and its descendants when ``with_children``; the number of nodes
        deleted. ConflictError if it has children and ``with_children`` is false,
        NotFoundError if there is no such node."""
        ...
