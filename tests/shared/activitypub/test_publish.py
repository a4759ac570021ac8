"""The publishing API: emit_activity() in the caller's transaction, and publish() building
Create/Update/Delete of Note, Article and Event as other servers expect them."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from shared.config import Settings
from shared.db import create_session_factory
from shared.models.social.outbox import ApActivity, ApObject
from shared.services.social.publish import (
    AS_CONTEXT,
    PUBLIC,
    Place,
    PublishableObject,
    Verb,
    emit_activity,
    publish,
)

BLOG_ACTOR = "http://blog.localhost/ap/actors/blog"
BLOG_FOLLOWERS = "http://blog.localhost/ap/actors/blog/followers"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def article(**changes: object) -> PublishableObject:
    values: dict[str, object] = {
        "object_type": "Article",
        "name": "Spring gathering",
        "summary": "What we decided about the allotments.",
        "content": "<p>We met, we voted, <b>we dug</b>.</p>",
        "url": "http://blog.localhost/spring-gathering/",
        "published": NOW - timedelta(hours=1),
        **changes,
    }
    return PublishableObject(**values)  # type: ignore[arg-type]


async def count_activities(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(ApActivity)) or 0)


async def test_an_activity_emitted_in_a_rolled_back_transaction_never_exists(
    connection: AsyncConnection, settings: Settings
) -> None:
    sessions = create_session_factory(connection)
    async with sessions() as session:
        before = await count_activities(session)
    async with sessions() as session:
        await emit_activity(session, settings, "blog", {"type": "Create", "object": "x:1"})
        assert await count_activities(session) == before + 1
        await session.rollback()
    async with sessions() as session:
        assert await count_activities(session) == before


async def test_emit_assigns_an_id_and_records_what_the_processor_needs(
    session: AsyncSession, settings: Settings
) -> None:
    emitted = await emit_activity(
        session,
        settings,
        "events",
        {"type": "Accept", "actor": "a", "object": {"id": "https://peer.example/follows/1"}},
        visibility="direct",
        target_inboxes=["https://peer.example/inbox", "https://peer.example/inbox"],
    )
    assert emitted.uri.startswith("http://events.localhost/ap/activities/")
    assert emitted.document["id"] == emitted.uri
    row = await session.get_one(ApActivity, emitted.id)
    assert (row.app, row.activity_type, row.visibility, row.state) == (
        "events",
        "Accept",
        "direct",
        "pending",
    )
    assert row.object_uri == "https://peer.example/follows/1"
    assert row.target_inboxes == ["https://peer.example/inbox"]
    assert row.document == emitted.document
    # an id given by the caller is kept
    kept = await emit_activity(
        session,
        settings,
        "blog",
        {"id": "http://blog.localhost/ap/activities/mine", "type": "Like"},
    )
    assert kept.uri == "http://blog.localhost/ap/activities/mine"


async def test_emit_refuses_an_unknown_visibility_or_an_untyped_activity(
    session: AsyncSession, settings: Settings
) -> None:
    with pytest.raises(ValueError, match="visibility"):
        await emit_activity(session, settings, "blog", {"type": "Create"}, visibility="secret")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="type"):
        await emit_activity(session, settings, "blog", {"object": "x"})


async def test_create_note_is_public_and_copied_to_followers(
    session: AsyncSession, settings: Settings
) -> None:
    note = PublishableObject(object_type="Note", content="<p>Hello, fediverse</p>")
    emitted = await publish(session, settings, "blog", note, verb="Create", now=NOW)
    activity = emitted.document
    assert activity["type"] == "Create"
    assert activity["actor"] == BLOG_ACTOR
    assert activity["@context"] == [AS_CONTEXT]
    assert activity["to"] == [PUBLIC]
    assert activity["cc"] == [BLOG_FOLLOWERS]
    assert activity["published"] == "2026-03-01T12:00:00Z"
    obj = activity["object"]
    assert obj["type"] == "Note"
    assert obj["id"].startswith("http://blog.localhost/ap/objects/")
    assert obj["attributedTo"] == BLOG_ACTOR
    assert (obj["to"], obj["cc"]) == ([PUBLIC], [BLOG_FOLLOWERS])
    assert obj["content"] == "<p>Hello, fediverse</p>"
    assert obj["url"] == obj["id"]
    assert obj["published"] == "2026-03-01T12:00:00Z"
    # a Note's summary is a content warning on Mastodon: absent unless given
    assert "summary" not in obj
    assert "name" not in obj
    assert (emitted.visibility, emitted.activity_type) == ("public", "Create")
    stored = await session.scalar(select(ApObject).where(ApObject.uri == obj["id"]))
    assert stored is not None
    assert stored.document == {"@context": [AS_CONTEXT], **obj}
    assert (stored.app, stored.object_type, stored.deleted_at) == ("blog", "Note", None)
    row = await session.get_one(ApActivity, emitted.id)
    assert row.object_uri == obj["id"]


async def test_article_create_then_update_then_delete(
    session: AsyncSession, settings: Settings
) -> None:
    created = await publish(session, settings, "blog", article(), verb="Create", now=NOW)
    obj = created.document["object"]
    assert obj["type"] == "Article"
    # Mastodon shows an Article as name + summary + a link to url
    assert obj["name"] == "Spring gathering"
    assert obj["summary"] == "What we decided about the allotments."
    assert obj["url"] == "http://blog.localhost/spring-gathering/"
    assert obj["published"] == "2026-03-01T11:00:00Z"
    assert obj["mediaType"] == "text/html"
    uri = obj["id"]

    later = NOW + timedelta(days=1)
    edited = article(uri=uri, name="Spring gathering (minutes)", published=None)
    updated = await publish(session, settings, "blog", edited, verb="Update", now=later)
    assert updated.document["type"] == "Update"
    assert updated.uri != created.uri
    assert updated.document["object"]["id"] == uri
    assert updated.document["object"]["name"] == "Spring gathering (minutes)"
    # an Update without `updated` is ignored by Mastodon: it is stamped
    assert updated.document["object"]["updated"] == "2026-03-02T12:00:00Z"
    # first published when it was created, not when it was edited
    assert updated.document["object"]["published"] == "2026-03-01T11:00:00Z"
    stored = await session.scalar(select(ApObject).where(ApObject.uri == uri))
    assert stored is not None
    await session.refresh(stored)
    assert stored.document["name"] == "Spring gathering (minutes)"
    assert stored.updated_at == later

    deleted = await publish(session, settings, "blog", article(uri=uri), verb="Delete", now=later)
    tombstone = deleted.document["object"]
    assert deleted.document["type"] == "Delete"
    assert tombstone == {
        "id": uri,
        "type": "Tombstone",
        "formerType": "Article",
        "deleted": "2026-03-02T12:00:00Z",
    }
    assert (deleted.document["to"], deleted.document["cc"]) == ([PUBLIC], [BLOG_FOLLOWERS])
    await session.refresh(stored)
    assert stored.deleted_at == later
    assert stored.document["type"] == "Tombstone"
    activities = (
        await session.scalars(
            select(ApActivity.activity_type)
            .where(ApActivity.object_uri == uri)
            .order_by(ApActivity.id)
        )
    ).all()
    assert activities == ["Create", "Update", "Delete"]


async def test_event_carries_time_place_and_timezone(
    session: AsyncSession, settings: Settings
) -> None:
    event = PublishableObject(
        object_type="Event",
        name="Seed swap",
        summary="Bring seeds, take seeds.",
        content="<p>In the community hall.</p>",
        url="http://events.localhost/calendars/garden/seed-swap",
        start_time=datetime(2026, 4, 4, 9, 0, tzinfo=UTC),
        end_time=datetime(2026, 4, 4, 12, 30, tzinfo=UTC),
        location=Place(
            name="Community hall",
            address="1 Garden Lane, Bristol",
            latitude=51.45,
            longitude=-2.58,
        ),
        timezone="Europe/London",
        join_mode="free",
    )
    emitted = await publish(session, settings, "events", event, verb="Create", now=NOW)
    activity = emitted.document
    assert activity["actor"] == "http://events.localhost/ap/actors/events"
    assert activity["@context"][0] == AS_CONTEXT
    terms = activity["@context"][1]
    assert terms["timezone"]["@id"] == "mz:timezone"
    assert terms["mz"] == "https://joinmobilizon.org/ns#"
    obj = activity["object"]
    assert obj["type"] == "Event"
    assert obj["name"] == "Seed swap"
    assert obj["summary"] == "Bring seeds, take seeds."
    assert obj["url"] == "http://events.localhost/calendars/garden/seed-swap"
    assert obj["startTime"] == "2026-04-04T09:00:00Z"
    assert obj["endTime"] == "2026-04-04T12:30:00Z"
    assert obj["location"] == {
        "type": "Place",
        "name": "Community hall",
        "address": "1 Garden Lane, Bristol",
        "latitude": 51.45,
        "longitude": -2.58,
    }
    assert obj["timezone"] == "Europe/London"
    assert obj["joinMode"] == "free"
    assert obj["cc"] == ["http://events.localhost/ap/actors/events/followers"]
    stored = await session.scalar(select(ApObject).where(ApObject.uri == obj["id"]))
    assert stored is not None
    assert stored.document["@context"] == activity["@context"]

    gone = await publish(
        session, settings, "events", replace(event, uri=obj["id"]), verb="Delete", now=NOW
    )
    assert gone.document["object"]["formerType"] == "Event"


def test_objects_other_servers_would_show_badly_are_refused() -> None:
    with pytest.raises(ValueError, match="name and a summary"):
        article(summary=None)
    with pytest.raises(ValueError, match="name and a summary"):
        PublishableObject(object_type="Event", summary="s", start_time=NOW)
    with pytest.raises(ValueError, match="start_time"):
        PublishableObject(object_type="Event", name="n", summary="s")
    with pytest.raises(ValueError, match="timezone-aware"):
        article(published=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="cannot publish"):
        PublishableObject(object_type="Question")  # type: ignore[arg-type]


async def test_update_and_delete_need_the_published_uri(
    session: AsyncSession, settings: Settings
) -> None:
    before = await count_activities(session)
    verbs: tuple[Verb, ...] = ("Update", "Delete")
    for verb in verbs:
        with pytest.raises(ValueError, match="needs the uri"):
            await publish(session, settings, "blog", article(), verb=verb)
    assert await count_activities(session) == before
