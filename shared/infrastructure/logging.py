"""Structured JSON logs with the request id on every line, and no secrets from URLs.

python-json-logger turns stdlib log records into one JSON object per line; we add the
request id (from a context variable set per request) and the app name, and redact the tokens
a request target may carry (``redact_tokens``) from every line written.
"""

from __future__ import annotations

import logging
import re
import sys
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
app_name_var: ContextVar[str | None] = ContextVar("app_name", default=None)

REDACTED = "REDACTED"
# What in a URL is a secret, wherever it is logged. Written in the syntax Python and Go (RE2)
# share: deploy/Caddyfile redacts its access log with these very patterns (a deploy test
# checks they are the same). A match's first group is kept, the rest becomes REDACTED.
TOKEN_PATTERNS = (
    # The segment after magic/, confirm/, ...: sign-in, e-mail confirmation, unsubscribe links.
    r"(?i)(/(?:magic|confirm|unsubscribe|reset|verify|invite)/)[^/?#\s]+",
    # A credential's value in a query (also percent-encoded, as in a next= parameter).
    r"(?i)((?:[?&;]|%3F|%26)(?:token|code|state|access_token|refresh_token|id_token"
    r"|id_token_hint|logout_token|client_secret|code_verifier|password)(?:=|%3D))[^&#\s]*",
)
_TOKEN_REGEXES = tuple(re.compile(pattern) for pattern in TOKEN_PATTERNS)


def redact_tokens(text: str) -> str:
    """``text`` (a path, a URL, a log message) with the secrets of TOKEN_PATTERNS redacted."""
    for regex in _TOKEN_REGEXES:
        text = regex.sub(rf"\g<1>{REDACTED}", text)
    return text


def redact_record(record: logging.LogRecord) -> None:
    """Tokens out of what ``record`` writes: its message and its ``path`` field."""
    try:
        message = record.getMessage()
    except (TypeError, ValueError):
        return  # a malformed call: the handler reports it as logging does
    redacted = redact_tokens(message)
    if redacted != message:
        record.msg, record.args = redacted, None
    path = getattr(record, "path", None)
    if isinstance(path, str):
        record.path = redact_tokens(path)


class RequestContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        if not hasattr(record, "app"):
            record.app = app_name_var.get()
        # Any logger's line may name a URL (an error on a path, an HTTP client's request).
        redact_record(record)
        return True


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time (test runners swap it per test)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def configure_logging(level: str) -> None:
    """One JSON handler on the root logger (added once per process, never duplicated)."""
    root = logging.getLogger()
    root.setLevel(level)
    if any(getattr(handler, "rose_ash", False) for handler in root.handlers):
        return
    handler = StderrHandler()
    handler.rose_ash = True  # type: ignore[attr-defined]
    handler.addFilter(RequestContextFilter())
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(app)s %(request_id)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    root.addHandler(handler)
    # SQLAlchemy and asyncpg are chatty at DEBUG; their warnings still come through.
    logging.getLogger("sqlalchemy.engine").setLevel(max(logging.WARNING, root.level))
