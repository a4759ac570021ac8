"""Fixtures of the inbox tests (test_inbox, test_inbox_processing): a real HTTP server on
127.0.0.1 serving remote actors (tests/shared/activitypub/inbox_support.py), their keys, and
the per-process caches dropped around each test. Lazy: only tests that ask start a server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.infrastructure.activitypub.blocks import forget_blocks
from shared.infrastructure.activitypub.inbox import forget_remote_keys
from shared.infrastructure.activitypub.keys import forget_keypairs
from tests.shared.activitypub.inbox_support import (
    ActorServer,
    Keypair,
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
