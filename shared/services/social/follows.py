"""Our actors following remote actors: the operator's side of ``ap_following``.

    do_follow(session, settings, client, app, target)    resolve, fetch, store, emit a Follow
    do_unfollow(session, settings, client, app, target)  emit Undo(Follow), forget the follow
    list_following(session, app=None)                    what each actor follows, and its state

``target`` is an actor's URL, or a handle ``user@host`` (also ``@user@host``, ``acct:user@host``)
looked up by WebFinger (remote.get_webfinger): over https, as servers expect (Fedify and Mastodon
resolve ``acct:`` only over https); over http as well, when https cannot be spoken, only for a
loopback name (``localhost``, ``*.localhost``, a loopback address) when
``activitypub.allow_loopback`` is on, which is how the development platform and the tests run.
Follows are shown by the remote actor's handle as its WebFinger confirms it
(remote.resolve_handle: ``alice@takahe.example`` for an actor served from another host).

The Follow goes to the remote actor's own inbox (not the shared one) with an id on the app's
host, in the caller's transaction (emit_activity: the outbox delivers it after the commit). The
follow stays ``pending`` until the remote's Accept arrives (inbox_processing.apply_accept);
a Reject deletes it. Following again while pending sends a new Follow (the remote may have
missed the first); following again once accepted changes nothing. Only then do Create, Update
and Delete from that actor get stored (inbox_processing).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Select, and_, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import APP_NAMES, Settings
from shared.contracts.errors import InvalidInputError, NotFoundError
from shared.infrastructure.activitypub import urls
from shared.infrastructure.activitypub.remote import (
    RemoteActorDTO,
    RemoteClient,
    RemoteFetchError,
    actor_link,
    fallback_handle,
    get_remote_actor,
    get_webfinger,
    parse_handle,
)
from shared.models.social.actors import ApRemoteActor
from shared.models.social.inbox import ApFollowing
from shared.services.social.blocks import get_block_list
from shared.services.social.publish import AS_CONTEXT, emit_activity


@dataclass(frozen=True)
class FollowingView:
    """One of our actors' follows, as operators see it."""

    app: str
    actor_uri: str
    handle: str | None  # user@domain (remote.resolve_handle), when the actor has a username
    state: str  # pending | accepted
    follow_uri: str
    created_at: datetime
    accepted_at: datetime | None


# -- resolving a target -------------------------------------------------------------------------


async def resolve_actor_url(client: RemoteClient, target: str) -> str:
    """The actor URL that ``target`` (a URL or a handle) names; InvalidInputError if none."""
    target = target.strip()
    if urlsplit(target).scheme in {"http", "https"}:
        return target
    handle = parse_handle(target)
    if handle is None:
        raise InvalidInputError(f"{target!r} is neither an actor URL nor a handle user@host")
    try:
        document = await get_webfinger(client, *handle)
    except RemoteFetchError as exc:
        raise InvalidInputError(f"{target}: WebFinger failed ({exc})") from None
    actor = actor_link(document)
    if actor is None:
        raise InvalidInputError(f"{target}: WebFinger names no ActivityPub actor")
    return actor


async def fetch_followable(
    session: AsyncSession, settings: Settings, client: RemoteClient, app: str, target: str
) -> RemoteActorDTO:
    if app not in APP_NAMES:
        raise InvalidInputError(f"{app!r} is not one of the apps ({', '.join(APP_NAMES)})")
    actor_url = await resolve_actor_url(client, target)
    if urls.is_local(settings, actor_url):
        raise InvalidInputError(f"{actor_url} is one of our own actors")
    try:
        actor = await get_remote_actor(session, settings, client, actor_url, refresh=True)
    except RemoteFetchError as exc:
        raise InvalidInputError(f"{target}: the actor could not be fetched ({exc})") from None
    if actor.deleted:
        raise InvalidInputError(f"{actor.uri} has been deleted")
    blocks = await get_block_list(session, settings.database_url)
    if blocks.blocks(actor.uri):
        raise InvalidInputError(f"{actor.uri} is blocked (rose-ash ap block list)")
    return actor


# -- the activities ----------------------------------------------------------------------------


def build_follow(settings: Settings, app: str, follow_uri: str, actor_uri: str) -> dict[str, Any]:
    return {
        "@context": AS_CONTEXT,
        "id": follow_uri,
        "type": "Follow",
        "actor": urls.actor_url(settings, app),
        "object": actor_uri,
        "to": [actor_uri],
    }


def build_undo(settings: Settings, app: str, follow: dict[str, Any]) -> dict[str, Any]:
    embedded = {key: value for key, value in follow.items() if key != "@context"}
    return {
        "@context": AS_CONTEXT,
        "id": urls.new_activity_url(settings, app),
        "type": "Undo",
        "actor": urls.actor_url(settings, app),
        "object": embedded,
        "to": follow["to"],
    }


