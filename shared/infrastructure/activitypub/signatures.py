"""HTTP signatures: sign outgoing requests (draft-cavage), verify incoming ones (draft-cavage
and RFC 9421), and check the body digests both schemes sign.

Pure functions over bytes and headers: no database, no network. Callers find the public key
(shared.infrastructure.activitypub.remote.get_actor_for_key) from ``signature_key_id`` and then
call ``verify_request``; when verification fails with a cached key they fetch the key again
(``refresh=True``, the key may have rotated) and verify once more before answering 401.

Why hand-written and why a library:
- draft-cavage-http-signatures-12 (what Mastodon and nearly every server send and expect) is
  written here on ``cryptography``: http-message-signatures implements only RFC 9421, and the
  draft's signing string is a few lines. Its quirks follow Mastodon's verifier
  (app/lib/signed_request.rb): ``algorithm`` defaults to hs2019 (RSA-SHA256 for an RSA key),
  ``headers`` defaults to ``(created)`` for hs2019 and ``date`` otherwise, and a
  ``(request-target)`` without the query string is accepted too, since Mastodon and Fedify sign
  the path alone.
- RFC 9421 (Fedify signs with it first, Mastodon >= 4.4 accepts it) is verified with
  http-message-signatures' HTTPMessageVerifier: structured-field parsing, derived components and
  the signature base are where hand-written code goes wrong. We keep the policy (which
  components must be covered, the ``created`` window against our clock, Content-Digest against
  the body) here, so both schemes give the same reasons.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import http_sf
import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from http_message_signatures import (
    ContentDigest,
    HTTPMessageSignaturesException,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    algorithms,
)

DEFAULT_WINDOW = timedelta(hours=12)
SIGNED_HEADERS_GET = ("(request-target)", "host", "date")
SIGNED_HEADERS_BODY = ("(request-target)", "host", "date", "digest")
DEFAULT_PORTS = {"http": 80, "https": 443}
CAVAGE_ALGORITHMS = frozenset({"rsa-sha256", "hs2019"})
DIGEST_HASHES = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}
RFC9421_ALGORITHMS: dict[str, type[algorithms.HTTPSignatureAlgorithm]] = {
    "rsa-v1_5-sha256": algorithms.RSA_V1_5_SHA256,
    "rsa-pss-sha512": algorithms.RSA_PSS_SHA512,
    "ed25519": algorithms.ED25519,
}
# One ``name="value"`` or ``name=123`` member of a draft-cavage Signature header.
CAVAGE_PARAM = re.compile(r'\s*([A-Za-z]+)\s*=\s*(?:"([^"]*)"|(-?[0-9]+(?:\.[0-9]+)?))\s*')

PublicKey = rsa.RSAPublicKey | ed25519.Ed25519PublicKey


HeaderSource = Mapping[str, str] | Iterable[tuple[str, str]]


class SignatureError(Exception):
    """The request's signature is missing, malformed or wrong; the message says why (the
    inbox answers 401 with it)."""


class Headers(Mapping[str, str]):
    """Case-insensitive, read-only request headers; repeated fields joined with ", "."""

    def __init__(self, source: HeaderSource) -> None:
        pairs = _header_pairs(source)
        self._values: dict[str, str] = {}
        for name, value in pairs:
            key = name.lower()
            self._values[key] = f"{self._values[key]}, {value}" if key in self._values else value

    def __getitem__(self, name: str) -> str:
        return self._values[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Headers({self._values!r})"


def _header_pairs(source: HeaderSource) -> list[tuple[str, str]]:
    """Every field line of ``source``: werkzeug/httpx headers yield repeated names from
    ``items()`` (or ``multi_items()``); a plain dict has one value per name."""
    multi_items = getattr(source, "multi_items", None)
    if callable(multi_items):
        return [(str(k), str(v)) for k, v in multi_items()]
    if isinstance(source, Mapping):
        return [(str(k), str(v)) for k, v in source.items()]
    return [(str(k), str(v)) for k, v in source]


@dataclass(frozen=True, init=False)
class IncomingRequest:
    """A request as received: ``url`` is the full URL (scheme://host[:port]/path?query) the
    client addressed, ``headers`` any mapping or sequence of (name, value) field lines
    (werkzeug's Headers, httpx's, a dict), kept as case-insensitive ``Headers``, ``body`` the
    raw bytes."""

    method: str
    url: str
    headers: Headers
    body: bytes

    def __init__(self, method: str, url: str, headers: HeaderSource = (), body: bytes = b""):
        object.__setattr__(self, "method", method.upper())
        object.__setattr__(self, "url", url)
        object.__setattr__(
            self, "headers", headers if isinstance(headers, Headers) else Headers(headers)
        )
        object.__setattr__(self, "body", body)


@dataclass(frozen=True)
class VerifiedSignature:
    key_id: str
    scheme: Literal["cavage", "rfc9421"]


# --- digests -----------------------------------------------------------------------------


def digest_header(body: bytes) -> str:
    """The draft-cavage ``Digest`` value of ``body`` (RFC 3230): ``SHA-256=<base64>``."""
    return "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")


def content_digest_header(body: bytes) -> str:
    """The RFC 9530 ``Content-Digest`` value of ``body``: ``sha-256=:<base64>:``."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii") + ":"


