"""The edge proxy (deploy/Caddyfile): /internal/ never leaves the stack.

The real Caddyfile is adapted by the real caddy binary; the resulting configuration is run
with only its transport changed (plain HTTP on a loopback port, the app upstreams pointed at a
recording server on loopback), and requests for /internal/ in the spellings an attacker would
try are refused before they reach an app.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.deploy.tooling import APPS, ROOT, run, tool

CADDYFILE = ROOT / "deploy" / "Caddyfile"
CADDY_ENV = {"ROSE_ASH_DOMAIN": "example.coop", "ACME_EMAIL": "ops@example.coop"}


def adapt(caddyfile: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **CADDY_ENV, "HOME": str(caddyfile.parent)}
    return run(
        [tool("caddy"), "adapt", "--config", str(caddyfile), "--adapter", "caddyfile"], env=env
    )


def test_caddyfile_adapts_with_a_site_per_app() -> None:
    result = adapt(CADDYFILE)
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    routes = config["apps"]["http"]["servers"]["srv0"]["routes"]
    hosts = {route["match"][0]["host"][0] for route in routes}
    assert hosts == {f"{app}.example.coop" for app in APPS}
    assert config["apps"]["http"]["servers"]["srv0"]["listen"] == [":443"]


def test_caddy_fails_on_a_broken_caddyfile(tmp_path: Path) -> None:
    broken = tmp_path / "Caddyfile"
    broken.write_text(CADDYFILE.read_text().replace("respond ", "respnod ", 1))
    result = adapt(broken)
    assert result.returncode != 0
    assert "respnod" in result.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Recorder(BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        if self.path != "/readyz":
            Recorder.seen.append(self.path)
        body = f"upstream {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def upstream() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def rewired(config: dict[str, Any], listen_port: int, upstream_port: int) -> dict[str, Any]:
    """The adapted config with only its transport changed: HTTP on loopback, loopback upstreams."""
    text = json.dumps(config)
    for app in APPS:
        text = text.replace(f'"dial": "{app}:8000"', f'"dial": "127.0.0.1:{upstream_port}"')
    changed: dict[str, Any] = json.loads(text)
    changed["admin"] = {"disabled": True}
    changed["apps"].pop("tls", None)
    server = changed["apps"]["http"]["servers"]["srv0"]
    server["listen"] = [f"127.0.0.1:{listen_port}"]
    server["automatic_https"] = {"disable": True}
    changed.pop("logging", None)
    return changed


@pytest.fixture(scope="module")
def edge(upstream: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    result = adapt(CADDYFILE)
    assert result.returncode == 0, result.stderr
    port = free_port()
    directory = tmp_path_factory.mktemp("caddy")
    config_file = directory / "caddy.json"
    config_file.write_text(json.dumps(rewired(json.loads(result.stdout), port, upstream)))
    env = {
        **os.environ,
        "HOME": str(directory),
        "XDG_DATA_HOME": str(directory / "data"),
        "XDG_CONFIG_HOME": str(directory / "config"),
    }
    process = subprocess.Popen(
        [tool("caddy"), "run", "--config", str(config_file)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(directory / "caddy.log").open("w"),
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log = (directory / "caddy.log").read_text()
                    pytest.fail(f"caddy did not start:\n{log}")
                time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def get(port: int, host: str, path: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        connection.putheader("Host", host)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


@pytest.mark.parametrize("app", APPS)
def test_edge_proxies_each_app_host(edge: int, app: str) -> None:
    status, body = get(edge, f"{app}.example.coop", f"/{app}/page?x=1")
    assert (status, body) == (200, f"upstream /{app}/page?x=1")


INTERNAL_SPELLINGS = [
    "/internal",
    "/internal/",
    "/internal/fragments/nav",
    "/INTERNAL/fragments/nav",
    "/Internal/fragments/nav",
    "/%69nternal/fragments/nav",
    "//internal/fragments/nav",
    "/./internal/fragments/nav",
    "/blog/../internal/fragments/nav",
    "/internal%2Ffragments%2Fnav",
    "/internal/fragments/nav?x=/public",
]


@pytest.mark.parametrize("path", INTERNAL_SPELLINGS)
@pytest.mark.parametrize("app", ["blog", "federation"])
def test_edge_refuses_internal_paths(edge: int, app: str, path: str) -> None:
    Recorder.seen.clear()
    status, _ = get(edge, f"{app}.example.coop", path)
    assert status == 404
    assert Recorder.seen == []  # it never reached an app


def test_paths_that_only_look_internal_pass(edge: int) -> None:
    assert get(edge, "blog.example.coop", "/internals-of-a-coop")[0] == 200
    assert get(edge, "blog.example.coop", "/posts/internal/")[0] == 200
