"""Applying stored inbox items (what the worker runs): each activity's effect, once.

Items are stored as the inbox stores them (or POSTed through it, where the path through the
inbox matters); "remote" actors are served by a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from quart.typing import TestClientProtocol as QuartClient
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import Settings
from shared.infrastructure.activitypub import urls
from shared.infrastructure.activitypub.remote import RemoteClient, get_remote_actor
from shared.infrastructure.factory import create_base_app
from shared.models.social.actors import ApRemoteActor
from shared.models.social.inbox import (
    ApFollower,
    ApFollowing,
    ApInboxItem,
    ApReaction,
    ApRemoteObject,
)
from shared.models.social.outbox import ApActivity
from shared.services.social.blocks import do_block
from tests.conftest import ClientMaker
from tests.shared.activitypub.inbox_support import (
    ActorServer,
    Keypair,
    Processor,
    RemoteActor,
    post_signed,
    store,
)

pytestmark = pytest.mark.usefixtures("fresh_caches")


@pytest.fixture
def bob(actor_server: ActorServer, keypairs: tuple[Keypair, Keypair]) -> RemoteActor:
    actor = RemoteActor(actor_server, "bob", keypairs[1])
    actor.publish()
    return actor


async def state_of(session: AsyncSession, activity: dict[str, Any]) -> tuple[str, str | None]:
    row = (
        await session.execute(
            select(ApInboxItem.state, ApInboxItem.last_error).where(
                ApInboxItem.activity_uri == activity["id"]
            )
        )
    ).one()
    return row.state, row.last_error


async def count(session: AsyncSession, model: Any, *where: Any) -> int:
    return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def accepts(session: AsyncSession) -> list[ApActivity]:
    query = (
        select(ApActivity)
        .where(ApActivity.activity_type == "Accept")
        .order_by(ApActivity.id)
        .execution_options(populate_existing=True)
    )
    return list(await session.scalars(query))


async def remember(
    session: AsyncSession, settings: Settings, client: RemoteClient, actor: RemoteActor
) -> int:
    """Have ``actor`` in the remote actor cache (as a key fetch would); its row id."""
    await get_remote_actor(session, settings, client, actor.uri)
    await session.commit()
    found = await session.scalar(select(ApRemoteActor.id).where(ApRemoteActor.uri == actor.uri))
    assert found is not None
    return int(found)


async def follow_back(
    session: AsyncSession, actor_id: int, state: str = "accepted", app: str = "blog"
) -> None:
    """One of our actors follows the remote actor ``actor_id``."""
    session.add(
        ApFollowing(
            app=app,
            remote_actor_id=actor_id,
            follow_uri=f"http://{app}.localhost/ap/activities/{uuid.uuid4()}",
            state=state,
        )
    )
    await session.commit()


def blog_actor(settings: Settings) -> str:
    return urls.actor_url(settings, "blog")


def blog_object() -> str:
    return f"http://blog.localhost/ap/objects/{uuid.uuid4()}"


# -- follows ----------------------------------------------------------------------------------


async def test_a_follow_records_the_follower_and_queues_an_accept_embedding_it(
    processor: Processor, alice: RemoteActor, settings: Settings, session: AsyncSession
) -> None:
    follow = alice.activity("Follow", blog_actor(settings))
    await store(session, follow, app="blog")
    assert await processor.run() == 1
    assert await state_of(session, follow) == ("done", None)
    follower = await session.scalar(select(ApFollower))
    assert follower is not None
    assert (follower.app, follower.follow_uri, follower.inbox, follower.shared_inbox) == (
        "blog",
        follow["id"],
        alice.inbox,
        alice.shared_inbox,
    )
    [accept] = await accepts(session)
    assert (accept.app, accept.visibility, accept.target_inboxes) == (
        "blog",
        "direct",
        [alice.inbox],
    )
    assert accept.document["actor"] == blog_actor(settings)
    assert accept.document["object"] == follow  # the Follow as received
    assert accept.document["id"].startswith("http://blog.localhost/ap/activities/")
    assert await processor.run() == 0  # nothing left


async def test_a_redelivered_follow_has_one_effect_and_a_repeated_one_is_accepted_again(
    make_client: ClientMaker,
    processor: Processor,
    alice: RemoteActor,
    settings: Settings,
    session: AsyncSession,
) -> None:
    blog: QuartClient = await make_client(lambda s: create_base_app("blog", settings=s))
    follow = alice.activity("Follow", blog_actor(settings))
    for _ in range(2):  # the sender did not see our 202 and delivers again
        assert (await post_signed(blog, "/ap/actors/blog/inbox", follow, alice)).status_code == 202
    assert await processor.run() == 1
    assert await count(session, ApFollower) == 1
    assert len(await accepts(session)) == 1
    # The same follower follows again (it missed our Accept): one follower, a second Accept.
    again = alice.activity("Follow", blog_actor(settings))
    assert (await post_signed(blog, "/ap/inbox", again, alice)).status_code == 202
    assert await processor.run() == 1
    assert await count(session, ApFollower, ApFollower.follow_uri == again["id"]) == 1
    assert await count(session, ApFollower) == 1
    assert [accept.document["object"]["id"] for accept in await accepts(session)] == [
        follow["id"],
        again["id"],
    ]


async def test_a_follow_of_something_not_ours_is_ignored(
    processor: Processor, alice: RemoteActor, settings: Settings, session: AsyncSession
) -> None:
    follows = [
        alice.activity("Follow", "http://elsewhere.example/users/carol"),
        alice.activity("Follow", urls.actor_url(settings, urls.INSTANCE_ACTOR)),
    ]
    for follow in follows:
        await store(session, follow)
    assert await processor.run() == 2
    for follow in follows:
        assert (await state_of(session, follow))[0] == "ignored"
    assert await count(session, ApFollower) == 0
    assert await accepts(session) == []


async def test_undo_follow_removes_the_follower_matched_by_actor_and_object(
    processor: Processor, alice: RemoteActor, settings: Settings, session: AsyncSession
) -> None:
    follow = alice.activity("Follow", blog_actor(settings))
    await store(session, follow)
    await processor.run()
    # Some servers undo with a Follow id other than the one we stored.
    other_id = {**follow, "id": alice.new_id()}
    undo = alice.activity("Undo", other_id)
    await store(session, undo)
    await processor.run()
    assert await state_of(session, undo) == ("done", None)
    assert await count(session, ApFollower) == 0


async def test_undo_follow_by_bare_id_and_only_by_the_follower(
    processor: Processor,
    alice: RemoteActor,
    bob: RemoteActor,
    settings: Settings,
    session: AsyncSession,
) -> None:
    follow = alice.activity("Follow", blog_actor(settings))
    await store(session, follow)
    await processor.run()
    forged = bob.activity("Undo", follow["id"])  # bob cannot undo alice's follow
    await store(session, forged)
    await processor.run()
    assert (await state_of(session, forged))[0] == "ignored"
    assert await count(session, ApFollower) == 1
    undo = alice.activity("Undo", follow["id"])
    await store(session, undo)
    await processor.run()
    assert await count(session, ApFollower) == 0


async def test_a_follow_sent_again_with_its_id_after_its_undo_is_applied_again(
    make_client: ClientMaker,
    processor: Processor,
    alice: RemoteActor,
    bob: RemoteActor,
    settings: Settings,
    session: AsyncSession,
) -> None:
    """Servers that keep one Follow per pair send Follow, Undo(Follow), Follow with one id."""
    blog: QuartClient = await make_client(lambda s: create_base_app("blog", settings=s))
    inbox = "/ap/actors/blog/inbox"
    follow = alice.activity("Follow", blog_actor(settings))
    assert (await post_signed(blog, inbox, follow, alice)).status_code == 202
    await processor.run()
    assert await count(session, ApFollower) == 1
    assert len(await accepts(session)) == 1
    # bob's Undo of alice's Follow neither undoes it nor lets its id in again
    assert (await post_signed(blog, inbox, bob.activity("Undo", follow), bob)).status_code == 202
    await processor.run()
    assert await count(session, ApInboxItem, ApInboxItem.activity_uri == follow["id"]) == 1
    undo = alice.activity("Undo", follow)
    assert (await post_signed(blog, inbox, undo, alice)).status_code == 202
    await processor.run()
    assert await state_of(session, undo) == ("done", None)
    assert await count(session, ApFollower) == 0
    assert (await post_signed(blog, inbox, follow, alice)).status_code == 202
    assert await processor.run() == 1
    assert await state_of(session, follow) == ("done", None)
    assert await count(session, ApFollower, ApFollower.follow_uri == follow["id"]) == 1
    assert [accept.document["object"] for accept in await accepts(session)] == [follow, follow]


async def test_a_follow_sent_again_before_its_undo_is_applied_is_applied_too(
    make_client: ClientMaker,
    processor: Processor,
    alice: RemoteActor,
    bob: RemoteActor,
    settings: Settings,
    session: AsyncSession,
) -> None:
    """Follow, then Undo and the same Follow again in quick succession: the second Follow
    arrives while the Undo is still waiting for the worker, and is stored and applied after it
    (not dropped as a redelivery); another actor's Undo frees nothing."""
    blog: QuartClient = await make_client(lambda s: create_base_app("blog", settings=s))
    inbox = "/ap/actors/blog/inbox"
    follow = alice.activity("Follow", blog_actor(settings))
    assert (await post_signed(blog, inbox, follow, alice)).status_code == 202
    await processor.run()
    assert (await post_signed(blog, inbox, bob.activity("Undo", follow), bob)).status_code == 202
    assert await state_of(session, follow) == ("done", None)  # still there: bob's Undo
    undo = alice.activity("Undo", follow)
    assert (await post_signed(blog, inbox, undo, alice)).status_code == 202
    assert (await post_signed(blog, inbox, follow, alice)).status_code == 202
    assert await state_of(session, follow) == ("pending", None)  # stored again, to be applied
    await processor.run()
    assert await state_of(session, undo) == ("done", None)
    assert await state_of(session, follow) == ("done", None)
    assert await count(session, ApFollower, ApFollower.follow_uri == follow["id"]) == 1
    assert [accept.document["object"] for accept in await accepts(session)] == [follow, follow]


