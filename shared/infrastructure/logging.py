"""Structured JSON logs with the request id on every line.

python-json-logger turns stdlib log records into one JSON object per line; we only add the
request id (from a context variable set per request) and the app name.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
app_name_var: ContextVar[str | None] = ContextVar("app_name", default=None)


class RequestContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        if not hasattr(record, "app"):
            record.app = app_name_var.get()
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
