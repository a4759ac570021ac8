"""Database reads behind the GET endpoints: collection pages, objects, activities, counts.

Collections are paged by keyset on the row id, newest first: ``max_id`` asks for the rows
older than it, ``min_id`` for the ones just newer than it (still returned newest first), as
Mastodon's collections do. Each page reads one row more than it shows to know whether there
are more.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from markupsafe import Markup
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from shared.models.identity import User
from shared.models.social.actors import ApKeypair, ApRemoteActor
from shared.models.social.inbox import ApFollower, ApFollowing
from shared.models.social.outbox import ApActivity, ApObject

ItemT = TypeVar("ItemT")
# Activities anyone may fetch by their id; the outbox lists only "public" ones.
FETCHABLE_VISIBILITIES = ("public", "unlisted")
OUTBOX_VISIBILITY = "public"


@dataclass(frozen=True)
class PageQuery:
    size: int
    max_id: int | None = None
    min_id: int | None = None


@dataclass(frozen=True)
class Page(Generic[ItemT]):
    """Items newest first, with the ids of the newest and oldest shown."""

    items: list[ItemT]
    newest_id: int | None
    oldest_id: int | None
    has_older: bool
    has_newer: bool


@dataclass(frozen=True)
class RecentPost:
    """One of an actor's published objects, as its HTML profile lists it."""

    object_type: str
    title: str  # the name, else the summary, else the start of the text
    url: str  # where a person reads it (the object's url, else its id)
    published_at: datetime


@dataclass(frozen=True)
class StoredObject:
    uri: str
    object_type: str
    document: dict[str, Any]
    deleted_at: datetime | None


async def list_keyset_page(
    session: AsyncSession,
    statement: Select[int, ItemT],
    id_column: InstrumentedAttribute[int],
    query: PageQuery,
) -> Page[ItemT]:
    """One page of ``statement`` (selecting ``(id, item)``), keyset-paged on ``id_column``."""
    if query.min_id is not None:
        statement = statement.where(id_column > query.min_id).order_by(id_column.asc())
    else:
        if query.max_id is not None:
            statement = statement.where(id_column < query.max_id)
        statement = statement.order_by(id_column.desc())
    rows = list((await session.execute(statement.limit(query.size + 1))).all())
    more = len(rows) > query.size
    rows = rows[: query.size]
    if query.min_id is not None:
        rows.reverse()
        has_older, has_newer = query.min_id > 0 and bool(rows), more
    else:
        has_older, has_newer = more, query.max_id is not None and bool(rows)
    return Page(
        items=[item for _, item in rows],
        newest_id=rows[0][0] if rows else None,
        oldest_id=rows[-1][0] if rows else None,
        has_older=has_older,
        has_newer=has_newer,
    )


async def count_outbox(session: AsyncSession, actor: str) -> int:
    statement = (
        select(func.count())
        .select_from(ApActivity)
        .where(ApActivity.app == actor, ApActivity.visibility == OUTBOX_VISIBILITY)
    )
    return int(await session.scalar(statement) or 0)


async def count_posts(session: AsyncSession, actor: str) -> int:
    """The actor's published objects that are not deleted."""
    statement = (
        select(func.count())
        .select_from(ApObject)
        .where(ApObject.app == actor, ApObject.deleted_at.is_(None))
    )
    return int(await session.scalar(statement) or 0)


async def list_recent_posts(session: AsyncSession, actor: str, limit: int) -> list[RecentPost]:
    """The actor's newest published objects that are not deleted, newest first."""
    rows = await session.execute(
        select(ApObject.uri, ApObject.object_type, ApObject.document, ApObject.published_at)
        .where(ApObject.app == actor, ApObject.deleted_at.is_(None))
        .order_by(ApObject.published_at.desc(), ApObject.id.desc())
        .limit(limit)
    )
    return [
        RecentPost(kind, title_of(document), link_of(document, uri), published)
        for uri, kind, document, published in rows
    ]


TITLE_CHARACTERS = 120


def title_of(document: dict[str, Any]) -> str:
    """Plain text to list an object by: its name (plain text in ActivityStreams), else its
    summary or the start of its content (both HTML)."""
    for field_name in ("name", "summary", "content"):
        value = document.get(field_name)
        if not isinstance(value, str) or not value.strip():
            continue
        if field_name != "name":
            # Jinja's striptags: tags dropped, entities decoded, a plain str (escaped when shown).
            value = Markup(value).striptags()  # noqa: S704
        text = " ".join(value.split())
        if len(text) > TITLE_CHARACTERS:
            text = text[: TITLE_CHARACTERS - 1].rstrip() + "…"
        return text
    return "(untitled)"


