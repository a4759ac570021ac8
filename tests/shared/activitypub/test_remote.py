"""Outgoing ActivityPub HTTP against a real HTTP server on 127.0.0.1: the SSRF rules (with
real address resolution), the size, time and redirect caps, signed GETs and POSTs, and the
remote actor cache in the real database (validation, key documents, key rotation)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import ConfigError, Settings, load_settings
from shared.infrastructure.activitypub import keys, urls
from shared.infrastructure.activitypub.keys import public_pem_of
from shared.infrastructure.activitypub.remote import (
    AddressPolicy,
    InvalidDocumentError,
    LocalUrlError,
    RemoteClient,
    RemoteFetchError,
    RemoteGoneError,
    UnsafeUrlError,
    check_address,
    get_actor_for_key,
    get_actor_signer,
    get_cached_actor,
    get_instance_signer,
    get_remote_actor,
    parse_actor,
)
from shared.infrastructure.activitypub.signatures import IncomingRequest, verify_request
from shared.models.social.actors import ApRemoteActor
from shared.services.social.delivery import DeliveryPool
from tests.shared.activitypub.inbox_support import ActorServer
from tests.shared.activitypub.tls_support import OwnCA, write_ca_directory

PEER_HOST = "peer.localhost"  # a *.localhost name: loopback, as browsers and our client map it
JSON_TYPE = {"Content-Type": "application/activity+json"}
TLS_HANDSHAKE = b"\x16"  # the first byte of a TLS ClientHello


# --- a tiny real HTTP/1.1 server ---------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON_TYPE))
    delay: float = 0.0
    chunked: bool = False


@dataclass(frozen=True)
class Received:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes


class FakePeer:
    """Answers each path from ``routes`` (404 otherwise) and records every request."""

    def __init__(self) -> None:
        self.routes: dict[str, Reply] = {}
        self.received: list[Received] = []
        self.tasks: set[asyncio.Task[Any]] = set()
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()

    def url(self, path: str, host: str = PEER_HOST) -> str:
        return f"http://{host}:{self.port}{path}"

    def hits(self, path: str) -> int:
        return sum(1 for r in self.received if r.target.split("?")[0] == path)

    def serve_json(self, path: str, document: dict[str, Any]) -> None:
        import json

        self.routes[path] = Reply(body=json.dumps(document).encode())

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            first = await reader.readexactly(1)
            if first == TLS_HANDSHAKE:  # https to this plain http server: hang up
                return
            head = (first + await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            request_line, *lines = head.strip("\r\n").split("\r\n")
            method, target, _ = request_line.split(" ", 2)
            headers = [(n.strip(), v.strip()) for n, v in (x.split(":", 1) for x in lines)]
            length = int(dict((n.lower(), v) for n, v in headers).get("content-length", "0"))
            body = await reader.readexactly(length)
            self.received.append(Received(method, target, headers, body))
            reply = self.routes.get(target.split("?")[0]) or Reply(
                404, b"not found", {"Content-Type": "text/plain"}
            )
            if reply.delay:
                await asyncio.sleep(reply.delay)
            await self.write(writer, reply)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self.tasks.discard(task)

    async def write(self, writer: asyncio.StreamWriter, reply: Reply) -> None:
        lines = [f"HTTP/1.1 {reply.status} X", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in reply.headers.items()]
        if reply.chunked:
            lines.append("Transfer-Encoding: chunked")
        else:
            lines.append(f"Content-Length: {len(reply.body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if reply.chunked:
            for start in range(0, len(reply.body), 4096):
                chunk = reply.body[start : start + 4096]
                writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                await writer.drain()
            writer.write(b"0\r\n\r\n")
        else:
            writer.write(reply.body)
        await writer.drain()


@pytest.fixture
async def peer() -> AsyncIterator[FakePeer]:
    server = FakePeer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(autouse=True)
def fresh_keypairs() -> Iterator[None]:
    """Each test's transaction (and the keypair it creates) is rolled back."""
    keys.forget_keypairs()
    yield
    keys.forget_keypairs()


def tuned(settings: Settings, **changes: Any) -> Settings:
    activitypub = settings.activitypub.model_copy(update=changes)
    return settings.model_copy(update={"activitypub": activitypub})


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[RemoteClient]:
    async with RemoteClient(settings) as remote:
        yield remote


