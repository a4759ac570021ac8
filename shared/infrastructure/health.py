"""/healthz (the process answers) and /readyz (PostgreSQL and Redis answer, else 503)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from quart import Blueprint, Response, jsonify

from shared.db import check_database
from shared.infrastructure.context import get_state

logger = logging.getLogger("rose_ash.health")
health_bp = Blueprint("health", __name__)


@health_bp.get("/healthz")
async def healthz() -> Response:
    return jsonify({"status": "ok", "app": get_state().name})


@health_bp.get("/readyz")
async def readyz() -> tuple[Response, int]:
    state = get_state()
    timeout = state.settings.readiness_timeout_seconds
    checks: dict[str, str] = {}
    if state.database is None:
        checks["postgres"] = "error: not connected"
    else:
        checks["postgres"] = await run_check(check_database(state.database.engine), timeout)
    if state.redis is None:
        checks["redis"] = "error: not connected"
    else:
        checks["redis"] = await run_check(state.redis.ping(), timeout)
    ready = all(result == "ok" for result in checks.values())
    body = {"status": "ok" if ready else "unavailable", "app": state.name, "checks": checks}
    return jsonify(body), 200 if ready else 503


async def run_check(check: Awaitable[object], seconds: float) -> str:
    try:
        await asyncio.wait_for(check, seconds)
    except Exception as exc:  # any failure means "not ready"; say which
        logger.warning("readiness check failed: %r", exc)
        return f"error: {type(exc).__name__}"
    return "ok"
