"""Who is signed in at federation: the SSO session behind federation's own cookie.

The cookie holds the session's random token (the database keeps only its hash). It is
first-party to federation's host (no Domain, Path=/), HttpOnly, SameSite=Lax, and Secure
outside development, where it is named ``__Host-federation_sso`` (CookieSettings.name_of).
Browsers holding a cookie under the plain name from before are simply signed in again.

The session is checked on the server on every use: past its idle or absolute lifetime
(``Settings.sessions``) it is refused whatever the cookie's Max-Age says; each use keeps it
from idling out.
"""

from __future__ import annotations

from dataclasses import dataclass

from quart import Response, g, request

from shared.contracts.identity import SsoService, SsoSessionDTO, UserDTO, UserService
from shared.infrastructure.context import get_service, get_settings

SSO_COOKIE = "federation_sso"  # the base name; sso_cookie() is the name in force


@dataclass(frozen=True)
class SignedIn:
    user: UserDTO
    session: SsoSessionDTO


def sso_cookie() -> str:
    return get_settings().cookies.name_of(SSO_COOKIE)


async def get_signed_in() -> SignedIn | None:
    """The member signed in on this device at federation, or None (cached per request)."""
    if "signed_in" in g:
        cached: SignedIn | None = g.signed_in
        return cached
    found: SignedIn | None = None
    token = request.cookies.get(sso_cookie())
    if token:
        sso = get_service(SsoService)
        session = await sso.get_active_session(token)
        if session is not None:
            await sso.do_touch_session(session.id)
            found = SignedIn(await get_service(UserService).get_user(session.user_id), session)
    g.signed_in = found
    return found


def set_sso_cookie(response: Response, token: str) -> None:
    settings = get_settings()
    response.set_cookie(
        sso_cookie(),
        token,
        # The browser may keep it as long as a session can live; the server decides sooner.
        max_age=settings.sessions.absolute_lifetime_seconds,
        secure=settings.cookies.secure,
        httponly=True,
        samesite=settings.cookies.samesite,
    )


def clear_sso_cookie(response: Response) -> None:
    settings = get_settings()
    response.delete_cookie(
        sso_cookie(),
        secure=settings.cookies.secure,
        httponly=True,
        samesite=settings.cookies.samesite,
    )
