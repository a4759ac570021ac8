"""The account app's dashboard: profile, username, email, password, devices and sessions."""

from __future__ import annotations

from urllib.parse import urlencode

from quart import Blueprint, Response, render_template, request

from account.services.dashboard import do_revoke_device, do_sign_out_everywhere, get_dashboard
from shared.contracts.errors import ConflictError, InvalidInputError
from shared.contracts.identity import AccountService, SsoService, UserDTO
from shared.infrastructure.context import get_service, get_state_redis
from shared.infrastructure.member_views import do_commit_and_purge_member_views
from shared.infrastructure.oauth import (
    do_commit_and_purge,
    do_sign_out_here,
    get_app_sign_in,
    get_current_user,
    no_store,
    redirect,
    set_silent_marker,
)
from shared.infrastructure.page_cache import cache_page
from shared.infrastructure.rate_limit import RateDecision, RateLimit, RateLimiter, describe_wait

home_bp = Blueprint("home", __name__)

# Email changes asked for (each sends a mail to the address given): a few per member, and
# fewer per address (no mailbox is to be flooded from any number of accounts), per hour.
EMAIL_CHANGES_PER_MEMBER = RateLimit("email-change-member", limit=5, window_seconds=60 * 60)
EMAIL_CHANGES_PER_ADDRESS = RateLimit("email-change-address", limit=3, window_seconds=60 * 60)

# What the dashboard says after a change (by code, so no one can put words on the page).
DONE_MESSAGES = {
    "device": "The device was signed out.",
    "username": "Your username was saved.",
    "email": "We sent a confirmation link to the new address; the change happens when you "
    "open it signed in as you are now and confirm.",
    "password": "Your password was saved.",
    "password-removed": "You sign in with email links only now.",
}


def done(code: str) -> Response:
    return redirect("/?" + urlencode({"done": code}))


def sign_in_url(next_path: str = "/") -> str:
    return "/auth/login?" + urlencode({"next": next_path})


async def render_dashboard(
    user: UserDTO, *, message: str | None = None, error: str | None = None, status: int = 200
) -> tuple[str, int]:
    sign_in = get_app_sign_in()
    dashboard = await get_dashboard(
        get_service(AccountService),
        get_service(SsoService),
        user.id,
        sign_in.sso_session_id if sign_in else None,
    )
    page = await render_template(
        "dashboard.html", dashboard=dashboard, message=message, error=error
    )
    return page, status


@home_bp.get("/")
@cache_page(ttl=60)
async def home() -> tuple[str, int]:
    user = await get_current_user()
    if user is None:
        return await render_template("home.html", sign_in_url=sign_in_url()), 200
    return await render_dashboard(user, message=DONE_MESSAGES.get(request.args.get("done", "")))


def signed_out_home() -> Response:
    response = no_store(redirect("/"))
    set_silent_marker(response)
    return response


@home_bp.post("/devices/<int:device_id>/revoke")
async def revoke_device(device_id: int) -> Response:
    user = await get_current_user()
    if user is None:
        return redirect(sign_in_url())
    sign_in = get_app_sign_in()
    if sign_in is not None and sign_in.sso_session_id == device_id:
        await do_sign_out_here(reason="signed out in account")  # this very device
        return signed_out_home()
    grant_ids = await do_revoke_device(get_service(SsoService), user.id, device_id)
    await do_commit_and_purge(grant_ids)
    return done("device")


@home_bp.post("/devices/sign-out-everywhere")
async def sign_out_everywhere() -> Response:
    user = await get_current_user()
    if user is None:
        return redirect(sign_in_url())
    grant_ids = await do_sign_out_everywhere(get_service(SsoService), user.id)
    await do_commit_and_purge(grant_ids)
    await do_sign_out_here(reason="signed out everywhere")
    return signed_out_home()


@home_bp.post("/profile/username")
async def change_username() -> Response | tuple[str, int]:
    user = await get_current_user()
    if user is None:
        return redirect(sign_in_url())
    username = (await request.form).get("username", "")
    try:
        await get_service(AccountService).do_change_username(user.id, username)
    except (InvalidInputError, ConflictError) as exc:
        status = 409 if isinstance(exc, ConflictError) else 422
        return await render_dashboard(user, error=str(exc), status=status)
    await do_commit_and_purge_member_views(user.id)  # the header and directory show it
    return done("username")


@home_bp.post("/profile/email")
async def change_email() -> Response | tuple[str, int]:
    user = await get_current_user()
    if user is None:
        return redirect(sign_in_url())
    email = (await request.form).get("email", "").strip()
    decision = await hit_email_change_limits(user.id, email)
    if not decision.allowed:
        error = (
            "Too many requests to change your email address. "
            f"Please wait {describe_wait(decision)} and try again."
        )
        page, status = await render_dashboard(user, error=error, status=429)
        return Response(page, status=status, headers={"Retry-After": str(decision.retry_after)})
    try:
        await get_service(AccountService).do_request_email_change(user.id, email)
    except InvalidInputError as exc:
        return await render_dashboard(user, error=str(exc), status=422)
    # The same answer whether or not the address has an account (the service sees to the
    # pending change shown on the dashboard too).
    return done("email")


async def hit_email_change_limits(user_id: int, email: str) -> RateDecision:
    limiter = RateLimiter(get_state_redis())
    decision = await limiter.hit(EMAIL_CHANGES_PER_MEMBER, str(user_id))
    if decision.allowed and email:
        decision = await limiter.hit(EMAIL_CHANGES_PER_ADDRESS, email)
    return decision


@home_bp.post("/profile/password")
async def change_password() -> Response | tuple[str, int]:
    user = await get_current_user()
    if user is None:
        return redirect(sign_in_url())
    form = await request.form
    accounts = get_service(AccountService)
    if form.get("remove"):
        await accounts.do_remove_password(user.id)
        return done("password-removed")
    password = form.get("password", "")
    if password != form.get("password_again", ""):
        return await render_dashboard(user, error="The two passwords differ.", status=422)
    try:
        await accounts.do_set_password(user.id, password)
    except InvalidInputError as exc:
        return await render_dashboard(user, error=str(exc), status=422)
    return done("password")
