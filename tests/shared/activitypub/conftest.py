"""Fixtures of the inbox and follow tests: a real HTTP server on 127.0.0.1 serving remote
actors (tests/shared/activitypub/inbox_support.py), their keys, the per-process caches dropped
around each test, a RemoteClient and the worker's inbox step. Lazy: only tests that ask start
a server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.config import Settings
from shared.infrastructure.activitypub.blocks import forget_blocks
from shared.infrastructure.activitypub.inbox import forget_remote_keys
from shared.infrastructure.activitypub.keys import forget_keypairs
from shared.infrastructure.activitypub.remote import RemoteClient
from tests.shared.activitypub.inbox_support import (
    ActorServer,
    Keypair,
    Processor,
    RemoteActor,
    make_keypair,
    serve_actors,
)


@pytest.fixture(scope="module")
def keypairs() -> tuple[Keypair, Keypair]:
    """Two keypairs (RSA generation is slow): alice's, and another (a forger's, bob's, a
    rotated key's)."""
    return make_keypair(), make_keypair()


@pytest.fixture(scope="module")
def actor_server() -> Iterator[ActorServer]:
    yield from serve_actors()


@pytest.fixture
def fresh_caches(actor_server: ActorServer) -> Iterator[None]:
    """Each test's rows are rolled back: drop what processes keep of them in memory."""
    for forget in (forget_remote_keys, forget_blocks, forget_keypairs):
        forget()
    actor_server.documents.clear()
    actor_server.requests.clear()
    yield
    for forget in (forget_remote_keys, forget_blocks, forget_keypairs):
        forget()


@pytest.fixture
def alice(actor_server: ActorServer, keypairs: tuple[Keypair, Keypair]) -> RemoteActor:
    actor = RemoteActor(actor_server, "alice", keypairs[0])
    actor.publish()
    return actor


@pytest.fixture
async def remote_client(settings: Settings) -> AsyncIterator[RemoteClient]:
    client = RemoteClient(settings)
    yield client
    await client.aclose()


@pytest.fixture
def processor(
    connection: AsyncConnection, settings: Settings, remote_client: RemoteClient
) -> Processor:
    return Processor(connection, settings, remote_client)
