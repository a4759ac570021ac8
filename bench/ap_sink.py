"""A fast inbox sink for the fan-out benchmark (bench/activitypub.py), run in its own process.

Run: `python -m bench.ap_sink --port P [--public-key FILE] [--verify-every N]`

A raw asyncio.Protocol HTTP/1.1 server on 127.0.0.1 with keep-alive: every request to
``/inbox/<anything>`` is answered ``202`` with an empty body, and each POST is counted per
path. With ``--public-key``, every N-th POST's draft-cavage signature and Digest are checked
(shared.infrastructure.activitypub.signatures.verify_request) against that PEM, so the
benchmark can confirm the deliveries were really signed, without the checking itself making
the sink a bottleneck (a verification is ~50 µs; the HTTP handling here a few µs).

    GET  /stats    {"posts": n, "paths": {path: count}, "verified": v, "failed": f,
                    "errors": [first few failure reasons]}
    POST /reset    zero the counters
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from collections import Counter
from pathlib import Path

from shared.infrastructure.activitypub.signatures import (
    IncomingRequest,
    SignatureError,
    verify_request,
)

ACCEPTED = b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
MAX_HEAD = 65_536


class Counters:
    def __init__(self, public_key_pem: str | None, verify_every: int, port: int) -> None:
        self.public_key_pem = public_key_pem
        self.verify_every = verify_every
        self.port = port
        self.reset()

    def reset(self) -> None:
        self.posts = 0
        self.paths: Counter[str] = Counter()
        self.verified = 0
        self.failed = 0
        self.errors: list[str] = []

    def stats(self) -> bytes:
        return json.dumps(
            {
                "posts": self.posts,
                "paths": dict(self.paths),
                "verified": self.verified,
                "failed": self.failed,
                "errors": self.errors,
            }
        ).encode()

    def check(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> None:
        host = next((value for name, value in headers if name.lower() == "host"), "")
        incoming = IncomingRequest(method, f"http://{host}{target}", headers, body)
        try:
            verify_request(incoming, self.public_key_pem or "")
        except SignatureError as exc:
            self.failed += 1
            if len(self.errors) < 5:
                self.errors.append(str(exc))
        else:
            self.verified += 1


class SinkProtocol(asyncio.Protocol):
    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD and self.transport is not None:
                    self.transport.close()
                return
            head = self.buffer[:end].decode("latin-1")
            lines = head.split("\r\n")
            length = 0
            for line in lines[1:]:
                if line[:15].lower() == "content-length:":
                    length = int(line[15:].strip())
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            body = self.buffer[end + 4 : total]
            self.buffer = self.buffer[total:]
            self.handle(lines, body)

    def handle(self, lines: list[str], body: bytes) -> None:
        assert self.transport is not None
        method, target, _ = lines[0].split(" ", 2)
        counters = self.counters
        if target.startswith("/inbox/"):
            if method == "POST":
                counters.posts += 1
                counters.paths[target] += 1
                if counters.public_key_pem and counters.posts % counters.verify_every == 1:
                    headers = [tuple(line.split(":", 1)) for line in lines[1:]]
                    pairs = [(name.strip(), value.strip()) for name, value in headers]
                    counters.check(method, target, pairs, body)
            self.transport.write(ACCEPTED)
        elif target == "/stats":
            payload = counters.stats()
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(payload)).encode()
                + b"\r\n\r\n"
                + payload
            )
        elif target == "/reset":
            counters.reset()
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        else:
            self.transport.write(NOT_FOUND)


async def serve(port: int, counters: Counters) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SinkProtocol(counters), "127.0.0.1", port, backlog=1024
    )
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="ActivityPub inbox sink (answers 202)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--public-key", type=Path, help="PEM to verify sampled signatures with")
    parser.add_argument("--verify-every", type=int, default=50)
    args = parser.parse_args()
    pem = args.public_key.read_text() if args.public_key else None
    asyncio.run(serve(args.port, Counters(pem, max(1, args.verify_every), args.port)))


if __name__ == "__main__":
    main()
