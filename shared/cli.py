"""The `rose-ash` command: run, serve, migrate, seed, work, dump the schema.

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

import click
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from shared.config import APP_NAMES, ConfigError, Settings, load_settings
from shared.db import check_database, create_engine, create_session_factory
from shared.migrations import do_downgrade, do_upgrade, get_current
from shared.seed import do_seed_demo_data
from shared.services.registry import build_registry
from shared.serving import hypercorn_command
from shared.worker import build_worker


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
    asyncio.run(build_worker(settings).run(once=once))


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
