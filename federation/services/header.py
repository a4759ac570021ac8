"""Federation's part of the shared header: it is the authority, so it reads its own SSO
cookie rather than an app session (shared/infrastructure/oauth.py serves the other apps)."""

from __future__ import annotations

from federation.services.member_session import get_signed_in
from shared.infrastructure.context import get_settings
from shared.infrastructure.oauth import HeaderAccount


async def get_header_account() -> HeaderAccount:
    signed_in = await get_signed_in()
    return HeaderAccount(
        member_name=signed_in.user.name if signed_in else None,
        account_url=get_settings().url_of("account") + "/",
        sign_in_url=None if signed_in else "/login",
        sign_out_url="/logout" if signed_in else None,
    )


async def get_signed_in_member_id() -> int | None:
    """Whom the header's personalised fragments (account's auth-menu) are fetched for."""
    signed_in = await get_signed_in()
    return signed_in.user.id if signed_in else None
