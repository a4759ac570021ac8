"""What the browser tests run against: the six apps served for real by Hypercorn on loopback,
a committed database of their own, the tests' Redis, and an in-process SMTP server (aiosmtpd)
that keeps every mail the apps send.

- The apps live on ``http://<app>.localhost:<port>`` (Chromium resolves ``*.localhost`` to
  loopback by itself, so each app has its own host and first-party cookies); they bind
  127.0.0.1 only.
- Every wait is bounded: start-up (``START_TIMEOUT``), mail (``MAIL_TIMEOUT``), shut-down
  (``STOP_TIMEOUT``, then SIGKILL).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from shared.config import APP_NAMES
from shared.contracts.identity import UserDTO
from shared.embedded import EmbeddedPostgres
from shared.migrations import do_upgrade
from shared.services.identity.users import SqlUserService
from tests.conftest import asyncpg_url, platform_environment

REPO = Path(__file__).resolve().parents[2]
DATABASE = "rose_ash_e2e"
SECRET_KEY = "e2e-secret-key-shared-by-the-six-apps-0123456789"
CHROMIUM = Path("/usr/bin/chromium")

START_TIMEOUT = 60.0  # seconds until every app's /readyz answers 200
STOP_TIMEOUT = 15.0  # after SIGTERM, before SIGKILL (Hypercorn's graceful_timeout is 10)
MAIL_TIMEOUT = 15.0  # until a mail the apps were asked to send arrives


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# ---------------------------------------------------------------------------------------------
# Mail


class Collector:
    """An aiosmtpd handler that keeps every message it is given."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.lock = threading.Lock()

    async def handle_DATA(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode()
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self.lock:
            self.messages.append(message)
        return "250 Message accepted for delivery"


@dataclass
class Inbox:
    """The mail the apps sent to the SMTP server this test started."""

    port: int
    collector: Collector = field(repr=False)

    def count(self) -> int:
        with self.collector.lock:
            return len(self.collector.messages)

    async def wait_for(self, to: str, *, after: int, within: float = MAIL_TIMEOUT) -> EmailMessage:
        """The first mail to ``to`` among those that arrived after the first ``after``."""
        deadline = time.monotonic() + within
        while True:
            with self.collector.lock:
                arrived = self.collector.messages[after:]
            for message in arrived:
                if to.lower() in str(message["To"]).lower():
                    return message
            if time.monotonic() > deadline:
                subjects = [str(message["Subject"]) for message in arrived]
                pytest.fail(f"no mail to {to} within {within} s (arrived since: {subjects})")
            await asyncio.sleep(0.05)


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    collector = Collector()
    port = free_port()
    controller = Controller(collector, hostname="127.0.0.1", port=port, ready_timeout=10.0)
    controller.start()
    try:
        yield Inbox(port, collector)
    finally:
        controller.stop()


# ---------------------------------------------------------------------------------------------
# The six apps


@dataclass(frozen=True)
class Platform:
    urls: dict[str, str]  # app name -> http://<app>.localhost:<port>
    database_url: str
    logs: dict[str, Path]

    def log_tails(self, lines: int = 15) -> str:
        return "\n".join(f"--- {app} ---\n{log_tail(log, lines)}" for app, log in self.logs.items())

    async def create_member(self, email_address: str, display_name: str) -> UserDTO:
        """A member in the apps' database, committed."""
        engine = create_async_engine(asyncpg_url(self.database_url))
        try:
            async with AsyncSession(engine, expire_on_commit=False) as session:
                user = await SqlUserService(session).create_user(
                    email_address, display_name=display_name
                )
                await session.commit()
        finally:
            await engine.dispose()
        return user


def start_all(
    processes: dict[str, subprocess.Popen[bytes]],
    ports: dict[str, int],
    environment: dict[str, str],
    logs: dict[str, Path],
) -> None:
    """Start the six apps into ``processes`` (filled as they start, so all can be stopped)."""
    for app in APP_NAMES:
        with logs[app].open("wb") as output:
            processes[app] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "hypercorn",
                    f"{app}.app:create_app()",
                    "--config",
                    f"{app}/config/hypercorn.toml",
                    "--bind",
                    f"127.0.0.1:{ports[app]}",
                ],
                cwd=REPO,
                env=environment,
                stdout=output,
                stderr=subprocess.STDOUT,
            )


async def wait_ready(
    processes: dict[str, subprocess.Popen[bytes]], ports: dict[str, int], logs: dict[str, Path]
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    waiting = set(processes)
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
        while waiting:
            for app in sorted(waiting):
                if processes[app].poll() is not None:
                    pytest.fail(
                        f"{app} exited with {processes[app].returncode}:\n{log_tail(logs[app])}"
                    )
                try:
                    response = await client.get(f"http://127.0.0.1:{ports[app]}/readyz")
                except httpx.HTTPError:
                    continue
                if response.status_code == 200:
                    waiting.discard(app)
            if not waiting:
                break
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {app} ---\n{log_tail(logs[app])}" for app in waiting)
                pytest.fail(f"not ready after {START_TIMEOUT} s: {sorted(waiting)}\n{tails}")
            await asyncio.sleep(0.2)


def stop_all(processes: dict[str, subprocess.Popen[bytes]]) -> None:
    for process in processes.values():
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT
    for process in processes.values():
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)


@pytest.fixture
async def platform(
    scratch_postgres: EmbeddedPostgres,
    redis_url: str,
    redis: aioredis.Redis,  # flushed before and after: no rate limits or caches carried over
    inbox: Inbox,
    tmp_path: Path,
) -> AsyncIterator[Platform]:
    """The six apps under Hypercorn, as production runs them, on a fresh migrated database."""
    await asyncio.to_thread(scratch_postgres.create_database, DATABASE, replace=True)
    database_url = scratch_postgres.url(DATABASE)
    await asyncio.to_thread(do_upgrade, database_url)  # alembic runs its own event loop
    ports = {app: free_port() for app in APP_NAMES}
    urls = {app: f"http://{app}.localhost:{port}" for app, port in ports.items()}
    environment = platform_environment(
        database_url,
        redis_url,
        urls,
        secret_key=SECRET_KEY,
        pool_size=3,
        extra={
            "ROSE_ASH_SMTP__HOST": "127.0.0.1",
            "ROSE_ASH_SMTP__PORT": str(inbox.port),
            "ROSE_ASH_SMTP__SECURITY": "none",
            "ROSE_ASH_SMTP__FROM_ADDRESS": "Rose Ash <no-reply@rose-ash.test>",
        },
    )
    logs = {app: tmp_path / f"{app}.log" for app in APP_NAMES}
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        await asyncio.to_thread(start_all, processes, ports, environment, logs)
        await wait_ready(processes, ports, logs)
        yield Platform(urls, database_url, logs)
    finally:
        await asyncio.to_thread(stop_all, processes)


# ---------------------------------------------------------------------------------------------
# The browser


@pytest.fixture
def chromium_path() -> str:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)",
            pytrace=False,
        )
    return str(CHROMIUM)


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless=new",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def launch_options(chromium: str) -> dict[str, Any]:
    return {"executable_path": chromium, "args": CHROMIUM_ARGS, "timeout": 30_000}
