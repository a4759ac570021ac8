"""Error responses: an HTML page in the layout for browsers, JSON for JSON clients.

Domain errors raised by services map to their HTTP status here, so services never know HTTP.
"""

from __future__ import annotations

import json
import logging

from quart import Quart, Response, render_template, request
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException, InternalServerError

from shared.contracts.errors import ConflictError, DomainError, InvalidInputError, NotFoundError
from shared.infrastructure.security import CsrfError

logger = logging.getLogger("rose_ash.errors")

DOMAIN_STATUS: dict[type[DomainError], int] = {
    NotFoundError: 404,
    ConflictError: 409,
    InvalidInputError: 422,
}
TITLES = {
    400: "Bad request",
    403: "Forbidden",
    404: "Page not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request too large",
    422: "Invalid input",
    500: "Something went wrong",
    503: "Service unavailable",
}
# What a 503 for an unreachable database tells clients to wait before trying again.
RETRY_AFTER_SECONDS = 5


def wants_json() -> bool:
    """A client that prefers JSON over HTML, or a request to an API path."""
    if request.path.startswith(("/api/", "/internal/")):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json" or (best is None and request.is_json)


async def render_error(status: int, message: str) -> tuple[Response | str, int]:
    title = TITLES.get(status, "Error")
    if wants_json():
        response = Response(status=status, mimetype="application/json")
        response.set_data(json.dumps({"error": title, "message": message, "status": status}))
        return response, status
    return await render_template("error.html", status=status, title=title, message=message), status


def is_database_unavailable(error: BaseException) -> bool:
    """Whether ``error`` says a server the request needs (PostgreSQL above all) could not be
    reached or did not answer in time: a bounded wait of shared.db ran out, a connection was
    refused or lost. Not that a query was wrong: that stays a 500."""
    if isinstance(error, PoolTimeoutError | TimeoutError | OSError):
        return True
    return isinstance(error, OperationalError | InterfaceError) or (
        isinstance(error, DBAPIError) and error.connection_invalidated
    )


async def render_unavailable() -> Response:
    """503 with ``Retry-After``: the page needs a server that does not answer just now."""
    body, status = await render_error(503, "The service is unavailable. Try again shortly.")
    response = Response(body, status) if isinstance(body, str) else body
    response.status_code = status
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def install_error_handlers(app: Quart) -> None:
    @app.errorhandler(HTTPException)
    async def handle_http_error(error: HTTPException) -> tuple[Response | str, int]:
        status = error.code or 500
        if isinstance(error, InternalServerError):
            return await render_error(500, "The server failed to answer. It has been logged.")
        return await render_error(status, error.description or TITLES.get(status, "Error"))

    @app.errorhandler(CsrfError)
    async def handle_csrf_error(error: CsrfError) -> tuple[Response | str, int]:
        return await render_error(403, str(error))

    @app.errorhandler(DomainError)
    async def handle_domain_error(error: DomainError) -> tuple[Response | str, int]:
        status = next(
            (code for kind, code in DOMAIN_STATUS.items() if isinstance(error, kind)), 400
        )
        return await render_error(status, str(error))

    @app.errorhandler(Exception)
    async def handle_unexpected_error(error: Exception) -> Response | tuple[Response | str, int]:
        if is_database_unavailable(error):
            logger.error("%s %s: PostgreSQL unavailable: %r", request.method, request.path, error)
            return await render_unavailable()
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return await render_error(500, "The server failed to answer. It has been logged.")
