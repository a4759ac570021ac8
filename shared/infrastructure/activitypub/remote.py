"""Outgoing ActivityPub HTTP that is safe to point at any URL a stranger sends us, and the cache
of remote actors (``ap_remote_actors``) built on it.

Safety (SSRF): an actor id, key id or inbox in an activity is attacker-chosen, so every
connection goes through ``GuardedBackend``: the host is resolved once, the connection is
refused when *any* address it resolves to is private, loopback, link-local, multicast,
reserved, unspecified or otherwise not globally routable (IPv4-mapped IPv6 judged as the IPv4
address), and the socket is opened to an address that was checked, so DNS cannot answer
differently between the check and the connect (rebinding). The check sits in an httpcore
network backend rather than in front of httpx, which keeps the URL, the Host header, TLS SNI
and certificate checks on the real hostname and keys the connection pool by hostname.
Exceptions: ``settings.activitypub.allow_loopback`` (development, tests: 127/8 and ::1; the
``*.localhost`` names map to 127.0.0.1 as in shared.infrastructure.http) and
``allowed_private_hosts`` (hostnames, addresses, CIDRs). Responses are read as a stream and
abandoned past ``max_response_bytes``; a whole fetch (redirects included) gets
``fetch_timeout_seconds``; redirects are followed by hand up to ``max_redirects``, each hop
checked again; POSTs (deliveries) never follow redirects. Proxies from the environment are
ignored (a proxy would resolve names where we cannot check them). TLS trusts certifi's bundle,
the system store (with SSL_CERT_FILE / SSL_CERT_DIR) and ``activitypub.extra_ca_file``.

WebFinger (``get_webfinger``) is asked over https; over http only when https got no answer
from a loopback name and loopback is allowed (development). A remote actor is labelled by the
handle its WebFinger confirms (``resolve_handle``, stored as ``ap_remote_actors.handle``).

Authorized fetch: every GET is signed (draft-cavage) by the instance actor, which is itself
fetchable unsigned, so servers in secure mode answer us.

Actor cache: ``get_remote_actor`` and ``get_actor_for_key`` serve a row younger than
ACTOR_TTL, else fetch, validate (``parse_actor``: the document's id is the URL it came from,
an actor type, an inbox, a publicKey owned by the actor on the actor's host) and upsert. Key
rotation: when a signature does not verify with the cached key, call ``get_actor_for_key``
again with ``refresh=True`` and verify once more; only then answer 401. The functions use the
caller's session and do not commit.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import os
import re
import socket
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import httpcore
import httpx
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from sqlalchemy import case, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import Settings
from shared.infrastructure.activitypub import keys, urls
from shared.infrastructure.activitypub.signatures import (
    SignatureError,
    load_public_key,
    sign_request,
)
from shared.models.social.actors import ApRemoteActor

ACCEPT = 'application/activity+json, application/ld+json; profile="https://www.w3.org/ns/activitystreams"'
ACTIVITY_JSON = "application/activity+json"
LOOPBACK = "127.0.0.1"
ACTOR_TTL = timedelta(days=1)
ACTOR_TYPES = ("Person", "Service", "Application", "Group", "Organization")
GONE_STATUSES = frozenset({404, 410})
DELIVERY_BODY_BYTES = 16_384  # what we keep of an inbox's answer (for logs)
MAX_URL_LENGTH = 2000  # the ap_remote_actors URL columns
HANDLE = re.compile(r"^(?:acct:|@)?([^@\s/?#]+)@([^@\s/?#]+)$")
# The WebFinger link types of an ActivityPub actor, compared without spaces.
ACTOR_LINK_TYPES = frozenset(
    {
        "application/activity+json",
        'application/ld+json;profile="https://www.w3.org/ns/activitystreams"',
    }
)
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class RemoteFetchError(Exception):
    """A remote request failed (network, timeout, status, size, or an unusable document)."""

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None):
        super().__init__(message)
        self.url = url
        self.status = status


class UnsafeUrlError(RemoteFetchError):
    """Refused before connecting: not http(s), or the host resolves to a private address."""


class RemoteGoneError(RemoteFetchError):
    """The remote answered 404 or 410: the thing is gone (permanent, not retried)."""


class InvalidDocumentError(RemoteFetchError):
    """The remote answered a document we cannot accept (not JSON, wrong id, not an actor…)."""


class LocalUrlError(RemoteFetchError):
    """The URL is one of ours: local actors are read from our own tables, never fetched."""


@dataclass(frozen=True)
class Signer:
    """Who signs an outgoing request: a local actor's key id and the private key."""

    key_id: str
    private_key: RSAPrivateKey