async def test_a_follow_undone_before_it_was_applied_is_never_applied_and_its_id_is_free(
    make_client: ClientMaker,
    processor: Processor,
    alice: RemoteActor,
    settings: Settings,
    session: AsyncSession,
) -> None:
    """Follow and its Undo both waiting for the worker: the Undo, stored, takes the Follow's
    place (no follower, no Accept for a follow already withdrawn); the id is free again."""
    blog: QuartClient = await make_client(lambda s: create_base_app("blog", settings=s))
    follow = alice.activity("Follow", blog_actor(settings))
    for activity in (follow, alice.activity("Undo", follow)):
        assert (await post_signed(blog, "/ap/inbox", activity, alice)).status_code == 202
    assert await processor.run() == 1  # the Undo; the Follow it withdrew is gone
    assert await count(session, ApFollower) == 0
    assert await accepts(session) == []
    assert (await post_signed(blog, "/ap/inbox", follow, alice)).status_code == 202
    assert await processor.run() == 1
    assert await count(session, ApFollower) == 1
    assert len(await accepts(session)) == 1


async def test_accept_of_our_follow_is_matched_by_actor_and_object_and_reject_removes_it(
    processor: Processor,
    alice: RemoteActor,
    remote_client: RemoteClient,
    settings: Settings,
    session: AsyncSession,
) -> None:
    alice_id = await remember(session, settings, remote_client, alice)
    await follow_back(session, alice_id, state="pending")
    # Answered with an id of a Follow of ours that is not the stored one (a repeated Follow).
    ours = {
        "id": f"http://blog.localhost/ap/activities/{uuid.uuid4()}",
        "type": "Follow",
        "actor": blog_actor(settings),
        "object": alice.uri,
    }
    accept = alice.activity("Accept", ours)
    await store(session, accept)
    await processor.run()
    assert await state_of(session, accept) == ("done", None)
    following = await session.scalar(select(ApFollowing).execution_options(populate_existing=True))
    assert following is not None
    assert following.state == "accepted"
    assert following.accepted_at is not None
    reject = alice.activity("Reject", ours["id"])  # a bare id, on blog's host
    await store(session, reject)
    await processor.run()
    assert await state_of(session, reject) == ("done", None)
    assert await count(session, ApFollowing) == 0