def check_digest(headers: Mapping[str, str], body: bytes) -> None:
    """Check the ``Digest`` header against ``body``: every SHA-256/SHA-512 value given must
    match, and at least one must be given (other algorithms are ignored, as RFC 3230 allows)."""
    value = Headers(headers).get("digest")
    if value is None:
        raise SignatureError("the Digest header is missing")
    checked = 0
    for part in value.split(","):
        name, sep, encoded = part.strip().partition("=")
        hasher = DIGEST_HASHES.get(name.strip().lower())
        if not sep or hasher is None:
            continue
        given = _decode_base64(encoded.strip(), "Digest")
        if not hmac.compare_digest(given, hasher(body).digest()):
            raise SignatureError(f"the Digest ({name.strip()}) does not match the body")
        checked += 1
    if not checked:
        raise SignatureError(f"the Digest header has no SHA-256 or SHA-512 value: {value!r}")


def check_content_digest(headers: Mapping[str, str], body: bytes) -> None:
    """Check the RFC 9530 ``Content-Digest`` header (``sha-256=:…:``/``sha-512``) against the
    body, with http-message-signatures' parser."""
    value = Headers(headers).get("content-digest")
    if value is None:
        raise SignatureError("the Content-Digest header is missing")
    try:
        ContentDigest.verify(value, body)
    except HTTPMessageSignaturesException as exc:
        raise SignatureError(f"Content-Digest: {exc}") from exc


def _decode_base64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(f"the {what} is not valid base64") from exc


# --- signing (draft-cavage) --------------------------------------------------------------


def host_header(url: str) -> str:
    """The Host header for ``url``: its host, with the port when it is not the default."""
    parsed = httpx.URL(url)
    host = parsed.host
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    if parsed.port is not None and parsed.port != DEFAULT_PORTS.get(parsed.scheme):
        return f"{host}:{parsed.port}"
    return host


def http_date(moment: datetime) -> str:
    """``moment`` as an HTTP date (``Tue, 15 Nov 1994 08:12:31 GMT``)."""
    return format_datetime(moment.astimezone(UTC), usegmt=True)