@dataclass(frozen=True)
class FetchedJson:
    """A fetched JSON object and the URL it was finally served from (after redirects)."""

    url: str
    document: dict[str, Any]


@dataclass(frozen=True)
class DeliveryResponse:
    """An inbox's answer to a POST: its status and the start of its body."""

    status_code: int
    body: bytes = b""

    @property
    def status(self) -> int:
        return self.status_code


# --- address policy ----------------------------------------------------------------------


@dataclass(frozen=True)
class AddressPolicy:
    """Which non-public addresses we may connect to anyway (from ActivityPubSettings)."""

    allow_loopback: bool = False
    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> AddressPolicy:
        config = settings.activitypub
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in config.allowed_private_hosts:
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                hosts.add(normalise_host(entry))
        return cls(config.allow_loopback, frozenset(hosts), tuple(networks))


def normalise_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def is_localhost_name(host: str) -> bool:
    """``localhost`` and ``*.localhost``: loopback by name (RFC 6761)."""
    name = normalise_host(host)
    return name == "localhost" or name.endswith(".localhost")


def address_problem(address: IPAddress) -> str | None:
    """Why ``address`` is no place for a request from strangers' URLs, or None if public."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for attribute, problem in (
        ("is_unspecified", "unspecified"),
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
        ("is_reserved", "reserved"),
        ("is_private", "private"),
    ):
        if getattr(address, attribute):
            return problem
    return None if address.is_global else "non-global"


def check_address(policy: AddressPolicy, host: str, address: str) -> None:
    """Raise UnsafeUrlError unless connecting to ``address`` (which ``host`` resolved to) is
    allowed: public, or allowlisted by host or network, or loopback when that is allowed."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    problem = address_problem(ip)
    if problem is None or normalise_host(host) in policy.hosts:
        return
    plain = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip
    if any(plain in network or ip in network for network in policy.networks):
        return
    if problem == "loopback" and policy.allow_loopback:
        return
    raise UnsafeUrlError(f"refused: {host} resolves to {address}, a {problem} address")


def check_url(url: str) -> httpx.URL:
    """``url`` parsed, when it is an absolute http(s) URL with a host; else UnsafeUrlError."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise UnsafeUrlError(f"refused: {url!r} is not a valid URL", url=url) from exc
    if parsed.scheme not in {"http", "https"}:
        raise UnsafeUrlError(f"refused: {url!r} is not an http(s) URL", url=url)
    if not parsed.host:
        raise UnsafeUrlError(f"refused: {url!r} has no host", url=url)
    return parsed


async def resolve_host(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (``*.localhost`` is loopback, RFC 6761)."""
    if is_localhost_name(host):
        return [LOOPBACK]
    name = normalise_host(host)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise RemoteFetchError(f"cannot resolve {host}: {exc}") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise RemoteFetchError(f"{host} resolves to no address")
    return addresses


async def check_host(policy: AddressPolicy, host: str, port: int) -> list[str]:
    """Resolve ``host`` and check every address (one bad address refuses the host: a name
    with a public and a private address is how rebinding attacks pick their moment)."""
    addresses = await resolve_host(host, port)
    for address in addresses:
        check_address(policy, host, address)
    return addresses


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to checked addresses (see the module docstring)."""

    def __init__(self, policy: AddressPolicy, inner: httpcore.AsyncNetworkBackend | None = None):
        self.policy = policy
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await check_host(self.policy, host, port)
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise UnsafeUrlError("refused: unix sockets are not remote")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def trusted_ssl_context(extra_ca_file: Path | None = None) -> ssl.SSLContext:
    """The TLS context of every guarded pool: certifi's bundle, the system store (OpenSSL's
    default paths, which honour SSL_CERT_FILE and SSL_CERT_DIR) and ``extra_ca_file``
    (``activitypub.extra_ca_file``). One per process and configuration: building one loads the
    CA bundles (tens of milliseconds), and a worker's delivery pool has several transports."""
    return _build_ssl_context(
        str(extra_ca_file) if extra_ca_file is not None else None,
        os.environ.get("SSL_CERT_FILE"),
        os.environ.get("SSL_CERT_DIR"),
    )


