"""Confirming an email change at federation: the address changes for the member signed in on
this device, and every other device of theirs is signed out (whoever knew the old address's
password, or held a session on another device, loses the account with the old address)."""

from __future__ import annotations

from federation.services.member_session import SignedIn
from shared.contracts.identity import AccountService, SsoService, UserDTO

EMAIL_CHANGED = "email changed"


async def do_sign_out_other_devices(sso: SsoService, user_id: int, keep: int | None) -> int:
    """Sign out every device of the member except ``keep``; how many were signed out."""
    others = [device.id for device in await sso.list_sessions(user_id) if device.id != keep]
    for device_id in others:
        await sso.do_sign_out_device(device_id, reason=EMAIL_CHANGED)
    return len(others)


async def do_confirm_email_change(
    accounts: AccountService, sso: SsoService, token: str, signed_in: SignedIn | None
) -> UserDTO:
    """Use the link for the member signed in here (errors as AccountService's), then sign
    their other devices out."""
    user = await accounts.do_confirm_email_change(
        token, signed_in.user.id if signed_in is not None else None
    )
    await do_sign_out_other_devices(
        sso, user.id, signed_in.session.id if signed_in is not None else None
    )
    return user
