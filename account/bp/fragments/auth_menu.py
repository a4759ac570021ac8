"""``auth-menu``: who is signed in, for every app's header (personalised).

It renders the member's avatar (initials in a circle), name and links to their dashboard.
The sign-out form is not part of it: it posts to the *composing* app's own logout route with
that app's CSRF token, so the layout (shared/templates/_header.html) renders it next to this
fragment. Without a member (or for an unknown one) the fragment is empty and the layout shows
its own "Sign in" link.
"""

from __future__ import annotations

from quart import render_template

from shared.contracts.errors import NotFoundError
from shared.contracts.identity import UserService
from shared.infrastructure.context import get_service, get_settings
from shared.infrastructure.fragments import FragmentContext

AVATAR_COLOURS = 6  # .avatar-0 ... .avatar-5 in site.css


def get_initials(name: str) -> str:
    """Up to two initials of ``name`` ("Ada Hartley" -> "AH", "ada" -> "A")."""
    words = [word for word in name.replace(".", " ").split() if word[:1].isalnum()]
    return "".join(word[0] for word in words[:2]).upper() or "?"


async def render_auth_menu(context: FragmentContext) -> str:
    if context.member_id is None:
        return ""
    try:
        user = await get_service(UserService).get_user(context.member_id)
    except NotFoundError:
        return ""
    return await render_template(
        "fragments/auth_menu.html",
        user=user,
        initials=get_initials(user.name),
        colour=user.id % AVATAR_COLOURS,
        account_url=get_settings().url_of("account") + "/",
        compact=context.variant == "compact",
    )
