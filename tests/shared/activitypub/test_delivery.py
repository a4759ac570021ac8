"""The EventProcessor: fan-out deduplicated by shared inbox, signed delivery to a real HTTP
sink on loopback, the retry schedule and dead letters, the internal bus, several workers at
once, a worker killed mid-delivery, and NOTIFY waking a worker.

Tests that need committed data seen by other connections (two processors, a worker process,
LISTEN/NOTIFY) use a database of their own next to the test database, emptied per test.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis.asyncio as aioredis
from sqlalchemy import event, func, insert, select, text, update
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from shared import worker as worker_module
from shared.config import Settings, load_settings
from shared.db import create_session_factory
from shared.infrastructure.activitypub.keys import get_keypair
from shared.infrastructure.activitypub.remote import RemoteClient
from shared.infrastructure.activitypub.signatures import IncomingRequest, verify_request
from shared.migrations import do_upgrade
from shared.models.social.actors import ApKeypair, ApRemoteActor
from shared.models.social.inbox import ApBlock, ApFollower
from shared.models.social.outbox import ApActivity, ApDelivery
from shared.services.social.delivery import (
    DeliveryPool,
    drain_deliveries,
    process_activities,
    process_deliveries,
)
from shared.services.social.publish import (
    ACTIVITIES_CHANNEL,
    PublishableObject,
    emit_activity,
    publish,
    register_internal_handler,
    unregister_internal_handler,
)
from tests.conftest import TEST_SECRET_KEY, asyncpg_url, recreate_database

NOTE = PublishableObject(object_type="Note", content="<p>hello</p>")


# --- a real inbox on loopback ----------------------------------------------------------


@dataclass
class Received:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    phase: int
    at: float = field(default_factory=time.monotonic)


@dataclass
class InboxSink:
    """A minimal HTTP/1.1 server (keep-alive) that records each POST and answers with the
    status configured for its path; it can hold every request until released."""

    statuses: dict[str, int] = field(default_factory=dict)
    default_status: int = 202
    delay: float = 0.0
    slow_paths: dict[str, float] = field(default_factory=dict)
    hold: asyncio.Event | None = None
    phase: int = 1
    received: list[Received] = field(default_factory=list)
    port: int = 0
    server: asyncio.Server | None = None
    writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.close()
        await self.server.wait_closed()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def paths(self, phase: int | None = None) -> list[str]:
        return [r.path for r in self.received if phase is None or r.phase == phase]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            while request := await self.read_request(reader):
                self.received.append(request)
                if self.hold is not None:
                    await self.hold.wait()
                if self.delay or request.path in self.slow_paths:
                    await asyncio.sleep(self.slow_paths.get(request.path, self.delay))
                status = self.statuses.get(request.path, self.default_status)
                writer.write(f"HTTP/1.1 {status} Sink\r\nContent-Length: 0\r\n\r\n".encode())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> Received | None:
        request_line = await reader.readline()
        if not request_line.strip():
            return None
        method, path, _version = request_line.decode().split(" ", 2)
        headers = []
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode().partition(":")
            headers.append((name.strip(), value.strip()))
        length = int(next((v for n, v in headers if n.lower() == "content-length"), "0"))
        body = await reader.readexactly(length) if length else b""
        return Received(method, path, headers, body, self.phase)


@pytest.fixture
async def sink() -> AsyncIterator[InboxSink]:
    server = InboxSink()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[RemoteClient]:
    remote = RemoteClient(settings)
    yield remote
    await remote.aclose()


def verify(sink: InboxSink, request: Received, public_key_pem: str) -> None:
    """The request's draft-cavage signature verifies with our public key."""
    incoming = IncomingRequest(
        request.method, sink.url(request.path), request.headers, request.body
    )
    verify_request(incoming, public_key_pem)


# --- data --------------------------------------------------------------------------------


