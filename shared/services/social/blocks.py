"""Domain and actor blocks: what a blocked server or actor sends us is never stored or applied.

A domain block covers the host and its subdomains (as Mastodon's do), on any port. The inbox
checks blocks on every POST before it looks up a key (a blocked server must not make us fetch
anything), so the block list is kept in process memory for a few seconds instead of being
queried per POST; ``do_block``/``do_unblock`` drop this process's copy at once, and other
processes see a change within ``BLOCK_CACHE_SECONDS``. The worker checks the database itself
(``is_blocked``), so an item stored in that gap is still ignored when it is processed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from urllib.parse import urlsplit

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.models.social.actors import ApRemoteActor
from shared.models.social.inbox import ApBlock, ApFollower, ApFollowing

BlockKind = Literal["domain", "actor"]
BLOCK_KINDS: tuple[BlockKind, ...] = ("domain", "actor")
BLOCK_CACHE_SECONDS = 10.0


@dataclass(frozen=True)
class BlockList:
    domains: frozenset[str]
    actors: frozenset[str]

    def blocks(self, *uris: str) -> bool:
        """Whether any of ``uris`` (actor or key ids) is a blocked actor or on a blocked domain."""
        for uri in uris:
            if uri.split("#", 1)[0] in self.actors:
                return True
            host = host_of(uri)
            if host and any(domain_matches(host, domain) for domain in self.domains):
                return True
        return False


# The block list per database URL, with the monotonic time it was read.
_cached: dict[str, tuple[float, BlockList]] = {}


def host_of(uri: str) -> str:
    """The lower-case host name of ``uri`` without its port ("" when it has none)."""
    try:
        return (urlsplit(uri).hostname or "").lower()
    except ValueError:
        return ""


def normalise_domain(value: str) -> str:
    """A domain as blocks store it: a bare lower-case host name (a URL or a port is dropped)."""
    value = value.strip().lower()
    if "://" in value:
        return host_of(value)
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def domain_matches(host: str, domain: str) -> bool:
    """Whether ``host`` is ``domain`` or one of its subdomains."""
    return host == domain or host.endswith("." + domain)


async def read_block_list(session: AsyncSession) -> BlockList:
    rows = (await session.execute(select(ApBlock.kind, ApBlock.value))).all()
    return BlockList(
        domains=frozenset(value for kind, value in rows if kind == "domain"),
        actors=frozenset(value for kind, value in rows if kind == "actor"),
    )


def get_held_block_list(cache_key: str) -> BlockList | None:
    """The block list this process holds, if it is recent enough to use; never reads."""
    cached = _cached.get(cache_key)
    if cached is not None and time.monotonic() - cached[0] < BLOCK_CACHE_SECONDS:
        return cached[1]
    return None


async def get_block_list(session: AsyncSession, cache_key: str) -> BlockList:
    """The block list, read at most every BLOCK_CACHE_SECONDS per process (inbox hot path)."""
    now = time.monotonic()
    cached = _cached.get(cache_key)
    if cached is not None and now - cached[0] < BLOCK_CACHE_SECONDS:
        return cached[1]
    block_list = await read_block_list(session)
    _cached[cache_key] = (now, block_list)
    return block_list


def forget_blocks() -> None:
    """Drop this process's copy of the block list (after a change, and between tests)."""
    _cached.clear()


async def is_blocked(session: AsyncSession, *uris: str) -> bool:
    """Whether any of ``uris`` is blocked, read from the database now (the worker's check)."""
    return (await read_block_list(session)).blocks(*uris)


async def do_block(
    session: AsyncSession, kind: BlockKind, value: str, reason: str | None = None
) -> None:
    """Block a domain or an actor, and drop the follows both ways with what it covers.

    Idempotent: blocking twice keeps one row (the first reason).
    """
    if kind not in BLOCK_KINDS:
        raise ValueError(f"unknown block kind {kind!r}")
    value = normalise_domain(value) if kind == "domain" else value.split("#", 1)[0]
    if not value:
        raise ValueError("nothing to block")
    await session.execute(
        insert(ApBlock)
        .values(kind=kind, value=value, reason=reason)
        .on_conflict_do_nothing(index_elements=["kind", "value"])
    )
    actor_ids = await list_covered_actor_ids(session, kind, value)
    if actor_ids:
        await session.execute(delete(ApFollower).where(ApFollower.remote_actor_id.in_(actor_ids)))
        await session.execute(delete(ApFollowing).where(ApFollowing.remote_actor_id.in_(actor_ids)))
    forget_blocks()


@dataclass(frozen=True)
class BlockView:
    kind: str
    value: str
    reason: str | None
    created_at: datetime


async def list_blocks(session: AsyncSession) -> list[BlockView]:
    """Every block, oldest first (for operators)."""
    rows = await session.execute(
        select(ApBlock.kind, ApBlock.value, ApBlock.reason, ApBlock.created_at).order_by(ApBlock.id)
    )
    return [BlockView(*row) for row in rows]


async def do_unblock(session: AsyncSession, kind: BlockKind, value: str) -> bool:
    """Lift a block; whether there was one. Follows it removed are not restored."""
    value = normalise_domain(value) if kind == "domain" else value.split("#", 1)[0]
    result = await session.execute(
        delete(ApBlock).where(ApBlock.kind == kind, ApBlock.value == value).returning(ApBlock.id)
    )
    forget_blocks()
    return result.first() is not None


async def list_covered_actor_ids(session: AsyncSession, kind: BlockKind, value: str) -> list[int]:
    """The known remote actors a block covers."""
    if kind == "actor":
        found = await session.scalars(select(ApRemoteActor.id).where(ApRemoteActor.uri == value))
        return list(found)
    # ap_remote_actors.domain is the actor's lower-case host name without port.
    found = await session.scalars(
        select(ApRemoteActor.id).where(
            (ApRemoteActor.domain == value)
            | ApRemoteActor.domain.endswith("." + value, autoescape=True)
        )
    )
    return list(found)
