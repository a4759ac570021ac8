"""The `rose-ash` command: run, serve, migrate, seed, work, federate, dump the schema.

`dev` and `schema dump` start embedded servers, whose packages are in the dev dependency
group only; their modules are imported inside those two commands so that production images
(installed without that group) can run every other command.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click
import uvloop
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from shared.config import APP_NAMES, ConfigError, Settings, load_settings
from shared.contracts.errors import DomainError
from shared.db import check_database, create_engine, create_session_factory
from shared.infrastructure.activitypub.remote import RemoteClient
from shared.infrastructure.key_encryption import (
    DESCRIPTIONS,
    KeyEncryptionError,
    KeyKind,
    do_reencrypt_keys,
)
from shared.migrations import do_downgrade, do_upgrade, get_current
from shared.seed import do_seed_demo_data
from shared.services.identity.oauth_clients import (
    do_add_third_party_client,
    do_remove_client,
    list_clients,
)
from shared.services.identity.signing_keys import do_prune_signing_keys, do_rotate_signing_key
from shared.services.registry import build_registry
from shared.services.social.blocks import (
    BLOCK_KINDS,
    BlockKind,
    do_block,
    do_unblock,
    list_blocks,
)
from shared.services.social.delivery import (
    count_by_state,
    do_retry_deliveries,
    list_deliveries,
)
from shared.services.social.follows import (
    FollowingView,
    do_follow,
    do_unfollow,
    list_following,
)
from shared.serving import hypercorn_command
from shared.worker import build_worker

T = TypeVar("T")
SessionWork = Callable[[AsyncSession], Awaitable[T]]


def require_database_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise click.ClickException("DATABASE_URL is required but not set")
    return url


def load_settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def main() -> None:
    """Rose Ash: the platform of a cooperative."""


@main.command()
@click.option("--reload/--no-reload", default=True, help="Restart an app when its code changes.")
def dev(reload: bool) -> None:
    """Run all six apps (with embedded PostgreSQL and Redis unless their URLs are set)."""
    from shared.devrunner import DevRunner  # dev dependency group only (see module docstring)

    sys.exit(DevRunner(reload=reload).run())


@main.command()
@click.argument("app_name", type=click.Choice(APP_NAMES))
@click.option("--host", default="0.0.0.0", show_default=True)  # noqa: S104 (a server binds all)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--reload", is_flag=True, help="Restart when code changes (development).")
def serve(app_name: str, host: str, port: int, reload: bool) -> None:
    """Serve one app under Hypercorn, as production runs it."""
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    command = hypercorn_command(app_name, [bind], reload=reload)
    os.execv(command[0], command)  # noqa: S606 (replace this process with Hypercorn)


@main.group()
def db() -> None:
    """Migrate the database (DATABASE_URL)."""
    # Alembic reports each revision it runs at INFO: operators should see them.
    logging.basicConfig(level=logging.INFO, format="%(message)s")


@db.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Upgrade to REVISION (default: head)."""
    do_upgrade(require_database_url(), revision)


@db.command("downgrade")
@click.argument("revision", default="-1")
def db_downgrade(revision: str) -> None:
    """Downgrade to REVISION (default: one step back)."""
    do_downgrade(require_database_url(), revision)


@db.command("current")
def db_current() -> None:
    """Print the database's current revision."""
    click.echo(get_current(require_database_url()) or "(no revision: an empty database)")


@db.command("wait")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait.")
def db_wait(timeout: float) -> None:
    """Wait until PostgreSQL answers a query (used by the images' entrypoints)."""
    url = require_database_url()

    async def wait() -> None:
        engine = create_async_engine(
            "postgresql+asyncpg://" + url.partition("://")[2], poolclass=NullPool
        )
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    await check_database(engine)
                    return
                except (OSError, SQLAlchemyError) as exc:
                    if time.monotonic() > deadline:
                        raise click.ClickException(f"PostgreSQL is not reachable: {exc}") from exc
                    await asyncio.sleep(1)
        finally:
            await engine.dispose()

    asyncio.run(wait())


