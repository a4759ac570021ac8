"""/healthz (the process answers) and /readyz (PostgreSQL and Redis answer, else 503).

Redis is checked as the cache and, when it is another server, as the state store."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from quart import Blueprint, Response, jsonify
from redis.asyncio import Redis

from shared.db import check_database
from shared.infrastructure.context import get_state
from shared.infrastructure.redis_client import ping_past_memo

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
    checks["redis"] = await check_redis(state.redis, timeout)
    if state.state_redis is not state.redis:
        checks["redis_state"] = await check_redis(state.state_redis, timeout)
    ready = all(result == "ok" for result in checks.values())
    body = {"status": "ok" if ready else "unavailable", "app": state.name, "checks": checks}
    return jsonify(body), 200 if ready else 503


async def check_redis(redis: Redis | None, seconds: float) -> str:
    if redis is None:
        return "error: not connected"
    return await run_check(ping_past_memo(redis), seconds)


async def run_check(check: Awaitable[object], seconds: float) -> str:
    try:
        await asyncio.wait_for(check, seconds)
    except Exception as exc:  # any failure means "not ready"; say which
        logger.warning("readiness check failed: %r", exc)
        return f"error: {type(exc).__name__}"
    return "ok"
