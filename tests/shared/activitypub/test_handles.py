"""How remote actors are labelled: the handle their WebFinger confirms (remote.resolve_handle),
following the subject's domain as Mastodon does, else user@host of the actor's URL.

Peers are ActorServers on 127.0.0.1; every ``*.localhost`` name reaches them, so one server
plays both the actor's host (``localhost:<port>``) and the domain of its handles
(``takahe.localhost:<port>``), told apart by the WebFinger resource asked for.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import Settings
from shared.infrastructure.activitypub import urls
from shared.infrastructure.activitypub.remote import (
    RemoteClient,
    get_actor_for_key,
    get_remote_actor,
)
from shared.models.social.actors import ApRemoteActor
from shared.services.social.follows import do_follow, do_unfollow, list_following
from tests.shared.activitypub.inbox_support import (
    ACTIVITY_JSON,
    Processor,
    RemoteActor,
    store,
)

pytestmark = pytest.mark.usefixtures("fresh_caches")


async def stored_handle(session: AsyncSession) -> str | None:
    return await session.scalar(select(ApRemoteActor.handle))


async def test_an_actor_is_labelled_by_the_handle_its_webfinger_confirms(
    session: AsyncSession,
    trusting: Settings,
    trusting_client: RemoteClient,
    tls_alice: RemoteActor,
) -> None:
    handle = tls_alice.publish_handle_on("takahe.localhost")
    assert handle != tls_alice.handle  # alice@takahe.localhost:<port>, not alice@localhost:<port>
    follow = await do_follow(session, trusting, trusting_client, "blog", tls_alice.uri)
    assert follow.handle == handle
    assert [f.handle for f in await list_following(session)] == [handle]
    assert await stored_handle(session) == handle
    # The handle names the follow, and following by it finds the same actor.
    again = await do_follow(session, trusting, trusting_client, "events", handle)
    assert (again.actor_uri, again.handle) == (tls_alice.uri, handle)
    gone = await do_unfollow(session, trusting, trusting_client, "blog", handle)
    assert (gone.actor_uri, gone.handle) == (tls_alice.uri, handle)


@pytest.mark.parametrize("claim", ["names another actor", "is unknown there"])
async def test_a_handle_its_domain_does_not_confirm_is_not_believed(
    session: AsyncSession,
    trusting: Settings,
    trusting_client: RemoteClient,
    tls_alice: RemoteActor,
    claim: str,
) -> None:
    """An actor's server may claim any handle; only the handle's domain can confirm it."""
    victim = f"alice@{tls_alice.server.url_on('victim.localhost').split('//', 1)[1]}"
    tls_alice.publish_webfinger(subject=victim)
    if claim == "names another actor":
        mallory = {"rel": "self", "type": ACTIVITY_JSON, "href": f"{tls_alice.uri}x"}
        tls_alice.publish_webfinger([mallory], resource=victim)
    follow = await do_follow(session, trusting, trusting_client, "blog", tls_alice.uri)
    assert follow.handle == tls_alice.handle  # user@host of its URL
    assert await stored_handle(session) == tls_alice.handle


async def test_without_webfinger_an_actor_is_labelled_user_at_its_host(
    session: AsyncSession, settings: Settings, remote_client: RemoteClient, alice: RemoteActor
) -> None:
    actor = await get_remote_actor(session, settings, remote_client, alice.uri)
    assert actor.handle == alice.handle == f"alice@{alice.server.base_url.split('//', 1)[1]}"


async def test_a_key_fetch_asks_no_webfinger_and_keeps_the_handle(
    session: AsyncSession, settings: Settings, remote_client: RemoteClient, alice: RemoteActor
) -> None:
    """The inbox's request path (a key fetch) does not wait for WebFinger; a refetched key
    keeps the handle, unless the username changed."""
    handle = alice.publish_handle_on("peer.localhost")
    await get_actor_for_key(session, settings, remote_client, alice.key_id)
    assert alice.server.fetches_of("/.well-known/webfinger") == 0
    assert await stored_handle(session) is None
    assert (await get_remote_actor(session, settings, remote_client, alice.uri)).handle == handle
    await get_actor_for_key(session, settings, remote_client, alice.key_id, refresh=True)
    assert await stored_handle(session) == handle
    alice.extra["preferredUsername"] = "alicia"
    alice.publish()
    await get_actor_for_key(session, settings, remote_client, alice.key_id, refresh=True)
    assert await stored_handle(session) is None


async def test_a_follower_first_seen_by_its_key_gets_its_handle(
    session: AsyncSession,
    settings: Settings,
    remote_client: RemoteClient,
    processor: Processor,
    alice: RemoteActor,
) -> None:
    handle = alice.publish_handle_on("peer.localhost")
    await get_actor_for_key(session, settings, remote_client, alice.key_id)  # the inbox's check
    await store(session, alice.activity("Follow", urls.actor_url(settings, "blog")))
    await processor.run()
    assert await stored_handle(session) == handle
