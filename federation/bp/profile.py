"""Federation's side of a member changing their email address: following the link mailed
to the new address. (The forms to ask for the change, choose a username or set a password
are on the account dashboard, which calls AccountService.)"""

from __future__ import annotations

from quart import Blueprint, Response, render_template

from shared.contracts.errors import ConflictError, InvalidInputError
from shared.contracts.protocols import AccountService
from shared.infrastructure.context import get_service, get_settings
from shared.infrastructure.member_views import do_commit_and_purge_member_views

profile_bp = Blueprint("profile", __name__)


@profile_bp.get("/email/confirm/<token>")
async def confirm_email(token: str) -> Response:
    account_url = get_settings().url_of("account") + "/"
    status, email, error = 200, None, None
    try:
        user = await get_service(AccountService).do_confirm_email_change(token)
        email = user.email
        await do_commit_and_purge_member_views(user.id)  # a name may come from the email
    except InvalidInputError as exc:
        status, error = 400, str(exc)
    except ConflictError:
        status, error = 409, "That address belongs to another account now, so it was not changed."
    page = await render_template(
        "email_confirmed.html", email=email, error=error, account_url=account_url
    )
    return Response(page, status=status, headers={"Cache-Control": "no-store"})
