"""The JSON (and XRD) documents we serve: actors, WebFinger, NodeInfo, host-meta, collections.

Pure builders: every function here takes settings and plain values and returns a document;
nothing reads the database or the request (shared.infrastructure.activitypub.routes does).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit
from xml.sax.saxutils import quoteattr

from shared.config import APP_LABELS, Settings
from shared.infrastructure.activitypub import urls

AS_NAMESPACE = "https://www.w3.org/ns/activitystreams"
SECURITY_CONTEXT = "https://w3id.org/security/v1"
PUBLIC_ADDRESS = "https://www.w3.org/ns/activitystreams#Public"
# What Mastodon adds to an actor's context for the terms it reads beyond AS and security v1.
ACTOR_CONTEXT: list[Any] = [
    AS_NAMESPACE,
    SECURITY_CONTEXT,
    {
        "manuallyApprovesFollowers": "as:manuallyApprovesFollowers",
        "toot": "http://joinmastodon.org/ns#",
        "discoverable": "toot:discoverable",
        "indexable": "toot:indexable",
        "schema": "http://schema.org#",
        "PropertyValue": "schema:PropertyValue",
        "value": "schema:value",
    },
]

ACTIVITY_JSON = "application/activity+json"
LD_JSON = f'application/ld+json; profile="{AS_NAMESPACE}"'
JRD_JSON = "application/jrd+json"
XRD_XML = "application/xrd+xml; charset=utf-8"
NODEINFO_SCHEMA = "http://nodeinfo.diaspora.software/ns/schema/2.1"
NODEINFO_JSON = f'application/json; profile="{NODEINFO_SCHEMA}#"'
PROFILE_PAGE_REL = "http://webfinger.net/rel/profile-page"
SOFTWARE_NAME = "rose-ash"

# What each actor says about itself (plain text; the actor document wraps it in a paragraph).
ACTOR_SUMMARIES: dict[str, str] = {
    "blog": "Posts and pages from the co-op: news, stories and what we are up to.",
    "market": "Products from the co-op's markets, as they are added.",
    "cart": "The co-op's shop checkout.",
    "events": "Events, calendars and tickets of the co-op.",
    "federation": "The co-op's social hub, where members follow and talk to the fediverse.",
    "account": "Members' accounts of the co-op.",
    urls.INSTANCE_ACTOR: "The Rose Ash server itself: it signs the requests this server makes.",
}
# The colour of each actor's generated avatar (RGB).
ICON_COLOURS: dict[str, tuple[int, int, int]] = {
    "blog": (0xB8, 0x32, 0x4F),
    "market": (0x2F, 0x7D, 0x4A),
    "cart": (0xC2, 0x7C, 0x0E),
    "events": (0x2B, 0x5C, 0xA8),
    "federation": (0x6D, 0x3F, 0xA8),
    "account": (0x3A, 0x6E, 0x73),
    urls.INSTANCE_ACTOR: (0x55, 0x55, 0x55),
}
ICON_SIZE = 128


class MalformedResourceError(ValueError):
    """A WebFinger ``resource`` that is missing or not an acct: URI or http(s) URL (400)."""


@dataclass(frozen=True)
class NodeUsage:
    users_total: int
    users_active_month: int
    users_active_halfyear: int
    local_posts: int


@dataclass(frozen=True)
class PageLinks:
    """Where a collection page sits: its own id and its neighbours (None: no such page)."""

    id: str
    next: str | None = None
    prev: str | None = None


def format_datetime(value: datetime) -> str:
    """An xsd:dateTime in UTC with a ``Z``, as Mastodon writes them."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def get_display_name(actor: str) -> str:
    if actor == urls.INSTANCE_ACTOR:
        return "Rose Ash"
    return f"Rose Ash {APP_LABELS.get(actor, actor.title())}"


def get_actor_type(actor: str) -> str:
    return "Application" if actor == urls.INSTANCE_ACTOR else "Service"


def icon_url(settings: Settings, actor: str) -> str:
    return f"{urls.base_url(settings, actor)}/ap/icons/{actor}.png"


def profile_url(settings: Settings, actor: str) -> str:
    """The HTML profile: the actor's own URL, which answers browsers with a page."""
    return urls.actor_url(settings, actor)


