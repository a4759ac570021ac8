"""The POST inboxes: what is verified, stored and answered 202, and what is refused.

The "remote" actors sign with keypairs of their own and their documents are served by a real
HTTP server on 127.0.0.1 (tests/shared/activitypub/inbox_support.py): the inbox fetches their
keys over HTTP, as it would from any server.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis
from quart import Quart, request
from quart.typing import TestClientProtocol as QuartClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import Settings
from shared.infrastructure.activitypub import urls
from shared.infrastructure.activitypub.blocks import do_block, host_of
from shared.infrastructure.activitypub.inbox import forget_remote_keys
from shared.infrastructure.factory import create_base_app
from shared.infrastructure.rate_limit import RateLimit, limit_key
from shared.models.ap_actors import ApRemoteActor
from shared.models.ap_inbox import ApInboxItem
from tests.conftest import ClientMaker
from tests.shared.activitypub.inbox_support import (
    ActorServer,
    Keypair,
    RemoteActor,
    post_signed,
)

SHARED = "/ap/inbox"


pytestmark = pytest.mark.usefixtures("fresh_caches")


@pytest.fixture
async def blog(make_client: ClientMaker) -> QuartClient:
    return await make_client(lambda s: create_base_app("blog", settings=s))


async def stored(session: AsyncSession, activity_id: str | None = None) -> list[ApInboxItem]:
    query = select(ApInboxItem).execution_options(populate_existing=True)
    if activity_id is not None:
        query = query.where(ApInboxItem.activity_uri == activity_id)
    return list(await session.scalars(query))


def follow_of_blog(settings: Settings, actor: RemoteActor) -> dict[str, object]:
    return actor.activity("Follow", urls.actor_url(settings, "blog"))


async def test_a_signed_activity_is_stored_and_answered_202(
    blog: QuartClient, alice: RemoteActor, settings: Settings, session: AsyncSession
) -> None:
    follow = follow_of_blog(settings, alice)
    response = await post_signed(blog, SHARED, follow, alice)
    assert response.status_code == 202
    assert await response.get_data() == b""
    [item] = await stored(session)
    assert (item.activity_uri, item.activity_type, item.actor_uri) == (
        follow["id"],
        "Follow",
        alice.uri,
    )
    assert item.app is None  # the shared inbox
    assert item.document == follow
    assert item.state == "pending"
    # The key was fetched (signed by our instance actor) and the actor cached.
    assert alice.server.fetches_of(alice.path) == 1
    cached = await session.scalar(select(ApRemoteActor).where(ApRemoteActor.uri == alice.uri))
    assert cached is not None
    assert cached.key_id == alice.key_id


async def test_the_actor_inbox_stores_which_actor_received_it(
    blog: QuartClient, alice: RemoteActor, settings: Settings, session: AsyncSession
) -> None:
    follow = follow_of_blog(settings, alice)
    response = await post_signed(blog, "/ap/actors/blog/inbox", follow, alice)
    assert response.status_code == 202
    [item] = await stored(session)
    assert item.app == "blog"


async def test_an_actor_this_host_does_not_serve_has_no_inbox(
    make_client: ClientMaker, blog: QuartClient, alice: RemoteActor, session: AsyncSession
) -> None:
    like = alice.activity("Like", "http://blog.localhost/ap/objects/1")
    for path in ("/ap/actors/market/inbox", "/ap/actors/instance/inbox", "/ap/actors/x/inbox"):
        assert (await post_signed(blog, path, like, alice)).status_code == 404
    assert await stored(session) == []
    federation = await make_client(lambda s: create_base_app("federation", settings=s))
    response = await post_signed(
        federation, "/ap/actors/instance/inbox", like, alice, host="federation.localhost"
    )
    assert response.status_code == 202
    [item] = await stored(session)
    assert item.app == "instance"


async def test_a_redelivered_activity_is_stored_once(
    blog: QuartClient, alice: RemoteActor, settings: Settings, session: AsyncSession
) -> None:
    follow = follow_of_blog(settings, alice)
    assert (await post_signed(blog, SHARED, follow, alice)).status_code == 202
    assert (await post_signed(blog, "/ap/actors/blog/inbox", follow, alice)).status_code == 202
    assert len(await stored(session)) == 1
    # The second POST used the key kept in memory: no second fetch.
    assert alice.server.fetches_of(alice.path) == 1


async def test_an_unsigned_post_is_refused_401(
    blog: QuartClient, alice: RemoteActor, settings: Settings, session: AsyncSession
) -> None:
    response = await post_signed(blog, SHARED, follow_of_blog(settings, alice), None)
    assert response.status_code == 401
    assert b"not signed" in await response.get_data()
    assert await stored(session) == []


async def test_a_forged_signature_is_refused_401(
    blog: QuartClient,
    alice: RemoteActor,
    keypairs: tuple[Keypair, Keypair],
    settings: Settings,
    session: AsyncSession,
) -> None:
    follow = follow_of_blog(settings, alice)
    response = await post_signed(blog, SHARED, follow, alice, keypair=keypairs[1])
    assert response.status_code == 401
    assert b"bad signature" in await response.get_data()
    assert await stored(session) == []
    # Refetched once in case the key had rotated (then, not again for a minute).
    assert alice.server.fetches_of(alice.path) == 2
    again = await post_signed(blog, SHARED, follow, alice, keypair=keypairs[1])
    assert again.status_code == 401
    assert alice.server.fetches_of(alice.path) == 2


async def test_a_stale_signature_is_refused_401(
    blog: QuartClient, alice: RemoteActor, settings: Settings, session: AsyncSession
) -> None:
    thirteen_hours_ago = datetime.now(UTC) - timedelta(hours=13)
    follow = follow_of_blog(settings, alice)
    response = await post_signed(blog, SHARED, follow, alice, now=thirteen_hours_ago)
    assert response.status_code == 401
    assert b"stale" in await response.get_data()
    assert await stored(session) == []
    # Within the 12-hour window it is fine.
    eleven_hours_ago = datetime.now(UTC) - timedelta(hours=11)
    assert (await post_signed(blog, SHARED, follow, alice, now=eleven_hours_ago)).status_code == 202


async def test_a_body_that_does_not_match_its_digest_is_refused_401(
    blog: QuartClient, alice: RemoteActor, settings: Settings, session: AsyncSession
) -> None:
    signed = follow_of_blog(settings, alice)
    sent = {**signed, "object": urls.actor_url(settings, "market")}
    response = await post_signed(blog, SHARED, sent, alice, signed_body=json.dumps(signed).encode())
    assert response.status_code == 401
    assert b"Digest" in await response.get_data()
    assert await stored(session) == []


async def test_a_signer_other_than_the_actor_is_refused_401(
    blog: QuartClient,
    alice: RemoteActor,
    actor_server: ActorServer,
    keypairs: tuple[Keypair, Keypair],
    settings: Settings,
    session: AsyncSession,
) -> None:
    mallory = RemoteActor(actor_server, "mallory", keypairs[1])
    mallory.publish()
    follow = follow_of_blog(settings, alice)  # alice's Follow, signed by mallory
    response = await post_signed(blog, SHARED, follow, mallory)
    assert response.status_code == 401
    assert b"not the activity's actor" in await response.get_data()
    assert await stored(session) == []


async def test_a_key_that_cannot_be_fetched_is_refused_401(
    blog: QuartClient, alice: RemoteActor, settings: Settings, session: AsyncSession
) -> None:
    alice.publish(status=404)
    response = await post_signed(blog, SHARED, follow_of_blog(settings, alice), alice)
    assert response.status_code == 401
    assert await stored(session) == []


async def test_a_rotated_key_is_fetched_again_and_accepted(
    blog: QuartClient,
    alice: RemoteActor,
    keypairs: tuple[Keypair, Keypair],
    settings: Settings,
    session: AsyncSession,
) -> None:
    assert (
        await post_signed(blog, SHARED, follow_of_blog(settings, alice), alice)
    ).status_code == 202
    alice.keypair = keypairs[1]  # alice's server rotates her key
    alice.publish()
    follow = follow_of_blog(settings, alice)
    response = await post_signed(blog, SHARED, follow, alice)
    assert response.status_code == 202
    assert len(await stored(session, str(follow["id"]))) == 1
    assert alice.server.fetches_of(alice.path) == 2
    cached = await session.scalar(
        select(ApRemoteActor.public_key_pem).where(ApRemoteActor.uri == alice.uri)
    )
    assert cached == keypairs[1].public_pem


async def test_a_body_over_the_limit_is_refused_413(
    blog: QuartClient, alice: RemoteActor, settings: Settings, session: AsyncSession
) -> None:
    limit = settings.activitypub.inbox_max_bytes
    follow = {**follow_of_blog(settings, alice), "padding": "x" * limit}
    response = await post_signed(blog, SHARED, follow, alice)
    assert response.status_code == 413
    assert await stored(session) == []
    assert alice.server.requests == []  # refused before any key lookup


async def test_what_is_not_an_activity_is_refused_400(
    blog: QuartClient, alice: RemoteActor, settings: Settings, session: AsyncSession
) -> None:
    bad_json = await post_signed(blog, SHARED, None, alice, body=b"{not json")
    assert bad_json.status_code == 400
    follow = follow_of_blog(settings, alice)
    for broken in (
        [follow],
        {key: value for key, value in follow.items() if key != "id"},
        {key: value for key, value in follow.items() if key != "actor"},
        {**follow, "type": 7},
        {**follow, "id": "http://elsewhere.example/activities/1"},  # not on the actor's host
    ):
        assert (await post_signed(blog, SHARED, broken, alice)).status_code == 400
    # stored as the text received: it must be UTF-8, and jsonb cannot hold a NUL
    as_utf16 = json.dumps(follow).encode("utf-16")
    assert (await post_signed(blog, SHARED, None, alice, body=as_utf16)).status_code == 400
    with_nul = {**follow, "summary": "a\u0000b"}
    assert (await post_signed(blog, SHARED, with_nul, alice)).status_code == 400
    assert await stored(session) == []


async def test_the_stored_document_is_the_json_text_received(
    blog: QuartClient, alice: RemoteActor, settings: Settings, session: AsyncSession
) -> None:
    follow = {**follow_of_blog(settings, alice), "summary": 'Grüße ☃ "quoted"'}
    body = json.dumps(follow, ensure_ascii=False, indent=1).encode()
    response = await post_signed(blog, SHARED, None, alice, body=body)
    assert response.status_code == 202
    [item] = await stored(session)
    assert item.document == follow


async def test_a_blocked_domain_is_answered_202_and_nothing_is_stored(
    blog: QuartClient, alice: RemoteActor, settings: Settings, session: AsyncSession
) -> None:
    await do_block(session, "domain", "127.0.0.1")
    await session.commit()
    response = await post_signed(blog, SHARED, follow_of_blog(settings, alice), alice)
    assert response.status_code == 202
    assert await stored(session) == []
    assert alice.server.requests == []  # a blocked server makes us fetch nothing


async def test_a_blocked_actor_is_answered_202_and_nothing_is_stored(
    blog: QuartClient,
    alice: RemoteActor,
    actor_server: ActorServer,
    keypairs: tuple[Keypair, Keypair],
    settings: Settings,
    session: AsyncSession,
) -> None:
    await do_block(session, "actor", alice.uri)
    await session.commit()
    bob = RemoteActor(actor_server, "bob", keypairs[1])
    bob.publish()
    assert (
        await post_signed(blog, SHARED, follow_of_blog(settings, alice), alice)
    ).status_code == 202
    assert (await post_signed(blog, SHARED, follow_of_blog(settings, bob), bob)).status_code == 202
    assert [item.actor_uri for item in await stored(session)] == [bob.uri]


async def test_a_host_over_its_rate_is_refused_429(
    make_client: ClientMaker, alice: RemoteActor, settings: Settings, session: AsyncSession
) -> None:
    tuned = settings.model_copy(
        update={
            "activitypub": settings.activitypub.model_copy(
                update={"inbox_rate_limit_per_minute": 2}
            )
        }
    )
    client = await make_client(lambda _s: create_base_app("blog", settings=tuned))
    answers = [
        (await post_signed(client, SHARED, follow_of_blog(settings, alice), alice))
        for _ in range(3)
    ]
    assert [answer.status_code for answer in answers] == [202, 202, 429]
    assert 0 < int(answers[2].headers["Retry-After"]) <= 60
    assert len(await stored(session)) == 2


async def test_a_refused_post_is_counted_once(
    make_client: ClientMaker,
    alice: RemoteActor,
    settings: Settings,
    redis: aioredis.Redis,
) -> None:
    """The fast path counts a known sender's POST and, over the limit, hands the view its
    decision: the view answers 429 without counting the POST a second time."""
    rule = RateLimit("ap-inbox", 2, 60)
    tuned = settings.model_copy(
        update={
            "activitypub": settings.activitypub.model_copy(
                update={"inbox_rate_limit_per_minute": rule.limit}
            )
        }
    )
    client = await make_client(lambda _s: create_base_app("blog", settings=tuned))
    answers = [
        (await post_signed(client, SHARED, like_of(settings, alice, number), alice)).status_code
        for number in range(5)
    ]
    assert answers == [202, 202, 429, 429, 429]
    assert int(await redis.get(limit_key(rule, host_of(alice.uri)))) == 5


async def test_a_delete_of_an_actor_we_never_knew_is_dropped_without_a_fetch(
    blog: QuartClient, alice: RemoteActor, session: AsyncSession
) -> None:
    alice.publish(status=410)
    delete = alice.activity("Delete", alice.uri)
    response = await post_signed(blog, SHARED, delete, alice)
    assert response.status_code == 202
    assert await stored(session) == []
    assert alice.server.requests == []


async def test_a_delete_of_a_gone_actor_is_verified_with_the_key_we_hold(
    blog: QuartClient,
    alice: RemoteActor,
    keypairs: tuple[Keypair, Keypair],
    settings: Settings,
    session: AsyncSession,
) -> None:
    assert (
        await post_signed(blog, SHARED, follow_of_blog(settings, alice), alice)
    ).status_code == 202
    alice.publish(status=410)  # the account is gone
    forget_remote_keys()  # another process: only the database holds the key
    forged = alice.activity("Delete", alice.uri)
    response = await post_signed(blog, SHARED, forged, alice, keypair=keypairs[1])
    assert response.status_code == 401
    delete = alice.activity("Delete", alice.uri)
    assert (await post_signed(blog, SHARED, delete, alice)).status_code == 202
    assert len(await stored(session, str(delete["id"]))) == 1
    assert alice.server.fetches_of(alice.path) == 1  # only the first key fetch


# --- known senders answered in front of Quart (inbox_fast.py) ---------------------------------


@pytest.fixture
async def counted_blog(make_client: ClientMaker, reached: list[str]) -> QuartClient:
    def build(settings: Settings) -> Quart:
        app = create_base_app("blog", settings=settings)

        @app.before_request
        async def record() -> None:
            reached.append(request.path)

        return app

    return await make_client(build)


@pytest.fixture
def reached() -> list[str]:
    return []


def like_of(settings: Settings, actor: RemoteActor, number: int) -> dict[str, object]:
    return {
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": f"{actor.uri}/likes/{number}",
        "type": "Like",
        "actor": actor.uri,
        "object": f"{settings.url_of('blog')}/ap/objects/1",
    }


async def test_a_known_senders_post_is_stored_without_the_request_stack(
    counted_blog: QuartClient,
    alice: RemoteActor,
    settings: Settings,
    session: AsyncSession,
    reached: list[str],
) -> None:
    first = await post_signed(counted_blog, SHARED, like_of(settings, alice, 1), alice)
    assert first.status_code == 202
    assert reached == [SHARED]  # the first POST fetched the key through the view
    second = await post_signed(counted_blog, SHARED, like_of(settings, alice, 2), alice)
    assert second.status_code == 202
    assert await second.get_data() == b""
    assert second.headers["X-Content-Type-Options"] == "nosniff"
    assert reached == [SHARED]  # answered in front of Quart
    assert [item.activity_uri for item in await stored(session)] == [
        f"{alice.uri}/likes/1",
        f"{alice.uri}/likes/2",
    ]
    redelivered = await post_signed(counted_blog, SHARED, like_of(settings, alice, 2), alice)
    assert redelivered.status_code == 202
    assert len(await stored(session)) == 2  # stored once


async def test_a_known_key_with_a_bad_signature_is_left_to_the_view(
    counted_blog: QuartClient,
    alice: RemoteActor,
    keypairs: tuple[Keypair, Keypair],
    settings: Settings,
    session: AsyncSession,
    reached: list[str],
) -> None:
    await post_signed(counted_blog, SHARED, like_of(settings, alice, 1), alice)
    forged = await post_signed(
        counted_blog, SHARED, like_of(settings, alice, 2), alice, keypair=keypairs[1]
    )
    assert forged.status_code == 401
    assert reached == [SHARED, SHARED]  # the view answered (after refetching the key once)
    assert alice.server.fetches_of(alice.path) == 2
    unsigned = await post_signed(counted_blog, SHARED, like_of(settings, alice, 3), None)
    assert unsigned.status_code == 401
    assert len(await stored(session)) == 1