@pytest.fixture
async def strict(settings: Settings) -> AsyncIterator[RemoteClient]:
    """A client with production's rules: no loopback, no allowlist."""
    async with RemoteClient(tuned(settings, allow_loopback=False)) as remote:
        yield remote


# --- remote actors as documents ----------------------------------------------------------


@pytest.fixture(scope="module")
def key_a() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def key_b() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def actor_document(peer: FakePeer, name: str, pem: str, **changes: Any) -> dict[str, Any]:
    uri = peer.url(f"/users/{name}")
    document: dict[str, Any] = {
        "@context": ["https://www.w3.org/ns/activitystreams", "https://w3id.org/security/v1"],
        "id": uri,
        "type": "Person",
        "preferredUsername": name,
        "name": name.title(),
        "inbox": f"{uri}/inbox",
        "outbox": f"{uri}/outbox",
        "endpoints": {"sharedInbox": peer.url("/inbox")},
        "publicKey": {"id": f"{uri}#main-key", "owner": uri, "publicKeyPem": pem},
    }
    document.update(changes)
    return document


# --- the address rules -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "non-global"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 (the address under test)
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:169.254.169.254", "link-local"),
    ],
)
def test_non_public_addresses_are_refused(address: str, problem: str) -> None:
    with pytest.raises(UnsafeUrlError, match=f"a {problem} address"):
        check_address(AddressPolicy(), "example.org", address)


@pytest.mark.parametrize("address", ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    check_address(AddressPolicy(), "example.org", address)


def test_allow_loopback_allows_loopback_only() -> None:
    policy = AddressPolicy(allow_loopback=True)
    for address in ("127.0.0.1", "127.0.0.53", "::1", "::ffff:127.0.0.1"):
        check_address(policy, "peer.localhost", address)
    for address in ("10.0.0.1", "169.254.169.254", "0.0.0.0", "fe80::1"):  # noqa: S104
        with pytest.raises(UnsafeUrlError):
            check_address(policy, "peer.localhost", address)


def test_the_allowlist_takes_networks_and_hosts(settings: Settings) -> None:
    configured = tuned(
        settings, allow_loopback=False, allowed_private_hosts=("10.0.0.0/8", "Peer.Example.")
    )
    policy = AddressPolicy.from_settings(configured)
    check_address(policy, "anything.example", "10.20.30.40")
    check_address(policy, "anything.example", "::ffff:10.20.30.40")
    check_address(policy, "peer.example", "192.168.5.5")
    with pytest.raises(UnsafeUrlError, match=re.escape("192.168.5.5")):
        check_address(policy, "other.example", "192.168.5.5")
    with pytest.raises(UnsafeUrlError, match="loopback"):
        check_address(policy, "anything.example", "127.0.0.1")


# --- SSRF through the client, with real resolution and connections ------------------------


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", PEER_HOST, "localhost", "[::1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]"],
)
async def test_loopback_is_refused_without_connecting(
    strict: RemoteClient, peer: FakePeer, host: str
) -> None:
    peer.serve_json("/users/alice", {"id": "x"})
    with pytest.raises(UnsafeUrlError, match="loopback address"):
        await strict.get_json(peer.url("/users/alice", host), signer=None)
    assert peer.received == []


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://10.1.2.3/users/alice", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[fe80::1]/x", "link-local"),
        ("http://0.0.0.0:8080/x", "unspecified"),
        ("file:///etc/passwd", "not an http"),
        ("gopher://example.org/x", "not an http"),
    ],
)
async def test_private_addresses_and_other_schemes_are_refused(
    client: RemoteClient, url: str, reason: str
) -> None:
    started = time.monotonic()
    with pytest.raises(UnsafeUrlError, match=reason):
        await client.get_json(url, signer=None)
    assert time.monotonic() - started < 1  # refused before any connection attempt


