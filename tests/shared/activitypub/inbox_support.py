"""What the inbox tests share: "remote" actors with keypairs of their own, served by a real
HTTP server on 127.0.0.1 (the inbox fetches their keys over HTTP, as from any server), and
signed POSTs through a Quart test client.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from quart import Response
from quart.typing import TestClientProtocol as QuartClient
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from shared.config import Settings
from shared.db import create_session_factory
from shared.infrastructure.activitypub.keys import generate_keypair
from shared.infrastructure.activitypub.remote import RemoteClient
from shared.infrastructure.activitypub.signatures import sign_request
from shared.models.social.inbox import ApInboxItem
from shared.services.social.inbox_processing import process_inbox_items

AS_CONTEXT = "https://www.w3.org/ns/activitystreams"
SECURITY_CONTEXT = "https://w3id.org/security/v1"
ACTIVITY_JSON = "application/activity+json"


@dataclass(frozen=True)
class Keypair:
    public_pem: str
    private_key: rsa.RSAPrivateKey


def make_keypair() -> Keypair:
    public_pem, private_pem = generate_keypair()
    private = serialization.load_pem_private_key(private_pem, password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    return Keypair(public_pem, private)


class ActorServer:
    """A fediverse server in miniature: answers GETs for the documents it holds (JSON, with a
    status), 404 for anything else, and records every path asked for. Over TLS when given a
    server context; ``host`` is the name its URLs use (any name for 127.0.0.1)."""

    def __init__(self, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        self.documents: dict[str, tuple[int, dict[str, Any]]] = {}
        self.requests: list[str] = []
        self.host = host
        self.tls = tls
        self._server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        return self.url_on(self.host)

    def url_on(self, host: str) -> str:
        """This server's base URL under another name (``*.localhost`` names all reach it)."""
        assert self._server is not None
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{host}:{self._server.server_address[1]}"

    def start(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                status, document = server.documents.get(self.path, (404, {"error": "no"}))
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", ACTIVITY_JSON)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def handle(self) -> None:
                with contextlib.suppress(ssl.SSLError, ConnectionError):  # refused our TLS
                    super().handle()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        if self.tls is not None:  # the handshake is made by each request's thread
            self._server.socket = self.tls.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def fetches_of(self, path: str) -> int:
        return sum(1 for requested in self.requests if requested.split("?")[0] == path)


@dataclass
class RemoteActor:
    """An actor on the ActorServer, signing with ``keypair`` (which may change: rotation)."""

    server: ActorServer
    username: str
    keypair: Keypair
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return f"/users/{self.username}"

    @property
    def uri(self) -> str:
        return self.server.base_url + self.path

    @property
    def key_id(self) -> str:
        return f"{self.uri}#main-key"

    @property
    def inbox(self) -> str:
        return f"{self.uri}/inbox"

    @property
    def shared_inbox(self) -> str:
        return f"{self.server.base_url}/inbox"

    def document(self) -> dict[str, Any]:
        return {
            "@context": [AS_CONTEXT, SECURITY_CONTEXT],
            "id": self.uri,
            "type": "Person",
            "preferredUsername": self.username,
            "name": self.username.title(),
            "inbox": self.inbox,
            "outbox": f"{self.uri}/outbox",
            "endpoints": {"sharedInbox": self.shared_inbox},
            "publicKey": {
                "id": self.key_id,
                "owner": self.uri,
                "publicKeyPem": self.keypair.public_pem,
            },
            **self.extra,
        }

    def publish(self, status: int = 200) -> None:
        """Serve the actor document (again, e.g. after a key rotation) or ``status``."""
        self.server.documents[self.path] = (status, self.document())

    @property
    def handle(self) -> str:
        return f"{self.username}@{self.server.base_url.split('//', 1)[1]}"

    def publish_webfinger(
        self,
        links: list[dict[str, Any]] | None = None,
        *,
        resource: str | None = None,
        subject: str | None = None,
    ) -> None:
        """Answer WebFinger for ``acct:<resource>`` (the handle by default) with a ``self``
        link to the actor (or ``links``), its subject ``acct:<subject>`` (the resource by
        default)."""
        asked = resource or self.handle
        self_link = {"rel": "self", "type": ACTIVITY_JSON, "href": self.uri}
        document = {"subject": f"acct:{subject or asked}", "links": links or [self_link]}
        self.server.documents[f"/.well-known/webfinger?resource=acct:{asked}"] = (200, document)

    def publish_handle_on(self, name: str) -> str:
        """Have the actor's WebFinger name it ``<user>@<name>:<port>`` (this server under
        another name), and that domain's WebFinger confirm it; the handle."""
        handle = f"{self.username}@{self.server.url_on(name).split('//', 1)[1]}"
        self.publish_webfinger(subject=handle)  # asked at the actor's host
        self.publish_webfinger(resource=handle)  # asked at the handle's domain
        return handle

    def new_id(self, kind: str = "activities") -> str:
        return f"{self.uri}/{kind}/{uuid.uuid4()}"

    def activity(self, kind: str, obj: Any, **extra: Any) -> dict[str, Any]:
        return {
            "@context": AS_CONTEXT,
            "id": self.new_id(),
            "type": kind,
            "actor": self.uri,
            "object": obj,
            **extra,
        }

    def note(self, content: str = "Hello from afar") -> dict[str, Any]:
        return {
            "id": self.new_id("notes"),
            "type": "Note",
            "attributedTo": self.uri,
            "content": content,
            "published": "2025-01-02T03:04:05Z",
            "to": [f"{AS_CONTEXT}#Public"],
        }


def serve_actors(
    host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
) -> Iterator[ActorServer]:
    server = ActorServer(host, tls)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def post_signed(
    client: QuartClient,
    path: str,
    activity: Any,
    signer: RemoteActor | None,
    *,
    host: str = "blog.localhost",
    keypair: Keypair | None = None,
    key_id: str | None = None,
    now: datetime | None = None,
    body: bytes | None = None,
    signed_body: bytes | None = None,
    client_address: str | None = None,
) -> Response:
    """POST ``activity`` (or raw ``body``) to ``path`` on ``host``, signed draft-cavage by
    ``signer`` (unsigned when None); ``keypair``/``key_id``/``now``/``signed_body`` forge;
    ``client_address`` is the peer's address (the ASGI scope's client)."""
    data = body if body is not None else json.dumps(activity).encode()
    headers = {"Host": host, "Content-Type": ACTIVITY_JSON}
    if signer is not None:
        headers.update(
            sign_request(
                "POST",
                f"http://{host}{path}",
                key_id=key_id or signer.key_id,
                private_key=(keypair or signer.keypair).private_key,
                body=signed_body if signed_body is not None else data,
                now=now,
            )
        )
    scope = {"client": (client_address, 40000)} if client_address else None
    response: Response = await client.post(path, data=data, headers=headers, scope_base=scope)
    return response


class SlowKeyServer:
    """A server whose every GET is held open until ``release`` is set (or a minute passes),
    then answered 404: keys on a slow host. ``arrived`` counts the GETs that came in."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.arrived = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server._lock:
                    server.arrived += 1
                server.release.wait(60)
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()


class Processor:
    """Runs the worker's inbox step inside the test's transaction."""

    def __init__(
        self, connection: AsyncConnection, settings: Settings, client: RemoteClient
    ) -> None:
        self.session_factory = create_session_factory(connection)
        self.settings = settings
        self.client = client

    async def run(self) -> int:
        return await process_inbox_items(self.session_factory, self.settings, self.client)


async def store(session: AsyncSession, activity: dict[str, Any], app: str | None = None) -> None:
    """Store an item as the inbox does after verifying it."""
    session.add(
        ApInboxItem(
            activity_uri=activity["id"],
            activity_type=activity["type"],
            app=app,
            actor_uri=activity["actor"],
            document=activity,
        )
    )
    await session.commit()