def sign_request(
    method: str,
    url: str,
    *,
    key_id: str,
    private_key: rsa.RSAPrivateKey,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> dict[str, str]:
    """The headers that sign ``method url`` (draft-cavage-12, rsa-sha256): Host, Date, Digest
    (when there is a body) and Signature over ``(request-target) host date [digest]``.

    ``headers`` are the other headers the caller sends; a Host or Date given there is signed
    as given. The result holds only the headers this function adds or signs.
    """
    given = Headers(headers or {})
    signed: dict[str, str] = {
        "Host": given.get("host") or host_header(url),
        "Date": given.get("date") or http_date(now or datetime.now(UTC)),
    }
    names: tuple[str, ...] = SIGNED_HEADERS_GET
    if body is not None:
        signed["Digest"] = digest_header(body)
        names = SIGNED_HEADERS_BODY
    target = httpx.URL(url).raw_path.decode("ascii")  # path?query exactly as httpx sends it
    lines = [f"(request-target): {method.lower()} {target}"]
    lines += [f"{name}: {signed[name.capitalize()]}" for name in names[1:]]
    signature = private_key.sign("\n".join(lines).encode(), padding.PKCS1v15(), hashes.SHA256())
    signed["Signature"] = (
        f'keyId="{key_id}",algorithm="rsa-sha256",headers="{" ".join(names)}",'
        f'signature="{base64.b64encode(signature).decode("ascii")}"'
    )
    return signed


# --- which scheme, which key -------------------------------------------------------------


@dataclass(frozen=True)
class CavageSignature:
    key_id: str
    algorithm: str
    headers: tuple[str, ...]
    signature: bytes
    created: int | None
    expires: int | None


@dataclass(frozen=True)
class Rfc9421Signature:
    label: str
    key_id: str
    algorithm: str | None
    components: tuple[str, ...]
    created: int
    expires: int | None
    # Signature-Input and Signature reduced to this one label (what the library verifies).
    signature_input: str
    signature: str


def _scheme_of(headers: Headers) -> Literal["cavage", "rfc9421"]:
    if "signature-input" in headers:
        return "rfc9421"
    if "signature" in headers or headers.get("authorization", "").startswith("Signature "):
        return "cavage"
    raise SignatureError("the request is not signed (no Signature header)")


def signature_key_id(request: IncomingRequest) -> str:
    """The key id the request claims to be signed with (draft-cavage ``keyId`` or RFC 9421
    ``keyid``); SignatureError when it is unsigned or the header cannot be read."""
    headers = request.headers
    if _scheme_of(headers) == "rfc9421":
        return parse_rfc9421(headers).key_id
    return parse_cavage(headers).key_id


def parse_cavage(headers: Headers) -> CavageSignature:
    raw = headers.get("signature")
    if raw is None:
        raw = headers.get("authorization", "").removeprefix("Signature ")
    params = _cavage_params(raw)
    key_id = params.get("keyId")
    encoded = params.get("signature")
    if not key_id or not encoded:
        raise SignatureError("malformed Signature header: keyId and signature are required")
    algorithm = params.get("algorithm", "hs2019").lower()
    default_headers = "(created)" if algorithm == "hs2019" else "date"
    return CavageSignature(
        key_id=key_id,
        algorithm=algorithm,
        headers=tuple(params.get("headers", default_headers).lower().split()),
        signature=_decode_base64(encoded, "signature"),
        created=_int_param(params, "created"),
        expires=_int_param(params, "expires"),
    )


def _cavage_params(raw: str) -> dict[str, str]:
    """``keyId="…",algorithm="…",…`` as a dict; SignatureError unless it is exactly that."""
    params: dict[str, str] = {}
    position = 0
    while position < len(raw):
        match = CAVAGE_PARAM.match(raw, position)
        if match is None:
            raise SignatureError(f"malformed Signature header near {raw[position:][:40]!r}")
        params[match.group(1)] = match.group(2) if match.group(2) is not None else match.group(3)
        position = match.end()
        if position < len(raw):
            if raw[position] != ",":
                raise SignatureError(
                    "malformed Signature header: parameters must be comma-separated"
                )
            position += 1
    return params


def _int_param(params: Mapping[str, str], name: str) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError:
        raise SignatureError(f"malformed Signature header: {name} is not a number") from None


def parse_rfc9421(headers: Headers) -> Rfc9421Signature:
    """The first signature of ``Signature-Input``/``Signature`` (we verify one, as Mastodon
    does; senders put theirs first)."""
    inputs = _parse_dictionary(headers["signature-input"], "Signature-Input")
    signatures = _parse_dictionary(headers.get("signature", ""), "Signature")
    if not inputs:
        raise SignatureError("malformed Signature-Input: no signature in it")
    label = next(iter(inputs))
    if label not in signatures:
        raise SignatureError(f"malformed Signature: no value for the label {label!r}")
    members, params = _inner_list(inputs[label], "Signature-Input")
    components = tuple(str(name) for name, _ in members)
    key_id = params.get("keyid")
    created = params.get("created")
    if not isinstance(key_id, str) or not key_id:
        raise SignatureError("malformed Signature-Input: keyid is required")
    if type(created) is not int:
        raise SignatureError("malformed Signature-Input: created is required")
    expires = params.get("expires")
    algorithm = params.get("alg")
    return Rfc9421Signature(
        label=label,
        key_id=key_id,
        algorithm=str(algorithm) if algorithm is not None else None,
        components=components,
        created=created,
        expires=expires if type(expires) is int else None,
        signature_input=http_sf.ser({label: inputs[label]}),
        signature=http_sf.ser({label: signatures[label]}),
    )


def _parse_dictionary(value: str, what: str) -> dict[str, Any]:
    try:
        parsed = http_sf.parse(value.encode("ascii"), tltype="dictionary")
    except (ValueError, UnicodeEncodeError) as exc:
        raise SignatureError(f"malformed {what} header: {exc}") from exc
    if not isinstance(parsed, dict):
        raise SignatureError(f"malformed {what} header")
    return cast(dict[str, Any], parsed)


def _inner_list(member: Any, what: str) -> tuple[list[tuple[Any, Any]], dict[str, Any]]:
    if not (isinstance(member, tuple) and len(member) == 2 and isinstance(member[0], list)):
        raise SignatureError(f"malformed {what} header: expected a list of components")
    return member[0], member[1]


# --- verification ------------------------------------------------------------------------


def verify_request(
    request: IncomingRequest,
    public_key_pem: str,
    *,
    window: timedelta = DEFAULT_WINDOW,
    now: datetime | None = None,
) -> VerifiedSignature:
    """Verify the request's signature with the sender's public key; SignatureError says why
    it fails. ``window`` bounds the clock skew of Date / created in both directions."""
    headers = request.headers
    moment = now or datetime.now(UTC)
    key = load_public_key(public_key_pem)
    if _scheme_of(headers) == "rfc9421":
        return verify_rfc9421(request, key, window=window, now=moment)
    return verify_cavage(request, key, window=window, now=moment)


@functools.lru_cache(maxsize=4096)  # a remote key is parsed once per process, not per POST
def load_public_key(pem: str) -> PublicKey:
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except ValueError as exc:
        raise SignatureError("the sender's public key is not a valid PEM key") from exc
    if not isinstance(key, rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
        raise SignatureError("the sender's public key is neither RSA nor Ed25519")
    return key


def check_time(moment: datetime, now: datetime, window: timedelta, what: str) -> None:
    """``moment`` (a signed Date or created) lies within ``window`` of ``now``."""
    if moment < now - window:
        raise SignatureError(
            f"stale signature: {what} {moment.isoformat()} is more than {window} old"
        )
    if moment > now + window:
        raise SignatureError(
            f"signature from the future: {what} {moment.isoformat()} is more than {window} ahead"
        )


def check_expires(expires: int | None, now: datetime) -> None:
    if expires is not None and _timestamp(expires, "expires") < now:
        raise SignatureError(f"the signature expired at {_timestamp(expires, 'expires')}")


def _timestamp(value: int, what: str) -> datetime:
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        raise SignatureError(f"malformed signature: {what} is out of range") from None


def _has_body(request: IncomingRequest) -> bool:
    return bool(request.body) or request.method in {"POST", "PUT", "PATCH"}


def verify_cavage(
    request: IncomingRequest, key: PublicKey, *, window: timedelta, now: datetime
) -> VerifiedSignature:
    headers = request.headers
    signature = parse_cavage(headers)
    if signature.algorithm not in CAVAGE_ALGORITHMS:
        raise SignatureError(
            f"unsupported signature algorithm {signature.algorithm!r} "
            "(rsa-sha256 and hs2019 are supported)"
        )
    if not isinstance(key, rsa.RSAPublicKey):
        raise SignatureError("draft-cavage signatures are verified with RSA keys only")
    check_cavage_coverage(signature, has_body=_has_body(request))
    check_cavage_times(signature, headers, window=window, now=now)
    if "digest" in signature.headers:
        check_digest(headers, request.body)
    for with_query in (True, False):
        base = cavage_signing_string(request, signature, with_query=with_query)
        try:
            key.verify(signature.signature, base.encode(), padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            continue
        return VerifiedSignature(key_id=signature.key_id, scheme="cavage")
    raise SignatureError(f"bad signature: it does not verify with the key {signature.key_id}")


def check_cavage_coverage(signature: CavageSignature, *, has_body: bool) -> None:
    signed = set(signature.headers)
    missing = [name for name in ("(request-target)", "host") if name not in signed]
    if not signed & {"date", "(created)"}:
        missing.append("date")
    if has_body and "digest" not in signed:
        missing.append("digest")
    if missing:
        raise SignatureError(f"the signature does not cover required headers: {', '.join(missing)}")
    if signed & {"(created)", "(expires)"} and signature.algorithm != "hs2019":
        raise SignatureError("(created) and (expires) may only be signed with hs2019")


def check_cavage_times(
    signature: CavageSignature, headers: Headers, *, window: timedelta, now: datetime
) -> None:
    if "date" in signature.headers:
        raw = headers.get("date")
        if raw is None:
            raise SignatureError("the signed Date header is missing")
        try:
            date = parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            raise SignatureError(f"malformed Date header: {raw!r}") from None
        if date.tzinfo is None:
            date = date.replace(tzinfo=UTC)
        check_time(date, now, window, "Date")
    if "(created)" in signature.headers:
        if signature.created is None:
            raise SignatureError("(created) is signed but the created parameter is missing")
        check_time(_timestamp(signature.created, "created"), now, window, "created")
    check_expires(signature.expires, now)


def cavage_signing_string(
    request: IncomingRequest, signature: CavageSignature, *, with_query: bool = True
) -> str:
    headers = request.headers
    parts = urlsplit(request.url)
    target = parts.path or "/"
    if with_query and parts.query:
        target += "?" + parts.query
    lines = []
    for name in signature.headers:
        if name == "(request-target)":
            value = f"{request.method.lower()} {target}"
        elif name in {"(created)", "(expires)"}:
            value = str(signature.created if name == "(created)" else signature.expires)
            if value == "None":
                raise SignatureError(f"{name} is signed but its parameter is missing")
        elif name == "host" and "host" not in headers:
            value = parts.netloc  # HTTP/2 has :authority and no Host line
        elif name in headers:
            value = headers[name].strip()
        else:
            raise SignatureError(f"the signed header {name!r} is missing from the request")
        lines.append(f"{name}: {value}")
    return "\n".join(lines)


class _OneKey(HTTPSignatureKeyResolver):
    def __init__(self, key_id: str, key: PublicKey) -> None:
        self.key_id, self.key = key_id, key

    def resolve_public_key(self, key_id: str) -> PublicKey | None:
        return self.key if key_id == self.key_id else None


class _WindowedVerifier(HTTPMessageVerifier):
    """The library's verifier without its own clock checks: ``created``/``expires`` are
    checked by ``check_rfc9421_times`` against the caller's clock and window (the library
    allows 5 s of future skew and checks against the wall clock, which tests cannot move)."""

    def validate_created_and_expires(self, sig_input: Any, max_age: Any = None) -> None:
        return None


@dataclass(frozen=True)
class _LibraryRequest:
    """The request shape http-message-signatures reads: method, url, headers.items()."""

    method: str
    url: str
    headers: dict[str, str]


def verify_rfc9421(
    request: IncomingRequest, key: PublicKey, *, window: timedelta, now: datetime
) -> VerifiedSignature:
    headers = request.headers
    signature = parse_rfc9421(headers)
    algorithm = rfc9421_algorithm(signature, key)
    check_rfc9421_coverage(signature, has_body=_has_body(request))
    check_rfc9421_times(signature, window=window, now=now)
    if "content-digest" in signature.components:
        check_content_digest(headers, request.body)
    message_headers = dict(headers.items())
    message_headers["signature-input"] = signature.signature_input
    message_headers["signature"] = signature.signature
    message = _LibraryRequest(method=request.method, url=request.url, headers=message_headers)
    verifier = _WindowedVerifier(
        signature_algorithm=algorithm, key_resolver=_OneKey(signature.key_id, key)
    )
    try:
        verifier.verify(message, max_age=None)
    except HTTPMessageSignaturesException as exc:
        raise SignatureError(f"bad signature: {exc}") from exc
    return VerifiedSignature(key_id=signature.key_id, scheme="rfc9421")


def rfc9421_algorithm(
    signature: Rfc9421Signature, key: PublicKey
) -> type[algorithms.HTTPSignatureAlgorithm]:
    """The algorithm ``alg`` names, or the one the key implies (RSA: rsa-v1_5-sha256, what
    Fedify and Mastodon use)."""
    name = signature.algorithm
    if name is None:
        name = "rsa-v1_5-sha256" if isinstance(key, rsa.RSAPublicKey) else "ed25519"
    algorithm = RFC9421_ALGORITHMS.get(name)
    if algorithm is None:
        raise SignatureError(
            f"unsupported signature algorithm {name!r} (supported: {', '.join(RFC9421_ALGORITHMS)})"
        )
    wants_rsa = name.startswith("rsa-")
    if wants_rsa != isinstance(key, rsa.RSAPublicKey):
        raise SignatureError(f"the algorithm {name!r} does not fit the sender's key type")
    return algorithm


def check_rfc9421_coverage(signature: Rfc9421Signature, *, has_body: bool) -> None:
    covered = set(signature.components)
    missing = [] if "@method" in covered else ["@method"]
    if "@target-uri" not in covered and not {"@authority", "@path"} <= covered:
        missing.append("@target-uri (or @authority and @path)")
    if has_body and "content-digest" not in covered:
        missing.append("content-digest")
    if missing:
        raise SignatureError(
            f"the signature does not cover required components: {', '.join(missing)}"
        )


def check_rfc9421_times(signature: Rfc9421Signature, *, window: timedelta, now: datetime) -> None:
    check_time(_timestamp(signature.created, "created"), now, window, "created")
    check_expires(signature.expires, now)
