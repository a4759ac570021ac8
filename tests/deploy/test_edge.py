"""The edge proxy (deploy/Caddyfile): /internal/ never leaves the stack, no token is logged.

The real Caddyfile is adapted by the real caddy binary; the resulting configuration is run
with only its transport changed (plain HTTP on a loopback port, the app upstreams pointed at a
recording server on loopback, its log written to a file the tests read), and requests for
/internal/ in the spellings an attacker would try are refused before they reach an app;
requests carrying tokens leave none in the access log.
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

from shared.infrastructure.logging import REDACTED, TOKEN_PATTERNS
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


SECRET = "s3cr3t-T0ken_value"
# Where the recording upstream redirects /oauth/authorize (as federation does, with a code).
CALLBACK = f"https://blog.example.coop/auth/callback?code={SECRET}&state={SECRET}"


class Recorder(BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        if self.path != "/readyz":
            Recorder.seen.append(self.path)
        body = f"upstream {self.path}".encode()
        redirect = self.path.startswith("/oauth/authorize")
        self.send_response(302 if redirect else 200)
        if redirect:
            self.send_header("Location", CALLBACK)
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
    for log in changed.get("logging", {}).get("logs", {}).values():
        log["writer"] = {"output": "stderr"}  # which the tests read (caddy.log)
    return changed


@pytest.fixture(scope="module")
def edge_directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The edge's home; its log (stderr) is caddy.log there."""
    return tmp_path_factory.mktemp("caddy")


@pytest.fixture(scope="module")
def edge(upstream: int, edge_directory: Path) -> Iterator[int]:
    result = adapt(CADDYFILE)
    assert result.returncode == 0, result.stderr
    port = free_port()
    directory = edge_directory
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


def get(port: int, host: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        connection.putheader("Host", host)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
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


TOKEN_REQUESTS: list[tuple[str, dict[str, str]]] = [
    (f"/login/magic/{SECRET}", {}),
    (f"/email/confirm/{SECRET}?from=mail", {}),
    (f"/unsubscribe/{SECRET}", {}),
    (f"/auth/callback?code={SECRET}&state={SECRET}", {}),
    (f"/oauth/logout?id_token_hint={SECRET}&post_logout_redirect_uri=/", {}),
    (f"/login?next=%2Foauth%2Fauthorize%3Fclient_id%3Dblog%26state%3D{SECRET}", {}),
    # A page at a token URL is the Referer of what it loads.
    ("/static/site.css", {"Referer": f"https://federation.example.coop/login/magic/{SECRET}"}),
    # An authorization answer's Location carries the code.
    ("/oauth/authorize?client_id=blog", {}),
]


def access_entries(log: Path) -> list[dict[str, Any]]:
    entries = []
    for line in log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if str(entry.get("logger", "")).startswith("http.log.access"):
            entries.append(entry)
    return entries


def test_the_edge_logs_no_tokens(edge: int, edge_directory: Path) -> None:
    log = edge_directory / "caddy.log"
    before = len(access_entries(log))
    for path, headers in TOKEN_REQUESTS:
        get(edge, "federation.example.coop", path, headers)
    deadline = time.monotonic() + 20  # the access log is written after the answer is sent
    while len(access_entries(log)) < before + len(TOKEN_REQUESTS) and time.monotonic() < deadline:
        time.sleep(0.1)
    entries = access_entries(log)[before:]
    assert len(entries) == len(TOKEN_REQUESTS)
    assert SECRET not in log.read_text()
    uris = [entry["request"]["uri"] for entry in entries]
    assert f"/login/magic/{REDACTED}" in uris
    assert f"/auth/callback?code={REDACTED}&state={REDACTED}" in uris
    referers = [entry["request"]["headers"].get("Referer") for entry in entries]
    assert [f"https://federation.example.coop/login/magic/{REDACTED}"] in referers
    locations = [entry.get("resp_headers", {}).get("Location") for entry in entries]
    assert [
        f"https://blog.example.coop/auth/callback?code={REDACTED}&state={REDACTED}"
    ] in locations


def test_the_edge_redacts_with_the_apps_patterns() -> None:
    """One list of patterns (shared.infrastructure.logging.TOKEN_PATTERNS) for both logs."""
    result = adapt(CADDYFILE)
    assert result.returncode == 0, result.stderr
    encoder = json.loads(result.stdout)["logging"]["logs"]["default"]["encoder"]
    assert encoder["format"] == "filter"
    expected = [{"regexp": pattern, "value": "${1}" + REDACTED} for pattern in TOKEN_PATTERNS]
    for field in ["request>uri", "request>headers>Referer", "resp_headers>Location"]:
        assert encoder["fields"][field] == {"filter": "multi_regexp", "operations": expected}
