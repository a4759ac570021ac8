"""The GET endpoints of every app against the real database: actors and their content
negotiation, WebFinger, NodeInfo, host-meta, paged collections, objects and activities."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit
from xml.etree import ElementTree

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from quart import Quart
from quart.typing import TestClientProtocol as QuartClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from account.app import create_app as create_account
from blog.app import create_app as create_blog
from cart.app import create_app as create_cart
from events.app import create_app as create_events
from federation.app import create_app as create_federation
from market.app import create_app as create_market
from shared.config import Settings
from shared.infrastructure.activitypub import keys, urls
from shared.infrastructure.activitypub.documents import LD_JSON, NODEINFO_SCHEMA
from shared.infrastructure.activitypub.routes import (
    choose_representation,
    install_activitypub_fast_path,
)
from shared.infrastructure.context import get_state
from shared.models.identity import User
from shared.models.social.actors import ApRemoteActor
from shared.models.social.inbox import ApFollower, ApFollowing
from shared.models.social.outbox import ApActivity, ApObject
from shared.services.social.publish import PublishableObject, publish
from tests.conftest import ClientMaker

FACTORIES: dict[str, Callable[[Settings], Quart]] = {
    "blog": create_blog,
    "market": create_market,
    "cart": create_cart,
    "events": create_events,
    "federation": create_federation,
    "account": create_account,
}
AP = {"Accept": "application/activity+json"}
MASTODON_ACCEPT = {
    "Accept": 'application/activity+json, application/ld+json; profile="https://www.w3.org/ns/'
    'activitystreams", text/html;q=0.1'
}
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


@pytest.fixture(autouse=True)
def fresh_keypairs() -> Iterator[None]:
    """Each test's keypair is rolled back with it: no process may keep one across tests."""
    keys.forget_keypairs()
    yield
    keys.forget_keypairs()


async def get_json(client: QuartClient, url: str, headers: dict[str, str] | None = None) -> Any:
    response = await client.get(url, headers=headers or AP)
    assert response.status_code == 200, (url, response.status_code)
    return json.loads(await response.get_data())


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def check_mastodon_accepts(document: dict[str, Any], fetched_url: str) -> None:
    """What Mastodon's ActivityPub::ProcessAccountService insists on before it stores an
    actor: the id is the URL fetched, a known actor type, a username, absolute inbox/outbox
    on the actor's host, and a key whose owner is the actor."""
    assert document["id"] == fetched_url
    assert document["type"] in {"Person", "Service", "Application", "Group", "Organization"}
    assert document["preferredUsername"]
    host = urlsplit(document["id"]).netloc
    for name in ("inbox", "outbox", "followers", "following"):
        parts = urlsplit(document[name])
        assert parts.scheme in ("http", "https"), name
        assert parts.netloc == host, name
    assert urlsplit(document["endpoints"]["sharedInbox"]).netloc == host
    key = document["publicKey"]
    assert key["owner"] == document["id"]
    assert key["id"].split("#", 1)[0] == document["id"]
    assert isinstance(load_pem_public_key(key["publicKeyPem"].encode()), rsa.RSAPublicKey)
    assert urlsplit(document["icon"]["url"]).netloc == host
    assert document["@context"][0] == "https://www.w3.org/ns/activitystreams"


# ---------------------------------------------------------------------------------------------
# Actors


async def check_webfinger_round_trip(
    client: QuartClient, settings: Settings, actor: str, document: dict[str, Any]
) -> None:
    """acct:<actor>@<host> gives the actor, and so do its reverse lookup and its URL."""
    host = urls.host_of(settings, actor)
    response = await client.get(f"/.well-known/webfinger?resource=acct:{actor}@{host}")
    assert response.status_code == 200
    assert response.content_type == "application/jrd+json"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Cache-Control"] == "max-age=300, public"
    jrd = json.loads(await response.get_data())
    assert jrd["subject"] == f"acct:{actor}@{host}"
    self_link = next(link for link in jrd["links"] if link["rel"] == "self")
    assert self_link == {
        "rel": "self",
        "type": "application/activity+json",
        "href": urls.actor_url(settings, actor),
    }
    assert any(link["rel"] == "http://webfinger.net/rel/profile-page" for link in jrd["links"])
    # The reverse: the actor's preferredUsername@host of its id gives the same actor.
    reverse = f"acct:{document['preferredUsername']}@{urlsplit(document['id']).netloc}"
    again = json.loads(
        await (await client.get(f"/.well-known/webfinger?resource={reverse}")).get_data()
    )
    assert next(link for link in again["links"] if link["rel"] == "self") == self_link
    by_url = await client.get(f"/.well-known/webfinger?resource={document['id']}")
    assert json.loads(await by_url.get_data())["subject"] == jrd["subject"]


