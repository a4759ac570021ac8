"""The test harness: real PostgreSQL and Redis, a schema built by the migrations.

- PostgreSQL: TEST_DATABASE_URL if set (its database is dropped and re-created), else an
  embedded server started for the session. The schema comes from `alembic upgrade head`.
- Each test runs inside a transaction that is rolled back; sessions the code under test opens
  join it through savepoints, so commits in the code are real commits of savepoints.
- Redis: TEST_REDIS_URL if set, else an embedded server; the database is flushed per test.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis.asyncio as aioredis
from quart import Quart
from quart.typing import TestClientProtocol as QuartClient
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine

from shared.config import Settings, load_settings
from shared.db import Database, create_session_factory
from shared.embedded import EmbeddedPostgres, EmbeddedRedis
from shared.infrastructure.context import get_state
from shared.migrations import do_upgrade
from shared.services.registry import ServiceRegistry, build_registry
from tests.sso_support import FakeFederation, Member, make_member

TEST_DATABASE = "rose_ash_test"
TEST_SECRET_KEY = "test-secret-key-that-is-long-enough-for-the-check"
# The stored private keys' secrets, as production gives them to federation and the worker.
TEST_OIDC_KEY_SECRET = "test-oidc-key-secret-given-to-federation-and-the-worker"
TEST_AP_KEY_SECRET = "test-activitypub-key-secret-given-to-the-apps-and-the-worker"

AppFactory = Callable[[Settings], Quart]
ClientMaker = Callable[[AppFactory], Awaitable[QuartClient]]


def platform_environment(
    database_url: str,
    redis_url: str,
    app_urls: Mapping[str, str],
    *,
    secret_key: str,
    pool_size: int,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of the platform's processes a test starts (apps under Hypercorn, the
    worker): this process's environment without its own settings (ROSE_ASH_*, TEST_*, the
    database, Redis and secrets), then the test environment's, the apps' URLs and ``extra``."""
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ROSE_ASH_", "TEST_"))
        and key
        not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "OIDC_KEY_SECRET", "AP_KEY_SECRET"}
    }
    return {
        **inherited,
        "ROSE_ASH_ENV": "test",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": secret_key,
        "ROSE_ASH_DB_POOL_SIZE": str(pool_size),
        **(extra or {}),
        **{f"ROSE_ASH_APPS__{app.upper()}": url for app, url in app_urls.items()},
    }


def asyncpg_url(url: str) -> str:
    return "postgresql+asyncpg://" + url.partition("://")[2]


async def recreate_database(url: str) -> None:
    """Drop and create the database named in ``url``, through the server's `postgres` db."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    maintenance = urlunsplit(parts._replace(path="/postgres"))
    connection = await asyncpg.connect(maintenance)
    try:
        quoted = '"' + name.replace('"', '""') + '"'
        await connection.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
        await connection.execute(f"CREATE DATABASE {quoted}")
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def scratch_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """An embedded PostgreSQL of the tests' own, that tests may restart or fill freely."""
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
async def database_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    configured = os.environ.get("TEST_DATABASE_URL")
    server: EmbeddedPostgres | None = None
    if configured:
        url = configured
    else:
        server = EmbeddedPostgres(tmp_path_factory.mktemp("test-pg") / "data")
        server.start()
        url = server.url(TEST_DATABASE)
    await recreate_database(url)
    await asyncio.to_thread(do_upgrade, url)  # alembic runs its own event loop
    yield url
    if server is not None:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("TEST_REDIS_URL")
    if configured:
        yield configured
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("test-redis"))
    server.start()
    yield server.url(0)
    server.stop()


@pytest.fixture(scope="session")
def settings(database_url: str, redis_url: str) -> Settings:
    return load_settings(
        env="test",
        database_url=database_url,
        redis_url=redis_url,
        secret_key=TEST_SECRET_KEY,
        # Explicit, so that apps started with copies of these settings (production ones too)
        # agree on the key the signing key they create at start is encrypted with.
        oidc_key_secret=TEST_OIDC_KEY_SECRET,
        ap_key_secret=TEST_AP_KEY_SECRET,
        # Tests run the outbox processor themselves (process_due_events), inside their
        # transaction; a background kick would race them on the shared connection.
        outbox_after_commit=False,
    )


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(asyncpg_url(database_url))
    yield engine
    await engine.dispose()


@pytest.fixture
async def connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection inside a transaction that is rolled back after the test."""
    async with engine.connect() as connection:
        transaction = await connection.begin()
        yield connection
        await transaction.rollback()


@pytest.fixture
async def session(connection: AsyncConnection) -> AsyncIterator[AsyncSession]:
    async with create_session_factory(connection)() as session:
        yield session


@pytest.fixture
def registry() -> ServiceRegistry:
    return build_registry()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


@asynccontextmanager
async def serving(
    app: Quart, connection: AsyncConnection | None = None
) -> AsyncIterator[QuartClient]:
    """Run the app's serving lifecycle; bind its sessions to ``connection`` if given."""
    async with app.test_app() as test_app:
        state = get_state(app)
        own_database = state.database
        if connection is not None and own_database is not None:
            state.database = Database(
                engine=own_database.engine, session_factory=create_session_factory(connection)
            )
        try:
            yield test_app.test_client()
        finally:
            state.database = own_database


@pytest.fixture
async def make_client(
    settings: Settings, connection: AsyncConnection, redis: aioredis.Redis
) -> AsyncIterator[ClientMaker]:
    """make_client(create_app) -> a test client of that app, inside the test's transaction."""
    async with AsyncExitStack() as stack:

        async def make(factory: AppFactory) -> QuartClient:
            return await stack.enter_async_context(serving(factory(settings), connection))

        yield make


@pytest.fixture
def fake(settings: Settings) -> FakeFederation:
    """A fake federation for the SSO client tests (tests/sso_support.py)."""
    return FakeFederation(settings)


@pytest.fixture
async def member(session: AsyncSession, settings: Settings) -> Member:
    """Ada, a member signed in at federation on one device (committed in the test's
    transaction, which is rolled back after the test)."""
    return await make_member(session, settings)
