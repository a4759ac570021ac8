"""The actor keypair: stored encrypted, one per platform, parsed once per process."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import Settings
from shared.infrastructure.activitypub import keys
from shared.models.social.actors import ApKeypair


@pytest.fixture(autouse=True)
def fresh_keys() -> None:
    keys.forget_keypairs()


async def test_the_private_key_is_stored_encrypted(
    session: AsyncSession, settings: Settings
) -> None:
    keypair = await keys.get_keypair(session, settings)
    row = await session.scalar(select(ApKeypair))
    assert row is not None
    assert "PRIVATE KEY" not in row.private_key_encrypted
    assert row.public_key_pem == keypair.public_key_pem


async def test_concurrent_first_requests_parse_the_key_once(
    session: AsyncSession, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = await keys.get_keypair(session, settings)  # created, not yet held
    assert keys.get_held_keypair(settings) is None
    loads: list[int] = []
    load_row = keys.load_row

    def counting(row: ApKeypair, settings: Settings) -> keys.ActorKeypair:
        loads.append(row.id)
        return load_row(row, settings)

    monkeypatch.setattr(keys, "load_row", counting)
    found = await asyncio.gather(*(keys.get_keypair(session, settings) for _ in range(20)))
    assert loads == [created.id]  # one request parsed it, nineteen waited for it
    assert {keypair.id for keypair in found} == {created.id}
    assert keys.get_held_keypair(settings) is found[0]