async def test_every_actor_its_webfinger_and_one_shared_key(
    make_client: ClientMaker, settings: Settings
) -> None:
    pems: set[str] = set()
    key_ids: set[str] = set()
    clients = {app: await make_client(factory) for app, factory in FACTORIES.items()}
    for actor in urls.ACTOR_NAMES:
        client = clients[urls.host_app(actor)]
        actor_id = urls.actor_url(settings, actor)
        response = await client.get(path_of(actor_id), headers=AP)
        assert response.status_code == 200
        assert response.content_type == "application/activity+json"
        assert response.headers["Vary"] == "Accept"
        assert response.headers["Cache-Control"] == "max-age=300, public"
        document = json.loads(await response.get_data())
        check_mastodon_accepts(document, actor_id)
        assert document["preferredUsername"] == actor
        assert document["type"] == ("Application" if actor == "instance" else "Service")
        assert document["publicKey"]["id"] == urls.key_id(settings, actor)
        assert document["inbox"] == urls.inbox_url(settings, actor)
        assert document["endpoints"]["sharedInbox"] == urls.shared_inbox_url(settings, actor)
        assert document["manuallyApprovesFollowers"] is False
        assert document["discoverable"] is True
        assert datetime.fromisoformat(document["published"]) <= datetime.now(UTC)
        icon = await client.get(path_of(document["icon"]["url"]))
        assert icon.status_code == 200
        assert icon.content_type == "image/png"
        assert (await icon.get_data()).startswith(b"\x89PNG")
        await check_webfinger_round_trip(client, settings, actor, document)
        pems.add(document["publicKey"]["publicKeyPem"])
        key_ids.add(document["publicKey"]["id"])
    assert len(pems) == 1
    assert len(key_ids) == len(urls.ACTOR_NAMES)


# Paths each app must not answer: actors (and their parts) living on another host.
FOREIGN_PATHS = {
    "blog": ["/ap/actors/market", "/ap/actors/instance", "/ap/actors/market/outbox"],
    "federation": ["/ap/actors/blog", "/ap/icons/blog.png", "/ap/actors/nobody"],
}


async def test_actors_of_other_hosts_are_not_found(make_client: ClientMaker) -> None:
    for app, paths in FOREIGN_PATHS.items():
        client = await make_client(FACTORIES[app])
        for path in paths:
            response = await client.get(path, headers=AP)
            assert response.status_code == 404, (app, path)
            assert response.content_type == "application/activity+json"
            assert json.loads(await response.get_data())["status"] == 404
        page = await client.get(paths[0], headers=BROWSER)
        assert page.status_code == 404
        assert page.mimetype == "text/html"


async def test_content_negotiation(make_client: ClientMaker, settings: Settings) -> None:
    client = await make_client(create_events)
    ld = await client.get("/ap/actors/events", headers={"Accept": LD_JSON})
    assert ld.status_code == 200
    assert ld.headers["Content-Type"] == LD_JSON
    bare_ld = await client.get("/ap/actors/events", headers={"Accept": "application/ld+json"})
    assert bare_ld.headers["Content-Type"] == LD_JSON
    mastodon = await client.get("/ap/actors/events", headers=MASTODON_ACCEPT)
    assert mastodon.content_type == "application/activity+json"
    assert await mastodon.get_data() == await ld.get_data()
    page = await client.get("/ap/actors/events", headers=BROWSER)
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    assert page.headers["Vary"] == "Accept"
    html = await page.get_data(as_text=True)
    assert "Rose Ash Events" in html
    assert "@events@events.localhost" in html
    assert "0</h3> followers" in html
    assert 'href="http://events.localhost/ap/actors/events/outbox"' in html


async def test_profile_page_counts_followers(
    make_client: ClientMaker, session: AsyncSession
) -> None:
    await add_followers(session, "blog", 3)
    await session.commit()
    client = await make_client(create_blog)
    html = await (await client.get("/ap/actors/blog", headers=BROWSER)).get_data(as_text=True)
    assert "3</h3> followers" in html