async def test_loopback_is_allowed_when_configured(client: RemoteClient, peer: FakePeer) -> None:
    peer.serve_json("/doc", {"id": "it works"})
    assert await client.get_json(peer.url("/doc", "127.0.0.1"), signer=None) == {"id": "it works"}
    assert await client.get_json(peer.url("/doc"), signer=None) == {"id": "it works"}
    assert [dict(r.headers)["Host"] for r in peer.received] == [
        f"127.0.0.1:{peer.port}",
        f"{PEER_HOST}:{peer.port}",
    ]


async def test_an_allowlisted_network_or_host_is_reachable(
    settings: Settings, peer: FakePeer
) -> None:
    peer.serve_json("/doc", {"ok": True})
    by_network = tuned(settings, allow_loopback=False, allowed_private_hosts=("127.0.0.0/8",))
    async with RemoteClient(by_network) as remote:
        assert await remote.get_json(peer.url("/doc", "127.0.0.1"), signer=None) == {"ok": True}
    by_host = tuned(settings, allow_loopback=False, allowed_private_hosts=(PEER_HOST,))
    async with RemoteClient(by_host) as remote:
        assert await remote.get_json(peer.url("/doc"), signer=None) == {"ok": True}
        with pytest.raises(UnsafeUrlError):
            await remote.get_json(peer.url("/doc", "127.0.0.1"), signer=None)
    assert peer.hits("/doc") == 2


async def test_a_redirect_to_a_private_address_is_refused(
    settings: Settings, peer: FakePeer
) -> None:
    """The peer is allowlisted by name; its redirect to 127.0.0.1 (the same server, reached by
    an address nobody allowed) and to the metadata address are checked again and refused."""
    peer.serve_json("/secret", {"secret": True})
    peer.routes["/to-loopback"] = Reply(302, b"", {"Location": peer.url("/secret", "127.0.0.1")})
    peer.routes["/to-metadata"] = Reply(301, b"", {"Location": "http://169.254.169.254/"})
    only_peer = tuned(settings, allow_loopback=False, allowed_private_hosts=(PEER_HOST,))
    async with RemoteClient(only_peer) as remote:
        with pytest.raises(UnsafeUrlError, match=re.escape("127.0.0.1")):
            await remote.get_json(peer.url("/to-loopback"), signer=None)
        with pytest.raises(UnsafeUrlError, match="link-local"):
            await remote.get_json(peer.url("/to-metadata"), signer=None)
    assert peer.hits("/to-loopback") == 1
    assert peer.hits("/secret") == 0


async def test_redirects_are_followed_up_to_the_limit(settings: Settings, peer: FakePeer) -> None:
    peer.serve_json("/c", {"id": peer.url("/c")})
    peer.routes["/a"] = Reply(302, b"", {"Location": "/b"})
    peer.routes["/b"] = Reply(307, b"", {"Location": peer.url("/c")})
    async with RemoteClient(tuned(settings, max_redirects=2)) as remote:
        fetched = await remote.fetch_json(peer.url("/a"), signer=None)
    assert fetched.url == peer.url("/c")
    assert fetched.document == {"id": peer.url("/c")}
    async with RemoteClient(tuned(settings, max_redirects=1)) as remote:
        with pytest.raises(RemoteFetchError, match="more than 1 redirects"):
            await remote.fetch_json(peer.url("/a"), signer=None)
    assert peer.hits("/c") == 1


# --- caps and answers ----------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True])
async def test_an_oversized_response_is_abandoned(
    settings: Settings, peer: FakePeer, chunked: bool
) -> None:
    body = b'{"padding": "' + b"x" * 200_000 + b'"}'
    peer.routes["/big"] = Reply(body=body, chunked=chunked)
    async with RemoteClient(tuned(settings, max_response_bytes=50_000)) as remote:
        with pytest.raises(RemoteFetchError, match="exceeds 50000"):
            await remote.get_json(peer.url("/big"), signer=None)
    async with RemoteClient(tuned(settings, max_response_bytes=300_000)) as remote:
        assert len((await remote.get_json(peer.url("/big"), signer=None))["padding"]) == 200_000


async def test_a_slow_server_times_out(settings: Settings, peer: FakePeer) -> None:
    peer.routes["/slow"] = Reply(delay=5)
    started = time.monotonic()
    async with RemoteClient(tuned(settings, fetch_timeout_seconds=0.3)) as remote:
        with pytest.raises(RemoteFetchError, match=r"within 0\.3 s"):
            await remote.get_json(peer.url("/slow"), signer=None)
    assert time.monotonic() - started < 2


