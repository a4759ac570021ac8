"""What a running app keeps, and the per-request accessors views use.

``AppState`` lives in ``app.extensions["rose_ash"]``; the engine, session factory and Redis
clients are filled in by the serving lifecycle (``before_serving``), never at import time.
``redis`` is the cache, ``state_redis`` what must not be evicted (the same client when both
URLs are one; shared.infrastructure.redis_client).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from quart import Quart, current_app, g
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import Settings
from shared.db import Database
from shared.services.registry import ServiceRegistry

ServiceT = TypeVar("ServiceT")
EXTENSION_KEY = "rose_ash"


@dataclass
class AppState:
    name: str
    settings: Settings
    registry: ServiceRegistry
    database: Database | None = None
    redis: Redis | None = None  # the cache: pages, fragments
    state_redis: Redis | None = None  # rate limits, pending sign-ins, grant cache


def get_state(app: Quart | None = None) -> AppState:
    state: AppState = (app or current_app).extensions[EXTENSION_KEY]
    return state


def get_settings() -> Settings:
    return get_state().settings


def get_redis() -> Redis:
    redis = get_state().redis
    if redis is None:
        raise RuntimeError("Redis is not connected: the app is not serving")
    return redis


def get_state_redis() -> Redis:
    """The Redis of what must not be evicted: rate limits, pending sign-ins, grant cache."""
    redis = get_state().state_redis
    if redis is None:
        raise RuntimeError("Redis is not connected: the app is not serving")
    return redis


def get_session() -> AsyncSession:
    """This request's session, opened on first use; committed or rolled back after it."""
    session: AsyncSession | None = g.get("db_session")
    if session is None:
        database = get_state().database
        if database is None:
            raise RuntimeError("the database is not connected: the app is not serving")
        session = database.session_factory()
        g.db_session = session
    return session


def get_service(protocol: type[ServiceT]) -> ServiceT:
    """The registered implementation of ``protocol``, bound to this request's session."""
    return get_state().registry.get(protocol, get_session())