async def test_profile_page_lists_the_recent_posts_a_person_can_read(
    make_client: ClientMaker, session: AsyncSession, settings: Settings
) -> None:
    article = PublishableObject(
        "Article",
        content="<p>The whole story</p>",
        name="Spring fair <announced>",
        summary="Stalls, music and cake",
        url="http://blog.localhost/spring-fair/",
    )
    note = PublishableObject("Note", content="<p>Doors open at <b>ten</b> &amp; close at six</p>")
    gone = PublishableObject("Article", content="x", name="Withdrawn", summary="s")
    moment = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    await publish(session, settings, "blog", article, verb="Create", now=moment)
    note_activity = await publish(
        session, settings, "blog", note, verb="Create", now=moment.replace(day=2)
    )
    withdrawn = await publish(session, settings, "blog", gone, verb="Create", now=moment)
    await publish(
        session,
        settings,
        "blog",
        PublishableObject("Article", content="x", name="Withdrawn", summary="s",
                          uri=withdrawn.document["object"]["id"]),
        verb="Delete",
    )  # fmt: skip
    await session.commit()
    client = await make_client(create_blog)
    html = await (await client.get("/ap/actors/blog", headers=BROWSER)).get_data(as_text=True)
    assert "2</h3> posts" in html
    assert "Withdrawn" not in html
    note_uri = note_activity.document["object"]["id"]
    newest_first = [
        f'<a href="{note_uri}">Doors open at ten &amp; close at six</a>',
        '<a href="http://blog.localhost/spring-fair/">Spring fair &lt;announced&gt;</a>',
    ]
    positions = [html.index(item) for item in newest_first]
    assert positions == sorted(positions)
    assert '<time datetime="2026-03-02T12:00:00+00:00">2 Mar 2026</time>' in html


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("application/activity+json", "activity"),
        (LD_JSON, "ld"),
        ("application/json", "activity"),
        ('application/ld+json; profile="x", application/activity+json', "ld"),
        ("application/activity+json;q=0.5, application/ld+json", "ld"),
        (MASTODON_ACCEPT["Accept"], "activity"),
        (BROWSER["Accept"], "html"),
        ("text/html, application/activity+json;q=0.9", "html"),
        ("application/activity+json, text/html", "activity"),
        ("*/*", "activity"),  # aiohttp's default: servers fetching keys
        ("", "activity"),
        ("application/activity+json;q=0", "activity"),
        ("text/html;q=0", "activity"),
    ],
)
def test_choose_representation(accept: str, expected: str) -> None:
    assert choose_representation(accept) == expected


async def test_actor_and_webfinger_are_served_from_memory(
    make_client: ClientMaker,
) -> None:
    """Once the keypair is settled, neither needs the database: a broken one still serves."""
    app = create_blog
    client = await make_client(app)
    first = await get_json(client, "/ap/actors/blog")  # creates the keypair
    second = await get_json(client, "/ap/actors/blog")  # keys now holds it: kept
    assert first == second
    finger = "/.well-known/webfinger?resource=acct:blog@blog.localhost"
    wf_before = await get_json(client, finger)
    state = get_state(client.app)  # type: ignore[attr-defined]
    database, state.database = state.database, None
    try:
        assert await get_json(client, "/ap/actors/blog") == first
        assert await get_json(client, finger) == wf_before
    finally:
        state.database = database