async def test_answers_that_are_not_documents_are_errors(
    client: RemoteClient, peer: FakePeer
) -> None:
    peer.routes["/gone"] = Reply(410, b"")
    peer.routes["/broken"] = Reply(500, b"oops", {"Content-Type": "text/plain"})
    peer.routes["/html"] = Reply(200, b"<html></html>", {"Content-Type": "text/html"})
    peer.routes["/list"] = Reply(200, b"[1, 2]")
    peer.routes["/garbage"] = Reply(200, b"{not json")
    with pytest.raises(RemoteGoneError) as gone:
        await client.get_json(peer.url("/gone"), signer=None)
    assert gone.value.status == 410
    with pytest.raises(RemoteGoneError):
        await client.get_json(peer.url("/missing"), signer=None)
    with pytest.raises(RemoteFetchError, match="HTTP 500") as broken:
        await client.get_json(peer.url("/broken"), signer=None)
    assert broken.value.status == 500
    with pytest.raises(InvalidDocumentError, match="text/html"):
        await client.get_json(peer.url("/html"), signer=None)
    with pytest.raises(InvalidDocumentError, match="not a JSON object"):
        await client.get_json(peer.url("/list"), signer=None)
    with pytest.raises(InvalidDocumentError, match="not valid JSON"):
        await client.get_json(peer.url("/garbage"), signer=None)


async def test_a_connection_refused_is_a_fetch_error(client: RemoteClient, peer: FakePeer) -> None:
    port = peer.port
    await peer.stop()
    with pytest.raises(RemoteFetchError, match="ConnectError"):
        await client.get_json(f"http://127.0.0.1:{port}/x", signer=None)
    await peer.start()  # the fixture stops it again


# --- the certificate authorities we trust ---------------------------------------------------


@pytest.fixture
def tls_document(tls_server: ActorServer) -> Iterator[str]:
    """A document served over TLS by a peer whose certificate our own CA signed."""
    tls_server.documents["/doc"] = (200, {"hello": "tls"})
    yield f"{tls_server.base_url}/doc"
    tls_server.documents.clear()


async def test_a_peer_behind_a_private_ca_is_trusted_with_the_extra_ca_file(
    settings: Settings, trusting: Settings, tls_document: str
) -> None:
    async with RemoteClient(settings) as untrusting:
        with pytest.raises(RemoteFetchError, match="CERTIFICATE_VERIFY_FAILED"):
            await untrusting.get_json(tls_document, signer=None)
    async with RemoteClient(trusting) as client:
        assert await client.get_json(tls_document, signer=None) == {"hello": "tls"}


async def test_the_delivery_pool_trusts_the_extra_ca_file(
    session: AsyncSession, settings: Settings, trusting: Settings, tls_document: str
) -> None:
    signer = await get_actor_signer(session, settings, "blog")
    inbox = tls_document.replace("/doc", "/inbox")
    untrusting = DeliveryPool(settings)
    try:
        with pytest.raises(RemoteFetchError, match="CERTIFICATE_VERIFY_FAILED"):
            await untrusting.post_json(inbox, b"{}", signer=signer)
    finally:
        await untrusting.aclose()
    pool = DeliveryPool(trusting)
    try:  # the TLS handshake succeeded: the peer answers (it takes no POSTs)
        assert (await pool.post_json(inbox, b"{}", signer=signer)).status == 501
    finally:
        await pool.aclose()


