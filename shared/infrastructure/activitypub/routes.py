"""The GET endpoints every app serves: actors, WebFinger, NodeInfo, host-meta, collections.

    /ap/actors/<name>                  the actor (JSON by Accept, else its HTML profile page)
    /ap/actors/<name>/outbox|followers|following   paged OrderedCollections
    /ap/objects/<id>, /ap/activities/<id>          what we published (410 Tombstone if deleted)
    /ap/icons/<name>.png               the actor's avatar
    /.well-known/webfinger, /.well-known/nodeinfo, /nodeinfo/2.1, /.well-known/host-meta[.json]

Each app answers only for the actors on its own host (its own; on federation's host also the
instance actor); any other name is 404. Every GET is served unsigned (no authorized fetch).

The actor document and the WebFinger answers change only with the keypair, so each app keeps
them encoded in memory: after the first request they cost no database query. An actor
document is kept only once the keys module holds its keypair (a keypair created by this very
request may still roll back) and is rebuilt when that keypair changes. ``ActivityPubFastPath``
answers those kept documents in front of Quart, before the request hooks run (session,
sign-in check, CSRF, device cookie): they concern no visitor, and a JSON document set with
``Cache-Control: public`` must not carry a cookie.
"""

from __future__ import annotations

import functools
import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal
from urllib.parse import parse_qs

from quart import Blueprint, Quart, Response, current_app, redirect, render_template, request
from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import APP_LABELS, Settings
from shared.infrastructure.activitypub import documents, keys, urls
from shared.infrastructure.asgi import (
    ASGIApp,
    HeaderList,
    Receive,
    Scope,
    Send,
    encode_security_headers,
    header_of,
    install_in_front,
    send_answer,
)
from shared.infrastructure.context import get_session, get_settings, get_state
from shared.infrastructure.errors import render_error
from shared.services.social import collections
from shared.services.social.collections import Page, PageQuery

activitypub_bp = Blueprint("activitypub", __name__)

Representation = Literal["activity", "ld", "html"]
CollectionKind = Literal["outbox", "followers", "following"]
CACHE_EXTENSION_KEY = "rose_ash_activitypub_documents"
DOCUMENT_CACHE_CONTROL = "max-age=300, public"
ICON_CACHE_CONTROL = "max-age=86400, public"
PROFILE_RECENT_POSTS = 10  # the newest posts an actor's HTML profile lists
CORS_ANY = {"Access-Control-Allow-Origin": "*"}
FALLBACK_VERSION = "0.1.0"
ACTOR_PATH = re.compile(r"^/ap/actors/([a-z]+)$")
WEBFINGER_PATH = "/.well-known/webfinger"
HTML_TYPES = ("text/html", "application/xhtml+xml")
JSON_TYPES: dict[str, Representation] = {
    "application/activity+json": "activity",
    "application/ld+json": "ld",
    "application/json": "activity",
}
CONTENT_TYPES: dict[Representation, str] = {
    "activity": documents.ACTIVITY_JSON,
    "ld": documents.LD_JSON,
    "html": "text/html; charset=utf-8",
}


@dataclass
class DocumentCache:
    """An app's encoded documents: actor bodies with the keypair they were built from."""

    actors: dict[str, tuple[keys.ActorKeypair, bytes]] = field(default_factory=dict)
    webfinger: dict[str, bytes] = field(default_factory=dict)
    icons: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class ActorProfile:
    """What the HTML profile page shows."""

    name: str
    handle: str
    summary: str
    icon_url: str
    followers: int
    following: int
    posts: int
    home_url: str
    home_label: str
    outbox_url: str
    recent: list[collections.RecentPost]


def get_document_cache() -> DocumentCache:
    cache: DocumentCache | None = current_app.extensions.get(CACHE_EXTENSION_KEY)
    if cache is None:
        cache = current_app.extensions[CACHE_EXTENSION_KEY] = DocumentCache()
    return cache


