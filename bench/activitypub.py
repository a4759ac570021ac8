"""ActivityPub federation: discovery documents, inbox ingest and processing, fan-out (issue 6).

Run: `make bench-activitypub` (or `uv run python -m bench.activitypub`; `--quick` for a short
development run). Needs `wrk`. Everything runs on 127.0.0.1 and is stopped at the end.

One run starts an embedded PostgreSQL and Redis, migrates and seeds them, serves blog and a
Quart hello-world under Hypercorn (one worker each, as production runs them) and measures:

1. Documents: wrk (-c20) on blog's actor document (``/ap/actors/blog``, Accept:
   application/activity+json) and its WebFinger answer, interleaved with the hello-world:
   req/s, p50/p99 and the ratio to hello. Goal >= 2,000 req/s each.
2. Inbox ingest: 50 remote actors on 5 fake hosts (ap_remote_actors rows holding the public
   half of a key generated here, so no key is fetched) Like one of blog's objects. N distinct
   POSTs (unique activity ids) are signed beforehand (draft-cavage, rsa-sha256, with Digest:
   signatures.sign_request) and written as raw HTTP requests to a file that a wrk Lua script
   walks through, each request sent exactly once at concurrency 20 (wrk stays far from being
   the bottleneck: it is C, and its ceiling on the hello-world is shown in phase 1). Reported:
   req/s, p50/p99, 202s and non-202s, and the ap_inbox_items rows (must equal the 202s).
   Goal >= 500/s. Then one real worker process (`rose-ash worker`, same environment) is
   started and timed from its first item until no item is pending: items/s, and the effect
   (ap_reactions rows). Goal >= 200/s.
3. Fan-out: 10,000 followers of blog over 2,000 shared inboxes (inserted with INSERT ...
   SELECT generate_series) served by a sink in its own process (bench/ap_sink.py: a raw
   asyncio HTTP/1.1 keep-alive server answering 202, counting POSTs per path, checking every
   50th signature against blog's public key). A Create(Note) is published with
   publish.publish() in a committed transaction while K already running workers (K=1, then
   K=2 with a fresh activity) wait; the drain time runs from the commit until every
   ap_deliveries row of the activity is delivered (the last row's delivered_at, as the worker
   recorded it; the database is polled every 0.2 s to see when that is).
   Deliveries/s per worker process: goal >= 300. The sink must get exactly one POST per
   shared inbox.

Bench-only settings (printed with the results): ROSE_ASH_ACTIVITYPUB__ALLOW_LOOPBACK=true (the
sink is on loopback) and a huge inbox rate limit (the ingest comes from 5 hosts only).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.request import Request, urlopen

import asyncpg
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bench.foundation import Sample, find_wrk, free_port, run_wrk, to_ms, wait_until_up
from bench.fragments import hypercorn
from shared.config import Settings, load_settings
from shared.db import create_engine, create_session_factory
from shared.devrunner import migrate_and_seed
from shared.embedded import EmbeddedPostgres, EmbeddedRedis
from shared.infrastructure.activitypub.keys import generate_keypair
from shared.infrastructure.activitypub.signatures import sign_request
from shared.services.social.publish import PublishableObject, publish
from shared.serving import PROJECT_ROOT
from shared.worker import HEARTBEAT_KEY_PREFIX

SECRET = "bench-secret-key-that-is-long-enough-to-pass"  # noqa: S105 (scratch servers)
DATABASE = "rose_ash_bench"
ACTIVITY_JSON = "application/activity+json"
AS_CONTEXT = "https://www.w3.org/ns/activitystreams"
REMOTE_HOSTS = 5
ACTORS_PER_HOST = 10
INBOX_RATE_LIMIT = 100_000_000  # per remote host per minute: the ingest comes from 5 hosts
POLL_SECONDS = 0.2
GOALS = {"documents": 2000.0, "ingest": 500.0, "processing": 200.0, "fan-out": 300.0}

# Walks a file of raw requests (each followed by NUL), sending each exactly once (see the
# module docstring). wrk calls request() once up front only to check that it parses.
# After the last request a connection gets an unfinished request head: the server waits for
# the rest and answers nothing, so wrk's statistics hold exactly the file's requests. When all
# are answered the thread stops and prints ALL-ANSWERED; the benchmark then sends SIGINT, which
# ends wrk's run at once (its Requests/sec then covers the real run, not the -d duration).
WALK_LUA = r"""
local requests = {}
local count = 0
local index = 0
local probed = false
local stall = "GET /stalled HTTP/1.1\r\nHost: 127.0.0.1\r\n"
local threads = {}
answered = 0
statuses = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local file = assert(io.open(args[1], "rb"))
  local data = file:read("*a")
  file:close()
  local position = 1
  while true do
    local first = string.find(data, "\0", position, true)
    if not first then break end
    count = count + 1
    requests[count] = string.sub(data, position, first - 1)
    position = first + 1
  end
