"""shared.db: the autocommit connection a single-statement write runs on."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.config import Settings
from shared.db import CLIENT_TIMEOUT_MARGIN_SECONDS, Database, create_engine, create_session_factory


@pytest.fixture
async def scratch_table(engine: AsyncEngine) -> AsyncIterator[str]:
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE db_autocommit_test (n int PRIMARY KEY)"))
    yield "db_autocommit_test"
    async with engine.begin() as connection:
        await connection.execute(text("DROP TABLE db_autocommit_test"))


async def count_rows(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int(
            (await connection.execute(text("SELECT count(*) FROM db_autocommit_test"))).scalar_one()
        )


async def test_a_statement_on_the_autocommit_connection_is_committed_at_once(
    engine: AsyncEngine, scratch_table: str
) -> None:
    database = Database(engine=engine, session_factory=create_session_factory(engine))
    async with database.autocommit() as connection:
        await connection.execute(text("INSERT INTO db_autocommit_test VALUES (1)"))
        assert await count_rows(engine) == 1  # seen by another connection before the end
        with pytest.raises(Exception, match="duplicate key"):
            await connection.execute(text("INSERT INTO db_autocommit_test VALUES (1)"))
        await connection.execute(text("INSERT INTO db_autocommit_test VALUES (2)"))
    assert await count_rows(engine) == 2  # the failed statement undid nothing before it


async def test_sessions_bound_to_a_connection_get_a_session_committed_at_the_end(
    connection: AsyncConnection, engine: AsyncEngine
) -> None:
    """The tests' binding: the write joins the test's transaction (rolled back after it)."""
    database = Database(engine=engine, session_factory=create_session_factory(connection))
    async with database.autocommit() as session:
        await session.execute(text("CREATE TEMP TABLE db_autocommit_joined (n int)"))
        await session.execute(text("INSERT INTO db_autocommit_joined VALUES (1)"))
    found = await connection.execute(text("SELECT count(*) FROM db_autocommit_joined"))
    assert found.scalar_one() == 1


async def test_every_wait_on_postgresql_is_bounded_by_the_settings(settings: Settings) -> None:
    bounded = settings.model_copy(
        update={
            "db_connect_timeout_seconds": 1.5,
            "db_pool_timeout_seconds": 0.75,
            "db_statement_timeout_ms": 1200,
        }
    )
    engine = create_engine(bounded, "test")
    try:
        assert engine.pool.timeout() == 0.75  # type: ignore[attr-defined]
        async with engine.connect() as connection:
            raw = await connection.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            # asyncpg's own wait for any answer: a hung server enforces no statement_timeout
            assert driver._config.command_timeout == 1.2 + CLIENT_TIMEOUT_MARGIN_SECONDS
            shown = await connection.execute(text("SHOW statement_timeout"))
            assert shown.scalar_one() == "1200ms"
    finally:
        await engine.dispose()


async def test_the_worker_gets_its_own_longer_statement_timeout(settings: Settings) -> None:
    """A fan-out to every follower is no visitor waiting: the worker's engine takes
    ``db_worker_statement_timeout_ms`` instead of the requests' bound."""
    bounded = settings.model_copy(
        update={"db_statement_timeout_ms": 1200, "db_worker_statement_timeout_ms": 45_000}
    )
    engine = create_engine(
        bounded, "worker", statement_timeout_ms=bounded.db_worker_statement_timeout_ms
    )
    try:
        async with engine.connect() as connection:
            shown = await connection.execute(text("SHOW statement_timeout"))
            assert shown.scalar_one() == "45s"
    finally:
        await engine.dispose()