@functools.lru_cache(maxsize=512)
def choose_representation(accept: str) -> Representation:
    """HTML only for a client that asks for HTML by name (browsers do) and prefers it to JSON;
    JSON (activity+json, or ld+json when asked for) otherwise: servers and libraries that
    send ``*/*`` or no Accept at all (aiohttp, curl, some fediverse software) get the document."""
    best_json: tuple[float, int, Representation] | None = None
    html_q = 0.0
    for position, part in enumerate(accept.split(",")):
        media, *params = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        media = media.lower()
        if media in JSON_TYPES and quality > 0:
            candidate = (quality, -position, JSON_TYPES[media])
            best_json = candidate if best_json is None else max(best_json, candidate)
        elif media in HTML_TYPES:
            html_q = max(html_q, quality)
    if html_q > 0 and (best_json is None or html_q > best_json[0]):
        return "html"
    return best_json[2] if best_json is not None else "activity"


def get_representation() -> Representation:
    return choose_representation(request.headers.get("Accept", ""))


def encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def json_response(
    body: bytes,
    content_type: str,
    *,
    status: int = 200,
    cache_control: str | None = None,
    vary: bool = True,
) -> Response:
    headers = dict(CORS_ANY)
    if vary:
        headers["Vary"] = "Accept"
    if cache_control is not None:
        headers["Cache-Control"] = cache_control
    return Response(body, status=status, content_type=content_type, headers=headers)


async def error_response(status: int, message: str) -> Response | tuple[Response | str, int]:
    """A JSON error for ActivityPub clients, the platform's error page for browsers."""
    representation = get_representation()
    if representation == "html":
        return await render_error(status, message)
    body = encode({"error": message, "status": status})
    return json_response(body, CONTENT_TYPES[representation], status=status)


def is_served_here(actor: str) -> bool:
    """Whether ``actor`` is one of ours and lives on this app's host."""
    return actor in urls.ACTOR_NAMES and urls.host_app(actor) == get_state().name


async def get_actor_body(settings: Settings, actor: str) -> bytes:
    """The encoded actor document, from this app's memory (no session opened) once the keypair
    is settled."""
    cache = get_document_cache()
    held = keys.get_held_keypair(settings)
    entry = cache.actors.get(actor)
    if entry is not None and held is not None and entry[0] is held:
        return entry[1]
    session = get_session()
    keypair = await keys.get_keypair(session, settings)
    published = await collections.get_keypair_created_at(session, keypair.id)
    body = encode(
        documents.build_actor_document(settings, actor, keypair.public_key_pem, published)
    )
    if keys.get_held_keypair(settings) is keypair:
        cache.actors[actor] = (keypair, body)
    return body


@activitypub_bp.get("/ap/actors/<name>")
async def get_actor(name: str) -> Any:
    if not is_served_here(name):
        return await error_response(404, "There is no such actor here.")
    representation = get_representation()
    if representation == "html":
        page = await render_template("ap/profile.html", profile=await get_profile(name))
        response = Response(page)
        response.headers["Vary"] = "Accept"
        return response
    body = await get_actor_body(get_settings(), name)
    return json_response(body, CONTENT_TYPES[representation], cache_control=DOCUMENT_CACHE_CONTROL)


async def get_profile(actor: str) -> ActorProfile:
    settings = get_settings()
    session = get_session()
    home = urls.host_app(actor)
    return ActorProfile(
        name=documents.get_display_name(actor),
        handle=urls.handle(settings, actor),
        summary=documents.ACTOR_SUMMARIES.get(actor, ""),
        icon_url=documents.icon_url(settings, actor),
        followers=await collections.count_followers(session, actor),
        following=await collections.count_following(session, actor),
        posts=await collections.count_posts(session, actor),
        home_url=settings.url_of(home) + "/",
        home_label=f"{APP_LABELS.get(home, home)} home",
        outbox_url=urls.outbox_url(settings, actor),
        recent=await collections.list_recent_posts(session, actor, PROFILE_RECENT_POSTS),
    )


