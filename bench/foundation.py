"""Foundation baseline: what the shared app stack costs, measured against a Quart hello-world.

Run: `make bench` (or `uv run python -m bench.foundation`). Needs `wrk` (apt-get install wrk).

One run starts an embedded PostgreSQL and Redis, migrates and seeds them, serves a bare Quart
hello-world and two Rose Ash apps under Hypercorn (one worker each, as production runs them),
then loads each target with wrk in interleaved rounds, so that every ratio compares figures
taken side by side on the same noisy machine. Absolute numbers drift; the ratios are the result.

Targets:
- hello      Quart hello-world under Hypercorn (the framework ceiling)
- healthz    blog /healthz: the full middleware stack (request id, headers, CSRF check, log)
- readyz     blog /readyz: the stack plus a PostgreSQL query and a Redis PING
- home       federation /: the stack, two SQL queries through the registry, a Jinja page
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.request import urlopen

from shared.config import load_settings
from shared.devrunner import migrate_and_seed
from shared.embedded import EmbeddedPostgres, EmbeddedRedis
from shared.serving import PROJECT_ROOT, hypercorn_command

BENCH_SECRET = "bench-secret-key-that-is-long-enough-to-pass"  # noqa: S105 (scratch servers)


@dataclass(frozen=True)
class Target:
    name: str
    path: str
    server: str


@dataclass
class Sample:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int


TARGETS = [
    Target("hello", "/", "hello"),
    Target("healthz", "/healthz", "blog"),
    Target("readyz", "/readyz", "blog"),
    Target("home", "/", "federation"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not come up")


def to_ms(value: str) -> float:
    """wrk's latency ("812.00us", "12.5ms", "1.02s", "1.10m") in milliseconds."""
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if found is None:
        raise ValueError(f"wrk printed a latency this script cannot read: {value!r}")
    number, unit = found.groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def run_wrk(
    wrk: str, url: str, seconds: int, connections: int, headers: Sequence[str] = ()
) -> Sample:
    """One wrk run against ``url``; ``headers`` are "Name: value" lines sent with each request."""
    header_options = [option for header in headers for option in ("-H", header)]
    output = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", *header_options, url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    # The distribution's own lines ("     50%   12.3ms"), not a "90.50%" in the stats above.
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", output))
    socket_errors = re.search(r"Socket errors: (.*)", output)
    if socket_errors:
        errors += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1)))
    return Sample(rps, p50, p99, errors)


def parse_arguments(
    description: str, extra: Sequence[tuple[str, int, str]] = ()
) -> argparse.Namespace:
    """The options every benchmark here takes, plus ``extra`` integer options of its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seconds", type=int, default=8, help="length of one wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per target")
    parser.add_argument("--connections", type=int, default=20)
    for option, default, explanation in extra:
        parser.add_argument(option, type=int, default=default, help=explanation)
    return parser.parse_args()


def find_wrk() -> str | None:
    wrk = shutil.which("wrk")
    if wrk is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
    return wrk


def main() -> int:
    args = parse_arguments(__doc__.splitlines()[0])
    wrk = find_wrk()
    if wrk is None:
        return 2

    scratch = Path(tempfile.mkdtemp(prefix="rose-ash-bench-"))
    postgres = EmbeddedPostgres(scratch / "pg")
    redis = EmbeddedRedis(scratch / "redis")
    servers: list[subprocess.Popen[bytes]] = []
    try:
        postgres.start()
        postgres.create_database("rose_ash_bench")
        redis.start()
        settings = load_settings(
            env="production",
            database_url=postgres.url("rose_ash_bench"),
            redis_url=redis.url(0),
            secret_key=BENCH_SECRET,
            oidc_key_secret=BENCH_SECRET + "-oidc-key",
            ap_key_secret=BENCH_SECRET + "-ap-key",
            log_level="WARNING",
            smtp={"host": "127.0.0.1"},  # production needs one; nothing here sends mail
        )
        asyncio.run(migrate_and_seed(settings))
        ports = {"hello": free_port(), "blog": free_port(), "federation": free_port()}
        environment = {
            **os.environ,
            "ROSE_ASH_ENV": "production",
            "ROSE_ASH_LOG_LEVEL": "WARNING",  # an access line per request would measure logging
            "DATABASE_URL": settings.sync_database_url,
            "REDIS_URL": redis.url(0),
            "SECRET_KEY": BENCH_SECRET,
            # Production wants the key secrets of their own (see README, Secrets).
            "OIDC_KEY_SECRET": BENCH_SECRET + "-oidc-key",
            "AP_KEY_SECRET": BENCH_SECRET + "-ap-key",
            "ROSE_ASH_SMTP__HOST": "127.0.0.1",
            # Every page's layout fetches blog's nav-tree fragment: from the blog served here.
            "ROSE_ASH_APPS__BLOG": f"http://127.0.0.1:{ports['blog']}",
            # "home" measures rendering; the page cache has its own benchmark (bench/fragments.py).
            "ROSE_ASH_PAGE_CACHE__ENABLED": "false",
        }
        # The hello-world runs with the blog's Hypercorn settings, so only the app differs.
        hello = [
            sys.executable, "-m", "hypercorn", "bench.hello_app:app",
            "--config", str(PROJECT_ROOT / "blog" / "config" / "hypercorn.toml"),
            "--bind", f"127.0.0.1:{ports['hello']}",
        ]  # fmt: skip
        servers.append(subprocess.Popen(hello, env=environment, cwd=PROJECT_ROOT))
        for name in ("blog", "federation"):
            command = hypercorn_command(name, [f"127.0.0.1:{ports[name]}"])
            servers.append(subprocess.Popen(command, env=environment))
        for target in TARGETS:
            wait_until_up(f"http://127.0.0.1:{ports[target.server]}{target.path}")

        samples: dict[str, list[Sample]] = {target.name: [] for target in TARGETS}
        for round_number in range(1, args.rounds + 1):
            for target in TARGETS:
                url = f"http://127.0.0.1:{ports[target.server]}{target.path}"
                sample = run_wrk(wrk, url, args.seconds, args.connections)
                samples[target.name].append(sample)
                print(
                    f"round {round_number} {target.name:<8} {sample.requests_per_second:8.0f} req/s"
                    f"  p50 {sample.p50_ms:6.2f} ms  p99 {sample.p99_ms:7.2f} ms"
                    f"  errors {sample.errors}",
                    flush=True,
                )
        report(samples, args)
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(15)
        redis.stop()
        postgres.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def report(samples: dict[str, list[Sample]], args: argparse.Namespace) -> None:
    hello_rps = statistics.median(s.requests_per_second for s in samples["hello"])
    print(
        f"\nmedian of {args.rounds} interleaved rounds, {args.seconds}s each, "
        f"{args.connections} connections, one Hypercorn worker per server"
    )
    print(f"{'target':<8} {'req/s':>8} {'vs hello':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, runs in samples.items():
        rps = statistics.median(s.requests_per_second for s in runs)
        print(
            f"{name:<8} {rps:8.0f} {rps / hello_rps:9.2f}"
            f" {statistics.median(s.p50_ms for s in runs):8.2f}"
            f" {statistics.median(s.p99_ms for s in runs):8.2f}"
            f" {sum(s.errors for s in runs):7d}"
        )


if __name__ == "__main__":
    sys.exit(main())
