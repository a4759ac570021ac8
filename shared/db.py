"""Async SQLAlchemy on asyncpg: one engine per process, one AsyncSession per request.

The engine is created in the app's serving lifecycle (``before_serving``) and disposed in
``after_serving``. ``pool_pre_ping`` makes connections recover by themselves after a PostgreSQL
restart: a dead pooled connection is noticed at checkout and replaced, so the next request
after a restart succeeds instead of failing once per stale connection.

Every wait on PostgreSQL is bounded (``Settings.db_*_timeout*``): opening a connection, waiting
for a free one of the pool, and each statement, server-side (``statement_timeout``) and
client-side (asyncpg's ``command_timeout``, which also bounds the pre-ping: a hung server
answers nothing, not even its own timeout). A request that needs a hung or unreachable database
therefore fails within about their sum, and is answered 503 (``is_database_unavailable``,
shared.infrastructure.errors); once the server answers again the pre-ping replaces the broken
connections and requests succeed without a restart.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from shared.config import Settings

# How much longer than the server's statement_timeout the client waits for any answer.
CLIENT_TIMEOUT_MARGIN_SECONDS = 0.5


def create_engine(
    settings: Settings, application_name: str, *, statement_timeout_ms: int | None = None
) -> AsyncEngine:
    """The engine of a process: its pool and every bounded wait (see above). The statement
    timeout is ``settings.db_statement_timeout_ms`` unless the caller (the worker) gives one."""
    statement_ms = statement_timeout_ms or settings.db_statement_timeout_ms
    return create_async_engine(
        settings.database_url,
        pool_pre_ping=True,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_timeout=settings.db_pool_timeout_seconds,
        connect_args={
            "timeout": settings.db_connect_timeout_seconds,
            "command_timeout": statement_ms / 1000 + CLIENT_TIMEOUT_MARGIN_SECONDS,
            "server_settings": {
                "application_name": f"rose-ash-{application_name}",
                "statement_timeout": str(statement_ms),
            },
        },
    )


def create_session_factory(
    bind: AsyncEngine | AsyncConnection,
) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded attributes after commit (DTOs are built after it)."""
    if isinstance(bind, AsyncConnection):
        # Tests bind to one connection inside an outer transaction: each session commit
        # becomes a savepoint release, and the test's rollback undoes everything.
        return async_sessionmaker(
            bind=bind, expire_on_commit=False, join_transaction_mode="create_savepoint"
        )
    return async_sessionmaker(bind=bind, expire_on_commit=False)


@dataclass
class Database:
    """What an app keeps of its database: the engine and the session factory."""

    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncConnection | AsyncSession]:
        """Where a write that is one statement runs in one round trip: a connection whose
        statements commit by themselves (no BEGIN and COMMIT around them; the inbox's insert
        spends a third less time in PostgreSQL). When the sessions are bound elsewhere than
        the engine (the tests' connection, rolled back after each test), a session of theirs
        instead, committed at the end."""
        if self.session_factory.kw.get("bind") is not self.engine:
            async with self.session_factory() as session:
                yield session
                await session.commit()
            return
        async with self.engine.connect() as connection:
            yield await connection.execution_options(isolation_level="AUTOCOMMIT")


async def check_database(engine: AsyncEngine) -> None:
    """Raise if PostgreSQL cannot answer a trivial query."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
