"""Our actors following remote actors (follows.py): resolving a URL or a handle, the Follow in
the outbox, the remote's Accept, following again, Undo, and the refusals an operator sees.

Remote actors are served by a real HTTP server on 127.0.0.1 (WebFinger too); the Accept is
applied by the worker's inbox step inside the test's transaction.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import Settings
from shared.contracts.errors import InvalidInputError, NotFoundError
from shared.infrastructure.activitypub import urls
from shared.infrastructure.activitypub.remote import (
    RemoteClient,
    actor_link,
    plain_http_allowed,
    webfinger_url,
)
from shared.models.social.inbox import ApFollowing
from shared.models.social.outbox import ApActivity
from shared.services.social.blocks import do_block
from shared.services.social.follows import do_follow, do_unfollow, list_following
from tests.shared.activitypub.inbox_support import Processor, RemoteActor, store

pytestmark = pytest.mark.usefixtures("fresh_caches")


async def sent(session: AsyncSession, kind: str) -> list[ApActivity]:
    rows = await session.scalars(
        select(ApActivity).where(ApActivity.activity_type == kind).order_by(ApActivity.id)
    )
    return list(rows)


async def test_following_an_actor_by_url_sends_a_follow_to_its_inbox(
    session: AsyncSession, settings: Settings, remote_client: RemoteClient, alice: RemoteActor
) -> None:
    follow = await do_follow(session, settings, remote_client, "blog", alice.uri)
    assert (follow.app, follow.actor_uri, follow.state) == ("blog", alice.uri, "pending")
    assert follow.handle == alice.handle
    [activity] = await sent(session, "Follow")
    assert activity.visibility == "direct"
    assert activity.target_inboxes == [alice.inbox]  # its own inbox, not the shared one
    assert activity.document["id"] == follow.follow_uri == activity.uri
    assert urls.is_local(settings, follow.follow_uri)
    assert activity.document["actor"] == urls.actor_url(settings, "blog")
    assert activity.document["object"] == alice.uri
    assert [(f.app, f.actor_uri, f.state) for f in await list_following(session)] == [
        ("blog", alice.uri, "pending")
    ]


async def test_the_remotes_accept_of_our_follow_makes_it_accepted(
    session: AsyncSession,
    settings: Settings,
    remote_client: RemoteClient,
    processor: Processor,
    alice: RemoteActor,
) -> None:
    await do_follow(session, settings, remote_client, "blog", alice.uri)
    await session.commit()
    [follow] = await sent(session, "Follow")
    embedded = {key: value for key, value in follow.document.items() if key != "@context"}
    await store(session, alice.activity("Accept", embedded))
    await processor.run()
    [view] = await list_following(session, "blog")
    assert view.state == "accepted"
    assert view.accepted_at is not None
    # Following again once accepted changes nothing and sends nothing.
    again = await do_follow(session, settings, remote_client, "blog", alice.uri)
    assert again.state == "accepted"
    assert len(await sent(session, "Follow")) == 1


async def test_following_again_while_pending_sends_a_new_follow(
    session: AsyncSession, settings: Settings, remote_client: RemoteClient, alice: RemoteActor
) -> None:
    first = await do_follow(session, settings, remote_client, "blog", alice.uri)
    second = await do_follow(session, settings, remote_client, "blog", alice.uri)
    assert second.follow_uri != first.follow_uri
    assert [a.uri for a in await sent(session, "Follow")] == [first.follow_uri, second.follow_uri]
    assert len(await list_following(session)) == 1
    other = await do_follow(session, settings, remote_client, "events", alice.uri)
    assert [(f.app, f.state) for f in await list_following(session)] == [
        ("blog", "pending"),
        ("events", "pending"),
    ]
    assert other.follow_uri.startswith(settings.url_of("events"))


@pytest.mark.parametrize("form", ["{handle}", "@{handle}", "acct:{handle}"])
async def test_a_handle_is_resolved_by_webfinger(
    session: AsyncSession,
    settings: Settings,
    remote_client: RemoteClient,
    alice: RemoteActor,
    form: str,
) -> None:
    alice.publish_webfinger()
    follow = await do_follow(
        session, settings, remote_client, "blog", form.format(handle=alice.handle)
    )
    assert (follow.actor_uri, follow.handle) == (alice.uri, alice.handle)
    # Once for the target, once for the actor's handle; over http (a plain http peer on a
    # loopback name, after https failed to handshake).
    assert alice.server.fetches_of("/.well-known/webfinger") == 2


async def test_a_handle_on_an_https_loopback_peer_is_resolved_over_https(
    session: AsyncSession,
    trusting: Settings,
    trusting_client: RemoteClient,
    tls_alice: RemoteActor,
) -> None:
    tls_alice.publish_webfinger()
    assert tls_alice.uri.startswith("https://localhost:")
    follow = await do_follow(session, trusting, trusting_client, "blog", tls_alice.handle)
    assert (follow.actor_uri, follow.handle) == (tls_alice.uri, tls_alice.handle)
    assert tls_alice.server.fetches_of("/.well-known/webfinger") == 2


async def test_webfinger_never_falls_back_to_http_where_loopback_is_not_allowed(
    session: AsyncSession, settings: Settings, alice: RemoteActor
) -> None:
    """Loopback reachable only as an allowlisted host (as a private peer in production):
    https only, no downgrade to http."""
    alice.publish_webfinger()
    update = {"allow_loopback": False, "allowed_private_hosts": ("127.0.0.1",)}
    strict = settings.model_copy(
        update={"activitypub": settings.activitypub.model_copy(update=update)}
    )
    async with RemoteClient(strict) as client:
        with pytest.raises(InvalidInputError, match="WebFinger failed"):
            await do_follow(session, strict, client, "blog", alice.handle)
    assert alice.server.fetches_of("/.well-known/webfinger") == 0


def test_webfinger_falls_back_to_http_only_on_loopback_names_when_allowed(
    settings: Settings,
) -> None:
    assert webfinger_url("bob", "example.com") == (
        "https://example.com/.well-known/webfinger?resource=acct:bob@example.com"
    )
    assert webfinger_url("bob", "peer.localhost:8080", "http").startswith("http://peer.")
    assert plain_http_allowed(settings, "peer.localhost:8080")
    assert plain_http_allowed(settings, "127.0.0.1:8080")
    assert not plain_http_allowed(settings, "example.com")
    strict = settings.model_copy(
        update={"activitypub": settings.activitypub.model_copy(update={"allow_loopback": False})}
    )
    assert not plain_http_allowed(strict, "peer.localhost")


def test_the_actor_link_of_a_webfinger_answer_is_the_self_link_of_an_activitypub_type() -> None:
    profile = {"rel": "http://webfinger.net/rel/profile-page", "href": "https://a.example/@b"}
    html = {"rel": "self", "type": "text/html", "href": "https://a.example/@b"}
    ld = {
        "rel": "self",
        "type": 'application/ld+json; profile="https://www.w3.org/ns/activitystreams"',
        "href": "https://a.example/users/b",
    }
    assert actor_link({"links": [profile, html, ld]}) == "https://a.example/users/b"
    assert actor_link({"links": [profile, html]}) is None
    assert actor_link({"links": "nonsense"}) is None


async def test_unfollowing_sends_undo_of_the_follow_and_forgets_it(
    session: AsyncSession, settings: Settings, remote_client: RemoteClient, alice: RemoteActor
) -> None:
    follow = await do_follow(session, settings, remote_client, "blog", alice.uri)
    gone = await do_unfollow(session, settings, remote_client, "blog", alice.handle)
    assert (gone.actor_uri, gone.follow_uri) == (alice.uri, follow.follow_uri)
    [undo] = await sent(session, "Undo")
    assert undo.target_inboxes == [alice.inbox]
    assert undo.document["actor"] == urls.actor_url(settings, "blog")
    inner: dict[str, Any] = undo.document["object"]
    assert (inner["type"], inner["id"], inner["object"]) == ("Follow", follow.follow_uri, alice.uri)
    assert await session.scalar(select(ApFollowing)) is None
    with pytest.raises(NotFoundError, match="does not follow"):
        await do_unfollow(session, settings, remote_client, "blog", alice.uri)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("nobody", "neither an actor URL nor a handle"),
        ("ftp://example.com/users/x", "neither an actor URL nor a handle"),
        ("{blog}", "one of our own actors"),
        ("{server}/users/ghost", "could not be fetched"),
        ("ghost@{host}", "WebFinger failed"),
    ],
)
async def test_targets_that_cannot_be_followed_are_refused_clearly(
    session: AsyncSession,
    settings: Settings,
    remote_client: RemoteClient,
    alice: RemoteActor,
    target: str,
    message: str,
) -> None:
    filled = target.format(
        blog=urls.actor_url(settings, "blog"),
        server=alice.server.base_url,
        host=alice.server.base_url.split("//", 1)[1],
    )
    with pytest.raises(InvalidInputError, match=message):
        await do_follow(session, settings, remote_client, "blog", filled)
    assert await sent(session, "Follow") == []


async def test_a_blocked_actor_a_webfinger_without_an_actor_and_an_unknown_app_are_refused(
    session: AsyncSession, settings: Settings, remote_client: RemoteClient, alice: RemoteActor
) -> None:
    with pytest.raises(InvalidInputError, match="not one of the apps"):
        await do_follow(session, settings, remote_client, "shop", alice.uri)
    alice.publish_webfinger(links=[{"rel": "http://webfinger.net/rel/profile-page"}])
    with pytest.raises(InvalidInputError, match="names no ActivityPub actor"):
        await do_follow(session, settings, remote_client, "blog", alice.handle)
    await do_block(session, "actor", alice.uri)
    with pytest.raises(InvalidInputError, match="is blocked"):
        await do_follow(session, settings, remote_client, "blog", alice.uri)
    assert await sent(session, "Follow") == []