async def add_followers(
    session: AsyncSession,
    app: str,
    inboxes: Sequence[tuple[str, str | None]],
    *,
    domain: str = "127.0.0.1",
    prefix: str = "",
) -> list[int]:
    """Remote actors following ``app``: (inbox, shared inbox) each."""
    actors: list[dict[str, Any]] = [
        {
            "uri": f"https://{domain}/users/{prefix}{index}",
            "domain": domain,
            "actor_type": "Person",
            "inbox": inbox,
            "shared_inbox": shared,
            "document": {},
        }
        for index, (inbox, shared) in enumerate(inboxes)
    ]
    ids = list(
        (await session.execute(insert(ApRemoteActor).returning(ApRemoteActor.id), actors)).scalars()
    )
    await session.execute(
        insert(ApFollower),
        [
            {
                "app": app,
                "remote_actor_id": actor_id,
                "follow_uri": f"{actor['uri']}#follow",
                "inbox": actor["inbox"],
                "shared_inbox": actor["shared_inbox"],
            }
            for actor_id, actor in zip(ids, actors, strict=True)
        ],
    )
    return ids


async def deliveries_of(session: AsyncSession, activity_id: int) -> list[ApDelivery]:
    return list(
        (
            await session.scalars(
                select(ApDelivery)
                .where(ApDelivery.activity_id == activity_id)
                .order_by(ApDelivery.inbox)
                .execution_options(populate_existing=True)
            )
        ).all()
    )


def with_activitypub(settings: Settings, **changes: Any) -> Settings:
    return settings.model_copy(
        update={"activitypub": settings.activitypub.model_copy(update=changes)}
    )


# --- fan-out -----------------------------------------------------------------------------


async def test_fan_out_is_one_delivery_per_shared_inbox(
    connection: AsyncConnection, settings: Settings, sink: InboxSink, client: RemoteClient
) -> None:
    sessions = create_session_factory(connection)
    async with sessions() as session:
        # 50 followers on 5 servers with shared inboxes, 2 on a server without one
        await add_followers(
            session,
            "blog",
            [(sink.url(f"/users/{i}/inbox"), sink.url(f"/shared/{i % 5}")) for i in range(50)]
            + [(sink.url(f"/solo/{i}/inbox"), None) for i in range(2)],
        )
        # not delivered: a follower of another app, a deleted actor, a blocked domain
        await add_followers(session, "events", [(sink.url("/events-only"), None)], prefix="e")
        [gone] = await add_followers(session, "blog", [(sink.url("/gone"), None)], prefix="g")
        await session.execute(
            update(ApRemoteActor).where(ApRemoteActor.id == gone).values(deleted_at=func.now())
        )
        await add_followers(
            session, "blog", [("https://blocked.example/inbox", None)], domain="blocked.example"
        )
        session.add(ApBlock(kind="domain", value="blocked.example"))
        emitted = await publish(session, settings, "blog", NOTE, verb="Create")
        # a target that is also a follower's shared inbox is delivered once
        direct = await emit_activity(
            session,
            settings,
            "blog",
            {"type": "Announce", "object": "x:1"},
            visibility="public",
            target_inboxes=[sink.url("/shared/0"), sink.url("/extra/inbox")],
        )
        await session.commit()

    assert await process_activities(sessions, settings) == 2
    async with sessions() as session:
        inboxes = [row.inbox for row in await deliveries_of(session, emitted.id)]
        assert inboxes == sorted(
            [sink.url(f"/shared/{i}") for i in range(5)]
            + [sink.url(f"/solo/{i}/inbox") for i in range(2)]
        )
        assert len(await deliveries_of(session, direct.id)) == 8
        activity = await session.get_one(ApActivity, emitted.id)
        assert activity.state == "done"
        assert activity.processed_at is not None
    # a second cycle finds nothing to do
    assert await process_activities(sessions, settings) == 0

    assert await process_deliveries(sessions, settings, client) == 15
    async with sessions() as session:
        keypair = await get_keypair(session, settings)  # the one that signed
    assert sorted(sink.paths()) == sorted(
        [f"/shared/{i}" for i in range(5)]
        + [f"/solo/{i}/inbox" for i in range(2)]
        + [f"/shared/{i}" for i in range(5)]
        + [f"/solo/{i}/inbox" for i in range(2)]
        + ["/extra/inbox"]
    )
    for request in sink.received:
        verify(sink, request, keypair.public_key_pem)
        headers = {name.lower(): value for name, value in request.headers}
        assert headers["content-type"].startswith("application/activity+json")
        assert 'keyId="http://blog.localhost/ap/actors/blog#main-key"' in headers["signature"]
    bodies = {json.loads(r.body)["id"] for r in sink.received}
    assert bodies == {emitted.uri, direct.uri}
    async with sessions() as session:
        rows = await deliveries_of(session, emitted.id)
        assert {(row.state, row.attempts, row.last_status) for row in rows} == {
            ("delivered", 1, 202)
        }
        assert all(row.delivered_at is not None for row in rows)
    assert await process_deliveries(sessions, settings, client) == 0


