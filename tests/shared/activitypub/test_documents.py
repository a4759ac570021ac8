"""The pure document builders: actors, WebFinger resolution, NodeInfo, host-meta, collections."""

from __future__ import annotations

import struct
import zlib
from datetime import UTC, datetime
from xml.etree import ElementTree

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from shared.config import APP_NAMES, Settings, load_settings
from shared.infrastructure.activitypub import documents, urls
from shared.infrastructure.activitypub.documents import MalformedResourceError
from shared.infrastructure.activitypub.keys import generate_keypair

SECRET = "test-secret-key-that-is-long-enough-for-the-check"


def make_settings(port: int | None = None) -> Settings:
    suffix = f":{port}" if port else ""
    return load_settings(
        env="test",
        database_url="postgresql://nobody@127.0.0.1:1/none",
        redis_url="redis://127.0.0.1:1/0",
        secret_key=SECRET,
        apps={name: f"https://{name}.example.coop{suffix}" for name in APP_NAMES},
    )


@pytest.fixture(scope="module")
def public_pem() -> str:
    return generate_keypair()[0]


@pytest.mark.parametrize("actor", urls.ACTOR_NAMES)
def test_actor_document_has_what_mastodon_reads(actor: str, public_pem: str) -> None:
    settings = make_settings()
    published = datetime(2025, 3, 1, 12, 30, tzinfo=UTC)
    document = documents.build_actor_document(settings, actor, public_pem, published)
    host = "federation" if actor == urls.INSTANCE_ACTOR else actor
    actor_id = f"https://{host}.example.coop/ap/actors/{actor}"
    assert document["@context"][:2] == [documents.AS_NAMESPACE, documents.SECURITY_CONTEXT]
    assert document["@context"][2]["discoverable"] == "toot:discoverable"
    assert document["id"] == actor_id
    assert document["type"] == ("Application" if actor == urls.INSTANCE_ACTOR else "Service")
    assert document["preferredUsername"] == actor
    assert document["name"].startswith("Rose Ash")
    assert document["summary"].startswith("<p>")
    assert len(document["summary"]) > 10
    assert document["url"] == actor_id
    assert document["inbox"] == f"{actor_id}/inbox"
    assert document["outbox"] == f"{actor_id}/outbox"
    assert document["followers"] == f"{actor_id}/followers"
    assert document["following"] == f"{actor_id}/following"
    assert document["endpoints"] == {"sharedInbox": f"https://{host}.example.coop/ap/inbox"}
    assert document["publicKey"] == {
        "id": f"{actor_id}#main-key",
        "owner": actor_id,
        "publicKeyPem": public_pem,
    }
    assert document["icon"] == {
        "type": "Image",
        "mediaType": "image/png",
        "url": f"https://{host}.example.coop/ap/icons/{actor}.png",
    }
    assert document["manuallyApprovesFollowers"] is False
    assert document["discoverable"] is True
    assert document["published"] == "2025-03-01T12:30:00Z"
    assert isinstance(load_pem_public_key(public_pem.encode()), rsa.RSAPublicKey)


def test_webfinger_document_links_the_actor_and_its_page() -> None:
    settings = make_settings(port=8443)
    document = documents.build_webfinger_document(settings, "events")
    actor_id = "https://events.example.coop:8443/ap/actors/events"
    assert document["subject"] == "acct:events@events.example.coop:8443"
    assert document["aliases"] == [actor_id]
    assert {"rel": "self", "type": "application/activity+json", "href": actor_id} in document[
        "links"
    ]
    assert {
        "rel": "http://webfinger.net/rel/profile-page",
        "type": "text/html",
        "href": actor_id,
    } in document["links"]


@pytest.mark.parametrize(
    ("app", "resource", "expected"),
    [
        ("blog", "acct:blog@blog.example.coop", "blog"),
        ("blog", "acct:BLOG@Blog.Example.Coop", "blog"),
        ("blog", "blog@blog.example.coop", "blog"),
        ("blog", "acct:@blog@blog.example.coop", "blog"),
        ("blog", "https://blog.example.coop/ap/actors/blog", "blog"),
        ("federation", "acct:instance@federation.example.coop", "instance"),
        ("federation", "acct:federation@federation.example.coop", "federation"),
        ("federation", "https://federation.example.coop/ap/actors/instance", "instance"),
        # Actors of other hosts, unknown names, hosts that are not the actor's:
        ("blog", "acct:market@market.example.coop", None),
        ("blog", "acct:market@blog.example.coop", None),
        ("blog", "acct:blog@market.example.coop", None),
        ("blog", "acct:instance@blog.example.coop", None),
        ("market", "acct:instance@federation.example.coop", None),
        ("blog", "acct:ada@blog.example.coop", None),
        ("blog", "https://market.example.coop/ap/actors/market", None),
        ("blog", "https://elsewhere.example/users/blog", None),
    ],
)
def test_webfinger_resolves_only_actors_of_its_host(
    app: str, resource: str, expected: str | None
) -> None:
    assert documents.find_webfinger_actor(make_settings(), app, resource) == expected


def test_webfinger_host_includes_the_port_when_the_base_url_has_one() -> None:
    settings = make_settings(port=8001)
    assert documents.find_webfinger_actor(settings, "blog", "acct:blog@blog.example.coop:8001")
    assert documents.find_webfinger_actor(settings, "blog", "acct:blog@blog.example.coop") is None