@pytest.mark.parametrize("variable", ["SSL_CERT_FILE", "SSL_CERT_DIR"])
async def test_the_standard_variables_name_more_trusted_cas(
    settings: Settings,
    own_ca: OwnCA,
    tls_document: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    if variable == "SSL_CERT_FILE":
        monkeypatch.setenv(variable, str(own_ca.ca_file))
    else:
        monkeypatch.setenv(variable, str(write_ca_directory(own_ca.ca_file, tmp_path)))
    async with RemoteClient(settings) as client:
        assert await client.get_json(tls_document, signer=None) == {"hello": "tls"}


def test_an_extra_ca_file_that_is_missing_or_no_certificate_is_a_config_error(
    settings: Settings, tmp_path: Path
) -> None:
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    for path, message in (
        (tmp_path / "missing.pem", "not point to a file"),
        (not_pem, "no usable"),
    ):
        with pytest.raises(ConfigError, match=f"ROSE_ASH_ACTIVITYPUB__EXTRA_CA_FILE.*{message}"):
            load_settings(
                env="test",
                database_url=settings.database_url,
                redis_url=settings.redis_url,
                secret_key=settings.secret_key.get_secret_value(),
                activitypub={"allow_loopback": True, "extra_ca_file": str(path)},
            )


# --- signed requests -----------------------------------------------------------------------


async def test_a_signed_get_verifies_with_the_instance_actors_key(
    session: AsyncSession, settings: Settings, client: RemoteClient, peer: FakePeer
) -> None:
    peer.serve_json("/users/alice", {"id": "whatever"})
    signer = await get_instance_signer(session, settings)
    assert signer.key_id == urls.key_id(settings, urls.INSTANCE_ACTOR)
    await client.get_json(peer.url("/users/alice?x=1"), signer=signer)
    (received,) = peer.received
    headers = dict(received.headers)
    assert headers["Accept"].startswith("application/activity+json")
    assert 'profile="https://www.w3.org/ns/activitystreams"' in headers["Accept"]
    incoming = IncomingRequest("GET", peer.url(received.target), received.headers, received.body)
    keypair = await keys.get_keypair(session, settings)
    verified = verify_request(incoming, keypair.public_key_pem)
    assert verified.key_id == urls.key_id(settings, urls.INSTANCE_ACTOR)


async def test_a_delivery_is_a_signed_post_and_its_status_is_returned(
    session: AsyncSession, settings: Settings, client: RemoteClient, peer: FakePeer
) -> None:
    peer.routes["/inbox"] = Reply(202, b"")
    peer.routes["/moved"] = Reply(308, b"", {"Location": peer.url("/inbox")})
    signer = await get_actor_signer(session, settings, "blog")
    body = b'{"type":"Create"}'
    response = await client.post_json(peer.url("/inbox"), body, signer=signer)
    assert response.status_code == response.status == 202
    (received,) = peer.received
    headers = dict(received.headers)
    assert received.body == body
    assert headers["Content-Type"] == "application/activity+json"
    assert headers["Digest"].startswith("SHA-256=")
    incoming = IncomingRequest("POST", peer.url("/inbox"), received.headers, received.body)
    keypair = await keys.get_keypair(session, settings)
    assert verify_request(incoming, keypair.public_key_pem).key_id == urls.key_id(settings, "blog")

    moved = await client.post_json(peer.url("/moved"), body, signer=signer)
    assert moved.status_code == 308
    assert peer.hits("/inbox") == 1  # the redirect was not followed
    with pytest.raises(UnsafeUrlError):
        await client.post_json("http://10.0.0.1/inbox", body, signer=signer)


# --- parsing actors ------------------------------------------------------------------------


URI = "https://peer.example/users/alice"


def plain_actor(pem: str, **changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": URI,
        "type": "Person",
        "preferredUsername": "alice",
        "inbox": f"{URI}/inbox",
        "publicKey": {"id": f"{URI}#main-key", "owner": URI, "publicKeyPem": pem},
    }
    document.update(changes)
    return document


def test_parse_actor_reads_a_valid_actor(key_a: rsa.RSAPrivateKey) -> None:
    pem = public_pem_of(key_a)
    actor = parse_actor(
        plain_actor(pem, type=["Service"], endpoints={"sharedInbox": "https://peer.example/inbox"}),
        URI,
    )
    assert actor.uri == URI
    assert actor.domain == "peer.example"
    assert actor.actor_type == "Service"
    assert actor.preferred_username == "alice"
    assert actor.shared_inbox == "https://peer.example/inbox"
    assert actor.key_id == f"{URI}#main-key"
    assert actor.public_key_pem == pem
    assert actor.deleted is False


def test_parse_actor_picks_the_named_key_from_a_list(
    key_a: rsa.RSAPrivateKey, key_b: rsa.RSAPrivateKey
) -> None:
    keys_listed = [
        {"id": f"{URI}#main-key", "owner": URI, "publicKeyPem": public_pem_of(key_a)},
        {"id": f"{URI}#other-key", "owner": URI, "publicKeyPem": public_pem_of(key_b)},
    ]
    actor = parse_actor(plain_actor("", publicKey=keys_listed), URI, key_id=f"{URI}#other-key")
    assert (actor.key_id, actor.public_key_pem) == (f"{URI}#other-key", public_pem_of(key_b))


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"id": "https://peer.example/users/mallory"}, "is not the URL it was fetched from"),
        ({"id": None}, "id is missing"),
        ({"type": "Note"}, "not an actor type"),
        ({"inbox": None}, "inbox is missing"),
        ({"inbox": "javascript:alert(1)"}, "not an http"),
        ({"publicKey": None}, "no publicKey"),
        (
            {
                "publicKey": {
                    "id": f"{URI}#k",
                    "owner": "https://peer.example/users/bob",
                    "publicKeyPem": "x",
                }
            },
            "owned by",
        ),
        (
            {"publicKey": {"id": "https://other.example/k", "owner": URI, "publicKeyPem": "x"}},
            "on another host",
        ),
        ({"publicKey": {"id": f"{URI}#k", "owner": URI, "publicKeyPem": "not a pem"}}, "PEM"),
    ],
)
def test_parse_actor_refuses_what_cannot_be_trusted(
    key_a: rsa.RSAPrivateKey, changes: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidDocumentError, match=reason):
        parse_actor(plain_actor(public_pem_of(key_a), **changes), URI)


