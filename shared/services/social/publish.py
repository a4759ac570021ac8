"""Publishing: ``emit_activity()`` into the transactional outbox, and ``publish()`` for the
domain issues (a Note, Article or Event created, updated or deleted by one app's actor).

Everything here runs in the caller's transaction and commits with the domain change it
announces: a rolled-back write publishes nothing, and a committed one is never lost (the
EventProcessor in shared.services.social.delivery delivers it after commit). The
``NOTIFY ap_activities`` sent here is queued by PostgreSQL until commit, so workers wake only
for activities that exist.

Rows with visibility "internal" are the internal event bus: they are never delivered, but
handed to the async handlers registered with ``register_internal_handler``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import Settings
from shared.infrastructure.activitypub import urls
from shared.infrastructure.activitypub.documents import AS_NAMESPACE, PUBLIC_ADDRESS
from shared.models.social.outbox import ApActivity, ApObject

# The channel workers LISTEN on; notified (at commit) for every emitted activity.
ACTIVITIES_CHANNEL = "ap_activities"
PUBLIC = PUBLIC_ADDRESS
AS_CONTEXT = AS_NAMESPACE
# Mobilizon's terms for events (FEP-8a8e): timezone and joinMode are not in ActivityStreams.
EVENT_CONTEXT: dict[str, Any] = {
    "mz": "https://joinmobilizon.org/ns#",
    "sc": "http://schema.org#",
    "timezone": {"@id": "mz:timezone", "@type": "sc:Text"},
    "joinMode": {"@id": "mz:joinMode", "@type": "mz:joinModeType"},
}
VISIBILITIES = ("public", "unlisted", "followers", "direct", "internal")
Visibility = Literal["public", "unlisted", "followers", "direct", "internal"]
ObjectType = Literal["Note", "Article", "Event"]
Verb = Literal["Create", "Update", "Delete"]
InternalHandler = Callable[[AsyncSession, Settings, dict[str, Any]], Awaitable[None]]

_internal_handlers: dict[str, list[InternalHandler]] = {}


@dataclass(frozen=True)
class EmittedActivity:
    """An activity row as written to the outbox (the caller's transaction may still roll
    it back)."""

    id: int
    uri: str
    app: str
    activity_type: str
    visibility: str
    document: dict[str, Any]


@dataclass(frozen=True)
class Place:
    """Where an event happens (an ActivityStreams Place)."""

    name: str
    address: str | None = None
    latitude: float | None = None
    longitude: float | None = None


@dataclass(frozen=True)
class PublishableObject:
    """What a domain publishes. Article and Event need ``name`` and ``summary``: Mastodon
    shows them as name + summary + a link to ``url`` (which defaults to the object's id).
    A Note's ``summary`` is a content warning on Mastodon, so leave it None unless meant.
    ``uri`` None creates a new object id; Update and Delete need the id published before."""

    object_type: ObjectType
    content: str = ""
    name: str | None = None
    summary: str | None = None
    url: str | None = None
    published: datetime | None = None
    updated: datetime | None = None
    uri: str | None = None
    # Event only (FEP-8a8e)
    start_time: datetime | None = None
    end_time: datetime | None = None
    location: Place | None = None
    timezone: str | None = None
    join_mode: str | None = None  # Mobilizon: free | restricted | invite | external
    extra: dict[str, Any] = field(default_factory=dict)  # further properties, merged last

    def __post_init__(self) -> None:
        check_publishable(self)


def check_publishable(obj: PublishableObject) -> None:
    """Refuse objects other servers would show badly (raise ValueError)."""
    if obj.object_type not in ("Note", "Article", "Event"):
        raise ValueError(f"cannot publish a {obj.object_type!r}")
    if obj.object_type in ("Article", "Event") and (not obj.name or obj.summary is None):
        raise ValueError(f"an {obj.object_type} needs a name and a summary")
    if obj.object_type == "Event" and obj.start_time is None:
        raise ValueError("an Event needs a start_time")
    for moment in (obj.published, obj.updated, obj.start_time, obj.end_time):
        if moment is not None and moment.tzinfo is None:
            raise ValueError("times must be timezone-aware")


def format_time(moment: datetime) -> str:
    """xsd:dateTime in UTC with a Z, as every server parses it."""
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def register_internal_handler(activity_type: str, handler: InternalHandler) -> None:
    """Run ``handler(session, settings, document)`` for each internal activity of this type.

    Handlers run in the processor's transaction (a failure rolls back all of them for that
    row and retries it on the delivery schedule), so they must be idempotent."""
    handlers = _internal_handlers.setdefault(activity_type, [])
    if handler not in handlers:
        handlers.append(handler)


def unregister_internal_handler(activity_type: str, handler: InternalHandler) -> None:
    handlers = _internal_handlers.get(activity_type, [])
    if handler in handlers:
        handlers.remove(handler)


def get_internal_handlers(activity_type: str) -> tuple[InternalHandler, ...]:
    return tuple(_internal_handlers.get(activity_type, ()))


def object_uri_of(activity: dict[str, Any]) -> str | None:
    target = activity.get("object")
    if isinstance(target, str):
        return target
    if isinstance(target, dict) and isinstance(target.get("id"), str):
        return str(target["id"])
    return None


async def emit_activity(
    session: AsyncSession,
    settings: Settings,
    app: str,
    activity: dict[str, Any],
    *,
    visibility: Visibility = "public",
    target_inboxes: Sequence[str] = (),
) -> EmittedActivity:
    """Add ``activity`` to the outbox in the caller's transaction (no commit here).

    ``activity["id"]`` is assigned when missing. Public, unlisted and followers activities go
    to the app's followers (one delivery per shared inbox) and ``target_inboxes``; direct ones
    to ``target_inboxes`` only; internal ones to the registered handlers."""
    if visibility not in VISIBILITIES:
        raise ValueError(f"unknown visibility {visibility!r}")
    if not isinstance(activity.get("type"), str):
        raise ValueError("an activity needs a type")
    document = dict(activity)
    document.setdefault("id", urls.new_activity_url(settings, app))
    row = ApActivity(
        uri=document["id"],
        app=app,
        activity_type=document["type"],
        object_uri=object_uri_of(document),
        visibility=visibility,
        document=document,
        target_inboxes=list(dict.fromkeys(target_inboxes)),
    )
    session.add(row)
    await session.flush()
    # Queued until commit: a rolled-back transaction wakes nobody.
    await session.execute(select(func.pg_notify(ACTIVITIES_CHANNEL, "")))
    return EmittedActivity(row.id, row.uri, app, row.activity_type, visibility, document)


def audience(settings: Settings, app: str) -> dict[str, list[str]]:
    """Public, copied to the app's followers (what Mastodon calls a public post)."""
    return {"to": [PUBLIC], "cc": [urls.followers_url(settings, app)]}