@main.command()
def seed() -> None:
    """Add the demo data (idempotent)."""
    settings = load_settings_or_exit()

    async def run() -> None:
        engine = create_engine(settings, "seed")
        try:
            async with create_session_factory(engine)() as session:
                report = await do_seed_demo_data(session, build_registry())
                await session.commit()
        finally:
            await engine.dispose()
        click.echo(f"added {report.members_added} members and {report.values_set} site values")

    asyncio.run(run())


@main.command()
@click.option("--once", is_flag=True, help="Run one cycle of due jobs and exit.")
def worker(once: bool) -> None:
    """Run the background processor until SIGTERM/SIGINT."""
    settings = load_settings_or_exit()
    # uvloop, as the apps under Hypercorn: the fan-out's sockets and asyncpg run faster on it.
    uvloop.run(build_worker(settings).run(once=once))


async def with_session(settings: Settings, work: SessionWork[T]) -> T:
    """Run ``work`` in one committed transaction of its own."""
    engine = create_engine(settings, "cli")
    try:
        async with create_session_factory(engine)() as session:
            result = await work(session)
            await session.commit()
            return result
    finally:
        await engine.dispose()


def run_domain(work: SessionWork[T]) -> T:
    """Run a domain call for an operator: domain errors (and a key secret missing or not the
    one the stored keys were encrypted with) become clear messages."""
    settings = load_settings_or_exit()
    try:
        return asyncio.run(with_session(settings, work))
    except (DomainError, KeyEncryptionError) as exc:
        raise click.ClickException(str(exc)) from None


@main.group()
def oauth() -> None:
    """OAuth clients and signing keys of federation's authorization server."""


@oauth.group("client")
def oauth_client() -> None:
    """Third-party OAuth clients (the six apps are configured, not added)."""


@oauth_client.command("add")
@click.option("--name", required=True, help="Shown to members on the consent screen.")
@click.option("--redirect-uri", "redirect_uris", multiple=True, required=True)
@click.option("--public", is_flag=True, help="A client that cannot keep a secret (PKCE only).")
@click.option("--scope", default="openid profile email", show_default=True)
@click.option("--client-id", default=None, help="Default: a random id.")
def oauth_client_add(
    name: str, redirect_uris: tuple[str, ...], public: bool, scope: str, client_id: str | None
) -> None:
    """Register a third-party client; prints its id and secret (shown only now)."""
    created = run_domain(
        lambda session: do_add_third_party_client(
            session, name, list(redirect_uris), public=public, scope=scope, client_id=client_id
        )
    )
    click.echo(f"client_id: {created.client_id}")
    if created.client_secret:
        click.echo(f"client_secret: {created.client_secret}")
        click.echo("Store the secret now: only its hash is kept.")


@oauth_client.command("list")
def oauth_client_list() -> None:
    """List every client."""
    for client in run_domain(list_clients):
        kind = (
            "first-party" if client.first_party else ("public" if client.public else "third-party")
        )
        click.echo(f"{client.client_id}\t{kind}\t{client.name}\t{' '.join(client.redirect_uris)}")


@oauth_client.command("remove")
@click.argument("client_id")
def oauth_client_remove(client_id: str) -> None:
    """Remove a third-party client and everything it was granted."""
    run_domain(lambda session: do_remove_client(session, client_id))
    click.echo(f"removed {client_id}")


@oauth.group("key")
def oauth_key() -> None:
    """The keys that sign id_tokens (see shared/services/identity/signing_keys.py)."""


@oauth_key.command("rotate")
def oauth_key_rotate() -> None:
    """Sign with a new key from now on; the old one stays in the JWKS until pruned."""
    settings = load_settings_or_exit()
    key = run_domain(lambda session: do_rotate_signing_key(session, settings))
    click.echo(f"now signing with {key.kid}")


