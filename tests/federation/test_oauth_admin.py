"""Operators' side of the authorization server: third-party clients and key rotation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.cli import main
from shared.config import Settings
from shared.contracts.errors import ConflictError, InvalidInputError
from shared.embedded import EmbeddedPostgres
from shared.migrations import do_upgrade
from shared.models.identity import SigningKey
from shared.services.identity.oauth_clients import (
    do_add_third_party_client,
    do_remove_client,
    do_sync_first_party_clients,
    list_clients,
)
from shared.services.identity.signing_keys import (
    do_prune_signing_keys,
    do_rotate_signing_key,
    get_active_signing_key,
    get_jwks,
)
from tests.conftest import TEST_SECRET_KEY


async def test_third_party_clients_are_validated(session: AsyncSession) -> None:
    created = await do_add_third_party_client(
        session, "Garden Planner", ["https://garden.example/cb"], client_id="garden"
    )
    assert created.client_id == "garden"
    assert created.client_secret
    assert len(created.client_secret) >= 40
    public = await do_add_third_party_client(
        session, "CLI tool", ["http://127.0.0.1:9999/cb"], public=True
    )
    assert public.client_secret is None
    with pytest.raises(ConflictError):
        await do_add_third_party_client(
            session, "Again", ["https://x.example/cb"], client_id="garden"
        )
    with pytest.raises(ConflictError):
        await do_add_third_party_client(
            session, "Imposter", ["https://x.example/cb"], client_id="blog"
        )
    with pytest.raises(InvalidInputError, match="must use https"):
        await do_add_third_party_client(session, "Plain", ["http://garden.example/cb"])
    with pytest.raises(InvalidInputError, match="without a fragment"):
        await do_add_third_party_client(session, "Frag", ["https://garden.example/cb#x"])
    with pytest.raises(InvalidInputError, match="unknown scopes: admin"):
        await do_add_third_party_client(
            session, "Greedy", ["https://g.example/cb"], scope="openid admin"
        )


async def test_first_party_clients_cannot_be_removed(
    session: AsyncSession, settings: Settings
) -> None:
    await do_sync_first_party_clients(session, settings)
    with pytest.raises(InvalidInputError):
        await do_remove_client(session, "blog")
    await do_add_third_party_client(session, "Temp", ["https://t.example/cb"], client_id="temp")
    await do_remove_client(session, "temp")
    assert "temp" not in {client.client_id for client in await list_clients(session)}


async def test_key_rotation_keeps_the_old_key_in_the_jwks_until_pruned(
    session: AsyncSession, settings: Settings
) -> None:
    old = await get_active_signing_key(session, settings)
    new = await do_rotate_signing_key(session, settings)
    assert new.kid != old.kid
    assert (await get_active_signing_key(session, settings)).kid == new.kid
    kids = {key["kid"] for key in (await get_jwks(session))["keys"]}
    assert {old.kid, new.kid} <= kids
    assert await do_prune_signing_keys(session) == 0  # retired just now: still in its grace
    await session.execute(
        update(SigningKey)
        .where(SigningKey.kid == old.kid)
        .values(retired_at=datetime.now(UTC) - timedelta(days=2))
    )
    assert await do_prune_signing_keys(session) >= 1
    assert old.kid not in {key["kid"] for key in (await get_jwks(session))["keys"]}


async def test_private_keys_are_encrypted_at_rest(
    session: AsyncSession, settings: Settings
) -> None:
    key = await get_active_signing_key(session, settings)
    row = await session.get(SigningKey, key.kid)
    assert row is not None
    assert "PRIVATE KEY" not in row.private_key_encrypted
    assert "d" not in row.public_jwk


def test_oauth_cli_adds_lists_and_removes_clients(scratch_postgres: EmbeddedPostgres) -> None:
    scratch_postgres.create_database("rose_ash_oauth_cli", replace=True)
    url = scratch_postgres.url("rose_ash_oauth_cli")
    do_upgrade(url)
    env = {
        "ROSE_ASH_ENV": "test",
        "DATABASE_URL": url,
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "SECRET_KEY": TEST_SECRET_KEY,
    }
    runner = CliRunner()
    added = runner.invoke(
        main,
        ["oauth", "client", "add", "--name", "Garden", "--redirect-uri", "https://g.example/cb",
         "--client-id", "garden"],
        env=env,
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    assert "client_id: garden" in added.output
    assert "client_secret: " in added.output
    listed = runner.invoke(main, ["oauth", "client", "list"], env=env)
    assert "garden\tthird-party\tGarden\thttps://g.example/cb" in listed.output
    refused = runner.invoke(
        main,
        ["oauth", "client", "add", "--name", "X", "--redirect-uri", "http://x.example/"],
        env=env,
    )
    assert refused.exit_code == 1
    assert "must use https" in refused.output
    rotated = runner.invoke(main, ["oauth", "key", "rotate"], env=env)
    assert rotated.exit_code == 0
    assert rotated.output.startswith("now signing with ")
    removed = runner.invoke(main, ["oauth", "client", "remove", "garden"], env=env)
    assert removed.exit_code == 0
    assert "garden" not in runner.invoke(main, ["oauth", "client", "list"], env=env).output