async def test_a_direct_activity_goes_to_its_targets_only(
    connection: AsyncConnection, settings: Settings, sink: InboxSink
) -> None:
    sessions = create_session_factory(connection)
    async with sessions() as session:
        await add_followers(session, "federation", [(sink.url("/follower"), None)])
        accept = await emit_activity(
            session,
            settings,
            "federation",
            {"type": "Accept", "object": "https://peer.example/follows/1"},
            visibility="direct",
            target_inboxes=[sink.url("/peer/inbox")],
        )
        await session.commit()
    await process_activities(sessions, settings)
    async with sessions() as session:
        assert [row.inbox for row in await deliveries_of(session, accept.id)] == [
            sink.url("/peer/inbox")
        ]


async def test_fan_out_to_ten_thousand_followers_is_one_statement(
    connection: AsyncConnection, settings: Settings
) -> None:
    """10,000 followers on 2,000 shared inboxes: 2,000 delivery rows, written by a single
    statement with a single parameter set (not a row per inbox, not an executemany)."""
    sessions = create_session_factory(connection)
    async with sessions() as session:
        await add_followers(
            session,
            "blog",
            [
                (
                    f"https://s{i % 2000}.example/users/{i}/inbox",
                    f"https://s{i % 2000}.example/inbox",
                )
                for i in range(10_000)
            ],
        )
        emitted = await publish(session, settings, "blog", NOTE, verb="Create")
        await session.commit()
    writes: list[tuple[str, bool]] = []

    def record_delivery_writes(
        _conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any, executemany: bool
    ) -> None:
        if "ap_deliveries" in statement and statement.lstrip().upper().startswith("INSERT"):
            writes.append((statement, executemany))

    engine = connection.sync_engine
    event.listen(engine, "before_cursor_execute", record_delivery_writes)
    try:
        await process_activities(sessions, settings)
    finally:
        event.remove(engine, "before_cursor_execute", record_delivery_writes)
    async with sessions() as session:
        count = await session.scalar(
            select(func.count()).where(ApDelivery.activity_id == emitted.id)
        )
    assert count == 2000
    assert len(writes) == 1, [statement for statement, _ in writes]
    assert writes[0][1] is False, "the fan-out ran as an executemany"


# --- outcomes ----------------------------------------------------------------------------


async def deliver_once_to(
    connection: AsyncConnection,
    settings: Settings,
    client: RemoteClient | DeliveryPool,
    inbox: str,
) -> tuple[async_sessionmaker[AsyncSession], int]:
    """Emit a direct activity to ``inbox``, fan it out and run one delivery cycle."""
    sessions = create_session_factory(connection)
    async with sessions() as session:
        emitted = await emit_activity(
            session, settings, "blog", {"type": "Like", "object": "x:1"},
            visibility="direct", target_inboxes=[inbox],
        )  # fmt: skip
        await session.commit()
    await process_activities(sessions, settings)
    assert await process_deliveries(sessions, settings, client) == 1
    return sessions, emitted.id


async def only_delivery(sessions: async_sessionmaker[AsyncSession], activity_id: int) -> ApDelivery:
    async with sessions() as session:
        [row] = await deliveries_of(session, activity_id)
        return row


async def make_due(sessions: async_sessionmaker[AsyncSession], delivery_id: int) -> None:
    async with sessions() as session:
        await session.execute(
            update(ApDelivery)
            .where(ApDelivery.id == delivery_id)
            .values(next_attempt_at=func.now() - timedelta(seconds=1))
        )
        await session.commit()


