"""The POST inboxes: what is verified, stored and answered 202, and what is refused.

The "remote" actors sign with keypairs of their own and their documents are served by a real
HTTP server on 127.0.0.1 (tests/shared/activitypub/inbox_support.py): the inbox fetches their
keys over HTTP, as it would from any server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from quart import Quart, request
from quart.typing import TestClientProtocol as QuartClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import Settings
from shared.infrastructure.activitypub import urls
from shared.infrastructure.activitypub.inbox import forget_remote_keys
from shared.infrastructure.activitypub.keys import get_keypair
from shared.infrastructure.factory import create_base_app
from shared.infrastructure.rate_limit import RateLimit, limit_key
from shared.models.social.actors import ApRemoteActor
from shared.models.social.inbox import ApInboxItem
from shared.services.social.blocks import do_block, host_of
from tests.conftest import ClientMaker, serving
from tests.shared.activitypub.inbox_support import (
    ActorServer,
    Keypair,
    RemoteActor,
    SlowKeyServer,
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


async def test_deeply_nested_json_is_refused_400_by_the_view_and_the_fast_path(
    counted_blog: QuartClient,
    alice: RemoteActor,
    settings: Settings,
    session: AsyncSession,
    reached: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    nested = b"[" * 100_000 + b"]" * 100_000
    deep_object = (
        json.dumps(like_of(settings, alice, 9))[:-1].encode() + b', "object": ' + nested + b"}"
    )
    # An unknown key: the view answers.
    for body in (nested, deep_object):
        response = await post_signed(counted_blog, SHARED, None, alice, body=body)
        assert response.status_code == 400
        assert b"nested too deeply" in await response.get_data()
    # A known key: the fast path looks first, then hands it to the view, without an error.
    assert (
        await post_signed(counted_blog, SHARED, like_of(settings, alice, 1), alice)
    ).status_code == 202
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        for body in (nested, deep_object):
            response = await post_signed(counted_blog, SHARED, None, alice, body=body)
            assert response.status_code == 400
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(await stored(session)) == 1


def with_features(settings: Settings, **changes: Any) -> Settings:
    return settings.model_copy(update={"features": settings.features.model_copy(update=changes)})


def with_activitypub(settings: Settings, **changes: Any) -> Settings:
    return settings.model_copy(
        update={"activitypub": settings.activitypub.model_copy(update=changes)}
    )


async def test_with_federation_switched_off_the_inboxes_answer_404_and_store_nothing(
    make_client: ClientMaker, alice: RemoteActor, settings: Settings, session: AsyncSession
) -> None:
    federating = await make_client(lambda s: create_base_app("blog", settings=s))
    first = like_of(settings, alice, 1)
    assert (await post_signed(federating, SHARED, first, alice)).status_code == 202
    # alice's key is now held in memory: the fast path would accept her next POSTs.
    off = with_features(settings, federation_enabled=False)
    blog = await make_client(lambda _s: create_base_app("blog", settings=off))
    for number, path in enumerate((SHARED, "/ap/actors/blog/inbox"), start=2):
        response = await post_signed(blog, path, like_of(settings, alice, number), alice)
        assert response.status_code == 404
        assert b"federation is switched off" in await response.get_data()
    assert [item.activity_uri for item in await stored(session)] == [first["id"]]


# --- rate limits: verified senders per host, unverified POSTs per client address -------------


async def test_junk_naming_a_hosts_keys_does_not_spend_that_hosts_rate(
    make_client: ClientMaker,
    alice: RemoteActor,
    keypairs: tuple[Keypair, Keypair],
    settings: Settings,
    session: AsyncSession,
) -> None:
    tuned = with_activitypub(
        settings, inbox_rate_limit_per_minute=2, inbox_unverified_rate_limit_per_minute=100
    )
    blog = await make_client(lambda _s: create_base_app("blog", settings=tuned))
    assert (await post_signed(blog, SHARED, like_of(settings, alice, 1), alice)).status_code == 202
    for number in range(10, 20):  # forged, and unsigned, naming alice's key and host
        forged = await post_signed(
            blog, SHARED, like_of(settings, alice, number), alice, keypair=keypairs[1]
        )
        assert forged.status_code == 401
        unsigned = await post_signed(blog, SHARED, like_of(settings, alice, number), None)
        assert unsigned.status_code == 401
    genuine = await post_signed(blog, SHARED, like_of(settings, alice, 2), alice)
    assert genuine.status_code == 202
    assert len(await stored(session)) == 2


async def test_an_address_refused_as_unverified_too_often_makes_us_fetch_no_more_keys(
    make_client: ClientMaker,
    actor_server: ActorServer,
    keypairs: tuple[Keypair, Keypair],
    alice: RemoteActor,
    settings: Settings,
    session: AsyncSession,
) -> None:
    tuned = with_activitypub(settings, inbox_unverified_rate_limit_per_minute=2)
    blog = await make_client(lambda _s: create_base_app("blog", settings=tuned))
    ghosts = [RemoteActor(actor_server, f"ghost{n}", keypairs[1]) for n in range(5)]  # 404

    async def post_as(ghost: RemoteActor, address: str) -> int:
        like = ghost.activity("Like", f"{settings.url_of('blog')}/ap/objects/1")
        response = await post_signed(blog, SHARED, like, ghost, client_address=address)
        return response.status_code

    # One IPv6 /64 counts as one client, whatever address within it is used.
    assert await post_as(ghosts[0], "2001:db8:1:2::1") == 401
    assert await post_as(ghosts[1], "2001:db8:1:2::ff") == 401
    refused = await post_as(ghosts[2], "2001:db8:1:2:abcd::7")
    assert refused == 429
    assert actor_server.requests == [ghosts[0].path, ghosts[1].path]  # no third fetch
    # Another /64, and alice (whose key we can fetch) from the limited one, are not refused.
    assert await post_as(ghosts[3], "2001:db8:1:3::1") == 401
    like = like_of(settings, alice, 1)
    response = await post_signed(blog, SHARED, like, alice, client_address="2001:db8:1:3::1")
    assert response.status_code == 202


# --- key fetches hold no database connection (a slow key server) -----------------------------


@pytest.fixture
def slow_keys() -> Iterator[SlowKeyServer]:
    server = SlowKeyServer()
    yield server
    server.stop()


@pytest.fixture
async def own_pool_blog(
    settings: Settings, session: AsyncSession, redis: aioredis.Redis
) -> AsyncIterator[Callable[[Settings], Any]]:
    """serve(settings): blog with its own engine (pool of db_pool_size, overflow as many)
    on the test database, not the test's connection. The instance keypair is loaded into
    memory from the test's transaction, so that nothing of the app's is committed."""
    await get_keypair(session, settings)  # created, not yet held (its row may roll back)
    await get_keypair(session, settings)  # read back and held in memory

    def serve(tuned: Settings) -> Any:
        return serving(create_base_app("blog", settings=tuned))

    return serve


def slow_like(server: SlowKeyServer, settings: Settings, number: int) -> tuple[dict[str, str], str]:
    """A Like by an actor of the slow server, and its key id there."""
    actor = f"{server.base_url}/users/u{number}"
    like = {
        "id": f"{actor}/likes/{number}",
        "type": "Like",
        "actor": actor,
        "object": f"{settings.url_of('blog')}/ap/objects/1",
    }
    return like, f"{actor}#main-key"


async def wait_for(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.05)


async def test_fifty_posts_with_slow_keys_leave_the_apps_pages_answering(
    own_pool_blog: Callable[[Settings], Any],
    slow_keys: SlowKeyServer,
    alice: RemoteActor,
    settings: Settings,
) -> None:
    tuned = with_activitypub(
        settings.model_copy(update={"db_pool_size": 1}),  # two connections in all
        key_fetch_concurrency=50,
        key_fetch_timeout_seconds=60,
        inbox_unverified_rate_limit_per_minute=100,
    )
    async with own_pool_blog(tuned) as blog, asyncio.timeout(60):
        posts = []
        for number in range(50):
            like, key_id = slow_like(slow_keys, settings, number)
            posts.append(asyncio.create_task(post_signed(blog, SHARED, like, alice, key_id=key_id)))
        await wait_for(lambda: slow_keys.arrived == 50, 30)  # all fifty keys being fetched
        page = await blog.get(
            "/ap/actors/blog/followers",
            headers={"Host": "blog.localhost", "Accept": "application/activity+json"},
        )
        assert page.status_code == 200
        assert (await page.get_json())["totalItems"] == 0
        slow_keys.release.set()
        answers = [response.status_code for response in await asyncio.gather(*posts)]
    assert answers == [401] * 50


async def test_key_fetches_beyond_the_cap_are_answered_503_at_once(
    own_pool_blog: Callable[[Settings], Any],
    slow_keys: SlowKeyServer,
    alice: RemoteActor,
    settings: Settings,
) -> None:
    tuned = with_activitypub(settings, key_fetch_concurrency=2, key_fetch_timeout_seconds=30)
    async with own_pool_blog(tuned) as blog, asyncio.timeout(60):
        posts = []
        for number in range(2):
            like, key_id = slow_like(slow_keys, settings, number)
            posts.append(asyncio.create_task(post_signed(blog, SHARED, like, alice, key_id=key_id)))
        await wait_for(lambda: slow_keys.arrived == 2, 30)
        like, key_id = slow_like(slow_keys, settings, 3)
        busy = await post_signed(blog, SHARED, like, alice, key_id=key_id)
        assert busy.status_code == 503
        assert busy.headers["Retry-After"] == "30"
        assert slow_keys.arrived == 2
        slow_keys.release.set()
        assert [response.status_code for response in await asyncio.gather(*posts)] == [401, 401]


async def test_a_key_fetch_gives_up_after_the_key_fetch_timeout(
    own_pool_blog: Callable[[Settings], Any],
    slow_keys: SlowKeyServer,
    alice: RemoteActor,
    settings: Settings,
) -> None:
    tuned = with_activitypub(settings, fetch_timeout_seconds=60, key_fetch_timeout_seconds=0.5)
    async with own_pool_blog(tuned) as blog, asyncio.timeout(20):
        like, key_id = slow_like(slow_keys, settings, 1)
        response = await post_signed(blog, SHARED, like, alice, key_id=key_id)
    assert response.status_code == 401
    assert b"no complete answer within 0.5 s" in await response.get_data()


async def test_a_key_that_could_not_be_fetched_is_not_fetched_again_for_a_while(
    blog: QuartClient, alice: RemoteActor, settings: Settings, session: AsyncSession
) -> None:
    alice.publish(status=404)
    for number in range(3):
        response = await post_signed(blog, SHARED, like_of(settings, alice, number), alice)
        assert response.status_code == 401
    assert alice.server.fetches_of(alice.path) == 1
    assert await stored(session) == []
