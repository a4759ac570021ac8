"""Signing in and out at federation: magic links by email, an optional password.

- GET /login?next=...: the forms. The authorization endpoint sends visitors here.
- POST /login: email a sign-in link. The answer is the same page whether or not the email
  has an account (and whether or not a mail could be sent to a newcomer).
- POST /login/password: email and password.
- GET /login/magic/<token>: the page the mailed link opens, with a "Sign in" button that
  POSTs to the same URL to use the link (once, within 15 minutes).
- POST /logout: sign this device out.

After signing in, the visitor goes to ``next`` only when it is a path on this host
(``/...`` but not ``//...``); anything else goes to ``/`` (no open redirects).
Requests for links and password attempts are rate-limited per email and per client address
(an IPv6 client's /64; shared.infrastructure.rate_limit), each counted before it is served;
a refusal is 429 with Retry-After.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from quart import Blueprint, Response, render_template, request, session

from federation.services.member_session import clear_sso_cookie, get_signed_in, set_sso_cookie
from shared.contracts.errors import InvalidInputError
from shared.contracts.identity import AccountService, SsoService, UserDTO, UserService
from shared.infrastructure.context import get_service, get_settings, get_state_redis
from shared.infrastructure.member_views import do_commit_and_purge_member_views
from shared.infrastructure.rate_limit import (
    RateDecision,
    RateLimit,
    RateLimiter,
    client_ip,
    client_subject,
)
from shared.infrastructure.security import CSRF_SESSION_KEY

login_bp = Blueprint("login", __name__)

# Links asked for: a few per address (a mailbox is not to be flooded), more per client
# address (several members may share one), each per 15 minutes.
LINKS_PER_EMAIL = RateLimit("login-link-email", limit=5, window_seconds=15 * 60)
LINKS_PER_IP = RateLimit("login-link-ip", limit=30, window_seconds=15 * 60)
# Wrong passwords: per account (guessing one member's) and per client (trying many members).
PASSWORD_FAILURES_PER_EMAIL = RateLimit("login-password-email", limit=5, window_seconds=15 * 60)
PASSWORD_FAILURES_PER_IP = RateLimit("login-password-ip", limit=20, window_seconds=15 * 60)
NO_STORE = {"Cache-Control": "no-store"}


def safe_next(value: str | None) -> str:
    """``value`` if it is a path on this host, else "/" (open-redirect protection)."""
    if not value or len(value) > 2000 or not value.startswith("/") or value.startswith("//"):
        return "/"
    # Browsers read "/\\evil.example" as "//evil.example"; control characters are never sane.
    if "\\" in value or any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    return value


def see_other(location: str) -> Response:
    return Response("", status=303, headers={"Location": location})


async def render_login(status: int = 200, **context: Any) -> Response:
    context.setdefault("next_url", safe_next(request.args.get("next")))
    context.setdefault("email", "")
    context.setdefault("signed_in", await get_signed_in())
    page = await render_template("login.html", **context)
    return Response(page, status=status, headers=NO_STORE, mimetype="text/html")


async def too_many(decision: RateDecision, **context: Any) -> Response:
    minutes = max(1, -(-decision.retry_after // 60))
    response = await render_login(
        429,
        error=f"Too many attempts. Please wait {minutes} minute{'s' * (minutes != 1)} "
        "and try again.",
        **context,
    )
    response.headers["Retry-After"] = str(decision.retry_after)
    return response


@login_bp.get("/login")
async def login_form() -> Response:
    return await render_login()


@login_bp.post("/login")
async def request_link() -> Response:
    form = await request.form
    email = form.get("email", "").strip()
    next_url = safe_next(form.get("next"))
    context = {"email": email, "next_url": next_url}
    limiter = RateLimiter(get_state_redis())
    decision = await limiter.hit(LINKS_PER_IP, client_subject())
    if decision.allowed and email:
        decision = await limiter.hit(LINKS_PER_EMAIL, email)
    if not decision.allowed:
        return await too_many(decision, **context)
    try:
        await get_service(AccountService).do_request_sign_in_link(
            email,
            next_url=None if next_url == "/" else next_url,
            registration_open=get_settings().features.registration_open,
        )
    except InvalidInputError:
        return await render_login(422, error="Please enter a valid email address.", **context)
    page = await render_template("login_sent.html", email=email)
    return Response(page, headers=NO_STORE, mimetype="text/html")


@login_bp.post("/login/password")
async def password_login() -> Response:
    form = await request.form
    email = form.get("email", "").strip()
    password = form.get("password", "")
    next_url = safe_next(form.get("next"))
    context = {"email": email, "next_url": next_url, "password_form": True}
    if not email or not password:
        return await render_login(
            422, credentials_error="Please enter your email address and password.", **context
        )
    limiter = RateLimiter(get_state_redis())
    client = client_subject()
    # Each attempt is counted before the password is checked, so a burst of concurrent guesses
    # gets no more checks than the limits allow; a right password is then taken back.
    decision = await limiter.hit(PASSWORD_FAILURES_PER_IP, client)
    if decision.allowed:
        decision = await limiter.hit(PASSWORD_FAILURES_PER_EMAIL, email)
    if not decision.allowed:
        return await too_many(decision, **context)
    try:
        user = await get_service(AccountService).check_password(email, password)
    except InvalidInputError as exc:
        return await render_login(422, credentials_error=str(exc), **context)
    await limiter.reset(PASSWORD_FAILURES_PER_EMAIL, email)
    await limiter.undo(PASSWORD_FAILURES_PER_IP, client)
    return await complete_sign_in(user, next_url)


@login_bp.get("/login/magic/<token>")
async def confirm_link(token: str) -> Response:
    """The link from the mail opens a page with one button; only the POST signs in.

    Mail scanners (Outlook Safe Links and the like) open every link in a message before the
    member does; if GET used the link up, the member's own click would find it spent.
    The page names the account the link signs in to: a person sent someone else's link (to
    sign them in to an account of the sender's) sees whose account it is before pressing."""
    try:
        account = await get_service(AccountService).get_sign_in_link_account(token)
    except InvalidInputError as exc:
        return await render_login(400, error=str(exc), next_url="/")
    page = await render_template("login_confirm.html", token=token, account=account)
    return Response(page, headers=NO_STORE, mimetype="text/html")