async def test_fast_path_answers_kept_documents_before_the_request_stack(
    make_client: ClientMaker,
) -> None:
    """Kept documents skip every request hook (no session, no device cookie) with the same
    body and headers; what is not kept yet, HTML and refusals go through Quart."""
    hooks: list[str] = []

    def create(settings: Settings) -> Quart:
        app = create_blog(settings)
        app.before_request(lambda: hooks.append("hook"))
        install_activitypub_fast_path(app)
        return app

    client = await make_client(create)
    finger = "/.well-known/webfinger?resource=acct:blog@blog.localhost"
    slow = [await client.get(path, headers=AP) for path in ("/ap/actors/blog",) * 2 + (finger,)]
    assert len(hooks) == 3
    fast_actor = await client.get("/ap/actors/blog", headers={"Accept": LD_JSON})
    fast_finger = await client.get(finger, headers={"X-Request-ID": "probe-1"})
    assert len(hooks) == 3  # neither went through Quart
    assert await fast_actor.get_data() == await slow[1].get_data()
    assert fast_actor.headers["Content-Type"] == LD_JSON
    assert await fast_finger.get_data() == await slow[2].get_data()
    assert fast_finger.headers["X-Request-ID"] == "probe-1"
    for fast, full in ((fast_actor, slow[1]), (fast_finger, slow[2])):
        assert "Set-Cookie" not in fast.headers
        for name in ("Cache-Control", "Access-Control-Allow-Origin", "X-Frame-Options", "Vary"):
            assert fast.headers.get(name) == full.headers.get(name), name
    head = await client.head("/ap/actors/blog", headers=AP)
    assert head.status_code == 200
    assert await head.get_data() == b""
    assert len(hooks) == 3
    for path, headers in (
        ("/ap/actors/blog", BROWSER),
        ("/ap/actors/market", AP),
        ("/.well-known/webfinger?resource=acct:nobody@blog.localhost", AP),
        ("/.well-known/webfinger", AP),
    ):
        await client.get(path, headers=headers)
    assert len(hooks) == 7


# ---------------------------------------------------------------------------------------------
# WebFinger, NodeInfo, host-meta


# Resources each app refuses: 404 for what is not an actor of its host, 400 if malformed.
WEBFINGER_REFUSALS = {
    "blog": [
        ("resource=acct:market@market.localhost", 404),
        ("resource=acct:blog@market.localhost", 404),
        ("resource=acct:nobody@blog.localhost", 404),
        ("resource=http://market.localhost/ap/actors/market", 404),
        ("", 400),
        ("resource=", 400),
        ("resource=acct:blog", 400),
        ("resource=nonsense", 400),
    ],
    "market": [("resource=acct:instance@federation.localhost", 404)],
}


async def test_webfinger_refusals(make_client: ClientMaker) -> None:
    for app, cases in WEBFINGER_REFUSALS.items():
        client = await make_client(FACTORIES[app])
        for query, status in cases:
            response = await client.get(f"/.well-known/webfinger?{query}")
            assert response.status_code == status, (app, query)
            assert response.content_type == "application/jrd+json"
            assert response.headers["Access-Control-Allow-Origin"] == "*"
            assert "error" in json.loads(await response.get_data())


async def test_nodeinfo_discovery_and_document(
    make_client: ClientMaker, session: AsyncSession, settings: Settings
) -> None:
    session.add(User(email="ann@example.org", username="ann", last_login_at=datetime.now(UTC)))
    session.add(
        ApObject(
            uri="https://blog.localhost/ap/objects/a", app="blog", object_type="Note", document={}
        )
    )
    session.add(
        ApObject(
            uri="https://blog.localhost/ap/objects/b",
            app="blog",
            object_type="Note",
            document={},
            deleted_at=datetime.now(UTC),
        )
    )
    await session.commit()
    users = await session.scalar(select(func.count()).select_from(User))
    posts = await session.scalar(
        select(func.count()).select_from(ApObject).where(ApObject.deleted_at.is_(None))
    )
    client = await make_client(create_cart)
    links = await get_json(client, "/.well-known/nodeinfo", {"Accept": "application/json"})
    link = next(link for link in links["links"] if link["rel"] == NODEINFO_SCHEMA)
    assert link["href"] == f"{settings.url_of('cart')}/nodeinfo/2.1"
    response = await client.get(path_of(link["href"]))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == (
        'application/json; profile="http://nodeinfo.diaspora.software/ns/schema/2.1#"'
    )
    document = json.loads(await response.get_data())
    assert document["version"] == "2.1"
    assert document["software"]["name"] == "rose-ash"
    assert document["software"]["version"]
    assert document["protocols"] == ["activitypub"]
    assert document["openRegistrations"] is settings.features.registration_open
    assert document["usage"]["users"]["total"] == users
    assert document["usage"]["users"]["activeMonth"] >= 1
    assert document["usage"]["localPosts"] == posts
    assert set(document) == {
        "version",
        "software",
        "protocols",
        "services",
        "openRegistrations",
        "usage",
        "metadata",
    }


