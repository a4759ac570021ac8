"""Fragment composition and the page cache, measured side by side (issue 5's benchmark).

Run: `make bench-fragments` (or `uv run python -m bench.fragments`). Needs `wrk`.

One run starts an embedded PostgreSQL and Redis, migrates and seeds them, and serves under
Hypercorn (one worker each, as production does):
- blog, composing its layout fragments (nav-tree from blog, auth-menu from account) with a
  warm fragment cache, page cache off: the "composed" page;
- the same blog page with the fragments' HTML inlined (bench/inline_blog.py: the layout
  fragments are set before rendering, nothing is fetched), page cache off: "inlined";
- blog whose fragment source hangs (its internal URL points at a socket that accepts and never
  answers), fragment cache cold and kept cold, page cache off: "hanging";
- blog with the page cache on, anonymous: "page-cache" (a returning visitor: the request carries
  the device cookie a browser got on its first visit, so hits are answered in front of Quart);
- a Quart hello-world with the same Hypercorn settings: "hello".

It prints, per target, the median of interleaved rounds and the ratios the issue asks for:
(a) composed / inlined throughput (goal >= 0.8); (b) the hanging page's p99 against the
fragment timeout + 50 ms, and its non-200 count (goal 0); (c) page-cache / hello (goal >= 0.7).
(b) is measured at the common concurrency (default 20) and again at --low-connections (default
4), next to the inlined page at that concurrency: at 20 connections one worker's queue alone
already takes the inlined page's p99 past the goal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from bench.foundation import (
    Sample,
    find_wrk,
    free_port,
    parse_arguments,
    run_wrk,
    wait_until_up,
)
from shared.config import load_settings
from shared.devrunner import migrate_and_seed
from shared.embedded import EmbeddedPostgres, EmbeddedRedis
from shared.infrastructure.oauth import device_cookie
from shared.serving import PROJECT_ROOT

SECRET = "bench-secret-key-that-is-long-enough-to-pass"  # noqa: S105 (scratch servers)
FRAGMENT_TIMEOUT_MS = 300


class HangingServer:
    """Accepts connections on loopback and never answers (a hung upstream app)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = int(self.sock.getsockname()[1])
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(connection)

    def close(self) -> None:
        self.sock.close()
        for connection in self.held:
            connection.close()


def hypercorn(
    application: str, port: int, env: dict[str, str], workers: int = 1
) -> subprocess.Popen[bytes]:
    """``application`` under Hypercorn with the apps' production config on 127.0.0.1."""
    command = [
        sys.executable, "-m", "hypercorn", application,
        "--config", str(PROJECT_ROOT / "blog" / "config" / "hypercorn.toml"),
        "--bind", f"127.0.0.1:{port}",
        "--workers", str(workers),
    ]  # fmt: skip
    return subprocess.Popen(command, env=env, cwd=PROJECT_ROOT)


