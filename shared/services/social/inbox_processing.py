"""Applying stored inbox items: each verified activity's effect, once, by the worker.

The inbox only verifies and stores (``ap_inbox_items``); this runs later, so a slow remote
server (a Follow needs the follower's actor document) never holds up a POST. A batch of due
items is claimed with ``FOR UPDATE SKIP LOCKED`` (several workers never take one item twice),
each item is applied in its own savepoint (one failing item undoes only its own writes), and
its state becomes:

    done     its effect is applied
    ignored  nothing to do: blocked, not ours, from an actor we do not follow, unsupported
    failed   gave up: a permanent error, or a transient one (a remote fetch) too many times

A transient error leaves the item pending with ``next_attempt_at`` pushed back (n**4 + 15 s).
The batch is one transaction: its row locks are held while a Follow fetches its follower's
actor (at most ``fetch_timeout_seconds``), which other workers simply skip.
Each effect is idempotent, and the item's activity id is unique, so a redelivery has none.
Until an Undo: applying an Undo forgets the item it undoes (same actor, same id), so that an
activity sent again with that id afterwards is stored and applied again. Some servers keep
one Follow per pair and send Follow, Undo(Follow), Follow with one id; the second Follow must
get its Accept. (An item another worker is applying at that moment is not forgotten.)
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.config import APP_NAMES, Settings
from shared.infrastructure.activitypub import urls
from shared.infrastructure.activitypub.remote import (
    ACTOR_TYPES,
    InvalidDocumentError,
    LocalUrlError,
    RemoteActorDTO,
    RemoteClient,
    RemoteFetchError,
    RemoteGoneError,
    UnsafeUrlError,
    get_remote_actor,
)
from shared.models.social.actors import ApRemoteActor
from shared.models.social.inbox import (
    ApFollower,
    ApFollowing,
    ApInboxItem,
    ApReaction,
    ApRemoteObject,
)
from shared.services.outbox import retry_delay
from shared.services.social.blocks import BlockList, host_of, read_block_list
from shared.services.social.publish import AS_CONTEXT, emit_activity

logger = logging.getLogger("rose_ash.activitypub.inbox")
# NOTIFYed at commit by the inbox for each newly stored item: workers LISTEN and apply it.
INBOX_CHANNEL = "ap_inbox"
# About 80 minutes of retries (n**4 + 15 s): a remote server that stays down longer
# sends the activity again anyway when it is back (Follows in particular are retried).
MAX_ATTEMPTS = 8
REACTION_KINDS = {"Like": "like", "Announce": "announce"}
# Remote failures that another attempt cannot cure: a refused address, an actor that is gone
# (404/410), a document we cannot accept, a URL of ours. Other fetch failures are retried.
PERMANENT_ERRORS = (UnsafeUrlError, RemoteGoneError, InvalidDocumentError, LocalUrlError)


class IgnoredActivityError(Exception):
    """Nothing to apply; the message says why (kept in the item's last_error)."""


@dataclass(frozen=True)
class Item:
    """What processing reads of a claimed row (plain values: a savepoint rollback cannot
    expire them)."""

    id: int
    activity_uri: str
    activity_type: str
    app: str | None
    actor_uri: str
    document: dict[str, Any]
    attempts: int


@dataclass(frozen=True)
class Context:
    session: AsyncSession
    settings: Settings
    client: RemoteClient


Handler = Callable[[Context, Item], Awaitable[None]]


# -- reading activity documents ---------------------------------------------------------------


def id_of(value: Any) -> str | None:
    """The id of a reference: a URI string, or an embedded object's ``id``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return str(value["id"])
    if isinstance(value, list) and len(value) == 1:
        return id_of(value[0])
    return None


def type_of(value: Any) -> str | None:
    """An embedded object's type (the first one when it lists several)."""
    if not isinstance(value, dict):
        return None
    kind = value.get("type")
    if isinstance(kind, list) and kind:
        kind = kind[0]
    return kind if isinstance(kind, str) else None


def same_origin(uri: str, other: str) -> bool:
    """Whether two ids are on one host: a server speaks only for its own objects."""
    host = host_of(uri)
    return bool(host) and host == host_of(other)


def parse_published(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def app_of_local_uri(settings: Settings, uri: str) -> str | None:
    """The app on whose host ``uri`` is (each app has its own host)."""
    host = urlsplit(uri).netloc
    for app in APP_NAMES:
        if urlsplit(settings.url_of(app)).netloc == host:
            return app
    return None


# -- the database -----------------------------------------------------------------------------


async def get_remote_actor_id(session: AsyncSession, uri: str) -> int | None:
    found: int | None = await session.scalar(
        select(ApRemoteActor.id).where(ApRemoteActor.uri == uri)
    )
    return found


async def check_follows(session: AsyncSession, actor_uri: str) -> bool:
    """Whether one of our actors follows ``actor_uri`` (accepted)."""
    found = await session.scalar(
        select(ApFollowing.id)
        .join(ApRemoteActor, ApRemoteActor.id == ApFollowing.remote_actor_id)
        .where(ApRemoteActor.uri == actor_uri, ApFollowing.state == "accepted")
        .limit(1)
    )
    return found is not None


def remote_actor_ids(uri: str) -> Any:
    """A subquery: the id of the remote actor ``uri`` (for deletes matched by actor)."""
    return select(ApRemoteActor.id).where(ApRemoteActor.uri == uri).scalar_subquery()


# -- effects ----------------------------------------------------------------------------------


async def apply_follow(ctx: Context, item: Item) -> None:
    """Record the follower (once) and answer with an Accept embedding the Follow.

    A repeated Follow is accepted again: servers retry a Follow whose Accept they missed.
    """
    target = urls.local_actor_of(ctx.settings, id_of(item.document.get("object")) or "")
    if target is None or target == urls.INSTANCE_ACTOR:
        raise IgnoredActivityError("the Follow is not of one of our apps' actors")
    remote = await get_remote_actor(ctx.session, ctx.settings, ctx.client, item.actor_uri)
    if remote.deleted:
        raise IgnoredActivityError("the follower is deleted")
    remote_id = await get_remote_actor_id(ctx.session, remote.uri)
    if remote_id is None:
        raise RuntimeError(f"remote actor {remote.uri} was not stored")
    values = {"follow_uri": item.activity_uri, "inbox": remote.inbox}
    await ctx.session.execute(
        insert(ApFollower)
        .values(app=target, remote_actor_id=remote_id, shared_inbox=remote.shared_inbox, **values)
        .on_conflict_do_update(
            index_elements=["app", "remote_actor_id"],
            set_={**values, "shared_inbox": remote.shared_inbox},
        )
    )
    await emit_accept(ctx, target, item.document, remote)


async def emit_accept(
    ctx: Context, app: str, follow: dict[str, Any], remote: RemoteActorDTO
) -> None:
    accept = {
        "@context": AS_CONTEXT,
        "id": urls.new_activity_url(ctx.settings, app),
        "type": "Accept",
        "actor": urls.actor_url(ctx.settings, app),
        "to": [remote.uri],
        "object": follow,
    }
    await emit_activity(
        ctx.session,
        ctx.settings,
        app,
        accept,
        visibility="direct",
        target_inboxes=[remote.inbox],
    )


async def apply_undo(ctx: Context, item: Item) -> None:
    """Undo a Follow, Like or Announce the same actor made (matched by actor and object)."""
    inner = item.document.get("object")
    inner_id = id_of(inner)
    if isinstance(inner, dict):
        inner_actor = id_of(inner.get("actor"))
        if inner_actor is not None and inner_actor != item.actor_uri:
            raise IgnoredActivityError("an Undo of another actor's activity")
        kind = type_of(inner)
        if kind == "Follow":
            await remove_follower(ctx, item, inner)
            return
        if kind in REACTION_KINDS:
            await remove_reaction(ctx, item, inner)
            return
    if inner_id is None:
        raise IgnoredActivityError("an Undo without an object")
    # A bare id: whichever of our records it names, as long as it is this actor's.
    removed = await ctx.session.execute(
        delete(ApFollower)
        .where(
            ApFollower.follow_uri == inner_id,
            ApFollower.remote_actor_id == remote_actor_ids(item.actor_uri),
        )
        .returning(ApFollower.id)
    )
    if removed.first() is not None:
        return
    removed = await ctx.session.execute(
        delete(ApReaction)
        .where(ApReaction.activity_uri == inner_id, ApReaction.actor_uri == item.actor_uri)
        .returning(ApReaction.id)
    )
    if removed.first() is None:
        raise IgnoredActivityError("the Undo names nothing we hold")


async def remove_follower(ctx: Context, item: Item, follow: dict[str, Any]) -> None:
    """Match by follower and followed actor: the Follow's id may be one we never saw."""
    target = urls.local_actor_of(ctx.settings, id_of(follow.get("object")) or "")
    match = ApFollower.follow_uri == id_of(follow) if target is None else ApFollower.app == target
    removed = await ctx.session.execute(
        delete(ApFollower)
        .where(match, ApFollower.remote_actor_id == remote_actor_ids(item.actor_uri))
        .returning(ApFollower.id)
    )
    if removed.first() is None:
        raise IgnoredActivityError("not a follower")


async def remove_reaction(ctx: Context, item: Item, reaction: dict[str, Any]) -> None:
    kind = REACTION_KINDS[type_of(reaction) or ""]
    object_uri = id_of(reaction.get("object"))
    by_object = (ApReaction.kind == kind) & (ApReaction.object_uri == (object_uri or ""))
    by_id = ApReaction.activity_uri == (id_of(reaction) or "")
    removed = await ctx.session.execute(
        delete(ApReaction)
        .where(ApReaction.actor_uri == item.actor_uri, by_id | by_object)
        .returning(ApReaction.id)
    )
    if removed.first() is None:
        raise IgnoredActivityError("no such reaction")


async def find_following(ctx: Context, item: Item) -> int:
    """Our follow of the remote actor that an Accept or Reject answers.

    Matched by its actor and object, not only by the Follow's id: servers answer a repeated
    Follow with the first Follow's id, or send the bare id.
    """
    inner = item.document.get("object")
    remote_id = await get_remote_actor_id(ctx.session, item.actor_uri)
    if remote_id is None:
        raise IgnoredActivityError("we follow nobody by that actor")
    query = select(ApFollowing.id).where(ApFollowing.remote_actor_id == remote_id)
    our_actor: str | None = None
    if isinstance(inner, dict):
        if type_of(inner) != "Follow":
            raise IgnoredActivityError("not an answer to a Follow")
        followed = id_of(inner.get("object"))
        if followed is not None and followed != item.actor_uri:
            raise IgnoredActivityError("an answer to a Follow of someone else")
        our_actor = urls.local_actor_of(ctx.settings, id_of(inner.get("actor")) or "")
    follow_id = id_of(inner)
    if our_actor is not None:
        found = await ctx.session.scalar(query.where(ApFollowing.app == our_actor))
    elif follow_id is not None:
        found = await ctx.session.scalar(query.where(ApFollowing.follow_uri == follow_id))
        app = app_of_local_uri(ctx.settings, follow_id)
        if found is None and app is not None:
            found = await ctx.session.scalar(query.where(ApFollowing.app == app))
    else:
        found = None
    if found is None:
        raise IgnoredActivityError("no follow of ours matches")
    return int(found)


async def apply_accept(ctx: Context, item: Item) -> None:
    following_id = await find_following(ctx, item)
    await ctx.session.execute(
        update(ApFollowing)
        .where(ApFollowing.id == following_id, ApFollowing.state != "accepted")
        .values(state="accepted", accepted_at=func.now())
    )


async def apply_reject(ctx: Context, item: Item) -> None:
    following_id = await find_following(ctx, item)
    await ctx.session.execute(delete(ApFollowing).where(ApFollowing.id == following_id))


async def apply_reaction(ctx: Context, item: Item) -> None:
    """A Like or Announce of one of our objects (once per activity id)."""
    object_uri = id_of(item.document.get("object"))
    if object_uri is None or not urls.is_local(ctx.settings, object_uri):
        raise IgnoredActivityError("not about one of our objects")
    await ctx.session.execute(
        insert(ApReaction)
        .values(
            activity_uri=item.activity_uri,
            kind=REACTION_KINDS[item.activity_type],
            object_uri=object_uri,
            actor_uri=item.actor_uri,
        )
        .on_conflict_do_nothing(index_elements=["activity_uri"])
    )


def check_authored_object(item: Item) -> dict[str, Any]:
    """The embedded object of a Create/Update, if the actor may speak for it."""
    obj = item.document.get("object")
    object_id = id_of(obj)
    if not isinstance(obj, dict) or object_id is None or type_of(obj) is None:
        raise IgnoredActivityError("the object is not embedded")
    if not same_origin(object_id, item.actor_uri):
        raise IgnoredActivityError("the object is not on the actor's host")
    author = obj.get("attributedTo")
    authors = author if isinstance(author, list) else [author]
    if author is not None and item.actor_uri not in {id_of(each) for each in authors}:
        raise IgnoredActivityError("the object is attributed to someone else")
    return obj


async def store_remote_object(ctx: Context, item: Item, obj: dict[str, Any]) -> None:
    await ctx.session.execute(
        insert(ApRemoteObject)
        .values(
            uri=id_of(obj),
            actor_uri=item.actor_uri,
            object_type=(type_of(obj) or "Object")[:40],
            document=obj,
            published_at=parse_published(obj.get("published")),
        )
        .on_conflict_do_nothing(index_elements=["uri"])
    )


async def apply_create(ctx: Context, item: Item) -> None:
    """Keep a post of an actor one of our actors follows (the social hub's timeline)."""
    obj = check_authored_object(item)
    if not await check_follows(ctx.session, item.actor_uri):
        raise IgnoredActivityError("from an actor we do not follow")
    await store_remote_object(ctx, item, obj)


async def apply_update(ctx: Context, item: Item) -> None:
    """A newer version of a kept post, or of the actor itself (its profile or key)."""
    obj = item.document.get("object")
    if id_of(obj) == item.actor_uri or type_of(obj) in ACTOR_TYPES:
        await refresh_actor(ctx, item)
        return
    obj = check_authored_object(item)
    updated = await ctx.session.execute(
        update(ApRemoteObject)
        .where(
            ApRemoteObject.uri == id_of(obj),
            ApRemoteObject.actor_uri == item.actor_uri,
            ApRemoteObject.deleted_at.is_(None),
        )
        .values(document=obj, object_type=(type_of(obj) or "Object")[:40], updated_at=func.now())
        .returning(ApRemoteObject.id)
    )
    if updated.first() is not None:
        return
    if not await check_follows(ctx.session, item.actor_uri):
        raise IgnoredActivityError("from an actor we do not follow")
    await store_remote_object(ctx, item, obj)  # an Update of a post we missed the Create of


async def refresh_actor(ctx: Context, item: Item) -> None:
    """Refetch an actor we know (never trust the embedded copy: fetch it from its id)."""
    if id_of(item.document.get("object")) != item.actor_uri:
        raise IgnoredActivityError("an Update of another actor")
    if await get_remote_actor_id(ctx.session, item.actor_uri) is None:
        raise IgnoredActivityError("an Update of an actor we do not know")
    await get_remote_actor(ctx.session, ctx.settings, ctx.client, item.actor_uri, refresh=True)


async def apply_delete(ctx: Context, item: Item) -> None:
    """A deleted post (a Tombstone or a bare id) or the actor itself."""
    target = id_of(item.document.get("object"))
    if target is None:
        raise IgnoredActivityError("a Delete without an object")
    if target == item.actor_uri:
        await delete_actor(ctx, item.actor_uri)
        return
    deleted = await ctx.session.execute(
        update(ApRemoteObject)
        .where(
            ApRemoteObject.uri == target,
            ApRemoteObject.actor_uri == item.actor_uri,
            ApRemoteObject.deleted_at.is_(None),
        )
        .values(deleted_at=func.now())
        .returning(ApRemoteObject.id)
    )
    if deleted.first() is None:
        raise IgnoredActivityError("a Delete of nothing we keep")


async def delete_actor(ctx: Context, actor_uri: str) -> None:
    """The actor is gone: mark it, and drop every follow with it, both ways."""
    marked = await ctx.session.execute(
        update(ApRemoteActor)
        .where(ApRemoteActor.uri == actor_uri)
        .values(deleted_at=func.coalesce(ApRemoteActor.deleted_at, func.now()))
        .returning(ApRemoteActor.id)
    )
    actor_id = marked.scalar()
    if actor_id is None:
        raise IgnoredActivityError("a Delete of an actor we do not know")
    await ctx.session.execute(delete(ApFollower).where(ApFollower.remote_actor_id == actor_id))
    await ctx.session.execute(delete(ApFollowing).where(ApFollowing.remote_actor_id == actor_id))


HANDLERS: dict[str, Handler] = {
    "Follow": apply_follow,
    "Undo": apply_undo,
    "Accept": apply_accept,
    "Reject": apply_reject,
    "Like": apply_reaction,
    "Announce": apply_reaction,
    "Create": apply_create,
    "Update": apply_update,
    "Delete": apply_delete,
}


# -- the batch --------------------------------------------------------------------------------


async def apply_item(ctx: Context, item: Item, blocks: BlockList) -> None:
    """Apply one item's effect; IgnoredActivityError when there is none to apply."""
    if blocks.blocks(item.actor_uri):
        raise IgnoredActivityError("blocked")
    handler = HANDLERS.get(item.activity_type)
    if handler is None:
        raise IgnoredActivityError(f"{item.activity_type} is not handled")
    await handler(ctx, item)


async def run_item(ctx: Context, item: Item, blocks: BlockList) -> dict[str, Any]:
    """Apply ``item`` in a savepoint; the new values of its row."""
    now = datetime.now(UTC)
    attempts = item.attempts + 1
    finished = {"id": item.id, "attempts": attempts, "processed_at": now}
    try:
        async with ctx.session.begin_nested():
            await apply_item(ctx, item, blocks)
    except IgnoredActivityError as exc:
        return {**finished, "state": "ignored", "last_error": str(exc)}
    except PERMANENT_ERRORS as exc:
        logger.warning("inbox item %s failed for good: %s", item.id, exc)
        return {**finished, "state": "failed", "last_error": f"{type(exc).__name__}: {exc}"}
    except Exception as exc:  # a remote fetch or anything else: retried on the schedule
        error = f"{type(exc).__name__}: {exc}"[:2000]
        if not isinstance(exc, RemoteFetchError):
            logger.exception("inbox item %s (%s) failed", item.id, item.activity_type)
        if attempts >= MAX_ATTEMPTS:
            return {**finished, "state": "failed", "last_error": error}
        return {
            "id": item.id,
            "attempts": attempts,
            "next_attempt_at": now + retry_delay(attempts),
            "last_error": error,
        }
    return {**finished, "state": "done", "last_error": None}


async def claim_items(session: AsyncSession, limit: int) -> list[Item]:
    rows = await session.execute(
        select(
            ApInboxItem.id,
            ApInboxItem.activity_uri,
            ApInboxItem.activity_type,
            ApInboxItem.app,
            ApInboxItem.actor_uri,
            ApInboxItem.document,
            ApInboxItem.attempts,
        )
        .where(ApInboxItem.state == "pending", ApInboxItem.next_attempt_at <= func.now())
        .order_by(ApInboxItem.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [Item(*row) for row in rows.all()]


async def forget_undone_item(session: AsyncSession, undo: Item) -> set[int]:
    """Delete the item ``undo`` undoes, if its actor sent it, so that its id may be stored
    again; the ids deleted. A row another worker holds is skipped rather than waited for."""
    undone_id = id_of(undo.document.get("object"))
    if undone_id is None:
        return set()
    undone = (
        select(ApInboxItem.id)
        .where(
            ApInboxItem.activity_uri == undone_id,
            ApInboxItem.actor_uri == undo.actor_uri,
            # only what was stored before the Undo: the same id sent again after it is new
            ApInboxItem.id < undo.id,
        )
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    deleted = await session.scalars(
        delete(ApInboxItem).where(ApInboxItem.id == undone).returning(ApInboxItem.id)
    )
    return set(deleted)


async def save_outcomes(session: AsyncSession, outcomes: list[dict[str, Any]]) -> None:
    """Write each item's new state; rows with the same keys go in one executemany."""
    by_keys: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for outcome in outcomes:
        by_keys.setdefault(tuple(sorted(outcome)), []).append(outcome)
    for rows in by_keys.values():
        await session.execute(update(ApInboxItem), rows)


async def process_inbox_items(
    session_factory: async_sessionmaker[AsyncSession],
    settings: Settings,
    client: RemoteClient,
    *,
    limit: int = 100,
) -> int:
    """Apply one batch of due inbox items (the worker calls this); how many it handled."""
    async with session_factory() as session, session.begin():
        items = await claim_items(session, limit)
        if not items:
            return 0
        blocks = await read_block_list(session)
        ctx = Context(session, settings, client)
        outcomes: list[dict[str, Any]] = []
        forgotten: set[int] = set()
        for item in items:
            if item.id in forgotten:  # undone by an Undo earlier in this batch
                continue
            outcomes.append(await run_item(ctx, item, blocks))
            if item.activity_type == "Undo":
                forgotten |= await forget_undone_item(session, item)
        await save_outcomes(session, [row for row in outcomes if row["id"] not in forgotten])
    return len(items)