@pytest.mark.parametrize("status", [404, 410])
async def test_gone_inbox_fails_for_good_without_retry(
    connection: AsyncConnection,
    settings: Settings,
    sink: InboxSink,
    client: RemoteClient,
    status: int,
) -> None:
    sink.statuses["/gone"] = status
    sessions, activity_id = await deliver_once_to(connection, settings, client, sink.url("/gone"))
    row = await only_delivery(sessions, activity_id)
    assert (row.state, row.attempts, row.last_status) == ("failed", 1, status)
    assert row.last_error == f"HTTP {status}"
    await make_due(sessions, row.id)
    assert await process_deliveries(sessions, settings, client) == 0
    assert sink.paths() == ["/gone"]


async def test_with_federation_switched_off_nothing_is_delivered_and_nothing_is_lost(
    connection: AsyncConnection, settings: Settings, sink: InboxSink, client: RemoteClient
) -> None:
    off = settings.model_copy(
        update={"features": settings.features.model_copy(update={"federation_enabled": False})}
    )
    sessions = create_session_factory(connection)
    async with sessions() as session:
        emitted = await emit_activity(
            session, off, "blog", {"type": "Like", "object": "x:1"},
            visibility="direct", target_inboxes=[sink.url("/inbox")],
        )  # fmt: skip
        await session.commit()
    await process_activities(sessions, off)
    assert await process_deliveries(sessions, off, client) == 0
    assert sink.paths() == []
    row = await only_delivery(sessions, emitted.id)
    assert (row.state, row.attempts) == ("pending", 0)  # kept for when it is switched on
    assert await process_deliveries(sessions, settings, client) == 1
    assert sink.paths() == ["/inbox"]
    assert (await only_delivery(sessions, emitted.id)).state == "delivered"


async def test_server_errors_are_retried_on_the_schedule(
    connection: AsyncConnection, settings: Settings, sink: InboxSink, client: RemoteClient
) -> None:
    sink.default_status = 500
    started = datetime.now(UTC)
    sessions, activity_id = await deliver_once_to(connection, settings, client, sink.url("/down"))
    row = await only_delivery(sessions, activity_id)
    assert (row.state, row.attempts, row.last_status) == ("pending", 1, 500)
    # 1**4 + 15 s, plus up to 10% jitter
    delay = row.next_attempt_at - started
    assert timedelta(seconds=16) <= delay <= timedelta(seconds=16 * 1.1 + 5)
    # not due yet: nothing claimed
    assert await process_deliveries(sessions, settings, client) == 0

    sink.default_status = 429
    await make_due(sessions, row.id)
    started = datetime.now(UTC)
    assert await process_deliveries(sessions, settings, client) == 1
    row = await only_delivery(sessions, activity_id)
    assert (row.state, row.attempts, row.last_status) == ("pending", 2, 429)
    delay = row.next_attempt_at - started
    assert timedelta(seconds=31) <= delay <= timedelta(seconds=31 * 1.1 + 5)

    sink.default_status = 202
    await make_due(sessions, row.id)
    assert await process_deliveries(sessions, settings, client) == 1
    row = await only_delivery(sessions, activity_id)
    assert (row.state, row.attempts, row.last_status, row.last_error) == (
        "delivered", 3, 202, None,
    )  # fmt: skip
    assert sink.paths() == ["/down"] * 3


async def test_out_of_attempts_is_a_dead_letter(
    connection: AsyncConnection, settings: Settings, client: RemoteClient
) -> None:
    limited = with_activitypub(settings, max_delivery_attempts=2)
    # nothing listens on port 9 of loopback: connection refused, a transient error
    sessions, activity_id = await deliver_once_to(
        connection, limited, client, "http://127.0.0.1:9/inbox"
    )
    row = await only_delivery(sessions, activity_id)
    assert (row.state, row.attempts, row.last_status) == ("pending", 1, None)
    assert row.last_error
    await make_due(sessions, row.id)
    assert await process_deliveries(sessions, limited, client) == 1
    row = await only_delivery(sessions, activity_id)
    assert (row.state, row.attempts) == ("failed", 2)


