"""Fixtures of the inbox and follow tests: a real HTTP server on 127.0.0.1 serving remote
actors (tests/shared/activitypub/inbox_support.py), their keys, the per-process caches dropped
around each test, a RemoteClient and the worker's inbox step. Lazy: only tests that ask start
a server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.config import Settings
from shared.infrastructure.activitypub.inbox import forget_remote_keys
from shared.infrastructure.activitypub.keys import forget_keypairs
from shared.infrastructure.activitypub.remote import RemoteClient
from shared.services.social.blocks import forget_blocks
from tests.shared.activitypub.inbox_support import (
    ActorServer,
    Keypair,
    Processor,
    RemoteActor,
    make_keypair,
    serve_actors,
)
from tests.shared.activitypub.tls_support import OwnCA, make_own_ca


@pytest.fixture(scope="module")
def keypairs() -> tuple[Keypair, Keypair]:
    """Two keypairs (RSA generation is slow): alice's, and another (a forger's, bob's, a
    rotated key's)."""
    return make_keypair(), make_keypair()


@pytest.fixture(scope="module")
def actor_server() -> Iterator[ActorServer]:
    yield from serve_actors()


@pytest.fixture(scope="session")
def own_ca(tmp_path_factory: pytest.TempPathFactory) -> OwnCA:
    """A CA of the tests' own, as a private CA in front of fediverse peers."""
    return make_own_ca(tmp_path_factory.mktemp("own-ca"))


@pytest.fixture(scope="module")
def tls_server(own_ca: OwnCA) -> Iterator[ActorServer]:
    """An ActorServer over TLS at https://localhost:<port>, its certificate signed by own_ca."""
    yield from serve_actors("localhost", own_ca.server_context)


@pytest.fixture
def trusting(settings: Settings, own_ca: OwnCA) -> Settings:
    """The settings, trusting own_ca (activitypub.extra_ca_file)."""
    activitypub = settings.activitypub.model_copy(update={"extra_ca_file": own_ca.ca_file})
    return settings.model_copy(update={"activitypub": activitypub})


@pytest.fixture
async def trusting_client(trusting: Settings) -> AsyncIterator[RemoteClient]:
    client = RemoteClient(trusting)
    yield client
    await client.aclose()


@pytest.fixture
def tls_alice(tls_server: ActorServer, keypairs: tuple[Keypair, Keypair]) -> Iterator[RemoteActor]:
    """alice at https://localhost:<port>/users/alice (tls_server)."""
    actor = RemoteActor(tls_server, "alice", keypairs[0])
    actor.publish()
    yield actor
    tls_server.documents.clear()
    tls_server.requests.clear()


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