# --- the actor cache -----------------------------------------------------------------------


async def test_an_actor_is_fetched_once_then_served_from_the_cache(
    session: AsyncSession,
    settings: Settings,
    client: RemoteClient,
    peer: FakePeer,
    key_a: rsa.RSAPrivateKey,
) -> None:
    document = actor_document(peer, "alice", public_pem_of(key_a))
    peer.serve_json("/users/alice", document)
    uri = document["id"]
    actor = await get_remote_actor(session, settings, client, uri + "#main-key")
    assert (actor.uri, actor.inbox, actor.shared_inbox) == (
        uri,
        f"{uri}/inbox",
        peer.url("/inbox"),
    )
    assert actor.domain == PEER_HOST
    row = await session.scalar(select(ApRemoteActor).where(ApRemoteActor.uri == uri))
    assert row is not None
    assert row.document["preferredUsername"] == "alice"
    assert row.key_id == f"{uri}#main-key"

    assert await get_remote_actor(session, settings, client, uri) == actor
    assert await get_actor_for_key(session, settings, client, f"{uri}#main-key") == actor
    assert peer.hits("/users/alice") == 1
    await get_remote_actor(session, settings, client, uri, refresh=True)
    assert peer.hits("/users/alice") == 2
    # the fetch was signed by the instance actor
    keypair = await keys.get_keypair(session, settings)
    received = peer.received[0]
    incoming = IncomingRequest("GET", peer.url(received.target), received.headers)
    assert verify_request(incoming, keypair.public_key_pem).key_id == urls.key_id(
        settings, urls.INSTANCE_ACTOR
    )


async def test_an_actor_whose_id_is_not_its_url_is_refused(
    session: AsyncSession,
    settings: Settings,
    client: RemoteClient,
    peer: FakePeer,
    key_a: rsa.RSAPrivateKey,
) -> None:
    """bob's URL serves a document claiming to be alice: nothing is cached under either."""
    peer.serve_json("/users/bob", actor_document(peer, "alice", public_pem_of(key_a)))
    with pytest.raises(InvalidDocumentError, match="not the URL it was fetched from"):
        await get_remote_actor(session, settings, client, peer.url("/users/bob"))
    assert await session.scalar(select(ApRemoteActor.id)) is None


