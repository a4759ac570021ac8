"""Federation's side of a member changing their email address: following the link mailed
to the new address. (The forms to ask for the change, choose a username or set a password
are on the account dashboard, which calls AccountService.)"""

from __future__ import annotations

from quart import Blueprint, Response, render_template

from shared.contracts.errors import ConflictError, InvalidInputError
from shared.contracts.protocols import AccountService
from shared.infrastructure.context import get_service, get_settings

profile_bp = Blueprint("profile", __name__)


@profile_bp.get("/email/confirm/<token>")
async def confirm_email(token: str) -> Response:
    account_url = get_settings().url_of("account") + "/"
    status, email, error = 200, None, None
    try:
        user = await get_service(AccountService).do_confirm_email_change(token)
        email = user.email
    except InvalidInputError as exc:
        status, error = 400, str(exc)
    except ConflictError:
        status, error = 409, "That address belongs to another account now, so it was not changed."
    page = await render_template(
        "email_confirmed.html", email=email, error=error, account_url=account_url
    )
    return Response(page, status=status, headers={"Cache-Control": "no-store"})