async def test_host_meta(make_client: ClientMaker) -> None:
    client = await make_client(create_market)
    response = await client.get("/.well-known/host-meta")
    assert response.status_code == 200
    assert response.mimetype == "application/xrd+xml"
    xrd = ElementTree.fromstring(await response.get_data())  # noqa: S314 (our own XML)
    link = xrd.find("{http://docs.oasis-open.org/ns/xri/xrd-1.0}Link")
    assert link is not None
    assert link.get("template") == "http://market.localhost/.well-known/webfinger?resource={uri}"
    as_json = await get_json(client, "/.well-known/host-meta.json", {"Accept": "*/*"})
    assert as_json["links"][0]["template"] == link.get("template")


# ---------------------------------------------------------------------------------------------
# Collections


async def add_remote_actor(session: AsyncSession, number: int) -> ApRemoteActor:
    uri = f"https://remote{number % 3}.example/users/u{number}"
    remote = ApRemoteActor(
        uri=uri,
        domain=f"remote{number % 3}.example",
        actor_type="Person",
        inbox=f"{uri}/inbox",
        document={"id": uri},
    )
    session.add(remote)
    await session.flush()
    return remote


async def add_followers(session: AsyncSession, app: str, count: int) -> list[str]:
    """``count`` remote followers of ``app``; their ids in the order they followed."""
    uris = []
    for number in range(count):
        remote = await add_remote_actor(session, number)
        session.add(
            ApFollower(
                app=app,
                remote_actor_id=remote.id,
                follow_uri=f"{remote.uri}#follow",
                inbox=remote.inbox,
            )
        )
        await session.flush()
        uris.append(remote.uri)
    return uris


async def walk_pages(client: QuartClient, collection: dict[str, Any]) -> list[dict[str, Any]]:
    pages = []
    url: str | None = collection["first"]
    while url is not None:
        page = await get_json(client, path_of(url))
        assert page["type"] == "OrderedCollectionPage"
        assert page["partOf"] == collection["id"]
        pages.append(page)
        url = page.get("next")
    return pages


async def test_followers_are_paged_newest_first(
    make_client: ClientMaker, session: AsyncSession, settings: Settings
) -> None:
    size = settings.activitypub.collection_page_size
    uris = await add_followers(session, "blog", 2 * size + 5)
    await add_followers_of_market(session)
    await session.commit()
    client = await make_client(create_blog)
    url = urls.followers_url(settings, "blog")
    collection = await get_json(client, path_of(url))
    assert collection["id"] == url
    assert collection["type"] == "OrderedCollection"
    assert collection["totalItems"] == 2 * size + 5
    pages = await walk_pages(client, collection)
    assert [len(page["orderedItems"]) for page in pages] == [size, size, 5]
    assert [item for page in pages for item in page["orderedItems"]] == uris[::-1]
    assert "prev" not in pages[0]
    # Keyset: a page's prev gives back the page before it, its id is its own URL.
    second = pages[1]
    assert second["id"].startswith(f"{url}?page=true&max_id=")
    previous = await get_json(client, path_of(second["prev"]))
    assert previous["orderedItems"] == pages[0]["orderedItems"]
    last = await get_json(client, path_of(collection["last"]))
    assert last["orderedItems"] == uris[:size][::-1]
    bad = await client.get(f"{path_of(url)}?page=true&max_id=abc", headers=AP)
    assert bad.status_code == 400


async def add_followers_of_market(session: AsyncSession) -> None:
    remote = await add_remote_actor(session, 999)
    session.add(
        ApFollower(app="market", remote_actor_id=remote.id, follow_uri="f", inbox=remote.inbox)
    )
    await session.flush()


async def test_following_lists_accepted_follows_only(
    make_client: ClientMaker, session: AsyncSession, settings: Settings
) -> None:
    accepted = []
    for number in range(4):
        remote = await add_remote_actor(session, number)
        state = "accepted" if number % 2 == 0 else "pending"
        session.add(
            ApFollowing(
                app="events", remote_actor_id=remote.id, follow_uri=f"f{number}", state=state
            )
        )
        if state == "accepted":
            accepted.append(remote.uri)
    await session.commit()
    client = await make_client(create_events)
    collection = await get_json(client, path_of(urls.following_url(settings, "events")))
    assert collection["totalItems"] == 2
    pages = await walk_pages(client, collection)
    assert pages[0]["orderedItems"] == accepted[::-1]