def main() -> int:
    args = parse_arguments(
        __doc__.splitlines()[0],
        extra=[("--low-connections", 4, "the lower concurrency (b) is also measured at")],
    )
    wrk = find_wrk()
    if wrk is None:
        return 2

    scratch = Path(tempfile.mkdtemp(prefix="rose-ash-bench-"))
    postgres = EmbeddedPostgres(scratch / "pg")
    redis = EmbeddedRedis(scratch / "redis")
    hanging = HangingServer()
    servers: list[subprocess.Popen[bytes]] = []
    try:
        postgres.start()
        postgres.create_database("rose_ash_bench")
        redis.start()
        ports = {name: free_port() for name in
                 ("blog", "account", "inlined", "hanging", "cached", "hello")}  # fmt: skip
        apps = {name: f"http://127.0.0.1:{ports[name]}" for name in ("blog", "account")}
        base_env = {
            **os.environ,
            "ROSE_ASH_ENV": "production",
            "ROSE_ASH_LOG_LEVEL": "WARNING",
            "DATABASE_URL": postgres.url("rose_ash_bench"),
            "REDIS_URL": redis.url(0),
            "SECRET_KEY": SECRET,
            # Production wants the key secrets of their own (see README, Secrets).
            "OIDC_KEY_SECRET": SECRET + "-oidc-key",
            "AP_KEY_SECRET": SECRET + "-ap-key",
            "ROSE_ASH_SMTP__HOST": "127.0.0.1",
            "ROSE_ASH_APPS__BLOG": apps["blog"],
            "ROSE_ASH_APPS__ACCOUNT": apps["account"],
            "ROSE_ASH_FRAGMENTS__DEFAULT_TIMEOUT_MS": str(FRAGMENT_TIMEOUT_MS),
            "ROSE_ASH_PAGE_CACHE__ENABLED": "false",
        }
        settings = load_settings(
            env="production",
            database_url=postgres.url("rose_ash_bench"),
            redis_url=redis.url(0),
            secret_key=SECRET,
            oidc_key_secret=SECRET + "-oidc-key",
            ap_key_secret=SECRET + "-ap-key",
            smtp={"host": "127.0.0.1"},
        )
        asyncio.run(migrate_and_seed(settings))
        hanging_env = {
            **base_env,
            # A separate Redis database: the hung page's fragment cache stays cold.
            "REDIS_URL": redis.url(1),
            "ROSE_ASH_FRAGMENTS__INTERNAL_URLS": json.dumps(
                {"blog": f"http://127.0.0.1:{hanging.port}", "account": apps["account"]}
            ),
            "ROSE_ASH_FRAGMENTS__TTLS_SECONDS": json.dumps({"nav-tree": 0}),
            "ROSE_ASH_FRAGMENTS__STALE_SECONDS": "0",
        }
        servers += [
            hypercorn("blog.app:create_app()", ports["blog"], base_env),
            hypercorn("account.app:create_app()", ports["account"], base_env),
            hypercorn("bench.inline_blog:create_app()", ports["inlined"], base_env),
            hypercorn("blog.app:create_app()", ports["hanging"], hanging_env),
            hypercorn(
                "blog.app:create_app()",
                ports["cached"],
                {**base_env, "ROSE_ASH_PAGE_CACHE__ENABLED": "true"},
            ),
            hypercorn("bench.hello_app:app", ports["hello"], base_env),
        ]
        low = args.low_connections
        # The device cookie under the name production gives it (``__Host-blog_device``).
        returning_visitor = [f"Cookie: {device_cookie('blog', settings.cookies)}=bench-visitor"]
        targets: dict[str, tuple[str, int, list[str]]] = {
            "composed": (f"http://127.0.0.1:{ports['blog']}/", args.connections, []),
            "inlined": (f"http://127.0.0.1:{ports['inlined']}/", args.connections, []),
            "hanging": (f"http://127.0.0.1:{ports['hanging']}/", args.connections, []),
            f"inlined-c{low}": (f"http://127.0.0.1:{ports['inlined']}/", low, []),
            f"hanging-c{low}": (f"http://127.0.0.1:{ports['hanging']}/", low, []),
            "page-cache": (
                f"http://127.0.0.1:{ports['cached']}/",
                args.connections,
                returning_visitor,
            ),
            "hello": (f"http://127.0.0.1:{ports['hello']}/", args.connections, []),
        }
        for url, _, _ in targets.values():
            wait_until_up(url)
        samples: dict[str, list[Sample]] = {name: [] for name in targets}
        for round_number in range(1, args.rounds + 1):
            for name, (url, connections, headers) in targets.items():
                sample = run_wrk(wrk, url, args.seconds, connections, headers)
                samples[name].append(sample)
                print(
                    f"round {round_number} {name:<11} {sample.requests_per_second:8.0f} req/s"
                    f"  p50 {sample.p50_ms:7.2f} ms  p99 {sample.p99_ms:7.2f} ms"
                    f"  non-2xx/errors {sample.errors}",
                    flush=True,
                )
        report(samples, args)
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
        hanging.close()
        redis.stop()
        postgres.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def report(samples: dict[str, list[Sample]], args: argparse.Namespace) -> None:
    rps = {name: median([s.requests_per_second for s in runs]) for name, runs in samples.items()}
    print(
        f"\nmedian of {args.rounds} interleaved rounds, {args.seconds}s each, "
        f"{args.connections} connections, one Hypercorn worker per server"
    )
    print(f"{'target':<11} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for name, runs in samples.items():
        print(
            f"{name:<11} {rps[name]:8.0f} {median([s.p50_ms for s in runs]):8.2f}"
            f" {median([s.p99_ms for s in runs]):8.2f} {sum(s.errors for s in runs):8d}"
        )
    hanging_p99 = max(s.p99_ms for s in samples["hanging"])
    low = args.low_connections
    hanging_low_p99 = max(s.p99_ms for s in samples[f"hanging-c{low}"])
    inlined_low_p99 = median([s.p99_ms for s in samples[f"inlined-c{low}"]])
    print(
        f"\n(a) composed / inlined throughput: {rps['composed'] / rps['inlined']:.2f}"
        " (goal >= 0.80)"
    )
    print(
        f"(b) hanging fragment: worst p99 {hanging_p99:.0f} ms vs timeout + 50 ="
        f" {FRAGMENT_TIMEOUT_MS + 50} ms; non-2xx/errors"
        f" {sum(s.errors for s in samples['hanging'])} (goal: p99 within, 0 errors)"
        f" at {args.connections} connections"
    )
    print(
        f"    at {low} connections: worst p99 {hanging_low_p99:.0f} ms (inlined page's own p99"
        f" {inlined_low_p99:.0f} ms); non-2xx/errors"
        f" {sum(s.errors for s in samples[f'hanging-c{low}'])}"
    )
    print(
        f"(c) page-cache / hello throughput: {rps['page-cache'] / rps['hello']:.2f} (goal >= 0.70)"
    )


if __name__ == "__main__":
    sys.exit(main())
