"""The navigation editor: editors manage the site's menu (the ``nav-tree`` fragment).

There is no roles system yet: an editor is a member whose id, or verified email address, is
listed in the ``ROSE_ASH_EDITORS`` setting (``Settings.is_editor``; never a username, which
someone else can claim once it is given up). Others get 403, visitors are sent to
sign in. Every change is a POST form with the CSRF token; after the change is committed the
cached ``nav-tree`` copies of every app are purged, so the next page shows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlencode

from quart import Blueprint, Response, abort, render_template, request

from blog.bp.fragments import NAV_TREE
from shared.contracts.errors import ConflictError, InvalidInputError, NotFoundError
from shared.contracts.identity import AccountService, UserDTO
from shared.contracts.navigation import MenuNodeDTO, NavigationService
from shared.infrastructure.context import get_service, get_session, get_settings
from shared.infrastructure.fragments import do_purge_fragment
from shared.infrastructure.oauth import get_current_user, redirect

navigation_bp = Blueprint("navigation", __name__, url_prefix="/navigation")

EDITOR_PATH = "/navigation/"
DONE_MESSAGES = {
    "added": "The entry was added.",
    "saved": "The entry was saved.",
    "moved": "The entry was moved.",
    "deleted": "The entry was deleted.",
}


@dataclass(frozen=True)
class EditorRow:
    """A node as the editor lists it: indented by depth, with what it may do."""

    node: MenuNodeDTO
    depth: int
    first: bool
    last: bool
    descendants: int


def list_rows(nodes: tuple[MenuNodeDTO, ...], depth: int = 0) -> list[EditorRow]:
    rows: list[EditorRow] = []
    for index, node in enumerate(nodes):
        below = list_rows(node.children, depth + 1)
        rows.append(EditorRow(node, depth, index == 0, index == len(nodes) - 1, len(below)))
        rows.extend(below)
    return rows


async def check_editor() -> Response | None:
    """None for an editor; a redirect to sign in for a visitor; 403 for other members."""
    user = await get_current_user()
    if user is None:
        return redirect("/auth/login?" + urlencode({"next": EDITOR_PATH}))
    if not await is_editor(user):
        abort(403)
    return None


async def is_editor(user: UserDTO) -> bool:
    """Whether the member is listed as an editor, by id or by their verified email address."""
    account = await get_service(AccountService).get_account(user.id)
    verified = account.user.email if account.email_verified_at is not None else None
    return get_settings().is_editor(user.id, verified)


async def render_editor(*, error: str | None = None, status: int = 200) -> tuple[str, int]:
    tree = await get_service(NavigationService).list_tree()
    message = DONE_MESSAGES.get(request.args.get("done", "")) if error is None else None
    page = await render_template(
        "navigation.html", rows=list_rows(tuple(tree)), message=message, error=error
    )
    return page, status


async def do_finish_change(code: str) -> Response:
    """Commit the change, then purge every cached copy of the navigation."""
    await get_session().commit()
    await do_purge_fragment("blog", NAV_TREE)
    return redirect(EDITOR_PATH + "?" + urlencode({"done": code}))


def read_parent(value: str | None) -> int | None:
    if not value:
        return None
    if not value.isdigit():
        abort(400)
    return int(value)


@navigation_bp.get("/")
async def editor() -> Response | tuple[str, int]:
    refused = await check_editor()
    if refused is not None:
        return refused
    return await render_editor()


@navigation_bp.post("/nodes")
async def add_node() -> Response | tuple[str, int]:
    refused = await check_editor()
    if refused is not None:
        return refused
    form = await request.form
    try:
        await get_service(NavigationService).create_node(
            form.get("label", ""), form.get("url", ""), parent_id=read_parent(form.get("parent"))
        )
    except InvalidInputError as exc:
        return await render_editor(error=str(exc), status=422)
    except NotFoundError:
        return await render_editor(error="The parent entry no longer exists.", status=422)
    return await do_finish_change("added")


@navigation_bp.post("/nodes/<int:node_id>")
async def update_node(node_id: int) -> Response | tuple[str, int]:
    refused = await check_editor()
    if refused is not None:
        return refused
    form = await request.form
    try:
        await get_service(NavigationService).do_update_node(
            node_id, label=form.get("label", ""), url=form.get("url", "")
        )
    except NotFoundError:
        abort(404)
    except InvalidInputError as exc:
        return await render_editor(error=str(exc), status=422)
    return await do_finish_change("saved")


@navigation_bp.post("/nodes/<int:node_id>/move")
async def move_node(node_id: int) -> Response:
    refused = await check_editor()
    if refused is not None:
        return refused
    direction = (await request.form).get("direction")
    if direction not in ("up", "down"):
        abort(400)
    move: Literal["up", "down"] = "up" if direction == "up" else "down"
    try:
        await get_service(NavigationService).do_move_node(node_id, move)
    except NotFoundError:
        abort(404)
    return await do_finish_change("moved")


@navigation_bp.post("/nodes/<int:node_id>/delete")
async def delete_node(node_id: int) -> Response | tuple[str, int]:
    refused = await check_editor()
    if refused is not None:
        return refused
    with_children = (await request.form).get("with_children") == "yes"
    try:
        await get_service(NavigationService).do_delete_node(node_id, with_children=with_children)
    except NotFoundError:
        abort(404)
    except ConflictError as exc:
        return await render_editor(error=str(exc), status=409)
    return await do_finish_change("deleted")
