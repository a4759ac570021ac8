"""Federation's side of a member changing their email address: following the link mailed
to the new address. (The forms to ask for the change, choose a username or set a password
are on the account dashboard, which calls AccountService.)

- GET /email/confirm/<token>: a page with a "Confirm" button, for the member who asked for
  the change and is signed in on this device; anyone else is told to sign in as that account.
- POST /email/confirm/<token> (CSRF token): makes the change, removes the password and signs
  the member's other devices out.

Mail scanners open every link in a message: if GET made the change, a scanner in the new
address's mailbox would confirm it for whoever asked, without anyone there meaning to.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, render_template

from federation.services.email_change import do_confirm_email_change
from federation.services.member_session import get_signed_in
from shared.contracts.errors import ConflictError, ForbiddenError, InvalidInputError
from shared.contracts.identity import AccountService, SsoService
from shared.infrastructure.context import get_service, get_settings
from shared.infrastructure.member_views import do_commit_and_purge_member_views

profile_bp = Blueprint("profile", __name__)
NO_STORE = {"Cache-Control": "no-store"}


async def render_page(template: str, status: int = 200, **context: Any) -> Response:
    context.setdefault("account_url", get_settings().url_of("account") + "/")
    page = await render_template(template, **context)
    return Response(page, status=status, headers=NO_STORE, mimetype="text/html")


async def render_wrong_member() -> Response:
    """Only the member who asked for the change may confirm it, signed in on this device."""
    return await render_page("email_confirm.html", 403, signed_in=await get_signed_in())


@profile_bp.get("/email/confirm/<token>")
async def confirm_form(token: str) -> Response:
    signed_in = await get_signed_in()
    try:
        email = await get_service(AccountService).check_email_change(
            token, signed_in.user.id if signed_in is not None else None
        )
    except InvalidInputError as exc:
        return await render_page("email_confirmed.html", 400, error=str(exc))
    except ForbiddenError:
        return await render_wrong_member()
    return await render_page("email_confirm.html", token=token, email=email, can_confirm=True)


@profile_bp.post("/email/confirm/<token>")
async def confirm_email(token: str) -> Response:
    signed_in = await get_signed_in()
    try:
        user = await do_confirm_email_change(
            get_service(AccountService), get_service(SsoService), token, signed_in
        )
    except InvalidInputError as exc:
        return await render_page("email_confirmed.html", 400, error=str(exc))
    except ForbiddenError:
        return await render_wrong_member()
    except ConflictError:
        return await render_page(
            "email_confirmed.html",
            409,
            error="That address belongs to another account now, so it was not changed.",
        )
    await do_commit_and_purge_member_views(user.id)  # the member's own name may come from it
    return await render_page("email_confirmed.html", email=user.email)