@functools.cache
def _build_ssl_context(
    extra_ca_file: str | None, cert_file: str | None, cert_dir: str | None
) -> ssl.SSLContext:
    # The environment variables are arguments only to key the cache: OpenSSL reads them itself
    # when load_default_certs loads its default paths.
    context = httpx.create_ssl_context(trust_env=False)  # certifi's bundle
    context.load_default_certs()
    if extra_ca_file is not None:
        context.load_verify_locations(cafile=extra_ca_file)
    return context


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a connection pool whose every connection is GuardedBackend's.

    httpx has no parameter for httpcore's ``network_backend``, so the pool httpx built is
    replaced (before any connection exists) by one that is given it.
    """

    def __init__(
        self, policy: AddressPolicy, ssl_context: ssl.SSLContext, *, max_connections: int = 100
    ) -> None:
        super().__init__(verify=ssl_context, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=30.0,
            network_backend=GuardedBackend(policy),
        )

    @classmethod
    def for_settings(cls, settings: Settings, *, max_connections: int = 100) -> GuardedTransport:
        """The transport with the address policy and the trusted CAs ``settings`` give."""
        return cls(
            AddressPolicy.from_settings(settings),
            trusted_ssl_context(settings.activitypub.extra_ca_file),
            max_connections=max_connections,
        )


# --- the client --------------------------------------------------------------------------


class RemoteClient:
    """Signed, size- and time-capped GETs of JSON documents, and signed POSTs to inboxes.

    One per process (it pools connections); ``aclose()`` when done. ``transport`` replaces the
    guarded transport: tests of the client's own logic only (it bypasses the address checks,
    not the scheme check).
    """

    def __init__(
        self, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.settings = settings
        self.config = settings.activitypub
        self.policy = AddressPolicy.from_settings(settings)
        self.user_agent = f"rose-ash (+{settings.url_of(urls.INSTANCE_HOST_APP)}/)"
        connections = max(100, self.config.delivery_concurrency)
        self._client = httpx.AsyncClient(
            transport=transport
            or GuardedTransport.for_settings(settings, max_connections=connections),
            follow_redirects=False,
            trust_env=False,
            timeout=httpx.Timeout(self.config.fetch_timeout_seconds),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> RemoteClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def get_json(self, url: str, *, signer: Signer | None) -> dict[str, Any]:
        """The JSON object at ``url`` (see ``fetch_json``)."""
        return (await self.fetch_json(url, signer=signer)).document

    async def fetch_json(self, url: str, *, signer: Signer | None) -> FetchedJson:
        """GET ``url`` as ActivityStreams JSON, signed by ``signer`` when given, following up
        to ``max_redirects`` redirects; the object and the URL that finally served it.
        RemoteGoneError for 404/410, UnsafeUrlError for refused addresses, RemoteFetchError
        for everything else that goes wrong."""
        seconds = self.config.fetch_timeout_seconds
        try:
            async with asyncio.timeout(seconds):
                return await self._follow(url, signer)
        except TimeoutError:
            raise RemoteFetchError(
                f"{url}: no complete answer within {seconds} s", url=url
            ) from None
        except httpx.HTTPError as exc:
            raise RemoteFetchError(f"{url}: {type(exc).__name__}: {exc}", url=url) from exc

    async def _follow(self, url: str, signer: Signer | None) -> FetchedJson:
        current = url
        for _ in range(self.config.max_redirects + 1):
            check_url(current)
            headers = self._headers("GET", current, signer)
            async with self._client.stream("GET", current, headers=headers) as response:
                location = response.headers.get("location")
                if response.is_redirect and location:
                    current = urljoin(current, location)
                    continue
                check_status(response, current)
                check_json_type(response, current)
                body = await read_capped(response, self.config.max_response_bytes, current)
            return FetchedJson(url=current, document=parse_json_object(body, current))
        raise RemoteFetchError(f"{url}: more than {self.config.max_redirects} redirects", url=url)

    async def post_json(self, url: str, body: bytes, *, signer: Signer) -> DeliveryResponse:
        """POST ``body`` (an activity) to an inbox, signed, without following redirects, within
        ``delivery_timeout_seconds``. Any status is returned (the caller judges it); network
        failures and timeouts raise RemoteFetchError, refused addresses UnsafeUrlError."""
        check_url(url)
        headers = self._headers("POST", url, signer, body)
        headers["Content-Type"] = ACTIVITY_JSON
        seconds = self.config.delivery_timeout_seconds
        try:
            async with asyncio.timeout(seconds):
                async with self._client.stream(
                    "POST", url, content=body, headers=headers
                ) as response:
                    answer = await read_start(response, DELIVERY_BODY_BYTES)
        except TimeoutError:
            raise RemoteFetchError(f"{url}: no answer within {seconds} s", url=url) from None
        except httpx.HTTPError as exc:
            raise RemoteFetchError(f"{url}: {type(exc).__name__}: {exc}", url=url) from exc
        return DeliveryResponse(status_code=response.status_code, body=answer)

    def _headers(
        self, method: str, url: str, signer: Signer | None, body: bytes | None = None
    ) -> dict[str, str]:
        headers = {"Accept": ACCEPT, "User-Agent": self.user_agent}
        if signer is not None:
            headers.update(
                sign_request(
                    method, url, key_id=signer.key_id, private_key=signer.private_key, body=body
                )
            )
        return headers


def check_status(response: httpx.Response, url: str) -> None:
    status = response.status_code
    if status in GONE_STATUSES:
        raise RemoteGoneError(f"{url}: gone (HTTP {status})", url=url, status=status)
    if not 200 <= status < 300:
        raise RemoteFetchError(f"{url}: HTTP {status}", url=url, status=status)


def check_json_type(response: httpx.Response, url: str) -> None:
    media_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type and "json" not in media_type:
        raise InvalidDocumentError(f"{url}: answered {media_type}, not JSON", url=url)


async def read_capped(response: httpx.Response, limit: int, url: str) -> bytes:
    """The (decoded) body, or RemoteFetchError as soon as it exceeds ``limit`` bytes."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RemoteFetchError(f"{url}: response of {declared} bytes exceeds {limit}", url=url)
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise RemoteFetchError(f"{url}: response exceeds {limit} bytes", url=url)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_start(response: httpx.Response, limit: int) -> bytes:
    """At most ``limit`` bytes of the body; the rest is not read."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_raw():
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)[:limit]


def parse_json_object(body: bytes, url: str) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidDocumentError(f"{url}: not valid JSON ({exc})", url=url) from None
    if not isinstance(document, dict):
        raise InvalidDocumentError(f"{url}: not a JSON object", url=url)
    return document


# --- WebFinger ---------------------------------------------------------------------------


def parse_handle(target: str) -> tuple[str, str] | None:
    """(user, host) of a handle such as ``user@host``, ``@user@host`` or ``acct:user@host``."""
    match = HANDLE.match(target.strip())
    if match is None:
        return None
    return match.group(1), match.group(2).lower()


def is_loopback_name(host: str) -> bool:
    """Whether ``host`` (maybe with a port) names this machine: localhost, *.localhost, a
    loopback address."""
    name = urlsplit(f"//{host}").hostname or ""
    if is_localhost_name(name):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def webfinger_url(user: str, host: str, scheme: str = "https") -> str:
    resource = quote(f"acct:{user}@{host}", safe=":@")
    return f"{scheme}://{host}/.well-known/webfinger?resource={resource}"


def plain_http_allowed(settings: Settings, host: str) -> bool:
    """WebFinger may fall back to http for a loopback name when loopback is allowed (the
    development platform and the tests); everywhere else it is https only, as servers expect
    (Fedify and Mastodon resolve ``acct:`` only over https)."""
    return settings.activitypub.allow_loopback and is_loopback_name(host)


async def get_webfinger(client: RemoteClient, user: str, host: str) -> dict[str, Any]:
    """The WebFinger answer for ``acct:user@host``, asked over https; over http when https
    got no answer (no connection, a failed handshake) and plain_http_allowed. When both fail,
    the error tells both (a certificate problem is what an operator needs to see)."""
    try:
        return await client.get_json(webfinger_url(user, host), signer=None)
    except RemoteFetchError as exc:
        if exc.status is not None or not plain_http_allowed(client.settings, host):
            raise
        https_failure = exc
    try:
        return await client.get_json(webfinger_url(user, host, "http"), signer=None)
    except RemoteFetchError as exc:
        raise RemoteFetchError(f"{https_failure}; over http: {exc}", url=exc.url) from exc


def actor_link(document: Mapping[str, Any]) -> str | None:
    """The ``self`` link of a WebFinger answer that is an ActivityPub actor."""
    links = document.get("links")
    if not isinstance(links, list):
        return None
    for link in links:
        if not isinstance(link, dict) or link.get("rel") != "self":
            continue
        href, kind = link.get("href"), str(link.get("type", "")).replace(" ", "")
        if isinstance(href, str) and kind in ACTOR_LINK_TYPES:
            return href
    return None


# --- signers -----------------------------------------------------------------------------


async def get_actor_signer(session: AsyncSession, settings: Settings, actor: str) -> Signer:
    """The signer of local ``actor`` (an app's name or urls.INSTANCE_ACTOR)."""
    if actor not in urls.ACTOR_NAMES:
        raise ValueError(f"{actor!r} is not a local actor")
    keypair = await keys.get_keypair(session, settings)
    return Signer(key_id=urls.key_id(settings, actor), private_key=keypair.private_key)


async def get_instance_signer(session: AsyncSession, settings: Settings) -> Signer:
    """The instance actor's signer: what signs every outgoing GET (authorized fetch)."""
    return await get_actor_signer(session, settings, urls.INSTANCE_ACTOR)


# --- remote actors -----------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteActorDTO:
    uri: str
    domain: str  # the actor's hostname, lowercased, without port (what blocks and limits key on)
    actor_type: str
    preferred_username: str | None
    name: str | None
    inbox: str
    shared_inbox: str | None
    key_id: str | None
    public_key_pem: str | None
    deleted: bool = False
    # How the actor is shown (resolve_handle); None until looked up, or without a username.
    handle: str | None = None


def strip_fragment(url: str) -> str:
    return url.split("#", 1)[0]


def parse_actor(
    document: Mapping[str, Any], fetched_url: str, *, key_id: str | None = None
) -> RemoteActorDTO:
    """The actor ``document`` describes, after the checks that make it trustworthy: its id is
    the URL it was served from, its type is an actor type, it has an http(s) inbox, and its
    publicKey (the one with id ``key_id`` when given and present, else the first) is owned by
    the actor, lives on the actor's host and holds a usable PEM. InvalidDocumentError if not."""
    uri = _string(document, "id", fetched_url)
    if strip_fragment(uri) != strip_fragment(fetched_url):
        raise InvalidDocumentError(
            f"{fetched_url}: the document's id {uri!r} is not the URL it was fetched from",
            url=fetched_url,
        )
    _http_url(uri, "id", fetched_url)
    types = document.get("type")
    listed = types if isinstance(types, list) else [types]
    actor_type = next((t for t in listed if t in ACTOR_TYPES), None)
    if actor_type is None:
        raise InvalidDocumentError(f"{uri}: type {types!r} is not an actor type", url=uri)
    inbox = _http_url(_string(document, "inbox", uri), "inbox", uri)
    endpoints = document.get("endpoints")
    shared = endpoints.get("sharedInbox") if isinstance(endpoints, Mapping) else None
    shared_inbox = _http_url(shared, "sharedInbox", uri) if isinstance(shared, str) else None
    key = select_key(document.get("publicKey"), uri, key_id)
    return RemoteActorDTO(
        uri=uri,
        domain=(urlsplit(uri).hostname or "").lower(),
        actor_type=actor_type,
        preferred_username=_optional_string(document, "preferredUsername", 255),
        name=_optional_string(document, "name", None),
        inbox=inbox,
        shared_inbox=shared_inbox,
        key_id=key[0],
        public_key_pem=key[1],
    )


def select_key(value: Any, actor_uri: str, key_id: str | None) -> tuple[str, str]:
    """(key id, PEM) of the actor's publicKey: one object or a list of them."""
    candidates = [
        k for k in (value if isinstance(value, list) else [value]) if isinstance(k, Mapping)
    ]
    if not candidates:
        raise InvalidDocumentError(f"{actor_uri}: no publicKey", url=actor_uri)
    chosen = next((k for k in candidates if k.get("id") == key_id), candidates[0])
    found_id = _string(chosen, "id", actor_uri)
    if chosen.get("owner") != actor_uri:
        raise InvalidDocumentError(
            f"{actor_uri}: its key {found_id} is owned by {chosen.get('owner')!r}", url=actor_uri
        )
    if urlsplit(found_id).netloc.lower() != urlsplit(actor_uri).netloc.lower():
        raise InvalidDocumentError(
            f"{actor_uri}: its key {found_id} is on another host", url=actor_uri
        )
    pem = _string(chosen, "publicKeyPem", actor_uri)
    try:
        load_public_key(pem)
    except SignatureError as exc:
        raise InvalidDocumentError(f"{actor_uri}: {exc}", url=actor_uri) from None
    return found_id, pem


def _string(document: Mapping[str, Any], name: str, where: str) -> str:
    value = document.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidDocumentError(f"{where}: {name} is missing or not a string", url=where)
    return value


def _optional_string(document: Mapping[str, Any], name: str, limit: int | None) -> str | None:
    value = document.get(name)
    if not isinstance(value, str):
        return None
    return value[:limit] if limit is not None else value


def _http_url(value: str, name: str, where: str) -> str:
    if len(value) > MAX_URL_LENGTH or urlsplit(value).scheme not in {"http", "https"}:
        raise InvalidDocumentError(f"{where}: {name} {value[:100]!r} is not an http(s) URL")
    if not urlsplit(value).hostname:
        raise InvalidDocumentError(f"{where}: {name} {value[:100]!r} has no host")
    return value


def actor_dto(row: ApRemoteActor) -> RemoteActorDTO:
    return RemoteActorDTO(
        uri=row.uri,
        domain=row.domain,
        actor_type=row.actor_type,
        preferred_username=row.preferred_username,
        name=row.name,
        inbox=row.inbox,
        shared_inbox=row.shared_inbox,
        key_id=row.key_id,
        public_key_pem=row.public_key_pem,
        deleted=row.deleted_at is not None,
        handle=row.handle,
    )


def fallback_handle(uri: str, preferred_username: str) -> str:
    """user@host of the actor's URL: its label when WebFinger does not confirm another."""
    return f"{preferred_username}@{urlsplit(uri).netloc.lower()}"


async def resolve_handle(client: RemoteClient, actor: RemoteActorDTO) -> str | None:
    """How ``actor`` is shown: ``user@domain`` as its WebFinger names it, else user@host of
    its URL; None when it has no preferredUsername.

    As Mastodon does: ``acct:<preferredUsername>@<actor's host>`` is asked at the actor's
    host; its answer must link to the actor, and its subject gives the handle. A subject on
    another domain (a server whose handles are not on its actors' host) counts only when that
    domain's WebFinger answers the same subject and links to the same actor: anyone can claim
    a handle on someone else's domain."""
    user = actor.preferred_username
    if not user:
        return None
    host = urlsplit(actor.uri).netloc.lower()
    try:
        subject = await get_webfinger_subject(client, actor.uri, user, host)
        if subject[1] != host and await get_webfinger_subject(client, actor.uri, *subject) != (
            subject
        ):
            return fallback_handle(actor.uri, user)
    except RemoteFetchError:
        return fallback_handle(actor.uri, user)
    return "@".join(subject)


async def get_webfinger_subject(
    client: RemoteClient, actor_uri: str, user: str, host: str
) -> tuple[str, str]:
    """(user, domain) of the subject of the WebFinger answer for ``acct:user@host``, which
    must link to ``actor_uri``; InvalidDocumentError if it does not."""
    document = await get_webfinger(client, user, host)
    link = actor_link(document)
    subject = document.get("subject")
    parsed = parse_handle(subject) if isinstance(subject, str) else None
    if link is None or strip_fragment(link) != actor_uri or parsed is None:
        raise InvalidDocumentError(f"WebFinger of acct:{user}@{host} does not name {actor_uri}")
    return parsed


async def store_handle(session: AsyncSession, client: RemoteClient, row: ApRemoteActor) -> None:
    """Look up the handle of a cached actor stored without one (a key fetch stores actors
    without asking WebFinger, which the inbox's request path should not wait for)."""
    row.handle = await resolve_handle(client, actor_dto(row))
    await session.flush()


def is_fresh(row: ApRemoteActor, now: datetime | None = None) -> bool:
    return row.fetched_at > (now or datetime.now(UTC)) - ACTOR_TTL


def refuse_local(settings: Settings, url: str) -> None:
    if urls.is_local(settings, url):
        raise LocalUrlError(f"{url} is one of ours: local actors are never fetched", url=url)


async def get_cached_actor(session: AsyncSession, uri: str) -> RemoteActorDTO | None:
    """The cached actor ``uri`` however old, without fetching."""
    row = await session.scalar(
        select(ApRemoteActor)
        .where(ApRemoteActor.uri == strip_fragment(uri))
        .execution_options(populate_existing=True)
    )
    return actor_dto(row) if row is not None else None


async def get_remote_actor(
    session: AsyncSession,
    settings: Settings,
    client: RemoteClient,
    uri: str,
    *,
    refresh: bool = False,
) -> RemoteActorDTO:
    """The remote actor ``uri``: cached if fetched within ACTOR_TTL (or known deleted), else
    fetched with a signed GET, validated and stored, with its handle (resolve_handle; a key
    fetch, which an inbox request waits for, stores actors without asking WebFinger:
    fetch_actor_for_key). A 404/410 marks a cached actor deleted and raises RemoteGoneError."""
    uri = strip_fragment(uri)
    refuse_local(settings, uri)
    if not refresh:
        row = await session.scalar(
            select(ApRemoteActor)
            .where(ApRemoteActor.uri == uri)
            .execution_options(populate_existing=True)
        )
        if row is not None and (row.deleted_at is not None or is_fresh(row)):
            if not row.deleted_at and not row.handle and row.preferred_username:
                await store_handle(session, client, row)
            return actor_dto(row)
    signer = await get_instance_signer(session, settings)
    try:
        fetched = await client.fetch_json(uri, signer=signer)
    except RemoteGoneError:
        await mark_actor_deleted(session, uri)
        raise
    actor = parse_actor(fetched.document, fetched.url)
    refuse_local(settings, actor.uri)
    actor = replace(actor, handle=await resolve_handle(client, actor))
    await store_actor(session, actor, fetched.document)
    return actor


async def get_actor_for_key(
    session: AsyncSession,
    settings: Settings,
    client: RemoteClient,
    key_id: str,
    *,
    refresh: bool = False,
) -> RemoteActorDTO:
    """The remote actor that presents the key ``key_id`` (what an incoming signature names).

    Served from the cache when fresh; else fetched (``fetch_actor_for_key``) and stored.
    Call again with ``refresh=True`` when a signature fails with the cached key.
    """
    refuse_local(settings, key_id)
    if not refresh:
        cached = await get_cached_actor_for_key(session, key_id)
        if cached is not None:
            return cached
    signer = await get_instance_signer(session, settings)
    fetched = await fetch_actor_for_key(
        settings, client, signer, key_id, seconds=settings.activitypub.fetch_timeout_seconds
    )
    await store_actor(session, fetched.actor, fetched.document)
    return fetched.actor


async def get_cached_actor_for_key(session: AsyncSession, key_id: str) -> RemoteActorDTO | None:
    """The cached actor presenting ``key_id`` when it is fresh or known deleted, else None."""
    row = await session.scalar(
        select(ApRemoteActor)
        .where(ApRemoteActor.key_id == key_id)
        .order_by(ApRemoteActor.fetched_at.desc())
        .limit(1)
        .execution_options(populate_existing=True)
    )
    if row is not None and (row.deleted_at is not None or is_fresh(row)):
        return actor_dto(row)
    return None


@dataclass(frozen=True)
class FetchedActor:
    """An actor fetched for its key, and the document to store it with (``store_actor``)."""

    actor: RemoteActorDTO
    document: dict[str, Any]


async def fetch_actor_for_key(
    settings: Settings, client: RemoteClient, signer: Signer, key_id: str, *, seconds: float
) -> FetchedActor:
    """Fetch the actor presenting ``key_id``, within ``seconds`` in all; no database, so a
    caller can give its connection back while the remote takes its time.

    The key id's URL is usually the actor itself (``<actor>#main-key``); otherwise a key
    document (or an actor stub, as GoToSocial serves) whose ``owner`` is fetched. Either way
    the actor must present ``key_id`` as its publicKey.
    """
    refuse_local(settings, key_id)
    try:
        async with asyncio.timeout(seconds):
            fetched = await client.fetch_json(strip_fragment(key_id), signer=signer)
            document = fetched.document
            if not _is_actor_document(document, fetched.url):
                owner = key_owner(document, key_id)
                refuse_local(settings, owner)
                fetched = await client.fetch_json(strip_fragment(owner), signer=signer)
                document = fetched.document
    except TimeoutError:
        raise RemoteFetchError(
            f"{key_id}: no complete answer within {seconds} s", url=key_id
        ) from None
    actor = parse_actor(document, fetched.url, key_id=key_id)
    refuse_local(settings, actor.uri)
    if actor.key_id != key_id:
        raise InvalidDocumentError(f"{actor.uri} does not present the key {key_id}", url=key_id)
    return FetchedActor(actor, document)


def _is_actor_document(document: Mapping[str, Any], fetched_url: str) -> bool:
    identifier = document.get("id")
    return (
        isinstance(identifier, str)
        and strip_fragment(identifier) == strip_fragment(fetched_url)
        and "inbox" in document
    )


def key_owner(document: Mapping[str, Any], key_id: str) -> str:
    """The actor a key document (``{id, owner, publicKeyPem}``) or an actor stub with a
    ``publicKey`` names as the key's owner."""
    owner = document.get("owner")
    if not isinstance(owner, str):
        key = document.get("publicKey")
        keys_listed = key if isinstance(key, list) else [key]
        owner = next(
            (
                k.get("owner")
                for k in keys_listed
                if isinstance(k, Mapping) and k.get("id") == key_id
            ),
            None,
        )
    if not isinstance(owner, str) or not owner:
        raise InvalidDocumentError(
            f"{key_id}: neither an actor nor a key with an owner", url=key_id
        )
    return owner


async def store_actor(
    session: AsyncSession, actor: RemoteActorDTO, document: Mapping[str, Any]
) -> None:
    """Insert or refresh the cached actor (one statement: concurrent inboxes may race). An
    actor without a handle keeps the one it had, unless its preferredUsername changed."""
    values: dict[str, Any] = {
        "domain": actor.domain,
        "actor_type": actor.actor_type,
        "preferred_username": actor.preferred_username,
        "name": actor.name,
        "inbox": actor.inbox,
        "shared_inbox": actor.shared_inbox,
        "key_id": actor.key_id,
        "public_key_pem": actor.public_key_pem,
        "document": dict(document),
        "fetched_at": datetime.now(UTC),
        "deleted_at": None,
    }
    statement = insert(ApRemoteActor).values(uri=actor.uri, handle=actor.handle, **values)
    same_user = ApRemoteActor.preferred_username.is_not_distinct_from(
        statement.excluded.preferred_username
    )
    kept = case((same_user, ApRemoteActor.handle), else_=None)
    values["handle"] = actor.handle if actor.handle is not None else kept
    await session.execute(
        statement.on_conflict_do_update(index_elements=[ApRemoteActor.uri], set_=values)
    )


async def mark_actor_deleted(session: AsyncSession, uri: str) -> None:
    """Remember that the remote actor ``uri`` is gone (a 404/410, or its Delete)."""
    await session.execute(
        update(ApRemoteActor)
        .where(ApRemoteActor.uri == strip_fragment(uri), ApRemoteActor.deleted_at.is_(None))
        .values(deleted_at=datetime.now(UTC))
    )