async def test_a_rotated_key_is_fetched_again_on_refresh(
    session: AsyncSession,
    settings: Settings,
    client: RemoteClient,
    peer: FakePeer,
    key_a: rsa.RSAPrivateKey,
    key_b: rsa.RSAPrivateKey,
) -> None:
    key_id = peer.url("/users/alice") + "#main-key"
    peer.serve_json("/users/alice", actor_document(peer, "alice", public_pem_of(key_a)))
    first = await get_actor_for_key(session, settings, client, key_id)
    assert first.public_key_pem == public_pem_of(key_a)

    peer.serve_json("/users/alice", actor_document(peer, "alice", public_pem_of(key_b)))
    cached = await get_actor_for_key(session, settings, client, key_id)
    assert cached.public_key_pem == public_pem_of(key_a)
    assert peer.hits("/users/alice") == 1

    rotated = await get_actor_for_key(session, settings, client, key_id, refresh=True)
    assert rotated.public_key_pem == public_pem_of(key_b)
    assert peer.hits("/users/alice") == 2
    stored = await get_cached_actor(session, rotated.uri)
    assert stored is not None
    assert stored.public_key_pem == public_pem_of(key_b)


async def test_a_separate_key_document_leads_to_its_owner(
    session: AsyncSession,
    settings: Settings,
    client: RemoteClient,
    peer: FakePeer,
    key_a: rsa.RSAPrivateKey,
) -> None:
    key_id = peer.url("/keys/alice")
    owner = peer.url("/users/alice")
    pem = public_pem_of(key_a)
    peer.serve_json(
        "/keys/alice",
        {"id": key_id, "type": "CryptographicKey", "owner": owner, "publicKeyPem": pem},
    )
    actor_key = {"id": key_id, "owner": owner, "publicKeyPem": pem}
    peer.serve_json("/users/alice", actor_document(peer, "alice", pem, publicKey=actor_key))
    actor = await get_actor_for_key(session, settings, client, key_id)
    assert (actor.uri, actor.key_id, actor.public_key_pem) == (owner, key_id, pem)
    assert peer.hits("/keys/alice") == peer.hits("/users/alice") == 1


async def test_a_key_whose_owner_does_not_present_it_is_refused(
    session: AsyncSession,
    settings: Settings,
    client: RemoteClient,
    peer: FakePeer,
    key_a: rsa.RSAPrivateKey,
) -> None:
    """A key document naming alice as owner, while alice presents another key: a stranger's
    key cannot be pinned on alice."""
    key_id = peer.url("/keys/forged")
    owner = peer.url("/users/alice")
    peer.serve_json(
        "/keys/forged", {"id": key_id, "owner": owner, "publicKeyPem": public_pem_of(key_a)}
    )
    peer.serve_json("/users/alice", actor_document(peer, "alice", public_pem_of(key_a)))
    with pytest.raises(InvalidDocumentError, match="does not present the key"):
        await get_actor_for_key(session, settings, client, key_id)


async def test_local_actors_are_never_fetched(
    session: AsyncSession, settings: Settings, client: RemoteClient
) -> None:
    with pytest.raises(LocalUrlError, match="one of ours"):
        await get_remote_actor(session, settings, client, urls.actor_url(settings, "blog"))
    with pytest.raises(LocalUrlError):
        await get_actor_for_key(session, settings, client, urls.key_id(settings, "events"))


async def test_a_gone_actor_is_marked_deleted(
    session: AsyncSession,
    settings: Settings,
    client: RemoteClient,
    peer: FakePeer,
    key_a: rsa.RSAPrivateKey,
) -> None:
    peer.serve_json("/users/alice", actor_document(peer, "alice", public_pem_of(key_a)))
    uri = peer.url("/users/alice")
    assert (await get_remote_actor(session, settings, client, uri)).deleted is False
    peer.routes["/users/alice"] = Reply(410, b"")
    with pytest.raises(RemoteGoneError):
        await get_remote_actor(session, settings, client, uri, refresh=True)
    gone = await get_remote_actor(session, settings, client, uri)
    assert gone.deleted is True
    assert peer.hits("/users/alice") == 2


async def test_an_actor_on_a_refused_address_is_not_fetched(
    session: AsyncSession, settings: Settings, strict: RemoteClient, peer: FakePeer
) -> None:
    with pytest.raises(UnsafeUrlError):
        await get_actor_for_key(session, settings, strict, peer.url("/users/x") + "#main-key")
    with pytest.raises(UnsafeUrlError):
        await get_remote_actor(session, settings, strict, "http://169.254.169.254/users/x")
    assert peer.received == []