@pytest.mark.parametrize(
    "resource", [None, "", "   ", "acct:", "acct:blog", "acct:@host", "acct:blog@", "blog", "a/b@c"]
)
def test_webfinger_refuses_malformed_resources(resource: str | None) -> None:
    with pytest.raises(MalformedResourceError):
        documents.find_webfinger_actor(make_settings(), "blog", resource)


def test_reverse_lookup_of_every_actor_gives_the_same_actor(public_pem: str) -> None:
    settings = make_settings(port=8443)
    for actor in urls.ACTOR_NAMES:
        document = documents.build_actor_document(settings, actor, public_pem, None)
        host = documents.urls.host_of(settings, actor)
        resource = f"acct:{document['preferredUsername']}@{host}"
        found = documents.find_webfinger_actor(settings, urls.host_app(actor), resource)
        assert found is not None
        jrd = documents.build_webfinger_document(settings, found)
        self_link = next(link for link in jrd["links"] if link["rel"] == "self")
        assert self_link["href"] == document["id"]
        assert jrd["subject"] == resource


def test_nodeinfo_links_and_document() -> None:
    settings = make_settings()
    links = documents.build_nodeinfo_links(settings, "market")
    assert links == {
        "links": [
            {
                "rel": "http://nodeinfo.diaspora.software/ns/schema/2.1",
                "href": "https://market.example.coop/nodeinfo/2.1",
            }
        ]
    }
    usage = documents.NodeUsage(
        users_total=7, users_active_month=2, users_active_halfyear=5, local_posts=11
    )
    document = documents.build_nodeinfo_document(settings, "1.2.3", usage)
    assert document["version"] == "2.1"
    assert document["software"]["name"] == "rose-ash"
    assert document["software"]["version"] == "1.2.3"
    assert document["protocols"] == ["activitypub"]
    assert document["services"] == {"inbound": [], "outbound": []}
    assert document["openRegistrations"] is True
    assert document["usage"] == {
        "users": {"total": 7, "activeMonth": 2, "activeHalfyear": 5},
        "localPosts": 11,
    }
    assert isinstance(document["metadata"], dict)


def test_host_meta_points_at_webfinger() -> None:
    settings = make_settings()
    xrd = ElementTree.fromstring(documents.build_host_meta_xml(settings, "cart"))  # noqa: S314 (ours)
    namespace = "{http://docs.oasis-open.org/ns/xri/xrd-1.0}"
    assert xrd.tag == f"{namespace}XRD"
    link = xrd.find(f"{namespace}Link")
    assert link is not None
    assert link.get("rel") == "lrdd"
    assert link.get("template") == (
        "https://cart.example.coop/.well-known/webfinger?resource={uri}"
    )
    assert documents.build_host_meta_json(settings, "cart")["links"][0]["template"] == (
        link.get("template")
    )


def test_collection_documents() -> None:
    url = "https://blog.example.coop/ap/actors/blog/followers"
    root = documents.build_ordered_collection(url, 42)
    assert root == {
        "@context": documents.AS_NAMESPACE,
        "id": url,
        "type": "OrderedCollection",
        "totalItems": 42,
        "first": f"{url}?page=true",
        "last": f"{url}?page=true&min_id=0",
    }
    links = documents.PageLinks(id=f"{url}?page=true", next=f"{url}?page=true&max_id=3")
    page = documents.build_collection_page(url, links, ["a", "b"])
    assert page["type"] == "OrderedCollectionPage"
    assert page["partOf"] == url
    assert page["orderedItems"] == ["a", "b"]
    assert page["next"] == f"{url}?page=true&max_id=3"
    assert "prev" not in page


def test_tombstone_and_contexts() -> None:
    deleted = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    tombstone = documents.build_tombstone("https://x.example/ap/objects/1", "Note", deleted)
    assert tombstone["type"] == "Tombstone"
    assert tombstone["formerType"] == "Note"
    assert tombstone["deleted"] == "2025-01-02T03:04:05Z"
    assert documents.with_context({"id": "x"}) == {"@context": documents.AS_NAMESPACE, "id": "x"}
    assert documents.with_context({"@context": "c", "id": "x"})["@context"] == "c"
    assert documents.without_context({"@context": "c", "id": "x"}) == {"id": "x"}


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"url": "https://blog.example.coop/p/1/"}, "https://blog.example.coop/p/1/"),
        ({"url": {"type": "Link", "href": "https://b.example/x"}}, "https://b.example/x"),
        ({"url": [{"type": "Link", "href": "https://b.example/y"}]}, "https://b.example/y"),
        ({"url": "javascript:alert(1)"}, None),
        ({}, None),
    ],
)
def test_object_page(document: dict[str, object], expected: str | None) -> None:
    assert documents.get_object_page(document) == expected


def test_icon_is_a_valid_png() -> None:
    png = documents.build_icon_png("blog", size=16)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    length, kind = struct.unpack(">I4s", png[8:16])
    width, height = struct.unpack(">II", png[16:24])
    assert (kind, length, width, height) == (b"IHDR", 13, 16, 16)
    idat_length = struct.unpack(">I", png[33:37])[0]
    pixels = zlib.decompress(png[41 : 41 + idat_length])
    assert len(pixels) == 16 * (1 + 16 * 3)
    assert pixels[1 + 8 * 3 + 8 * 49 : 1 + 8 * 3 + 8 * 49 + 3] == bytes(
        documents.ICON_COLOURS["blog"]
    )
    assert png.endswith(b"IEND\xaeB`\x82")
