"""`rose-ash dev` end to end: embedded servers, six apps up, Ctrl-C leaves nothing running."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.request import urlopen

import psutil
import redis

from shared.config import APP_NAMES
from shared.worker import HEARTBEAT_KEY_PREFIX


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def fetch(url: str) -> tuple[int, str]:
    with urlopen(url, timeout=5) as response:  # noqa: S310 (loopback URLs we built)
        return response.status, response.read().decode()


def worker_heartbeats(socket_path: Path) -> list[str]:
    """The heartbeat keys of the workers alive on the dev runner's embedded Redis."""
    client = redis.Redis(unix_socket_path=str(socket_path), decode_responses=True)
    try:
        return [str(key) for key in client.scan_iter(HEARTBEAT_KEY_PREFIX + "*")]
    finally:
        client.close()


def test_dev_runs_six_apps_and_the_worker_on_embedded_servers_and_stops_cleanly(
    tmp_path: Path,
) -> None:
    ports = dict(zip(APP_NAMES, free_ports(len(APP_NAMES)), strict=True))
    environment = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ROSE_ASH_ENV")
    }
    environment["ROSE_ASH_DEV_DATA"] = str(tmp_path / "devdata")
    for name, port in ports.items():
        environment[f"ROSE_ASH_APPS__{name.upper()}"] = f"http://{name}.localhost:{port}"
    runner = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "dev", "--no-reload"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    started: list[psutil.Process] = []
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 180
        assert runner.stdout is not None
        while not any("press Ctrl-C to stop everything" in line for line in lines):
            assert time.monotonic() < deadline, "".join(lines)
            line = runner.stdout.readline()
            assert line or runner.poll() is None, "".join(lines)
            lines.append(line)
        output = "".join(lines)
        assert "seeded the demo data" in output
        assert "the worker is starting" in output
        for name, port in ports.items():
            assert f"http://{name}.localhost:{port}/" in output
            assert fetch(f"http://127.0.0.1:{port}/readyz")[0] == 200
        status, page = fetch(f"http://127.0.0.1:{ports['federation']}/")
        assert status == 200
        assert "Ada Hartley" in page  # the demo data is there

        started = psutil.Process(runner.pid).children(recursive=True)
        commands = [" ".join(process.cmdline()) for process in started]
        assert sum("hypercorn" in command for command in commands) >= len(APP_NAMES)
        assert any(command.endswith("shared.cli worker") for command in commands), commands
        # The worker is not only started: it runs (its heartbeat is in the dev Redis).
        deadline = time.monotonic() + 30
        while not worker_heartbeats(tmp_path / "devdata" / "redis" / "redis.sock"):
            assert time.monotonic() < deadline, "the dev worker never recorded a heartbeat"
            time.sleep(0.5)
        assert any("redis-server" in command for command in commands)
        postgres = [
            p
            for p in psutil.process_iter(["cmdline"])
            if str(tmp_path) in " ".join(p.info["cmdline"] or [])
        ]
        assert postgres, "the embedded PostgreSQL runs from the dev data folder"
        started += postgres

        runner.send_signal(signal.SIGINT)
        assert runner.wait(60) == 0
    finally:
        if runner.poll() is None:
            runner.kill()
    time.sleep(0.5)
    still_running = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert still_running == []