@oauth_key.command("prune")
def oauth_key_prune() -> None:
    """Delete keys retired more than a day ago."""
    click.echo(f"deleted {run_domain(do_prune_signing_keys)} retired keys")


@main.group()
def keys() -> None:
    """The stored private keys' encryption (see shared/infrastructure/key_encryption.py)."""


@keys.command("reencrypt")
@click.option(
    "--only",
    type=click.Choice(["oidc", "activitypub"]),
    help="Only this kind (run it where that kind's secret is set). Default: both.",
)
def keys_reencrypt(only: KeyKind | None) -> None:
    """Encrypt the stored keys still under SECRET_KEY with OIDC_KEY_SECRET / AP_KEY_SECRET.

    Idempotent: keys already under their own secret are left as they are."""
    settings = load_settings_or_exit()
    kinds: tuple[KeyKind, ...] = (only,) if only else ("oidc", "activitypub")
    reports = run_domain(lambda session: do_reencrypt_keys(session, settings, kinds))
    for report in reports:
        click.echo(
            f"{DESCRIPTIONS[report.kind]}: {report.reencrypted} re-encrypted, "
            f"{report.current} already under their own secret"
        )


@main.group()
def ap() -> None:
    """ActivityPub: deliveries (pending, failed for good, retrying them), blocks, and the
    remote actors our actors follow."""


@ap.command("deliveries")
@click.option("--failed", is_flag=True, help="Only the dead letters (failed for good).")
@click.option("--pending", is_flag=True, help="Only those waiting for an attempt.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
def ap_deliveries(failed: bool, pending: bool, limit: int) -> None:
    """List deliveries, newest first: id, state, attempts, last status, activity, inbox, error."""
    if failed and pending:
        raise click.UsageError("--failed and --pending exclude each other")
    state = "failed" if failed else ("pending" if pending else None)
    rows = run_domain(lambda session: list_deliveries(session, state=state, limit=limit))
    click.echo("id\tstate\tattempts\tlast_status\tactivity\tinbox\tlast_error")
    for row in rows:
        status = "-" if row.last_status is None else str(row.last_status)
        error = (row.last_error or "-").replace("\n", " ")
        click.echo(
            f"{row.id}\t{row.state}\t{row.attempts}\t{status}\t{row.activity_uri}\t"
            f"{row.inbox}\t{error}"
        )


@ap.command("retry")
@click.option("--all-failed", is_flag=True, help="Re-queue every failed delivery.")
@click.argument("delivery_ids", nargs=-1, type=int)
def ap_retry(all_failed: bool, delivery_ids: tuple[int, ...]) -> None:
    """Put failed deliveries (DELIVERY_IDS, or --all-failed) back to pending, attempts reset."""
    if all_failed == bool(delivery_ids):
        raise click.UsageError("give delivery ids or --all-failed (not both)")
    count = run_domain(
        lambda session: do_retry_deliveries(session, ids=delivery_ids, all_failed=all_failed)
    )
    click.echo(f"re-queued {count} deliveries")


@ap.command("stats")
def ap_stats() -> None:
    """Activities and deliveries per state."""
    counts = run_domain(count_by_state)
    for kind, states in counts.items():
        summary = ", ".join(f"{state} {count}" for state, count in states.items()) or "none"
        click.echo(f"{kind}: {summary}")


def run_with_remote(work: Callable[[AsyncSession, Settings, RemoteClient], Awaitable[T]]) -> T:
    """run_domain for work that also fetches remote documents (one RemoteClient)."""
    settings = load_settings_or_exit()

    async def with_client(session: AsyncSession) -> T:
        async with RemoteClient(settings) as client:
            return await work(session, settings, client)

    return run_domain(with_client)


def describe_follow(follow: FollowingView) -> str:
    who = follow.handle or follow.actor_uri
    return f"{follow.app} -> {who} ({follow.actor_uri}): {follow.state}"


@ap.command("follow")
@click.argument("app", type=click.Choice(APP_NAMES))
@click.argument("target")
def ap_follow(app: str, target: str) -> None:
    """APP's actor follows TARGET: an actor URL or a handle user@host (WebFinger). The follow
    is pending until the remote accepts it; the worker delivers the Follow."""
    follow = run_with_remote(
        lambda session, settings, client: do_follow(session, settings, client, app, target)
    )
    click.echo(describe_follow(follow))


@ap.command("unfollow")
@click.argument("app", type=click.Choice(APP_NAMES))
@click.argument("target")
def ap_unfollow(app: str, target: str) -> None:
    """APP's actor stops following TARGET (an actor URL or a handle): Undo(Follow) is sent."""
    follow = run_with_remote(
        lambda session, settings, client: do_unfollow(session, settings, client, app, target)
    )
    click.echo(f"{follow.app} no longer follows {follow.handle or follow.actor_uri}")


@ap.command("following")
@click.option("--app", type=click.Choice(APP_NAMES), help="Only this app's actor.")
def ap_following(app: str | None) -> None:
    """The remote actors our actors follow: app, handle, actor, state, since."""
    click.echo("app\thandle\tactor\tstate\tsince")
    for follow in run_domain(lambda session: list_following(session, app)):
        since = follow.created_at.strftime("%Y-%m-%d %H:%M")
        click.echo(
            f"{follow.app}\t{follow.handle or '-'}\t{follow.actor_uri}\t{follow.state}\t{since}"
        )


@ap.group("block")
def ap_block() -> None:
    """Blocked domains (and their subdomains) and actors: what they send is not stored, and
    their follows both ways are dropped. Serving processes see a change within 10 s."""


@ap_block.command("add")
@click.argument("kind", type=click.Choice(BLOCK_KINDS))
@click.argument("value")
@click.option("--reason", help="Why, for the operators who come after you.")
def ap_block_add(kind: BlockKind, value: str, reason: str | None) -> None:
    """Block a domain (e.g. spam.example) or an actor (its id URL)."""
    try:
        run_domain(lambda session: do_block(session, kind, value, reason))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"blocked {kind} {value}")


