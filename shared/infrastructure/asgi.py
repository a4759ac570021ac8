"""Answering requests in front of Quart: what the platform's ASGI layers share.

Three layers answer some requests before Quart's request context and hooks exist (the page
cache's hits, held ActivityPub documents, inbox POSTs from known senders). Their answers must
carry what every response through the stack carries (a request id, the security headers) and
be logged as the stack logs them; this module is that, once.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, cast

from quart import Quart

from shared.config import Settings
from shared.infrastructure.logging import app_name_var, redact_tokens, request_id_var
from shared.infrastructure.security import security_headers

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
HeaderList = list[tuple[bytes, bytes]]

access_logger = logging.getLogger("rose_ash.access")
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def choose_request_id(incoming: str) -> str:
    """The caller's X-Request-ID when it is a sane one, else a new id."""
    return incoming if REQUEST_ID_PATTERN.match(incoming) else uuid.uuid4().hex


def header_of(scope: Scope, name: bytes) -> str:
    """The first request header ``name`` (lower-case) as text, or ""."""
    for key, value in scope.get("headers", ()):
        if bytes(key).lower() == name:
            return bytes(value).decode("latin-1")
    return ""


def encode_security_headers(settings: Settings) -> HeaderList:
    """The security headers every response carries, ready for an ASGI answer."""
    return [
        (name.lower().encode(), value.encode())
        for name, value in security_headers(settings).items()
    ]


async def send_answer(
    scope: Scope,
    send: Send,
    *,
    app_name: str,
    status: int,
    headers: HeaderList,
    body: bytes,
    started: float,
    log_extra: dict[str, Any] | None = None,
) -> None:
    """Send a whole response with ``headers`` plus a request id and the security headers
    (computed once per app by the caller: ``headers`` includes them), no body for HEAD, and
    log it as the request stack's access log does."""
    request_id = choose_request_id(header_of(scope, b"x-request-id"))
    request_id_var.set(request_id)
    app_name_var.set(app_name)
    headers = [*headers, (b"x-request-id", request_id.encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    payload = b"" if scope["method"] == "HEAD" else body
    await send({"type": "http.response.body", "body": payload, "more_body": False})
    if not access_logger.isEnabledFor(logging.INFO):
        return  # production logs at WARNING: no line, so nothing to redact or format
    path = redact_tokens(scope["path"])
    access_logger.info(
        "%s %s %s",
        scope["method"],
        path,
        status,
        extra={
            "method": scope["method"],
            "path": path,
            "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            **(log_extra or {}),
        },
    )


def install_in_front(app: Quart, layer: Callable[[Quart, ASGIApp], ASGIApp]) -> None:
    """Wrap ``app``'s ASGI callable in ``layer`` (Quart documents wrapping ``asgi_app`` so);
    the layer installed last sees a request first."""
    inner = cast(ASGIApp, app.asgi_app)
    app.asgi_app = layer(app, inner)  # type: ignore[method-assign,assignment]
