"""`rose-ash ap`: operators see deliveries (and the dead letters) and re-queue failed ones,
block, and follow remote actors, against a database of the module's own. One command runs as
an operator runs it (a process of its own); the rest through click's runner, in a thread (the
commands run their own event loop), which saves the seconds each interpreter takes to start."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from click.testing import CliRunner
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from shared.cli import main
from shared.config import Settings, load_settings
from shared.db import create_session_factory
from shared.infrastructure.activitypub.remote import RemoteClient
from shared.migrations import do_upgrade
from shared.models.social.outbox import ApActivity, ApDelivery
from shared.services.social.delivery import process_activities, process_deliveries
from shared.services.social.publish import emit_activity
from tests.conftest import TEST_SECRET_KEY, recreate_database
from tests.shared.activitypub.inbox_support import RemoteActor
from tests.shared.activitypub.tls_support import OwnCA

REFUSED_INBOX = "http://127.0.0.1:9/inbox"  # loopback, refused unless allowed


@pytest.fixture(scope="module")
async def cli_url(database_url: str) -> AsyncIterator[str]:
    parts = urlsplit(database_url)
    url = urlunsplit(parts._replace(path=parts.path + "_ap_cli"))
    await recreate_database(url)
    await asyncio.to_thread(do_upgrade, url)
    yield url
    maintenance = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
    try:
        await maintenance.execute(f'DROP DATABASE IF EXISTS "{parts.path[1:]}_ap_cli" WITH (FORCE)')
    finally:
        await maintenance.close()


@pytest.fixture
async def cli_settings(cli_url: str, redis_url: str) -> Settings:
    settings = load_settings(
        env="test",
        database_url=cli_url,
        redis_url=redis_url,
        secret_key=TEST_SECRET_KEY,
        outbox_after_commit=False,
    )
    engine = create_async_engine(settings.database_url)
    async with engine.begin() as connection:
        await connection.execute(
            text("TRUNCATE ap_activities, ap_deliveries, ap_following, ap_remote_actors CASCADE")
        )
    await engine.dispose()
    return settings


@pytest.fixture
async def engine(cli_settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(cli_settings.database_url)
    yield engine
    await engine.dispose()


def environment_for(settings: Settings) -> dict[str, str]:
    return {
        "ROSE_ASH_ENV": "test",
        "DATABASE_URL": settings.sync_database_url,
        "REDIS_URL": settings.redis_url,
        "SECRET_KEY": TEST_SECRET_KEY,
    }


def rose_ash_process(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """`rose-ash ap ...` in a process of its own."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("ROSE_ASH_")}
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", "ap", *args],
        env={**inherited, **environment_for(settings)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


async def rose_ash(settings: Settings, *args: str, env: dict[str, str] | None = None) -> Ran:
    """`rose-ash ap ...` through click's runner, in a thread (it runs its own event loop)."""
    runner = CliRunner()
    result = await asyncio.to_thread(
        runner.invoke, main, ["ap", *args], env={**environment_for(settings), **(env or {})}
    )
    return Ran(result.exit_code, result.stdout, result.stderr)


async def fail_a_delivery(engine: AsyncEngine, settings: Settings) -> str:
    """A delivery refused for good (a loopback inbox where loopback is not allowed), through
    the real processor; returns the activity's id."""
    strict = settings.model_copy(
        update={"activitypub": settings.activitypub.model_copy(update={"allow_loopback": False})}
    )
    sessions = create_session_factory(engine)
    async with sessions() as session:
        emitted = await emit_activity(
            session, strict, "blog", {"type": "Create", "object": "x:1"},
            visibility="direct", target_inboxes=[REFUSED_INBOX],
        )  # fmt: skip
        await session.commit()
    await process_activities(sessions, strict)
    client = RemoteClient(strict)
    try:
        assert await process_deliveries(sessions, strict, client) == 1
    finally:
        await client.aclose()
    return emitted.uri


async def delivery_rows(engine: AsyncEngine) -> list[tuple[int, str, int, str | None]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(
                ApDelivery.id, ApDelivery.state, ApDelivery.attempts, ApDelivery.last_error
            ).order_by(ApDelivery.id)
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


async def test_failed_deliveries_are_listed_and_re_queued(
    engine: AsyncEngine, cli_settings: Settings
) -> None:
    activity_uri = await fail_a_delivery(engine, cli_settings)
    [(delivery_id, state, attempts, error)] = await delivery_rows(engine)
    assert (state, attempts) == ("failed", 1)
    assert error is not None

    listed = await asyncio.to_thread(rose_ash_process, cli_settings, "deliveries", "--failed")
    assert listed.returncode == 0, listed.stderr
    header, *lines = listed.stdout.strip().splitlines()
    assert header.split("\t") == [
        "id", "state", "attempts", "last_status", "activity", "inbox", "last_error",
    ]  # fmt: skip
    assert len(lines) == 1
    fields = lines[0].split("\t")
    assert fields[:6] == [str(delivery_id), "failed", "1", "-", activity_uri, REFUSED_INBOX]
    assert fields[6].startswith("refused")

    stats = await rose_ash(cli_settings, "stats")
    assert stats.returncode == 0, stats.stderr
    assert stats.stdout.splitlines() == ["activities: done 1", "deliveries: failed 1"]

    retried = await rose_ash(cli_settings, "retry", str(delivery_id))
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.strip() == "re-queued 1 deliveries"
    assert await delivery_rows(engine) == [(delivery_id, "pending", 0, None)]
    # nothing failed is left to list; the re-queued row shows among the pending
    listed_again = await rose_ash(cli_settings, "deliveries", "--failed")
    assert listed_again.stdout.strip().splitlines() == [header]
    pending = await rose_ash(cli_settings, "deliveries", "--pending")
    assert f"{delivery_id}\tpending\t0\t-\t{activity_uri}" in pending.stdout


async def test_retry_all_failed_and_usage_errors(
    engine: AsyncEngine, cli_settings: Settings
) -> None:
    await fail_a_delivery(engine, cli_settings)
    await fail_a_delivery(engine, cli_settings)
    assert [row[1] for row in await delivery_rows(engine)] == ["failed", "failed"]

    retried = await rose_ash(cli_settings, "retry", "--all-failed")
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.strip() == "re-queued 2 deliveries"
    assert [row[1:3] for row in await delivery_rows(engine)] == [("pending", 0), ("pending", 0)]

    # a delivery that is not failed is not touched
    again = await rose_ash(cli_settings, "retry", "--all-failed")
    assert again.stdout.strip() == "re-queued 0 deliveries"

    neither = await rose_ash(cli_settings, "retry")
    assert neither.returncode == 2
    assert "give delivery ids or --all-failed" in neither.stderr
    both = await rose_ash(cli_settings, "retry", "--all-failed", "1")
    assert both.returncode == 2


async def test_operators_block_list_and_unblock_domains_and_actors(
    engine: AsyncEngine, cli_settings: Settings
) -> None:
    async with engine.begin() as connection:
        await connection.execute(text("TRUNCATE ap_blocks"))
    added = await rose_ash(
        cli_settings, "block", "add", "domain", "Spam.Example", "--reason", "spam"
    )
    assert added.returncode == 0, added.stderr
    actor = "https://other.example/users/troll"
    assert (
        await rose_ash(cli_settings, "block", "add", "actor", actor + "#main-key")
    ).returncode == 0
    listed = await rose_ash(cli_settings, "block", "list")
    header, *rows = listed.stdout.strip().splitlines()
    assert header.split("\t") == ["kind", "value", "since", "reason"]
    assert [row.split("\t")[:2] + row.split("\t")[3:] for row in rows] == [
        ["domain", "spam.example", "spam"],
        ["actor", actor, "-"],
    ]
    removed = await rose_ash(cli_settings, "block", "remove", "domain", "spam.example")
    assert removed.returncode == 0, removed.stderr
    again = await rose_ash(cli_settings, "block", "remove", "domain", "spam.example")
    assert again.returncode == 1
    assert "is not blocked" in again.stderr
    wrong = await rose_ash(cli_settings, "block", "add", "server", "x.example")
    assert wrong.returncode == 2
    rows_left = await rose_ash(cli_settings, "block", "list")
    assert len(rows_left.stdout.strip().splitlines()) == 2  # header and the actor


async def test_operators_follow_list_and_unfollow_a_remote_actor(
    engine: AsyncEngine, cli_settings: Settings, alice: RemoteActor
) -> None:
    alice.publish_webfinger()
    followed = await rose_ash(cli_settings, "follow", "blog", f"@{alice.handle}")
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout.strip() == f"blog -> {alice.handle} ({alice.uri}): pending"
    async with engine.connect() as connection:
        follows = await connection.execute(
            select(ApActivity.activity_type, ApActivity.target_inboxes)
        )
        assert [tuple(row) for row in follows] == [("Follow", [alice.inbox])]

    listed = await rose_ash(cli_settings, "following", "--app", "blog")
    header, *lines = listed.stdout.strip().splitlines()
    assert header.split("\t") == ["app", "handle", "actor", "state", "since"]
    assert [line.split("\t")[:4] for line in lines] == [
        ["blog", alice.handle, alice.uri, "pending"]
    ]
    assert (await rose_ash(cli_settings, "following", "--app", "events")).stdout.strip() == header

    unfollowed = await rose_ash(cli_settings, "unfollow", "blog", alice.uri)
    assert unfollowed.returncode == 0, unfollowed.stderr
    assert unfollowed.stdout.strip() == f"blog no longer follows {alice.handle}"
    again = await rose_ash(cli_settings, "unfollow", "blog", alice.uri)
    assert again.returncode == 1
    assert f"blog does not follow {alice.uri}" in again.stderr
    nonsense = await rose_ash(cli_settings, "follow", "blog", "nobody")
    assert nonsense.returncode == 1
    assert "neither an actor URL nor a handle" in nonsense.stderr


async def test_operators_see_the_handle_a_tls_peer_behind_a_private_ca_confirms(
    cli_settings: Settings, tls_alice: RemoteActor, own_ca: OwnCA
) -> None:
    """An https peer on a loopback name, its certificate signed by a private CA: trusted with
    ROSE_ASH_ACTIVITYPUB__EXTRA_CA_FILE, followed by the handle its WebFinger gives (on another
    domain than its actor's host), and listed by that handle."""
    handle = tls_alice.publish_handle_on("takahe.localhost")
    refused = await rose_ash(cli_settings, "follow", "blog", handle)
    assert refused.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in refused.stderr
    trust = {"ROSE_ASH_ACTIVITYPUB__EXTRA_CA_FILE": str(own_ca.ca_file)}
    followed = await rose_ash(cli_settings, "follow", "blog", handle, env=trust)
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout.strip() == f"blog -> {handle} ({tls_alice.uri}): pending"
    listed = await rose_ash(cli_settings, "following", env=trust)
    assert [line.split("\t")[:3] for line in listed.stdout.strip().splitlines()[1:]] == [
        ["blog", handle, tls_alice.uri]
    ]