end

function request()
  if not probed then
    probed = true
    return requests[1]
  end
  index = index + 1
  if index <= count then
    return requests[index]
  end
  return stall
end

function response(status, headers, body)
  answered = answered + 1
  statuses[status] = (statuses[status] or 0) + 1
  if answered == count then
    io.write("ALL-ANSWERED\n")
    io.flush()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    io.write(string.format("ANSWERED %d\n", thread:get("answered")))
    for status, n in pairs(thread:get("statuses")) do
      io.write(string.format("STATUS %d %d\n", status, n))
    end
  end
end
"""


# --- options ---------------------------------------------------------------------------------


def parse_options() -> argparse.Namespace:
    """bench.foundation's common options (--seconds, --rounds, --connections) plus this
    benchmark's sizes; --quick shrinks everything for a development run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="length of one wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per target")
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--requests", type=int, default=10_000, help="signed inbox POSTs")
    parser.add_argument("--followers", type=int, default=10_000)
    parser.add_argument("--inboxes", type=int, default=2_000, help="distinct shared inboxes")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="Hypercorn workers of blog and of the hello-world (production: 1 per replica)",
    )
    parser.add_argument("--quick", action="store_true", help="a short run: fewer of everything")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds = min(args.seconds, 2), 1
        args.requests = min(args.requests, 1_500)
        args.followers, args.inboxes = min(args.followers, 2_000), min(args.inboxes, 400)
    return args


# --- processes -------------------------------------------------------------------------------