@login_bp.post("/login/magic/<token>")
async def follow_link(token: str) -> Response:
    try:
        result = await get_service(AccountService).do_consume_sign_in_link(token)
    except InvalidInputError as exc:
        return await render_login(400, error=str(exc), next_url="/")
    response = await complete_sign_in(result.user, safe_next(result.next_url))
    if result.new_account:  # the member directory lists them from now on
        await do_commit_and_purge_member_views(result.user.id)
    return response


async def complete_sign_in(user: UserDTO, next_url: str) -> Response:
    """Start (or keep) this device's SSO session for ``user`` and go on to ``next_url``."""
    sso = get_service(SsoService)
    current = await get_signed_in()
    response = see_other(next_url)
    if current is None or current.user.id != user.id:
        if current is not None:  # someone else was signed in on this device
            await sso.do_sign_out_device(current.session.id, reason="another member signed in")
        started = await sso.do_start_session(
            user.id,
            user_agent=request.headers.get("User-Agent", ""),
            ip_address=client_ip(),
        )
        set_sso_cookie(response, started.token)
        # A new identity on this browser gets a new CSRF token (no fixation across sign-ins).
        session.pop(CSRF_SESSION_KEY, None)
    else:  # signed in again (prompt=login, max_age): the session's auth_time is now
        await sso.do_record_authentication(current.session.id)
    await get_service(UserService).do_record_login(user.id)
    response.headers.update(NO_STORE)
    return response


@login_bp.post("/logout")
async def logout() -> Response:
    current = await get_signed_in()
    if current is not None:
        await get_service(SsoService).do_sign_out_device(current.session.id, reason="signed out")
    response = see_other("/")
    clear_sso_cookie(response)
    session.pop(CSRF_SESSION_KEY, None)
    return response