async def test_an_accept_from_someone_we_do_not_follow_is_ignored(
    processor: Processor,
    alice: RemoteActor,
    bob: RemoteActor,
    remote_client: RemoteClient,
    settings: Settings,
    session: AsyncSession,
) -> None:
    alice_id = await remember(session, settings, remote_client, alice)
    await remember(session, settings, remote_client, bob)
    await follow_back(session, alice_id, state="pending")
    accept = bob.activity(
        "Accept", {"type": "Follow", "actor": blog_actor(settings), "object": bob.uri}
    )
    await store(session, accept)
    await processor.run()
    assert (await state_of(session, accept))[0] == "ignored"
    assert await count(session, ApFollowing, ApFollowing.state == "pending") == 1


# -- reactions --------------------------------------------------------------------------------


async def test_likes_and_announces_of_our_objects_are_recorded_once_and_undone(
    processor: Processor, alice: RemoteActor, session: AsyncSession
) -> None:
    post = blog_object()
    like = alice.activity("Like", post)
    announce = alice.activity("Announce", post)
    elsewhere = alice.activity("Like", "http://elsewhere.example/notes/1")
    for activity in (like, announce, elsewhere):
        await store(session, activity)
    assert await processor.run() == 3
    reactions = {
        (row.kind, row.object_uri, row.actor_uri, row.activity_uri)
        for row in await session.scalars(select(ApReaction))
    }
    assert reactions == {
        ("like", post, alice.uri, like["id"]),
        ("announce", post, alice.uri, announce["id"]),
    }
    assert (await state_of(session, elsewhere))[0] == "ignored"
    undo_like = alice.activity("Undo", like)  # embedded
    undo_announce = alice.activity("Undo", announce["id"])  # bare id
    for activity in (undo_like, undo_announce):
        await store(session, activity)
    await processor.run()
    assert await count(session, ApReaction) == 0
    assert await state_of(session, undo_announce) == ("done", None)