@dataclass
class Processes:
    """Every process this run starts, stopped (SIGTERM, then SIGKILL) by its own handle."""

    running: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, command: Sequence[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(list(command), env=env, cwd=PROJECT_ROOT)
        self.running.append(process)
        return process

    def add(self, process: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        self.running.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if process in self.running:
            self.running.remove(process)

    def stop_all(self) -> None:
        for process in list(reversed(self.running)):
            self.stop(process)


def worker_command() -> list[str]:
    """`rose-ash worker`, the console script of this environment (what `uv run` runs)."""
    script = Path(sys.executable).parent / "rose-ash"
    if script.exists():
        return [str(script), "worker"]
    return [sys.executable, "-c", "from shared.cli import main; main()", "worker"]


def wait_for_heartbeats(redis_url: str, pids: Sequence[int], seconds: float = 60) -> None:
    """Until every worker has recorded its first heartbeat (its first cycle has begun)."""
    client = redis.Redis.from_url(redis_url)
    keys = [f"{HEARTBEAT_KEY_PREFIX}{socket.gethostname()}-{pid}" for pid in pids]
    deadline = time.monotonic() + seconds
    try:
        while client.exists(*keys) < len(keys):
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers {list(pids)} did not start within {seconds} s")
            time.sleep(0.05)
    finally:
        client.close()


def http_json(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> Any:
    request = Request(url, method=method, headers=headers or {})  # noqa: S310 (loopback)
    with urlopen(request, timeout=10) as response:  # noqa: S310 (loopback)
        return json.loads(response.read() or b"null")


def wait_for_port(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


# --- the database ----------------------------------------------------------------------------


def run_sql(url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    async def go() -> list[asyncpg.Record]:
        connection = await asyncpg.connect(url)
        try:
            return list(await connection.fetch(query, *args))
        finally:
            await connection.close()

    return asyncio.run(go())


def poll_until(
    url: str,
    query: str,
    args: Sequence[Any],
    finished: Callable[[asyncpg.Record], bool],
    seconds: float,
) -> tuple[asyncpg.Record, float, bool]:
    """Run ``query`` every POLL_SECONDS until ``finished(row)``: (last row, the wall-clock
    time it was read, whether it finished in time)."""

    async def go() -> tuple[asyncpg.Record, float, bool]:
        connection = await asyncpg.connect(url)
        try:
            deadline = time.monotonic() + seconds
            while True:
                row = await connection.fetchrow(query, *args)
                seen = time.time()
                if row is not None and finished(row):
                    return row, seen, True
                if time.monotonic() > deadline:
                    return row, seen, False
                await asyncio.sleep(POLL_SECONDS)
        finally:
            await connection.close()

    return asyncio.run(go())


# --- phase 1: documents ----------------------------------------------------------------------


def measure_documents(
    wrk: str, args: argparse.Namespace, hello: str, blog: str, blog_host: str
) -> dict[str, list[Sample]]:
    targets: dict[str, tuple[str, list[str]]] = {
        "hello": (f"{hello}/", []),
        "actor": (f"{blog}/ap/actors/blog", [f"Accept: {ACTIVITY_JSON}"]),
        "webfinger": (f"{blog}/.well-known/webfinger?resource=acct:blog@{blog_host}", []),
    }
    samples: dict[str, list[Sample]] = {name: [] for name in targets}
    for round_number in range(1, args.rounds + 1):
        for name, (url, headers) in targets.items():
            sample = run_wrk(wrk, url, args.seconds, args.connections, headers)
            samples[name].append(sample)
            print(
                f"round {round_number} {name:<10} {sample.requests_per_second:8.0f} req/s"
                f"  p50 {sample.p50_ms:6.2f} ms  p99 {sample.p99_ms:7.2f} ms"
                f"  non-2xx/errors {sample.errors}"
                + (
                    "  (NO REQUEST COMPLETED: a stalled machine?)"
                    if not sample.requests_per_second
                    else ""
                ),
                flush=True,
            )
    return samples


# --- phase 2: inbox ingest and processing ----------------------------------------------------


@dataclass(frozen=True)
class RemoteActor:
    uri: str
    key_id: str

    @property
    def host(self) -> str:
        return self.uri.split("/")[2]


def remote_actors() -> list[RemoteActor]:
    return [
        RemoteActor(
            f"https://remote{h}.example/users/u{a}",
            f"https://remote{h}.example/users/u{a}#main-key",
        )
        for h in range(REMOTE_HOSTS)
        for a in range(ACTORS_PER_HOST)
    ]


_signing_key: rsa.RSAPrivateKey | None = None


def load_signing_key(private_pem: bytes) -> None:
    global _signing_key
    key = serialization.load_pem_private_key(private_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    _signing_key = key


def build_signed_posts(job: tuple[range, str, str, list[RemoteActor]]) -> list[bytes]:
    """Raw HTTP/1.1 requests: a signed POST of a Like (a new activity id each) per index."""
    indexes, inbox_url, object_uri, actors = job
    assert _signing_key is not None
    host_and_path = inbox_url.split("://", 1)[1]
    path = "/" + host_and_path.split("/", 1)[1]
    posts = []
    for index in indexes:
        actor = actors[index % len(actors)]
        body = json.dumps(
            {
                "@context": AS_CONTEXT,
                "id": f"{actor.uri}/likes/{index}-{uuid.uuid4().hex[:8]}",
                "type": "Like",
                "actor": actor.uri,
                "object": object_uri,
            },
            separators=(",", ":"),
        ).encode()
        signed = sign_request(
            "POST", inbox_url, key_id=actor.key_id, private_key=_signing_key, body=body
        )
        head = [
            f"POST {path} HTTP/1.1",
            *(f"{name}: {value}" for name, value in signed.items()),
            f"Content-Type: {ACTIVITY_JSON}",
            "User-Agent: rose-ash-bench",
            f"Content-Length: {len(body)}",
        ]
        posts.append(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    return posts


def start_signing(
    pool: Any, count: int, inbox_url: str, object_uri: str, actors: list[RemoteActor]
) -> Any:
    chunk = 500
    jobs = [
        (range(start, min(start + chunk, count)), inbox_url, object_uri, actors)
        for start in range(0, count, chunk)
    ]
    return pool.map_async(build_signed_posts, jobs)


def insert_remote_actors(url: str, actors: list[RemoteActor], public_pem: str) -> None:
    run_sql(
        url,
        """
        INSERT INTO ap_remote_actors
            (uri, domain, actor_type, preferred_username, inbox, shared_inbox, key_id,
             public_key_pem, document)
        SELECT u, split_part(u, '/', 3), 'Person', split_part(u, '/', 5), u || '/inbox',
               'https://' || split_part(u, '/', 3) || '/inbox', u || '#main-key', $2::text,
               '{}'::jsonb
        FROM unnest($1::text[]) AS u
        """,
        [actor.uri for actor in actors],
        public_pem,
    )


def insert_local_object(url: str, object_uri: str) -> None:
    document = {"@context": AS_CONTEXT, "id": object_uri, "type": "Note", "content": "bench"}
    run_sql(
        url,
        "INSERT INTO ap_objects (uri, app, object_type, document) "
        "VALUES ($1, 'blog', 'Note', $2::jsonb)",
        object_uri,
        json.dumps(document),
    )


@dataclass
class IngestResult:
    sample: Sample | None
    statuses: dict[int, int]
    answered: int
    seconds: float
    finished: bool
    output: str


def parse_wrk(output: str) -> Sample | None:
    try:
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
        p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
        p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    except AttributeError:
        return None
    socket_errors = re.search(r"Socket errors: (.*)", output)
    errors = sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1))) if socket_errors else 0
    return Sample(rps, p50, p99, errors)


def run_ingest(
    wrk: str, url: str, requests_file: Path, script: Path, connections: int, limit: float
) -> IngestResult:
    """Fire every request of the file once (see WALK_LUA); SIGINT wrk when all are answered,
    or when ``limit`` seconds have passed."""
    command = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{int(limit) + 60}s",
        "--timeout",
        "60s",
        "--latency",
        "-s",
        str(script),
        url,
        "--",
        str(requests_file),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    all_answered = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.startswith("ALL-ANSWERED"):
                all_answered.set()

    reader = threading.Thread(target=read, daemon=True)
    started = time.monotonic()
    reader.start()
    finished = all_answered.wait(limit)
    elapsed = time.monotonic() - started
    process.send_signal(signal.SIGINT)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    reader.join(5)
    output = "".join(lines)
    statuses = {int(s): int(n) for s, n in re.findall(r"^STATUS (\d+) (\d+)$", output, re.M)}
    answered_match = re.search(r"^ANSWERED (\d+)$", output, re.M)
    answered = int(answered_match.group(1)) if answered_match else sum(statuses.values())
    return IngestResult(parse_wrk(output), statuses, answered, elapsed, finished, output)


@dataclass
class ProcessingResult:
    items: int
    seconds: float
    finished: bool
    states: dict[str, int]
    reactions: int
    startup_seconds: float


def measure_processing(
    processes: Processes, env: dict[str, str], database_url: str, redis_url: str, limit: float
) -> ProcessingResult:
    """One worker applies every stored item: timed from its first item to none pending."""
    spawned = time.time()
    worker = processes.start(worker_command(), env)
    try:
        _, done_at, finished = poll_until(
            database_url,
            "SELECT count(*) AS pending FROM ap_inbox_items WHERE state = 'pending'",
            (),
            lambda row: row["pending"] == 0,
            limit,
        )
    finally:
        processes.stop(worker)
    rows = run_sql(database_url, "SELECT state, count(*) AS n FROM ap_inbox_items GROUP BY state")
    states = {row["state"]: row["n"] for row in rows}
    first = run_sql(
        database_url,
        "SELECT extract(epoch FROM min(processed_at)) AS first FROM ap_inbox_items",
    )[0]["first"]
    reactions = run_sql(database_url, "SELECT count(*) AS n FROM ap_reactions")[0]["n"]
    processed = sum(n for state, n in states.items() if state != "pending")
    started = float(first) if first is not None else spawned
    return ProcessingResult(
        items=processed,
        seconds=max(done_at - started, 1e-6),
        finished=finished,
        states=states,
        reactions=reactions,
        startup_seconds=started - spawned,
    )


# --- phase 3: fan-out ------------------------------------------------------------------------


def insert_followers(url: str, followers: int, inboxes: int, sink_base: str) -> int:
    """``followers`` remote actors following blog, over ``inboxes`` shared inboxes of the sink
    (set-based: two INSERT ... SELECT statements)."""
    run_sql(
        url,
        """
        INSERT INTO ap_remote_actors
            (uri, domain, actor_type, preferred_username, inbox, shared_inbox, key_id,
             public_key_pem, document)
        SELECT 'https://follower' || (i % $2::int) || '.example/users/f' || i,
               'follower' || (i % $2::int) || '.example', 'Person', 'f' || i,
               $1::text || (i % $2::int) || '/users/f' || i,
               $1::text || (i % $2::int),
               'https://follower' || (i % $2::int) || '.example/users/f' || i || '#main-key',
               NULL, '{}'::jsonb
        FROM generate_series(0, $3::int - 1) AS i
        """,
        sink_base,
        inboxes,
        followers,
    )
    run_sql(
        url,
        """
        INSERT INTO ap_followers (app, remote_actor_id, follow_uri, inbox, shared_inbox)
        SELECT 'blog', id, uri || '/follows/blog', inbox, shared_inbox
        FROM ap_remote_actors WHERE uri LIKE 'https://follower%'
        """,
    )
    rows = run_sql(
        url,
        "SELECT count(*) AS n, count(DISTINCT shared_inbox) AS inboxes FROM ap_followers "
        "WHERE app = 'blog'",
    )
    return int(rows[0]["inboxes"])


async def publish_note(settings: Settings, label: str) -> tuple[int, float]:
    """Create(Note) as blog, committed: (the activity's row id, wall-clock commit time)."""
    engine = create_engine(settings, "bench")
    try:
        async with create_session_factory(engine)() as session:
            async with session.begin():
                emitted = await publish(
                    session,
                    settings,
                    "blog",
                    PublishableObject("Note", content=f"<p>Fan-out benchmark: {label}</p>"),
                    verb="Create",
                )
            committed = time.time()
    finally:
        await engine.dispose()
    return emitted.id, committed


@dataclass
class FanOutResult:
    workers: int
    expected: int
    delivered: int
    failed: int
    pending: int
    fanned_out_seconds: float | None
    seconds: float
    finished: bool
    sink: dict[str, Any]

    @property
    def rate(self) -> float:
        return self.delivered / self.seconds if self.seconds > 0 else 0.0


def measure_fan_out(
    processes: Processes,
    env: dict[str, str],
    settings: Settings,
    sink_port: int,
    workers: int,
    expected: int,
    limit: float,
) -> FanOutResult:
    database_url = settings.sync_database_url
    started = [processes.start(worker_command(), env) for _ in range(workers)]
    try:
        wait_for_heartbeats(settings.redis_url, [p.pid for p in started])
        time.sleep(0.5)  # let the first cycle (outbox, inbox polls) pass
        http_json(f"http://127.0.0.1:{sink_port}/reset", method="POST")
        activity_id, committed = asyncio.run(publish_note(settings, f"{workers} worker(s)"))
        fanned_out: list[float] = []

        def drained(row: asyncpg.Record) -> bool:
            if row["total"] >= expected and not fanned_out:
                fanned_out.append(time.time())
            return bool(row["total"] >= expected and row["pending"] == 0)

        row, done_at, finished = poll_until(
            database_url,
            """
            SELECT count(*) AS total,
                   count(*) FILTER (WHERE state = 'delivered') AS delivered,
                   count(*) FILTER (WHERE state = 'failed') AS failed,
                   count(*) FILTER (WHERE state = 'pending') AS pending,
                   max(delivered_at) AS last_delivered
            FROM ap_deliveries WHERE activity_id = $1
            """,
            (activity_id,),
            drained,
            limit,
        )
    finally:
        for process in started:
            processes.stop(process)
    sink = http_json(f"http://127.0.0.1:{sink_port}/stats")
    return FanOutResult(
        workers=workers,
        expected=expected,
        delivered=row["delivered"],
        failed=row["failed"],
        pending=row["pending"],
        fanned_out_seconds=fanned_out[0] - committed if fanned_out else None,
        # The last delivery's own time (what the worker recorded), not the poll that saw it.
        seconds=(
            row["last_delivered"].timestamp() - committed
            if finished and row["last_delivered"] is not None
            else done_at - committed
        ),
        finished=finished,
        sink=sink,
    )


# --- the run ---------------------------------------------------------------------------------


def build_environment(
    ports: dict[str, int], postgres: EmbeddedPostgres, redis_url: str
) -> dict[str, str]:
    return {
        **os.environ,
        "ROSE_ASH_ENV": "production",
        "ROSE_ASH_LOG_LEVEL": "WARNING",  # an access line per request would measure logging
        "DATABASE_URL": postgres.url(DATABASE),
        "REDIS_URL": redis_url,
        "SECRET_KEY": SECRET,
        # Production wants the key secrets of their own (see README, Secrets).
        "OIDC_KEY_SECRET": SECRET + "-oidc-key",
        "AP_KEY_SECRET": SECRET + "-ap-key",
        "ROSE_ASH_SMTP__HOST": "127.0.0.1",  # production needs one; nothing here sends mail
        "ROSE_ASH_APPS__BLOG": f"http://127.0.0.1:{ports['blog']}",
        "ROSE_ASH_PAGE_CACHE__ENABLED": "false",
        # Bench-only: the sink is on loopback; the ingest comes from 5 hosts only.
        "ROSE_ASH_ACTIVITYPUB__ALLOW_LOOPBACK": "true",
        "ROSE_ASH_ACTIVITYPUB__INBOX_RATE_LIMIT_PER_MINUTE": str(INBOX_RATE_LIMIT),
    }


def main() -> int:
    args = parse_options()
    wrk = find_wrk()
    if wrk is None:
        return 2

    scratch = Path(tempfile.mkdtemp(prefix="rose-ash-bench-ap-"))
    postgres = EmbeddedPostgres(scratch / "pg")
    redis_server = EmbeddedRedis(scratch / "redis")
    processes = Processes()
    pool: Any = None
    results: dict[str, Any] = {}
    try:
        ports = {name: free_port() for name in ("hello", "blog", "sink")}
        blog = f"http://127.0.0.1:{ports['blog']}"
        blog_host = f"127.0.0.1:{ports['blog']}"
        inbox_url = f"{blog}/ap/actors/blog/inbox"
        object_uri = f"{blog}/ap/objects/{uuid.uuid4()}"
        actors = remote_actors()
        remote_public, remote_private = generate_keypair()  # the remote actors' one key
        # Signing N requests takes a while: on both cores, while the servers start.
        pool = multiprocessing.get_context("fork").Pool(
            min(2, os.cpu_count() or 1), initializer=load_signing_key, initargs=(remote_private,)
        )
        signing = start_signing(pool, args.requests, inbox_url, object_uri, actors)
        signing_started = time.monotonic()

        postgres.start()
        postgres.create_database(DATABASE)
        redis_server.start()
        env = build_environment(ports, postgres, redis_server.url(0))
        os.environ.update(env)  # this process's settings are the servers' and workers'
        settings = load_settings()
        database_url = settings.sync_database_url
        asyncio.run(migrate_and_seed(settings))

        processes.add(hypercorn("bench.hello_app:app", ports["hello"], env, args.workers))
        processes.add(hypercorn("blog.app:create_app()", ports["blog"], env, args.workers))
        wait_until_up(f"http://127.0.0.1:{ports['hello']}/")
        wait_until_up(f"{blog}/healthz")
        # The first actor request creates blog's keypair; the sink checks signatures with it.
        actor_document = http_json(f"{blog}/ap/actors/blog", headers={"Accept": ACTIVITY_JSON})
        public_key_file = scratch / "blog-public-key.pem"
        public_key_file.write_text(actor_document["publicKey"]["publicKeyPem"])
        processes.start(
            [
                sys.executable,
                "-m",
                "bench.ap_sink",
                "--port",
                str(ports["sink"]),
                "--public-key",
                str(public_key_file),
            ],
            env,
        )
        wait_for_port(ports["sink"])
        insert_remote_actors(database_url, actors, remote_public)
        insert_local_object(database_url, object_uri)

        posts: list[list[bytes]] = signing.get(timeout=600)
        pool.close()
        pool.join()
        requests_file = scratch / "inbox-posts.bin"
        with requests_file.open("wb") as out:
            for chunk in posts:
                for post in chunk:
                    out.write(post + b"\0")
        print(
            f"setup done: {args.requests} signed inbox POSTs built "
            f"({time.monotonic() - signing_started:.1f} s, overlapping the servers' start)",
            flush=True,
        )
        del posts

        print("\n1. actor document and WebFinger, interleaved with the hello-world", flush=True)
        results["documents"] = measure_documents(
            wrk, args, f"http://127.0.0.1:{ports['hello']}", blog, blog_host
        )

        print(
            f"\n2. inbox ingest: {args.requests} signed Likes, {args.connections} connections",
            flush=True,
        )
        script = scratch / "walk.lua"
        script.write_text(WALK_LUA)
        ingest_limit = max(60.0, args.requests / 100)
        ingest = run_ingest(wrk, inbox_url, requests_file, script, args.connections, ingest_limit)
        if ingest.sample is None:
            print(ingest.output, file=sys.stderr)
            raise RuntimeError("wrk's output could not be read")
        stored = run_sql(database_url, "SELECT count(*) AS n FROM ap_inbox_items")[0]["n"]
        results["ingest"] = (ingest, stored)
        print_ingest(ingest, stored)

        print("\n   processing: one `rose-ash worker` applies the stored items", flush=True)
        processing = measure_processing(
            processes, env, database_url, settings.redis_url, max(90.0, stored / 50)
        )
        results["processing"] = processing
        print_processing(processing)

        print(
            f"\n3. fan-out: {args.followers} followers over {args.inboxes} shared inboxes"
            " of the sink",
            flush=True,
        )
        expected = insert_followers(
            database_url, args.followers, args.inboxes, f"http://127.0.0.1:{ports['sink']}/inbox/"
        )
        results["fan-out"] = []
        for workers in (1, 2):
            fan_out = measure_fan_out(
                processes,
                env,
                settings,
                ports["sink"],
                workers,
                expected,
                max(60.0, expected / 20),
            )
            results["fan-out"].append(fan_out)
            print_fan_out(fan_out)

        report(results, args)
    finally:
        if pool is not None:
            pool.terminate()
        processes.stop_all()
        redis_server.stop()
        postgres.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    return 0 if results.get("fan-out") else 1


# --- output ----------------------------------------------------------------------------------


def print_ingest(ingest: IngestResult, stored: int) -> None:
    assert ingest.sample is not None
    accepted = ingest.statuses.get(202, 0)
    others = {s: n for s, n in ingest.statuses.items() if s != 202}
    print(
        f"   {ingest.sample.requests_per_second:.0f} req/s  p50 {ingest.sample.p50_ms:.2f} ms"
        f"  p99 {ingest.sample.p99_ms:.2f} ms  answered {ingest.answered} in {ingest.seconds:.1f} s"
        f"  202: {accepted}  other: {others or 0}  socket errors: {ingest.sample.errors}"
        f"{'' if ingest.finished else '  (STOPPED AT THE TIME LIMIT)'}"
    )
    verdict = "every 202 stored" if stored == accepted else "MISMATCH"
    print(f"   ap_inbox_items rows: {stored} ({verdict})", flush=True)


def print_processing(result: ProcessingResult) -> None:
    print(
        f"   {result.items} items in {result.seconds:.1f} s = {result.items / result.seconds:.0f}"
        f" items/s (from the first item; the worker took {result.startup_seconds:.1f} s to"
        f" start)  states {result.states}  ap_reactions rows: {result.reactions}"
        f"{'' if result.finished else '  (STOPPED AT THE TIME LIMIT)'}",
        flush=True,
    )


def print_fan_out(result: FanOutResult) -> None:
    sink = result.sink
    paths = sink.get("paths", {})
    once = all(count == 1 for count in paths.values())
    fan = f"{result.fanned_out_seconds:.2f} s" if result.fanned_out_seconds is not None else "-"
    print(
        f"   K={result.workers}: {result.delivered}/{result.expected} delivered"
        f" (failed {result.failed}, pending {result.pending}) in {result.seconds:.2f} s"
        f" = {result.rate:.0f}/s, {result.rate / result.workers:.0f}/s per worker;"
        f" rows fanned out after {fan}"
        f"{'' if result.finished else '  (STOPPED AT THE TIME LIMIT)'}"
    )
    print(
        f"   sink: {sink.get('posts')} POSTs to {len(paths)} inboxes"
        f" ({'each once' if once else 'SOME MORE THAN ONCE'}); signatures checked"
        f" {sink.get('verified')} ok, {sink.get('failed')} failed {sink.get('errors') or ''}",
        flush=True,
    )


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    documents: dict[str, list[Sample]] = results["documents"]
    rps = {name: median([s.requests_per_second for s in runs]) for name, runs in documents.items()}
    print(
        f"\nResults (documents: median of {args.rounds} interleaved rounds of {args.seconds} s;"
        f" {args.connections} connections; {args.workers} Hypercorn worker(s) per server;"
        " bench-only settings:"
        f" ROSE_ASH_ACTIVITYPUB__ALLOW_LOOPBACK=true,"
        f" ROSE_ASH_ACTIVITYPUB__INBOX_RATE_LIMIT_PER_MINUTE={INBOX_RATE_LIMIT})"
    )
    print(f"{'measure':<28} {'rate':>10} {'vs hello':>9} {'p50 ms':>8} {'p99 ms':>8}  goal")
    rows: list[tuple[str, bool]] = []
    for name in ("hello", "actor", "webfinger"):
        runs = documents[name]
        goal = "" if name == "hello" else f">= {GOALS['documents']:.0f} req/s"
        print(
            f"{name + ' (req/s)':<28} {rps[name]:10.0f} {rps[name] / rps['hello']:9.2f}"
            f" {median([s.p50_ms for s in runs]):8.2f} {median([s.p99_ms for s in runs]):8.2f}"
            f"  {goal}"
        )
        if name != "hello":
            rows.append(
                (f"{name} >= {GOALS['documents']:.0f} req/s", rps[name] >= GOALS["documents"])
            )
    ingest, stored = results["ingest"]
    sample = ingest.sample
    accepted = ingest.statuses.get(202, 0)
    print(
        f"{'inbox ingest (POST/s)':<28} {sample.requests_per_second:10.0f}"
        f" {sample.requests_per_second / rps['hello']:9.2f}"
        f" {sample.p50_ms:8.2f} {sample.p99_ms:8.2f}  >= {GOALS['ingest']:.0f}/s"
        f"  (202: {accepted}, other: {ingest.answered - accepted}, stored: {stored})"
    )
    rows.append(
        (
            f"inbox ingest >= {GOALS['ingest']:.0f}/s, every 202 stored",
            sample.requests_per_second >= GOALS["ingest"]
            and stored == accepted
            and accepted == args.requests,
        )
    )
    processing: ProcessingResult = results["processing"]
    processing_rate = processing.items / processing.seconds
    print(
        f"{'inbox processing (items/s)':<28} {processing_rate:10.0f} {'':>9} {'':>8} {'':>8}"
        f"  >= {GOALS['processing']:.0f}/s  (ap_reactions: {processing.reactions})"
    )
    rows.append(
        (
            f"inbox processing >= {GOALS['processing']:.0f}/s, effects applied",
            processing.finished
            and processing_rate >= GOALS["processing"]
            and processing.reactions == stored,
        )
    )
    for fan_out in results["fan-out"]:
        per_worker = fan_out.rate / fan_out.workers
        label = f"fan-out K={fan_out.workers} (deliv./s)"
        print(
            f"{label:<28} {fan_out.rate:10.0f} {'':>9} {'':>8} {'':>8}"
            f"  >= {GOALS['fan-out']:.0f}/s per worker: {per_worker:.0f}"
            f"  (drain {fan_out.seconds:.2f} s, {fan_out.delivered}/{fan_out.expected})"
        )
        paths = fan_out.sink.get("paths", {})
        sink_ok = (
            fan_out.sink.get("posts") == fan_out.expected
            and len(paths) == fan_out.expected
            and not fan_out.sink.get("failed")
        )
        rows.append(
            (
                f"fan-out K={fan_out.workers} >= {GOALS['fan-out']:.0f}/s per worker,"
                " each inbox once",
                fan_out.finished and per_worker >= GOALS["fan-out"] and sink_ok,
            )
        )
    print("\nGoals:")
    for label, met in rows:
        print(f"  {'met    ' if met else 'NOT MET'}  {label}")


if __name__ == "__main__":
    sys.exit(main())