@pytest.mark.parametrize("pooled", [False, True], ids=["client", "delivery-pool"])
async def test_an_unsafe_inbox_is_refused_for_good(
    connection: AsyncConnection, settings: Settings, sink: InboxSink, pooled: bool
) -> None:
    strict = with_activitypub(settings, allow_loopback=False, allowed_private_hosts=())
    remote: RemoteClient | DeliveryPool = DeliveryPool(strict) if pooled else RemoteClient(strict)
    try:
        sessions, activity_id = await deliver_once_to(
            connection, strict, remote, sink.url("/inbox")
        )
    finally:
        await remote.aclose()
    row = await only_delivery(sessions, activity_id)
    assert (row.state, row.attempts) == ("failed", 1)
    assert row.last_error is not None
    assert row.last_error.startswith("refused")
    assert sink.received == []


# --- the internal bus --------------------------------------------------------------------


async def test_internal_activities_go_to_their_handlers_not_to_inboxes(
    connection: AsyncConnection, settings: Settings, sink: InboxSink
) -> None:
    seen: list[dict[str, Any]] = []

    async def remember(
        session: AsyncSession, _settings: Settings, document: dict[str, Any]
    ) -> None:
        seen.append(document)
        session.add(ApBlock(kind="domain", value=f"seen-{len(seen)}.example"))

    register_internal_handler("MemberJoined", remember)
    sessions = create_session_factory(connection)
    try:
        async with sessions() as session:
            await add_followers(session, "account", [(sink.url("/follower"), None)])
            emitted = await emit_activity(
                session, settings, "account", {"type": "MemberJoined", "member": 7},
                visibility="internal", target_inboxes=[sink.url("/never")],
            )  # fmt: skip
            await session.commit()
        assert await process_activities(sessions, settings) == 1
    finally:
        unregister_internal_handler("MemberJoined", remember)
    assert [document["member"] for document in seen] == [7]
    async with sessions() as session:
        activity = await session.get_one(ApActivity, emitted.id)
        assert activity.state == "done"
        assert await deliveries_of(session, emitted.id) == []
        assert await session.scalar(select(ApBlock).where(ApBlock.value == "seen-1.example"))


async def test_a_failing_internal_handler_is_undone_retried_then_failed(
    connection: AsyncConnection, settings: Settings
) -> None:
    async def broken(session: AsyncSession, _settings: Settings, _document: dict[str, Any]) -> None:
        session.add(ApBlock(kind="domain", value="half-done.example"))
        await session.flush()
        raise RuntimeError("the mail server is down")

    limited = with_activitypub(settings, max_delivery_attempts=2)
    register_internal_handler("Broken", broken)
    sessions = create_session_factory(connection)
    try:
        async with sessions() as session:
            emitted = await emit_activity(
                session, settings, "blog", {"type": "Broken"}, visibility="internal"
            )
            await session.commit()
        started = datetime.now(UTC)
        assert await process_activities(sessions, limited) == 1
        async with sessions() as session:
            activity = await session.get_one(ApActivity, emitted.id)
            assert (activity.state, activity.attempts) == ("pending", 1)
            assert activity.last_error == "RuntimeError: the mail server is down"
            assert activity.next_attempt_at - started >= timedelta(seconds=16)
            # the handler's own write was rolled back with it
            half_done = select(ApBlock).where(ApBlock.value == "half-done.example")
            assert await session.scalar(half_done) is None
            activity.next_attempt_at = datetime.now(UTC) - timedelta(seconds=1)
            await session.commit()
        assert await process_activities(sessions, limited) == 1
        async with sessions() as session:
            activity = await session.get_one(ApActivity, emitted.id)
            await session.refresh(activity)
            assert (activity.state, activity.attempts) == ("failed", 2)
    finally:
        unregister_internal_handler("Broken", broken)


# --- committed data: several workers, a killed worker, NOTIFY ---------------------------


def sibling_database_url(database_url: str, suffix: str) -> str:
    parts = urlsplit(database_url)
    return urlunsplit(parts._replace(path=parts.path + suffix))