# -- remote posts -----------------------------------------------------------------------------


async def test_posts_of_followed_actors_are_kept_and_strangers_ignored(
    processor: Processor,
    alice: RemoteActor,
    bob: RemoteActor,
    remote_client: RemoteClient,
    settings: Settings,
    session: AsyncSession,
) -> None:
    await follow_back(session, await remember(session, settings, remote_client, alice))
    note = alice.note()
    create = alice.activity("Create", note)
    stranger = bob.activity("Create", bob.note())
    spoofed = alice.activity("Create", {**alice.note(), "attributedTo": bob.uri})
    for activity in (create, stranger, spoofed):
        await store(session, activity)
    await processor.run()
    assert await state_of(session, create) == ("done", None)
    assert await state_of(session, stranger) == ("ignored", "from an actor we do not follow")
    assert (await state_of(session, spoofed))[0] == "ignored"
    [kept] = await session.scalars(select(ApRemoteObject))
    assert (kept.uri, kept.actor_uri, kept.object_type) == (note["id"], alice.uri, "Note")
    assert kept.document == note
    assert kept.published_at == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


async def test_updates_and_deletes_of_kept_posts(
    processor: Processor,
    alice: RemoteActor,
    bob: RemoteActor,
    remote_client: RemoteClient,
    settings: Settings,
    session: AsyncSession,
) -> None:
    await follow_back(session, await remember(session, settings, remote_client, alice))
    first, second = alice.note("one"), alice.note("two")
    for note in (first, second):
        await store(session, alice.activity("Create", note))
    await processor.run()
    edited = {**first, "content": "one, edited"}
    update_ = alice.activity("Update", edited)
    tombstone = alice.activity("Delete", {"id": first["id"], "type": "Tombstone"})
    bare = alice.activity("Delete", second["id"])
    not_hers = bob.activity("Delete", second["id"])
    await store(session, update_)
    await processor.run()
    kept = await session.scalar(
        select(ApRemoteObject)
        .where(ApRemoteObject.uri == first["id"])
        .execution_options(populate_existing=True)
    )
    assert kept is not None
    assert kept.document["content"] == "one, edited"
    assert kept.updated_at is not None
    for activity in (not_hers, tombstone, bare):
        await store(session, activity)
    await processor.run()
    assert (await state_of(session, not_hers))[0] == "ignored"
    deleted = await count(session, ApRemoteObject, ApRemoteObject.deleted_at.is_not(None))
    assert deleted == 2