def build_place(place: Place) -> dict[str, Any]:
    document: dict[str, Any] = {"type": "Place", "name": place.name}
    if place.address is not None:
        document["address"] = place.address
    if place.latitude is not None and place.longitude is not None:
        document["latitude"] = place.latitude
        document["longitude"] = place.longitude
    return document


def build_event_fields(obj: PublishableObject) -> dict[str, Any]:
    assert obj.start_time is not None  # check_publishable
    fields: dict[str, Any] = {"startTime": format_time(obj.start_time)}
    if obj.end_time is not None:
        fields["endTime"] = format_time(obj.end_time)
    if obj.location is not None:
        fields["location"] = build_place(obj.location)
    if obj.timezone is not None:
        fields["timezone"] = obj.timezone
    if obj.join_mode is not None:
        fields["joinMode"] = obj.join_mode
    return fields


def build_object(
    settings: Settings, app: str, obj: PublishableObject, uri: str, now: datetime
) -> dict[str, Any]:
    """The object document (without @context): what we serve at ``uri`` and embed."""
    document: dict[str, Any] = {
        "id": uri,
        "type": obj.object_type,
        "attributedTo": urls.actor_url(settings, app),
        **audience(settings, app),
        "published": format_time(obj.published or now),
        "url": obj.url or uri,
        "content": obj.content,
        "mediaType": "text/html",
    }
    if obj.name is not None:
        document["name"] = obj.name
    if obj.summary is not None:
        document["summary"] = obj.summary
    if obj.updated is not None:
        document["updated"] = format_time(obj.updated)
    if obj.object_type == "Event":
        document.update(build_event_fields(obj))
    document.update(obj.extra)
    return document