# -- the operations ----------------------------------------------------------------------------


async def do_follow(
    session: AsyncSession, settings: Settings, client: RemoteClient, app: str, target: str
) -> FollowingView:
    """``app``'s actor follows ``target``: a pending follow and a Follow in the outbox (the
    caller commits). Already accepted: nothing changes. Still pending: a new Follow is sent."""
    actor = await fetch_followable(session, settings, client, app, target)
    remote_id = await session.scalar(select(ApRemoteActor.id).where(ApRemoteActor.uri == actor.uri))
    if remote_id is None:  # get_remote_actor has just stored it: gone only if deleted meanwhile
        raise InvalidInputError(f"{actor.uri} is not a followable actor")
    following = await session.scalar(
        select(ApFollowing).where(ApFollowing.app == app, ApFollowing.remote_actor_id == remote_id)
    )
    if following is not None and following.state == "accepted":
        return view_of(following, actor.uri, handle_of(actor))
    follow_uri = urls.new_activity_url(settings, app)
    if following is None:
        following = ApFollowing(app=app, remote_actor_id=remote_id, follow_uri=follow_uri)
        session.add(following)
    else:
        following.follow_uri = follow_uri
    follow = build_follow(settings, app, follow_uri, actor.uri)
    await emit_activity(
        session, settings, app, follow, visibility="direct", target_inboxes=[actor.inbox]
    )
    await session.flush()
    await session.refresh(following)
    return view_of(following, actor.uri, handle_of(actor))


async def do_unfollow(
    session: AsyncSession, settings: Settings, client: RemoteClient, app: str, target: str
) -> FollowingView:
    """``app``'s actor stops following ``target``: Undo(Follow) to its inbox, the follow
    forgotten (the caller commits). NotFoundError when it was not followed."""
    handle = parse_handle(target)
    row = None
    if handle is not None:  # the actor as we stored it, else WebFinger again
        row = await find_following_by_handle(session, app, *handle)
    if row is None:
        actor_url = (await resolve_actor_url(client, target)).split("#", 1)[0]
        found = await session.execute(
            select_follows().where(ApFollowing.app == app, ApRemoteActor.uri == actor_url)
        )
        first = found.first()
        row = (first[0], first[1]) if first is not None else None
    if row is None:
        raise NotFoundError(f"{app} does not follow {target}")
    following, actor = row
    view = view_of(following, actor.uri, handle_of(actor))
    follow = build_follow(settings, app, following.follow_uri, actor.uri)
    await emit_activity(
        session,
        settings,
        app,
        build_undo(settings, app, follow),
        visibility="direct",
        target_inboxes=[actor.inbox],
    )
    await session.execute(delete(ApFollowing).where(ApFollowing.id == following.id))
    return view


def select_follows() -> Select[ApFollowing, ApRemoteActor]:
    """Our follows, each with the remote actor it follows."""
    return select(ApFollowing, ApRemoteActor).join(
        ApRemoteActor, ApRemoteActor.id == ApFollowing.remote_actor_id
    )


async def find_following_by_handle(session: AsyncSession, app: str, user: str, host: str) -> Any:
    """(ApFollowing, ApRemoteActor) of ``app``'s follow of user@host (its handle, or the
    username and host of its URL), or None. The host may carry a port; the stored domain does
    not, so the port is matched on the actor's URL."""
    name = (urlsplit(f"//{host}").hostname or "").lower()
    wanted = f"{user}@{host}"
    rows = await session.execute(
        select_follows().where(
            ApFollowing.app == app,
            or_(
                ApRemoteActor.handle == wanted,
                and_(ApRemoteActor.preferred_username == user, ApRemoteActor.domain == name),
            ),
        )
    )
    for following, actor in rows:
        if actor.handle == wanted or fallback_handle(actor.uri, user) == wanted:
            return following, actor
    return None


async def list_following(session: AsyncSession, app: str | None = None) -> list[FollowingView]:
    """Every follow of ours (of ``app``'s actor only, when given), oldest first."""
    query = select_follows().order_by(ApFollowing.id)
    if app is not None:
        query = query.where(ApFollowing.app == app)
    rows = await session.execute(query)
    return [view_of(following, actor.uri, handle_of(actor)) for following, actor in rows]


def handle_of(actor: RemoteActorDTO | ApRemoteActor) -> str | None:
    """The actor's handle as WebFinger confirmed it, else username@host of its URL."""
    if actor.handle:
        return actor.handle
    if not actor.preferred_username:
        return None
    return fallback_handle(actor.uri, actor.preferred_username)


def view_of(following: ApFollowing, actor_uri: str, handle: str | None) -> FollowingView:
    return FollowingView(
        app=following.app,
        actor_uri=actor_uri,
        handle=handle,
        state=following.state,
        follow_uri=following.follow_uri,
        created_at=following.created_at,
        accepted_at=following.accepted_at,
    )
