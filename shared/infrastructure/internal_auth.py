"""Signed requests between the apps: /internal/... and /metrics.

A caller signs ``METHOD \\n path \\n canonical query \\n timestamp`` with HMAC-SHA256 and the
internal secret, and sends the hex digest and the Unix timestamp in two headers. The receiver
recomputes it and accepts it only within ``SIGNATURE_WINDOW_SECONDS`` of its own clock. A
request without a valid, fresh signature is answered 404, as if the route did not exist.

The query is canonicalised (pairs sorted, re-encoded) so that the signer and the receiver agree
whatever encoding an HTTP client chose. The internal secret is ``ROSE_ASH_INTERNAL_SECRET``
when set, else ``HMAC-SHA256(SECRET_KEY, "rose-ash internal requests")`` so that every app of
one deployment (they share SECRET_KEY) agrees on it without another secret to manage.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode

from quart import abort, request

from shared.config import Settings
from shared.infrastructure.context import get_settings

SIGNATURE_HEADER = "X-Rose-Ash-Signature"
TIMESTAMP_HEADER = "X-Rose-Ash-Timestamp"
SIGNATURE_WINDOW_SECONDS = 30
DERIVATION_LABEL = b"rose-ash internal requests"


def get_internal_secret(settings: Settings) -> bytes:
    """The key internal requests are signed with (configured, else derived from SECRET_KEY)."""
    if settings.internal_secret is not None:
        return settings.internal_secret.get_secret_value().encode()
    return settings.derive_from_secret_key(DERIVATION_LABEL)


def canonical_query(query: str) -> str:
    """``query`` with its pairs sorted and re-encoded (blank values kept)."""
    return urlencode(sorted(parse_qsl(query, keep_blank_values=True)))


def sign_internal_request(secret: bytes, method: str, path: str, query: str, timestamp: int) -> str:
    message = "\n".join([method.upper(), path, canonical_query(query), str(timestamp)])
    return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()


def build_signed_headers(
    secret: bytes, method: str, path: str, query: str, now: float | None = None
) -> dict[str, str]:
    """The headers that authenticate one internal request."""
    timestamp = int(time.time() if now is None else now)
    return {
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign_internal_request(secret, method, path, query, timestamp),
    }


def check_internal_signature(
    secret: bytes,
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    now: float | None = None,
) -> bool:
    """True when ``headers`` carry a valid signature made within the window."""
    signature = headers.get(SIGNATURE_HEADER, "")
    raw_timestamp = headers.get(TIMESTAMP_HEADER, "")
    if not signature or not raw_timestamp.isdigit():
        return False
    timestamp = int(raw_timestamp)
    current = time.time() if now is None else now
    if abs(current - timestamp) > SIGNATURE_WINDOW_SECONDS:
        return False
    expected = sign_internal_request(secret, method, path, query, timestamp)
    return hmac.compare_digest(expected, signature)


def check_internal_request() -> None:
    """In a view: answer 404 unless this request is signed with the internal secret."""
    secret = get_internal_secret(get_settings())
    query = request.query_string.decode("latin-1")
    headers = {name: request.headers.get(name, "") for name in (SIGNATURE_HEADER, TIMESTAMP_HEADER)}
    if not check_internal_signature(secret, request.method, request.path, query, headers):
        abort(404)