async def test_a_deleted_actor_loses_its_follows_both_ways(
    processor: Processor,
    alice: RemoteActor,
    remote_client: RemoteClient,
    settings: Settings,
    session: AsyncSession,
) -> None:
    await store(session, alice.activity("Follow", blog_actor(settings)))
    await processor.run()
    alice_id = await session.scalar(select(ApRemoteActor.id).where(ApRemoteActor.uri == alice.uri))
    assert alice_id is not None
    await follow_back(session, alice_id, app="events")
    delete = alice.activity("Delete", alice.uri)
    await store(session, delete)
    await processor.run()
    assert await state_of(session, delete) == ("done", None)
    assert await count(session, ApFollower) == 0
    assert await count(session, ApFollowing) == 0
    deleted_at = await session.scalar(
        select(ApRemoteActor.deleted_at).where(ApRemoteActor.id == alice_id)
    )
    assert deleted_at is not None


# -- blocks, failures, the rest ----------------------------------------------------------------


async def test_items_of_blocked_actors_are_ignored_and_a_block_drops_follows(
    processor: Processor,
    alice: RemoteActor,
    bob: RemoteActor,
    settings: Settings,
    session: AsyncSession,
) -> None:
    await store(session, alice.activity("Follow", blog_actor(settings)))
    await store(session, bob.activity("Follow", blog_actor(settings)))
    await processor.run()
    assert await count(session, ApFollower) == 2
    await do_block(session, "actor", alice.uri)
    await session.commit()
    assert await count(session, ApFollower) == 1  # alice's follow is gone
    like = alice.activity("Like", blog_object())
    await store(session, like)
    await processor.run()
    assert await state_of(session, like) == ("ignored", "blocked")
    await do_block(session, "domain", "127.0.0.1")  # bob's server
    await session.commit()
    assert await count(session, ApFollower) == 0


async def test_a_failed_fetch_is_retried_later(
    processor: Processor, alice: RemoteActor, settings: Settings, session: AsyncSession
) -> None:
    alice.publish(status=503)
    follow = alice.activity("Follow", blog_actor(settings))
    await store(session, follow)
    assert await processor.run() == 1
    item = (
        await session.execute(
            select(
                ApInboxItem.state,
                ApInboxItem.attempts,
                ApInboxItem.next_attempt_at,
                ApInboxItem.last_error,
            )
        )
    ).one()
    assert (item.state, item.attempts) == ("pending", 1)
    assert item.next_attempt_at > datetime.now(UTC) + timedelta(seconds=15)
    assert item.last_error
    assert await processor.run() == 0  # not due yet
    assert await count(session, ApFollower) == 0
    assert await accepts(session) == []
    alice.publish()  # the server is back, and the retry comes due
    await session.execute(update(ApInboxItem).values(next_attempt_at=func.now()))
    await session.commit()
    assert await processor.run() == 1
    assert (await state_of(session, follow))[0] == "done"
    assert await count(session, ApFollower) == 1


async def test_unsupported_activities_are_ignored(
    processor: Processor, alice: RemoteActor, session: AsyncSession
) -> None:
    move = alice.activity("Move", alice.uri, target="http://elsewhere.example/users/alice")
    await store(session, move)
    assert await processor.run() == 1
    assert await state_of(session, move) == ("ignored", "Move is not handled")