@activitypub_bp.get("/ap/icons/<name>.png")
async def get_icon(name: str) -> Any:
    if not is_served_here(name):
        return await error_response(404, "There is no such actor here.")
    return icon_response(name)


@activitypub_bp.get("/favicon.ico")
async def get_favicon() -> Response:
    """The app's own actor icon (a PNG: every browser takes one at this path), so that no page
    makes the browser log a 404 for its favicon (base.html links it too)."""
    return icon_response(get_state().name)


def icon_response(actor: str) -> Response:
    cache = get_document_cache()
    body = cache.icons.get(actor)
    if body is None:
        body = cache.icons[actor] = documents.build_icon_png(actor)
    headers = {"Cache-Control": ICON_CACHE_CONTROL, **CORS_ANY}
    return Response(body, content_type="image/png", headers=headers)


# ---------------------------------------------------------------------------------------------
# Collections


def parse_page_query(size: int) -> PageQuery:
    """The keyset bounds of ``?page=true&max_id=..|min_id=..``; raises ValueError if bad."""
    max_id = request.args.get("max_id")
    min_id = request.args.get("min_id")
    if max_id is not None and min_id is not None:
        raise ValueError("give max_id or min_id, not both")
    return PageQuery(
        size=size,
        max_id=int(max_id) if max_id is not None else None,
        min_id=int(min_id) if min_id is not None else None,
    )


def collection_url(settings: Settings, actor: str, kind: CollectionKind) -> str:
    if kind == "outbox":
        return urls.outbox_url(settings, actor)
    if kind == "followers":
        return urls.followers_url(settings, actor)
    return urls.following_url(settings, actor)


async def count_collection(session: AsyncSession, actor: str, kind: CollectionKind) -> int:
    if kind == "outbox":
        return await collections.count_outbox(session, actor)
    if kind == "followers":
        return await collections.count_followers(session, actor)
    return await collections.count_following(session, actor)


async def list_collection_items(
    session: AsyncSession, actor: str, kind: CollectionKind, query: PageQuery
) -> tuple[Page[Any], list[Any]]:
    """A page of the collection, and its items as the page document lists them."""
    if kind == "outbox":
        outbox = await collections.list_outbox_page(session, actor, query)
        return outbox, [documents.without_context(item) for item in outbox.items]
    if kind == "followers":
        followers = await collections.list_followers_page(session, actor, query)
        return followers, list(followers.items)
    following = await collections.list_following_page(session, actor, query)
    return following, list(following.items)


def build_page_links(url: str, query: PageQuery, page: Page[Any]) -> documents.PageLinks:
    own = documents.page_url(url, max_id=query.max_id, min_id=query.min_id)
    older = (
        documents.page_url(url, max_id=page.oldest_id)
        if page.has_older and page.oldest_id is not None
        else None
    )
    newer = (
        documents.page_url(url, min_id=page.newest_id)
        if page.has_newer and page.newest_id is not None
        else None
    )
    return documents.PageLinks(id=own, next=older, prev=newer)


async def serve_collection(name: str, kind: CollectionKind) -> Any:
    if not is_served_here(name):
        return await error_response(404, "There is no such actor here.")
    settings = get_settings()
    session = get_session()
    url = collection_url(settings, name, kind)
    representation = get_representation()
    content_type = CONTENT_TYPES["activity" if representation == "html" else representation]
    if "page" not in request.args:
        total = await count_collection(session, name, kind)
        body = encode(documents.build_ordered_collection(url, total))
        return json_response(body, content_type)
    try:
        query = parse_page_query(settings.activitypub.collection_page_size)
    except ValueError:
        return await error_response(400, "max_id and min_id must be whole numbers.")
    page, items = await list_collection_items(session, name, kind, query)
    links = build_page_links(url, query, page)
    return json_response(encode(documents.build_collection_page(url, links, items)), content_type)


@activitypub_bp.get("/ap/actors/<name>/outbox")
async def get_outbox(name: str) -> Any:
    return await serve_collection(name, "outbox")