def link_of(document: dict[str, Any], uri: str) -> str:
    url = document.get("url")
    if isinstance(url, str) and url.startswith(("https://", "http://")):
        return url
    return uri


async def list_outbox_page(
    session: AsyncSession, actor: str, query: PageQuery
) -> Page[dict[str, Any]]:
    """The actor's public activities (their documents)."""
    statement = select(ApActivity.id, ApActivity.document).where(
        ApActivity.app == actor, ApActivity.visibility == OUTBOX_VISIBILITY
    )
    return await list_keyset_page(session, statement, ApActivity.id, query)


async def count_followers(session: AsyncSession, actor: str) -> int:
    statement = (
        select(func.count())
        .select_from(ApFollower)
        .join(ApRemoteActor, ApRemoteActor.id == ApFollower.remote_actor_id)
        .where(ApFollower.app == actor, ApRemoteActor.deleted_at.is_(None))
    )
    return int(await session.scalar(statement) or 0)


async def list_followers_page(session: AsyncSession, actor: str, query: PageQuery) -> Page[str]:
    """The ids of the remote actors following ``actor``."""
    statement = (
        select(ApFollower.id, ApRemoteActor.uri)
        .join(ApRemoteActor, ApRemoteActor.id == ApFollower.remote_actor_id)
        .where(ApFollower.app == actor, ApRemoteActor.deleted_at.is_(None))
    )
    return await list_keyset_page(session, statement, ApFollower.id, query)


async def count_following(session: AsyncSession, actor: str) -> int:
    statement = (
        select(func.count())
        .select_from(ApFollowing)
        .join(ApRemoteActor, ApRemoteActor.id == ApFollowing.remote_actor_id)
        .where(
            ApFollowing.app == actor,
            ApFollowing.state == "accepted",
            ApRemoteActor.deleted_at.is_(None),
        )
    )
    return int(await session.scalar(statement) or 0)


async def list_following_page(session: AsyncSession, actor: str, query: PageQuery) -> Page[str]:
    """The ids of the remote actors ``actor`` follows (accepted follows only)."""
    statement = (
        select(ApFollowing.id, ApRemoteActor.uri)
        .join(ApRemoteActor, ApRemoteActor.id == ApFollowing.remote_actor_id)
        .where(
            ApFollowing.app == actor,
            ApFollowing.state == "accepted",
            ApRemoteActor.deleted_at.is_(None),
        )
    )
    return await list_keyset_page(session, statement, ApFollowing.id, query)


async def get_object(session: AsyncSession, uri: str) -> StoredObject | None:
    row = (
        await session.execute(
            select(
                ApObject.uri, ApObject.object_type, ApObject.document, ApObject.deleted_at
            ).where(ApObject.uri == uri)
        )
    ).first()
    if row is None:
        return None
    return StoredObject(
        uri=row.uri, object_type=row.object_type, document=row.document, deleted_at=row.deleted_at
    )


async def get_public_activity(session: AsyncSession, uri: str) -> dict[str, Any] | None:
    """The document of the activity ``uri`` when anyone may fetch it (never internal ones)."""
    document: dict[str, Any] | None = await session.scalar(
        select(ApActivity.document).where(
            ApActivity.uri == uri, ApActivity.visibility.in_(FETCHABLE_VISIBILITIES)
        )
    )
    return document


async def get_keypair_created_at(session: AsyncSession, keypair_id: int) -> datetime | None:
    """When the keypair every actor presents was made: the actors' ``published``."""
    created: datetime | None = await session.scalar(
        select(ApKeypair.created_at).where(ApKeypair.id == keypair_id)
    )
    return created


async def count_users(session: AsyncSession, *, active_since: datetime | None = None) -> int:
    statement = select(func.count()).select_from(User)
    if active_since is not None:
        statement = statement.where(User.last_login_at >= active_since)
    return int(await session.scalar(statement) or 0)


async def count_local_posts(session: AsyncSession) -> int:
    statement = select(func.count()).select_from(ApObject).where(ApObject.deleted_at.is_(None))
    return int(await session.scalar(statement) or 0)


def months_ago(now: datetime, months: int) -> datetime:
    return now - timedelta(days=30 * months)
