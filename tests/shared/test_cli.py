"""The rose-ash command, run as an operator runs it."""

from __future__ import annotations

import os
import subprocess
import sys

from sqlalchemy.ext.asyncio import create_async_engine

from shared.db import create_session_factory
from shared.embedded import EmbeddedPostgres
from tests.conftest import (
    TEST_AP_KEY_SECRET,
    TEST_OIDC_KEY_SECRET,
    TEST_SECRET_KEY,
    asyncpg_url,
)
from tests.key_support import store_old_rows


def rose_ash(*args: str, **environment: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        env={**env, **environment},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_db_commands_upgrade_show_and_downgrade(scratch_postgres: EmbeddedPostgres) -> None:
    scratch_postgres.create_database("rose_ash_cli", replace=True)
    url = scratch_postgres.url("rose_ash_cli")
    empty = rose_ash("db", "current", DATABASE_URL=url)
    assert empty.returncode == 0
    assert "(no revision: an empty database)" in empty.stdout
    upgraded = rose_ash("db", "upgrade", DATABASE_URL=url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "Running upgrade  -> 0001" in upgraded.stderr
    assert "(head)" in rose_ash("db", "current", DATABASE_URL=url).stdout
    downgraded = rose_ash("db", "downgrade", "base", DATABASE_URL=url)
    assert downgraded.returncode == 0, downgraded.stderr
    assert "(no revision" in rose_ash("db", "current", DATABASE_URL=url).stdout


def test_seed_command_adds_demo_data_once(
    scratch_postgres: EmbeddedPostgres, redis_url: str
) -> None:
    scratch_postgres.create_database("rose_ash_seed", replace=True)
    url = scratch_postgres.url("rose_ash_seed")
    assert rose_ash("db", "upgrade", DATABASE_URL=url).returncode == 0
    settings_env = {"DATABASE_URL": url, "REDIS_URL": redis_url, "SECRET_KEY": TEST_SECRET_KEY}
    first = rose_ash("seed", ROSE_ASH_ENV="test", **settings_env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "added 3 members and 2 site values"
    again = rose_ash("seed", ROSE_ASH_ENV="test", **settings_env)
    assert again.stdout.strip() == "added 0 members and 0 site values"


def test_missing_configuration_is_a_clear_error_not_a_traceback() -> None:
    result = rose_ash("worker", ROSE_ASH_ENV="production")
    assert result.returncode == 1
    assert "Rose Ash configuration is invalid:" in result.stderr
    assert "  - DATABASE_URL: is required but not set" in result.stderr
    assert "  - SECRET_KEY: is required but not set" in result.stderr
    assert "Traceback" not in result.stderr
    db = rose_ash("db", "current")
    assert db.returncode == 1
    assert "DATABASE_URL is required but not set" in db.stderr


def test_serve_refuses_an_unknown_app() -> None:
    result = rose_ash("serve", "shop")
    assert result.returncode == 2
    assert "'shop' is not one of 'blog', 'market', 'cart', 'events'" in result.stderr


async def test_keys_reencrypt_moves_old_keys_once_and_reports_it(
    scratch_postgres: EmbeddedPostgres, redis_url: str
) -> None:
    scratch_postgres.create_database("rose_ash_keys", replace=True)
    url = scratch_postgres.url("rose_ash_keys")
    assert rose_ash("db", "upgrade", DATABASE_URL=url).returncode == 0
    engine = create_async_engine(asyncpg_url(url))
    try:
        async with create_session_factory(engine)() as session:
            await store_old_rows(session, TEST_SECRET_KEY)
            await session.commit()
    finally:
        await engine.dispose()
    env = {
        "ROSE_ASH_ENV": "production",
        "ROSE_ASH_SMTP__HOST": "mail.internal",
        "DATABASE_URL": url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": TEST_SECRET_KEY,
        "OIDC_KEY_SECRET": TEST_OIDC_KEY_SECRET,
        "AP_KEY_SECRET": TEST_AP_KEY_SECRET,
    }
    first = rose_ash("keys", "reencrypt", **env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        "OIDC signing keys: 1 re-encrypted, 0 already under their own secret",
        "ActivityPub keypairs: 1 re-encrypted, 0 already under their own secret",
    ]
    again = rose_ash("keys", "reencrypt", "--only", "oidc", **env)
    assert again.stdout.splitlines() == [
        "OIDC signing keys: 0 re-encrypted, 1 already under their own secret"
    ]
    # Where OIDC_KEY_SECRET is not given (every app but federation): a clear refusal.
    without = {k: v for k, v in env.items() if k != "OIDC_KEY_SECRET"}
    refused = rose_ash("keys", "reencrypt", "--only", "oidc", **without)
    assert refused.returncode == 1
    assert "OIDC_KEY_SECRET is required in production but not set" in refused.stderr
    assert "Traceback" not in refused.stderr
