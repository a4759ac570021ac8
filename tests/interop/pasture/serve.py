"""Serve one of fediverse-pasture's apps on 127.0.0.1 (run by the pasture venv's Python).

    serve.py verify-actor   --port P --domain pasture.localhost:P [--timeout 10]
    serve.py http-signature --port P

The pasture CLIs bind 0.0.0.0; this builds the same Quart apps (``build_app`` of
fediverse_pasture.verify_actor, the blueprint of fediverse_pasture.server.http_signature) and
serves them with Hypercorn on loopback only.

`*.localhost` names are loopback (RFC 6761) but neither glibc nor aiodns resolves them: aiohttp's
default resolver is replaced by one that answers 127.0.0.1 for them, so pasture can fetch
``http://blog.localhost:PORT/...`` as it would fetch a public host (the Host header stays).

verify-actor's DataProvider reads or writes ``data.toml`` (its actors' keys) in the working
directory: start it in a scratch directory.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
from typing import Any

import aiohttp.connector
import aiohttp.resolver
from fediverse_pasture.server.http_signature import http_signature_blueprint
from fediverse_pasture.verify_actor import build_app
from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart

LOOPBACK = "127.0.0.1"


class LocalhostResolver(aiohttp.resolver.ThreadedResolver):
    """Resolves ``localhost`` and ``*.localhost`` to 127.0.0.1, anything else as usual."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[dict[str, Any]]:
        if host == "localhost" or host.endswith(".localhost"):
            return [
                {
                    "hostname": host,
                    "host": LOOPBACK,
                    "port": port,
                    "family": socket.AF_INET,
                    "proto": 0,
                    "flags": socket.AI_NUMERICHOST,
                }
            ]
        return await super().resolve(host, port, family)


aiohttp.connector.DefaultResolver = LocalhostResolver  # type: ignore[misc]


def verify_actor_app(domain: str, timeout: float) -> Quart:
    return build_app(False, domain, False, timeout)


def http_signature_app() -> Quart:
    app = Quart("http_signature")
    app.register_blueprint(http_signature_blueprint)
    return app


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("app", choices=["verify-actor", "http-signature"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--domain", help="host:port pasture's own actors live on")
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    if args.app == "verify-actor":
        if not args.domain:
            parser.error("verify-actor needs --domain")
        app = verify_actor_app(args.domain, args.timeout)
    else:
        app = http_signature_app()
    config = Config()
    config.bind = [f"{LOOPBACK}:{args.port}"]
    config.accesslog = "-"
    config.graceful_timeout = 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]


if __name__ == "__main__":
    asyncio.run(main())