@activitypub_bp.get("/ap/actors/<name>/followers")
async def get_followers(name: str) -> Any:
    return await serve_collection(name, "followers")


@activitypub_bp.get("/ap/actors/<name>/following")
async def get_following(name: str) -> Any:
    return await serve_collection(name, "following")


# ---------------------------------------------------------------------------------------------
# Objects and activities


@activitypub_bp.get("/ap/objects/<object_id>")
async def get_object(object_id: str) -> Any:
    settings = get_settings()
    uri = f"{settings.url_of(get_state().name)}/ap/objects/{object_id}"
    stored = await collections.get_object(get_session(), uri)
    if stored is None:
        return await error_response(404, "There is no such object here.")
    representation = get_representation()
    if stored.deleted_at is not None:
        if representation == "html":
            return await render_error(410, "This has been deleted.")
        tombstone = documents.build_tombstone(uri, stored.object_type, stored.deleted_at)
        return json_response(encode(tombstone), CONTENT_TYPES[representation], status=410)
    page = documents.get_object_page(stored.document)
    if representation == "html" and page is not None:
        response = redirect(page)
        response.headers["Vary"] = "Accept"
        return response
    content_type = CONTENT_TYPES["activity" if representation == "html" else representation]
    return json_response(encode(documents.with_context(stored.document)), content_type)


@activitypub_bp.get("/ap/activities/<activity_id>")
async def get_activity(activity_id: str) -> Any:
    settings = get_settings()
    uri = f"{settings.url_of(get_state().name)}/ap/activities/{activity_id}"
    document = await collections.get_public_activity(get_session(), uri)
    if document is None:
        return await error_response(404, "There is no such activity here.")
    representation = get_representation()
    content_type = CONTENT_TYPES["activity" if representation == "html" else representation]
    return json_response(encode(documents.with_context(document)), content_type)


# ---------------------------------------------------------------------------------------------
# Discovery: WebFinger, NodeInfo, host-meta


def jrd_response(body: bytes, status: int = 200, *, cacheable: bool = False) -> Response:
    headers = dict(CORS_ANY)
    if cacheable:
        headers["Cache-Control"] = DOCUMENT_CACHE_CONTROL
    return Response(body, status=status, content_type=documents.JRD_JSON, headers=headers)


@activitypub_bp.get("/.well-known/webfinger")
async def get_webfinger() -> Response:
    settings = get_settings()
    try:
        actor = documents.find_webfinger_actor(
            settings, get_state().name, request.args.get("resource")
        )
    except documents.MalformedResourceError as exc:
        return jrd_response(encode({"error": str(exc)}), 400)
    if actor is None:
        return jrd_response(encode({"error": "no such account here"}), 404)
    cache = get_document_cache()
    body = cache.webfinger.get(actor)
    if body is None:
        body = cache.webfinger[actor] = encode(documents.build_webfinger_document(settings, actor))
    return jrd_response(body, cacheable=True)


@functools.cache
def get_software_version() -> str:
    try:
        return version("rose-ash")
    except PackageNotFoundError:
        return FALLBACK_VERSION


@activitypub_bp.get("/.well-known/nodeinfo")
async def get_nodeinfo_links() -> Response:
    body = encode(documents.build_nodeinfo_links(get_settings(), get_state().name))
    headers = {"Cache-Control": DOCUMENT_CACHE_CONTROL, **CORS_ANY}
    return Response(body, content_type="application/json", headers=headers)


@activitypub_bp.get("/nodeinfo/2.1")
async def get_nodeinfo() -> Response:
    session = get_session()
    now = datetime.now(UTC)
    usage = documents.NodeUsage(
        users_total=await collections.count_users(session),
        users_active_month=await collections.count_users(
            session, active_since=collections.months_ago(now, 1)
        ),
        users_active_halfyear=await collections.count_users(
            session, active_since=collections.months_ago(now, 6)
        ),
        local_posts=await collections.count_local_posts(session),
    )
    body = encode(documents.build_nodeinfo_document(get_settings(), get_software_version(), usage))
    headers = {"Cache-Control": DOCUMENT_CACHE_CONTROL, **CORS_ANY}
    return Response(body, content_type=documents.NODEINFO_JSON, headers=headers)


