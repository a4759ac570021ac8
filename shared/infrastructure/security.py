"""Security headers on every response and CSRF protection on every state-changing request.

CSRF uses the synchroniser-token pattern (as Flask-WTF and Django do): a random token kept in
the app's signed session cookie, rendered into each form as ``csrf_token``, and compared in
constant time on POST/PUT/PATCH/DELETE. Endpoints that are not forms (signed inboxes, webhooks)
opt out with ``@csrf_exempt`` and authenticate their callers otherwise.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from typing import TypeVar

from quart import Quart, Response, abort, current_app, request, session

from shared.config import APP_NAMES, Settings
from shared.infrastructure.context import get_state

CSRF_SESSION_KEY = "csrf_token"
CSRF_FORM_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRFToken"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSRF_EXEMPT_ATTRIBUTE = "_rose_ash_csrf_exempt"

ViewT = TypeVar("ViewT", bound=Callable[..., object])


class CsrfError(Exception):
    """The request changes state without a valid CSRF token."""


def csrf_exempt(view: ViewT) -> ViewT:
    """Mark a view that authenticates its callers by other means (signatures, tokens)."""
    setattr(view, CSRF_EXEMPT_ATTRIBUTE, True)
    return view


def get_csrf_token() -> str:
    """This visitor's CSRF token, created on first use (for templates: ``csrf_token()``)."""
    token = session.get(CSRF_SESSION_KEY)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session[CSRF_SESSION_KEY] = token
    return token


async def check_csrf() -> None:
    """before_request: refuse an unsafe request whose token is missing or wrong."""
    if request.method not in UNSAFE_METHODS or request.routing_exception is not None:
        return  # safe methods change nothing; unknown routes get their 404/405
    view = current_app.view_functions.get(request.endpoint or "")
    if getattr(view, CSRF_EXEMPT_ATTRIBUTE, False):
        return
    expected = session.get(CSRF_SESSION_KEY)
    submitted = request.headers.get(CSRF_HEADER)
    if submitted is None and request.mimetype in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        submitted = (await request.form).get(CSRF_FORM_FIELD)
    if not expected or not submitted or not hmac.compare_digest(str(expected), submitted):
        raise CsrfError("The form has expired or did not come from this site. Reload the page.")


def content_security_policy(form_targets: list[str]) -> str:
    return "; ".join(
        [
            "default-src 'self'",
            "img-src 'self' data: https:",
            "style-src 'self'",
            "script-src 'self'",
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self' " + " ".join(form_targets),
            "frame-ancestors 'none'",
        ]
    )


def security_headers(settings: Settings) -> dict[str, str]:
    """The headers every response of an app carries (unless the view set its own)."""
    policy = content_security_policy([settings.url_of(name) for name in APP_NAMES])
    headers = {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "strict-origin-when-cross-origin",
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
    }
    if all(settings.url_of(name).startswith("https://") for name in APP_NAMES):
        headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
    return headers


def install_security(app: Quart) -> None:
    defaults = security_headers(get_state(app).settings)

    @app.after_request
    async def add_security_headers(response: Response) -> Response:
        headers = response.headers
        for name, value in defaults.items():
            headers.setdefault(name, value)
        return response

    @app.before_request
    async def refuse_oversized_body() -> None:
        # Quart also enforces MAX_CONTENT_LENGTH while a body streams in (chunked uploads);
        # this answers at once when the declared length is already too large.
        limit = app.config["MAX_CONTENT_LENGTH"]
        if request.content_length is not None and request.content_length > limit:
            abort(413)

    app.before_request(check_csrf)
    app.jinja_env.globals["csrf_token"] = get_csrf_token
