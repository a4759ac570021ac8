"""The rose-ash command, run as an operator runs it."""

from __future__ import annotations

import os
import subprocess
import sys

from shared.embedded import EmbeddedPostgres
from tests.conftest import TEST_SECRET_KEY


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