@activitypub_bp.get("/.well-known/host-meta")
async def get_host_meta() -> Response:
    body = documents.build_host_meta_xml(get_settings(), get_state().name)
    headers = {"Cache-Control": DOCUMENT_CACHE_CONTROL, **CORS_ANY}
    return Response(body, content_type=documents.XRD_XML, headers=headers)


@activitypub_bp.get("/.well-known/host-meta.json")
async def get_host_meta_json() -> Response:
    body = encode(documents.build_host_meta_json(get_settings(), get_state().name))
    return jrd_response(body, cacheable=True)


# ---------------------------------------------------------------------------------------------
# The fast path: kept documents answered before Quart's request stack


class ActivityPubFastPath:
    """ASGI middleware: ``app.asgi_app = ActivityPubFastPath(app, app.asgi_app)``. Answers a
    GET/HEAD for an actor document (JSON asked for) or a WebFinger resource from what this app
    already keeps; anything else, and anything not kept yet, goes on to Quart unchanged."""

    def __init__(self, app: Quart, inner: ASGIApp) -> None:
        self.app = app
        self.inner = inner
        state = get_state(app)
        self.name = state.name
        self.settings = state.settings
        self.static_headers = encode_security_headers(self.settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            found = self.find_kept(scope)
            if found is not None:
                await self.send_kept(scope, *found, send)
                return
        await self.inner(scope, receive, send)

    def find_kept(self, scope: Scope) -> tuple[bytes, HeaderList] | None:
        """The kept body and its own headers for this request, or None."""
        cache: DocumentCache | None = self.app.extensions.get(CACHE_EXTENSION_KEY)
        if cache is None:
            return None
        path: str = scope["path"]
        if path == WEBFINGER_PATH:
            return self.find_webfinger(cache, scope)
        match = ACTOR_PATH.match(path)
        if match is None:
            return None
        entry = cache.actors.get(match.group(1))
        held = keys.get_held_keypair(self.settings)
        if entry is None or held is None or entry[0] is not held:
            return None
        representation = choose_representation(header_of(scope, b"accept"))
        if representation == "html":
            return None
        return entry[1], [
            (b"content-type", CONTENT_TYPES[representation].encode()),
            (b"vary", b"Accept"),
            (b"cache-control", DOCUMENT_CACHE_CONTROL.encode()),
        ]

    def find_webfinger(self, cache: DocumentCache, scope: Scope) -> tuple[bytes, HeaderList] | None:
        query = bytes(scope.get("query_string", b"")).decode("latin-1")
        resources = parse_qs(query).get("resource")
        if not resources:
            return None
        try:
            actor = documents.find_webfinger_actor(self.settings, self.name, resources[0])
        except documents.MalformedResourceError:
            return None
        body = cache.webfinger.get(actor) if actor is not None else None
        if body is None:
            return None
        return body, [
            (b"content-type", documents.JRD_JSON.encode()),
            (b"cache-control", DOCUMENT_CACHE_CONTROL.encode()),
        ]

    async def send_kept(
        self, scope: Scope, body: bytes, own_headers: HeaderList, send: Send
    ) -> None:
        headers = [
            *own_headers,
            (b"content-length", str(len(body)).encode()),
            (b"access-control-allow-origin", b"*"),
            *self.static_headers,
        ]
        await send_answer(
            scope,
            send,
            app_name=self.name,
            status=200,
            headers=headers,
            body=body,
            started=time.perf_counter(),
        )


def install_activitypub_fast_path(app: Quart) -> None:
    """Wrap the app so kept actor documents and WebFinger answers skip the request stack.
    Install it last (outermost): nothing before it needs to see these requests."""
    install_in_front(app, ActivityPubFastPath)