async def test_outbox_lists_public_activities_only(
    make_client: ClientMaker, session: AsyncSession, settings: Settings
) -> None:
    size = settings.activitypub.collection_page_size
    public_ids = []
    for number in range(size + 3):
        visibility = "public" if number % 4 else "internal"
        uri = urls.new_activity_url(settings, "blog")
        session.add(
            ApActivity(
                uri=uri,
                app="blog",
                activity_type="Create",
                visibility=visibility,
                document={
                    "@context": "https://www.w3.org/ns/activitystreams",
                    "id": uri,
                    "type": "Create",
                },
            )
        )
        if visibility == "public":
            public_ids.append(uri)
    session.add(
        ApActivity(
            uri=urls.new_activity_url(settings, "market"),
            app="market",
            activity_type="Create",
            visibility="public",
            document={},
        )
    )
    await session.commit()
    client = await make_client(create_blog)
    collection = await get_json(client, path_of(urls.outbox_url(settings, "blog")))
    assert collection["totalItems"] == len(public_ids)
    pages = await walk_pages(client, collection)
    items = [item for page in pages for item in page["orderedItems"]]
    assert [item["id"] for item in items] == public_ids[::-1]
    assert all("@context" not in item for item in items)


# ---------------------------------------------------------------------------------------------
# Objects and activities


async def test_objects_are_served_at_their_id(
    make_client: ClientMaker, session: AsyncSession, settings: Settings
) -> None:
    uri = urls.new_object_url(settings, "blog")
    page_url = f"{settings.url_of('blog')}/posts/hello/"
    session.add(
        ApObject(
            uri=uri,
            app="blog",
            object_type="Article",
            document={"id": uri, "type": "Article", "name": "Hello", "url": page_url},
        )
    )
    gone = urls.new_object_url(settings, "blog")
    session.add(
        ApObject(
            uri=gone,
            app="blog",
            object_type="Note",
            document={"id": gone, "type": "Note"},
            deleted_at=datetime(2025, 5, 1, tzinfo=UTC),
        )
    )
    await session.commit()
    client = await make_client(create_blog)
    document = await get_json(client, path_of(uri))
    assert document["id"] == uri
    assert document["@context"] == "https://www.w3.org/ns/activitystreams"
    browser = await client.get(path_of(uri), headers=BROWSER)
    assert browser.status_code == 302
    assert browser.headers["Location"] == page_url
    assert browser.headers["Vary"] == "Accept"
    tombstone = await client.get(path_of(gone), headers=AP)
    assert tombstone.status_code == 410
    body = json.loads(await tombstone.get_data())
    assert body == {
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": gone,
        "type": "Tombstone",
        "formerType": "Note",
        "deleted": "2025-05-01T00:00:00Z",
    }
    assert (await client.get(f"/ap/objects/{uuid.uuid4()}", headers=AP)).status_code == 404
    # The same path on another app's host is another URL: not this object.
    market = await make_client(create_market)
    assert (await market.get(path_of(uri), headers=AP)).status_code == 404


async def test_activities_public_served_internal_not(
    make_client: ClientMaker, session: AsyncSession, settings: Settings
) -> None:
    public = urls.new_activity_url(settings, "events")
    internal = urls.new_activity_url(settings, "events")
    for uri, visibility in ((public, "public"), (internal, "internal")):
        session.add(
            ApActivity(
                uri=uri,
                app="events",
                activity_type="Create",
                visibility=visibility,
                document={"id": uri, "type": "Create"},
            )
        )
    await session.commit()
    client = await make_client(create_events)
    document = await get_json(client, path_of(public), MASTODON_ACCEPT)
    assert document["id"] == public
    assert (await client.get(path_of(internal), headers=AP)).status_code == 404


async def test_every_app_serves_its_icon_as_its_favicon(make_client: ClientMaker) -> None:
    """Browsers ask every host for /favicon.ico (and base.html links it): a PNG, never a 404."""
    icons = set()
    for app, factory in FACTORIES.items():
        client = await make_client(factory)
        favicon = await client.get("/favicon.ico", headers={"Accept": "image/*"})
        assert favicon.status_code == 200, app
        assert favicon.mimetype == "image/png"
        body = await favicon.get_data()
        assert body.startswith(b"\x89PNG\r\n\x1a\n")
        assert body == await (await client.get(f"/ap/icons/{app}.png")).get_data()
        page = await client.get("/ap/actors/" + app, headers=BROWSER)
        assert '<link rel="icon" type="image/png" href="/favicon.ico">' in await page.get_data(
            as_text=True
        )
        icons.add(body)
    assert len(icons) == len(FACTORIES)  # each app in its own colour