def list_host_actors(app: str) -> tuple[str, ...]:
    """The actors whose host is ``app``'s: its own, and on federation's the instance actor."""
    if app == urls.INSTANCE_HOST_APP:
        return (app, urls.INSTANCE_ACTOR)
    return (app,)


def build_actor_document(
    settings: Settings, actor: str, public_key_pem: str, published: datetime | None
) -> dict[str, Any]:
    """The actor ``actor`` (an app's name or INSTANCE_ACTOR) as ActivityPub serves it."""
    actor_id = urls.actor_url(settings, actor)
    document: dict[str, Any] = {
        "@context": ACTOR_CONTEXT,
        "id": actor_id,
        "type": get_actor_type(actor),
        "preferredUsername": actor,
        "name": get_display_name(actor),
        "summary": f"<p>{ACTOR_SUMMARIES.get(actor, '')}</p>",
        "url": profile_url(settings, actor),
        "icon": {"type": "Image", "mediaType": "image/png", "url": icon_url(settings, actor)},
        "inbox": urls.inbox_url(settings, actor),
        "outbox": urls.outbox_url(settings, actor),
        "followers": urls.followers_url(settings, actor),
        "following": urls.following_url(settings, actor),
        "endpoints": {"sharedInbox": urls.shared_inbox_url(settings, actor)},
        "publicKey": {
            "id": urls.key_id(settings, actor),
            "owner": actor_id,
            "publicKeyPem": public_key_pem,
        },
        "manuallyApprovesFollowers": False,
        "discoverable": True,
        "indexable": True,
    }
    if published is not None:
        document["published"] = format_datetime(published)
    return document


def build_webfinger_document(settings: Settings, actor: str) -> dict[str, Any]:
    """The JRD for ``acct:<actor>@<host>``."""
    actor_id = urls.actor_url(settings, actor)
    profile = profile_url(settings, actor)
    aliases = [actor_id] if profile == actor_id else [actor_id, profile]
    return {
        "subject": f"acct:{urls.handle(settings, actor)}",
        "aliases": aliases,
        "links": [
            {"rel": "self", "type": ACTIVITY_JSON, "href": actor_id},
            {"rel": PROFILE_PAGE_REL, "type": "text/html", "href": profile},
        ],
    }


def find_webfinger_actor(settings: Settings, app: str, resource: str | None) -> str | None:
    """The actor on ``app``'s host that ``resource`` names (``acct:name@host``, bare
    ``name@host``, or the actor's URL), None when it names none of ours; raises
    MalformedResourceError when ``resource`` is missing or not one of those forms."""
    if not resource or not resource.strip():
        raise MalformedResourceError("the resource parameter is required")
    resource = resource.strip()
    scheme = resource.split(":", 1)[0].lower() if ":" in resource else ""
    if scheme in ("http", "https"):
        actor = urls.local_actor_of(settings, resource)
        return actor if actor in list_host_actors(app) else None
    account = resource[len("acct:") :] if scheme == "acct" else resource
    account = account.removeprefix("@")
    name, at, host = account.rpartition("@")
    if not at or not name or not host or "@" in name or "/" in account:
        raise MalformedResourceError("the resource must be acct:name@host or an actor's URL")
    for actor in list_host_actors(app):
        if name.lower() == actor and host.lower() == urls.host_of(settings, actor).lower():
            return actor
    return None


def build_nodeinfo_links(settings: Settings, app: str) -> dict[str, Any]:
    """/.well-known/nodeinfo: where this host's NodeInfo 2.1 document is."""
    href = f"{settings.url_of(app)}/nodeinfo/2.1"
    return {"links": [{"rel": NODEINFO_SCHEMA, "href": href}]}


def build_nodeinfo_document(settings: Settings, version: str, usage: NodeUsage) -> dict[str, Any]:
    """The NodeInfo 2.1 document (the same on every host of the platform)."""
    return {
        "version": "2.1",
        "software": {
            "name": SOFTWARE_NAME,
            "version": version,
            "homepage": settings.url_of("blog"),
        },
        "protocols": ["activitypub"],
        "services": {"inbound": [], "outbound": []},
        "openRegistrations": settings.features.registration_open,
        "usage": {
            "users": {
                "total": usage.users_total,
                "activeMonth": usage.users_active_month,
                "activeHalfyear": usage.users_active_halfyear,
            },
            "localPosts": usage.local_posts,
        },
        "metadata": {
            "nodeName": "Rose Ash",
            "nodeDescription": "The platform of a cooperative: blog, market, events and more.",
            "actors": {actor: urls.actor_url(settings, actor) for actor in urls.ACTOR_NAMES},
        },
    }