@pytest.fixture(scope="module")
async def committed_url(database_url: str) -> AsyncIterator[str]:
    """A migrated database of this module's own, for data committed across connections."""
    url = sibling_database_url(database_url, "_delivery")
    await recreate_database(url)
    await asyncio.to_thread(do_upgrade, url)
    yield url
    parts = urlsplit(url)
    maintenance = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
    try:
        await maintenance.execute(f'DROP DATABASE IF EXISTS "{parts.path[1:]}" WITH (FORCE)')
    finally:
        await maintenance.close()


@pytest.fixture
async def committed(committed_url: str, redis_url: str) -> Settings:
    """Settings for the committed database, emptied of activities and followers first."""
    engine = create_async_engine(asyncpg_url(committed_url))
    async with engine.begin() as connection:
        await connection.execute(
            text("TRUNCATE ap_activities, ap_deliveries, ap_followers, ap_remote_actors CASCADE")
        )
    await engine.dispose()
    return load_settings(
        env="test",
        database_url=committed_url,
        redis_url=redis_url,
        secret_key=TEST_SECRET_KEY,
        outbox_after_commit=False,
    )


@pytest.fixture
async def committed_engine(committed: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(committed.database_url)
    yield engine
    await engine.dispose()


async def public_key_of(engine: AsyncEngine) -> str:
    async with engine.connect() as connection:
        pem = await connection.scalar(select(ApKeypair.public_key_pem).where(ApKeypair.active))
    assert pem is not None
    return pem


async def state_counts(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(ApDelivery.state, func.count()).group_by(ApDelivery.state)
        )
        return {state: count for state, count in rows}


async def publish_to_followers(
    engine: AsyncEngine, settings: Settings, sink: InboxSink, count: int
) -> str:
    """``count`` followers of blog, each with its own inbox; a committed Create(Note)."""
    async with create_session_factory(engine)() as session:
        await add_followers(
            session, "blog", [(sink.url(f"/inbox/{i}"), None) for i in range(count)]
        )
        emitted = await publish(session, settings, "blog", NOTE, verb="Create")
        await session.commit()
    return emitted.uri


async def test_two_processors_deliver_each_row_exactly_once(
    committed: Settings, committed_engine: AsyncEngine, sink: InboxSink
) -> None:
    sink.delay = 0.005
    await publish_to_followers(committed_engine, committed, sink, 300)
    assert await process_activities(create_session_factory(committed_engine), committed) == 1

    async def processor() -> int:
        engine = create_async_engine(committed.database_url)
        remote = RemoteClient(committed)
        delivered = 0
        try:
            sessions = create_session_factory(engine)
            while claimed := await process_deliveries(sessions, committed, remote, limit=40):
                delivered += claimed
        finally:
            await remote.aclose()
            await engine.dispose()
        return delivered

    first, second = await asyncio.wait_for(asyncio.gather(processor(), processor()), 60)
    assert first > 0
    assert second > 0
    assert first + second == 300
    assert sorted(sink.paths()) == sorted(f"/inbox/{i}" for i in range(300))
    assert await state_counts(committed_engine) == {"delivered": 300}


async def test_a_slow_inbox_holds_up_only_its_own_lane(
    committed: Settings, committed_engine: AsyncEngine, sink: InboxSink
) -> None:
    sink.slow_paths["/inbox/0"] = 3.0
    await publish_to_followers(committed_engine, committed, sink, 60)
    sessions = create_session_factory(committed_engine)
    await process_activities(sessions, committed)
    remote = DeliveryPool(committed)
    try:
        started = time.monotonic()
        more = await drain_deliveries(sessions, committed, remote, seconds=30, lanes=4, limit=5)
    finally:
        await remote.aclose()
    assert more is False
    assert sorted(sink.paths()) == sorted(f"/inbox/{i}" for i in range(60))
    others = [r.at - started for r in sink.received if r.path != "/inbox/0"]
    # the other lanes went on while one waited 3 s for /inbox/0
    assert max(others) < 2.5, f"the last other inbox was reached after {max(others):.2f} s"
    assert await state_counts(committed_engine) == {"delivered": 60}


def worker_environment(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("ROSE_ASH_")},
        "ROSE_ASH_ENV": "test",
        "DATABASE_URL": settings.sync_database_url,
        "REDIS_URL": settings.redis_url,
        "SECRET_KEY": TEST_SECRET_KEY,
        **extra,
    }


