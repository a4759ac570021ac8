"""Migrations: models and revisions agree, schema.sql is current, migrating is race-free."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import asyncpg

from shared.embedded import EmbeddedPostgres
from shared.migrations import (
    MIGRATION_LOCK_ID,
    check_migrations,
    do_downgrade,
    do_upgrade,
    get_current,
)
from shared.schema_dump import SCHEMA_FILE, build_schema, diff_schema


def test_alembic_check_finds_no_difference_between_models_and_head(database_url: str) -> None:
    """`alembic check`: autogenerate against the head-built test database finds nothing."""
    check_migrations(database_url)


def test_schema_sql_matches_the_migrations(scratch_postgres: EmbeddedPostgres) -> None:
    built = build_schema(scratch_postgres)
    committed = SCHEMA_FILE.read_text()
    assert committed == built, (
        "schema.sql drifted from the migrations; run `rose-ash schema dump`.\n"
        + diff_schema(committed, built)
    )


def test_schema_drift_would_be_detected(scratch_postgres: EmbeddedPostgres) -> None:
    built = build_schema(scratch_postgres)
    tampered = built.replace("display_name character varying(100)", "display_name text")
    assert tampered != built
    assert "-    display_name text" in diff_schema(tampered, built)


def test_downgrade_to_base_and_upgrade_again(scratch_postgres: EmbeddedPostgres) -> None:
    scratch_postgres.create_database("rose_ash_roundtrip", replace=True)
    url = scratch_postgres.url("rose_ash_roundtrip")
    do_upgrade(url)
    assert get_current(url).endswith("(head)")
    do_downgrade(url, "base")
    assert get_current(url) == ""
    tables = scratch_postgres.psql(
        "SELECT count(*) FROM pg_tables"
        " WHERE schemaname = 'public' AND tablename <> 'alembic_version';",
        "rose_ash_roundtrip",
    )
    assert tables.split() == ["count", "-------", "0", "(1", "row)"]
    do_upgrade(url)
    assert get_current(url).endswith("(head)")


async def count_lock_waiters(holder: asyncpg.Connection, database: str) -> int:
    """How many sessions of ``database`` wait for an advisory lock (none is granted to them)."""
    waiting: int = await holder.fetchval(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
        " WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = $1",
        database,
    )
    return waiting


def start_upgrades(environment: dict[str, str], count: int) -> list[subprocess.Popen[bytes]]:
    """``count`` `rose-ash db upgrade` processes, started (not awaited)."""
    return [
        subprocess.Popen(
            [sys.executable, "-m", "shared.cli", "db", "upgrade"],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(count)
    ]


async def test_processes_migrating_at_once_do_not_race(
    scratch_postgres: EmbeddedPostgres,
) -> None:
    """Four `rose-ash db upgrade` processes on an empty database: all succeed, one builds it.

    The overlap is made certain, not left to scheduling: the test holds the migration lock
    while the processes start, waits until all four queue for it, then lets them go at once.
    A process that took no lock (or took it after reading the database's revision) runs the
    first revision too, every time."""
    scratch_postgres.create_database("rose_ash_race", replace=True)
    url = scratch_postgres.url("rose_ash_race")
    environment = {**os.environ, "DATABASE_URL": url}
    holder = await asyncpg.connect(url)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
        processes = start_upgrades(environment, 4)
        deadline = asyncio.get_running_loop().time() + 60
        while await count_lock_waiters(holder, "rose_ash_race") < len(processes):
            exited = [process.args for process in processes if process.poll() is not None]
            assert not exited, "an upgrade ran without waiting for the migration lock"
            assert asyncio.get_running_loop().time() < deadline, "the upgrades never queued"
            await asyncio.sleep(0.1)
        await holder.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
        outputs = [
            (await asyncio.to_thread(process.communicate, timeout=120))[0].decode()
            for process in processes
        ]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        await holder.close()
    assert [process.returncode for process in processes] == [0, 0, 0, 0], outputs
    ran_first_revision = [out for out in outputs if "Running upgrade  -> 0001" in out]
    assert len(ran_first_revision) == 1, outputs
    assert (await asyncio.to_thread(get_current, url)).endswith("(head)")


async def test_a_migration_waits_for_the_advisory_lock(scratch_postgres: EmbeddedPostgres) -> None:
    """While another session holds the migration lock, an upgrade does not start."""
    scratch_postgres.create_database("rose_ash_locked", replace=True)
    url = scratch_postgres.url("rose_ash_locked")
    holder = await asyncpg.connect(url)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
        upgrade = asyncio.create_task(asyncio.to_thread(do_upgrade, url))
        await asyncio.sleep(1.5)
        assert not upgrade.done(), "the upgrade ran although the lock was held"
        assert await holder.fetchval("SELECT to_regclass('public.users')") is None
        await holder.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
        await asyncio.wait_for(upgrade, timeout=30)
        assert await holder.fetchval("SELECT to_regclass('public.users')::text") == "users"
    finally:
        await holder.close()


async def test_upgrade_is_callable_from_async_code_through_a_thread(database_url: str) -> None:
    await asyncio.to_thread(do_upgrade, database_url)
    assert (await asyncio.to_thread(get_current, database_url)).endswith("(head)")