def webfinger_template(settings: Settings, app: str) -> str:
    return f"{settings.url_of(app)}/.well-known/webfinger?resource={{uri}}"


def build_host_meta_xml(settings: Settings, app: str) -> str:
    """/.well-known/host-meta: the XRD that points at WebFinger (RFC 6415)."""
    template = quoteattr(webfinger_template(settings, app))
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<XRD xmlns="http://docs.oasis-open.org/ns/xri/xrd-1.0">\n'
        f'  <Link rel="lrdd" type="{JRD_JSON}" template={template}/>\n'
        "</XRD>\n"
    )


def build_host_meta_json(settings: Settings, app: str) -> dict[str, Any]:
    return {
        "links": [{"rel": "lrdd", "type": JRD_JSON, "template": webfinger_template(settings, app)}]
    }


def first_page_url(collection_url: str) -> str:
    return f"{collection_url}?page=true"


def page_url(collection_url: str, *, max_id: int | None = None, min_id: int | None = None) -> str:
    """A keyset page: ``max_id`` gives the items older than it, ``min_id`` the newer ones."""
    url = first_page_url(collection_url)
    if max_id is not None:
        url += f"&max_id={max_id}"
    if min_id is not None:
        url += f"&min_id={min_id}"
    return url


def build_ordered_collection(collection_url: str, total_items: int) -> dict[str, Any]:
    """A paged collection's root: its size and where its first and last pages are."""
    return {
        "@context": AS_NAMESPACE,
        "id": collection_url,
        "type": "OrderedCollection",
        "totalItems": total_items,
        "first": first_page_url(collection_url),
        "last": page_url(collection_url, min_id=0),
    }


def build_collection_page(
    collection_url: str, links: PageLinks, items: Sequence[Any]
) -> dict[str, Any]:
    """One OrderedCollectionPage (items newest first)."""
    document: dict[str, Any] = {
        "@context": AS_NAMESPACE,
        "id": links.id,
        "type": "OrderedCollectionPage",
        "partOf": collection_url,
        "orderedItems": list(items),
    }
    if links.next is not None:
        document["next"] = links.next
    if links.prev is not None:
        document["prev"] = links.prev
    return document


def without_context(document: dict[str, Any]) -> dict[str, Any]:
    """An embedded document (a collection item): the page's context covers it."""
    return {key: value for key, value in document.items() if key != "@context"}


def with_context(document: dict[str, Any]) -> dict[str, Any]:
    """A top-level document: an ``@context`` first, unless it already has one."""
    if "@context" in document:
        return document
    return {"@context": AS_NAMESPACE, **document}


def build_tombstone(uri: str, former_type: str, deleted: datetime | None) -> dict[str, Any]:
    """What a deleted object's URL serves (with 410 Gone)."""
    document: dict[str, Any] = {
        "@context": AS_NAMESPACE,
        "id": uri,
        "type": "Tombstone",
        "formerType": former_type,
    }
    if deleted is not None:
        document["deleted"] = format_datetime(deleted)
    return document


def get_object_page(document: dict[str, Any]) -> str | None:
    """The HTML page of an object (its ``url``: a string, a Link or a list of them)."""
    value = document.get("url")
    candidates = value if isinstance(value, list) else [value]
    for candidate in candidates:
        href = candidate.get("href") if isinstance(candidate, dict) else candidate
        if isinstance(href, str) and urlsplit(href).scheme in ("http", "https"):
            return href
    return None


def build_icon_png(actor: str, size: int = ICON_SIZE) -> bytes:
    """The actor's avatar: a disc of its colour on white, as a PNG (no image library)."""
    colour = bytes(ICON_COLOURS.get(actor, ICON_COLOURS[urls.INSTANCE_ACTOR]))
    white = b"\xff\xff\xff"
    centre = (size - 1) / 2
    radius_squared = (size * 0.45) ** 2
    rows = bytearray()
    for y in range(size):
        rows.append(0)  # filter: none
        for x in range(size):
            inside = (x - centre) ** 2 + (y - centre) ** 2 <= radius_squared
            rows += colour if inside else white
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(bytes(rows), 9))
        + png_chunk(b"IEND", b"")
    )


def png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)