@ap_block.command("remove")
@click.argument("kind", type=click.Choice(BLOCK_KINDS))
@click.argument("value")
def ap_block_remove(kind: BlockKind, value: str) -> None:
    """Lift a block (the follows it dropped are not restored)."""
    if not run_domain(lambda session: do_unblock(session, kind, value)):
        raise click.ClickException(f"{kind} {value} is not blocked")
    click.echo(f"unblocked {kind} {value}")


@ap_block.command("list")
def ap_block_list() -> None:
    """Every block: kind, value, since, reason."""
    click.echo("kind\tvalue\tsince\treason")
    for block in run_domain(list_blocks):
        since = block.created_at.strftime("%Y-%m-%d %H:%M")
        click.echo(f"{block.kind}\t{block.value}\t{since}\t{block.reason or '-'}")


@main.group()
def schema() -> None:
    """schema.sql: the schema the migrations build."""


@schema.command("dump")
@click.option("--check", is_flag=True, help="Fail if schema.sql differs instead of writing it.")
def schema_dump(check: bool) -> None:
    """Write schema.sql from a scratch database migrated to head."""
    from shared import schema_dump as dumping  # dev dependency group only (see docstring)

    built = dumping.build_schema_in_scratch_server()
    if check:
        committed = dumping.SCHEMA_FILE.read_text() if dumping.SCHEMA_FILE.exists() else ""
        if committed != built:
            click.echo(dumping.diff_schema(committed, built))
            raise click.ClickException("schema.sql is out of date: run `rose-ash schema dump`")
        click.echo("schema.sql matches the migrations")
        return
    dumping.SCHEMA_FILE.write_text(built)
    click.echo(f"wrote {dumping.SCHEMA_FILE}")


if __name__ == "__main__":
    main()
