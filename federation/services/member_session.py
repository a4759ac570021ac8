"""Who is signed in at federation: the SSO session behind federation's own cookie.

The cookie holds the session's random token (the database keeps only its hash). It is
first-party to federation's host, HttpOnly, SameSite=Lax and Secure outside development.
"""

from __future__ import annotations

from dataclasses import dataclass

from quart import Response, g, request

from shared.contracts.dtos import SsoSessionDTO, UserDTO
from shared.contracts.protocols import SsoService, UserService
from shared.infrastructure.context import get_service, get_settings

SSO_COOKIE = "federation_sso"
SSO_COOKIE_MAX_AGE = 60 * 60 * 24 * 90  # a device stays signed in for 90 days


@dataclass(frozen=True)
class SignedIn:
    user: UserDTO
    session: SsoSessionDTO


async def get_signed_in() -> SignedIn | None:
    """The member signed in on this device at federation, or None (cached per request)."""
    if "signed_in" in g:
        cached: SignedIn | None = g.signed_in
        return cached
    found: SignedIn | None = None
    token = request.cookies.get(SSO_COOKIE)
    if token:
        session = await get_service(SsoService).get_active_session(token)
        if session is not None:
            found = SignedIn(await get_service(UserService).get_user(session.user_id), session)
    g.signed_in = found
    return found


def set_sso_cookie(response: Response, token: str) -> None:
    settings = get_settings()
    response.set_cookie(
        SSO_COOKIE,
        token,
        max_age=SSO_COOKIE_MAX_AGE,
        secure=settings.cookies.secure,
        httponly=True,
        samesite=settings.cookies.samesite,
    )


def clear_sso_cookie(response: Response) -> None:
    settings = get_settings()
    response.delete_cookie(
        SSO_COOKIE,
        secure=settings.cookies.secure,
        httponly=True,
        samesite=settings.cookies.samesite,
    )