def build_tombstone(obj: PublishableObject, uri: str, now: datetime) -> dict[str, Any]:
    return {
        "id": uri,
        "type": "Tombstone",
        "formerType": obj.object_type,
        "deleted": format_time(now),
    }


def context_for(object_type: str) -> list[Any]:
    return [AS_CONTEXT, EVENT_CONTEXT] if object_type == "Event" else [AS_CONTEXT]


def build_activity(
    settings: Settings, app: str, verb: Verb, target: dict[str, Any], now: datetime
) -> dict[str, Any]:
    return {
        "@context": context_for(str(target.get("formerType", target["type"]))),
        "id": urls.new_activity_url(settings, app),
        "type": verb,
        "actor": urls.actor_url(settings, app),
        "published": format_time(now),
        **audience(settings, app),
        "object": target,
    }


async def store_object(
    session: AsyncSession,
    app: str,
    obj: PublishableObject,
    document: dict[str, Any],
    *,
    now: datetime,
    deleted: bool,
) -> None:
    """Insert or replace the served copy of the object (a Delete leaves its Tombstone)."""
    values: dict[str, Any] = {
        "uri": document["id"],
        "app": app,
        "object_type": obj.object_type,
        "document": document,
        "updated_at": None if deleted else (obj.updated or None),
        "deleted_at": now if deleted else None,
        # As the document says (build_object): published, else the time of this publish.
        "published_at": obj.published or now,
    }
    changed = {key: value for key, value in values.items() if key not in ("uri", "app")}
    if obj.published is None:
        changed.pop("published_at")  # an object published before keeps its first time
    if deleted:
        changed.pop("updated_at")
    statement = insert(ApObject).values(**values)
    await session.execute(
        statement.on_conflict_do_update(index_elements=[ApObject.uri], set_=changed)
    )


async def complete_update(
    session: AsyncSession, obj: PublishableObject, uri: str, now: datetime
) -> PublishableObject:
    """An Update keeps the first publication time (unless given) and is stamped ``updated``
    (Mastodon ignores an Update without it)."""
    published = obj.published or await session.scalar(
        select(ApObject.published_at).where(ApObject.uri == uri)
    )
    return replace(obj, published=published, updated=obj.updated or now)


async def publish(
    session: AsyncSession,
    settings: Settings,
    app: str,
    obj: PublishableObject,
    *,
    verb: Verb,
    now: datetime | None = None,
) -> EmittedActivity:
    """Create, Update or Delete ``obj`` as ``app``'s actor, to Public and its followers, in
    the caller's transaction: the served object and the outbox row commit with the domain
    change."""
    moment = now or datetime.now(UTC)
    if verb != "Create" and obj.uri is None:
        raise ValueError(f"{verb} needs the uri of the published object")
    uri = obj.uri or urls.new_object_url(settings, app)
    if verb == "Delete":
        served = build_tombstone(obj, uri, moment)
    else:
        if verb == "Update":
            obj = await complete_update(session, obj, uri, moment)
        served = build_object(settings, app, obj, uri, moment)
    await store_object(
        session,
        app,
        obj,
        {"@context": context_for(obj.object_type), **served},
        now=moment,
        deleted=verb == "Delete",
    )
    activity = build_activity(settings, app, verb, served, moment)
    return await emit_activity(session, settings, app, activity, visibility="public")