async def start_worker(settings: Settings) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.cli", "worker",
        env=worker_environment(settings, ROSE_ASH_ACTIVITYPUB__DELIVERY_TIMEOUT_SECONDS="60"),
    )  # fmt: skip


async def wait_until(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_a_worker_killed_mid_delivery_loses_nothing(
    committed: Settings, committed_engine: AsyncEngine, sink: InboxSink
) -> None:
    total = 250
    sink.hold = asyncio.Event()  # the first worker's requests hang
    activity_uri = await publish_to_followers(committed_engine, committed, sink, total)
    first = await start_worker(committed)
    try:

        async def stalled() -> bool:
            return len(sink.received) >= 30

        await wait_until(stalled, 60, "the first worker to start delivering")
        first.send_signal(signal.SIGKILL)
        await asyncio.wait_for(first.wait(), 10)
    finally:
        if first.returncode is None:
            first.kill()
            await first.wait()
    # its fan-out committed; its delivery batch died with it: still pending, unattempted
    assert await state_counts(committed_engine) == {"pending": total}
    held = set(sink.paths(phase=1))

    sink.phase = 2
    sink.hold.set()
    second = await start_worker(committed)
    try:

        async def drained() -> bool:
            return await state_counts(committed_engine) == {"delivered": total}

        await wait_until(drained, 60, "the second worker to deliver everything")
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(second.wait(), 15)
        except TimeoutError:
            second.kill()
            await second.wait()
    redelivered = sink.paths(phase=2)
    assert sorted(set(redelivered)) == sorted(f"/inbox/{i}" for i in range(total))
    assert held <= set(redelivered)  # what the dead worker had in hand came again
    public_key = await public_key_of(committed_engine)
    for request in sink.received:
        assert json.loads(request.body)["id"] == activity_uri
        verify(sink, request, public_key)


async def test_notify_wakes_a_listening_worker_before_its_poll(
    committed: Settings,
    committed_engine: AsyncEngine,
    sink: InboxSink,
    redis: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    poll = 60.0
    monkeypatch.setattr(worker_module, "ACTIVITIES_POLL_SECONDS", poll)
    monkeypatch.setattr(worker_module, "DELIVERIES_POLL_SECONDS", poll)
    worker = worker_module.build_worker(committed)
    running = asyncio.create_task(worker.run())
    try:

        async def listening() -> bool:
            async with committed_engine.connect() as connection:
                found = await connection.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE application_name = 'rose-ash-worker-listen' AND state = 'idle'"
                    )
                )
            jobs_waiting = all(job.next_run > time.monotonic() for job in worker.jobs
                               if job.name.startswith("ap-"))  # fmt: skip
            return bool(found) and jobs_waiting

        await wait_until(listening, 30, "the worker to listen")
        await asyncio.sleep(0.3)
        started = time.monotonic()
        await publish_to_followers(committed_engine, committed, sink, 3)

        async def delivered() -> bool:
            return len(sink.received) == 3

        await wait_until(delivered, 10, "the woken worker to deliver")
        elapsed = time.monotonic() - started
        assert elapsed < 3, f"took {elapsed:.2f} s"
    finally:
        worker.stop()
        await asyncio.wait_for(running, 15)
    assert await state_counts(committed_engine) == {"delivered": 3}


async def test_notify_is_sent_only_when_the_emitting_transaction_commits(
    committed: Settings, committed_engine: AsyncEngine
) -> None:
    notified: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(committed.sync_database_url)
    await listener.add_listener(
        ACTIVITIES_CHANNEL, lambda _c, _pid, channel, _payload: notified.put_nowait(channel)
    )
    try:
        sessions = create_session_factory(committed_engine)
        async with sessions() as session:
            await emit_activity(session, committed, "blog", {"type": "Create"})
            await session.rollback()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(notified.get(), 0.5)
        async with sessions() as session:
            await emit_activity(session, committed, "blog", {"type": "Create"})
            await asyncio.sleep(0.2)
            assert notified.empty()  # not before commit
            await session.commit()
        assert await asyncio.wait_for(notified.get(), 5) == ACTIVITIES_CHANNEL
    finally:
        await listener.close()
