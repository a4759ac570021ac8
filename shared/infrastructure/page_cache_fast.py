"""Page-cache hits served in front of Quart: an ASGI layer around each app.

A hit in ``cache_page`` (shared.infrastructure.page_cache) still pays for Quart's request
context and every before/after-request hook (request id, session, sign-in check, CSRF, device
cookie, security headers, access log): measured, that kept a cached page at about a third of a
hello-world's throughput. This layer answers a GET/HEAD from the cache before any of that runs,
with one Redis round trip, when the outcome is known to be the same as the full stack's:

- the visitor is anonymous: no cookie but the app's session cookie (only when it decodes and
  holds nothing but pending sign-in states), its silent sign-in marker and its device cookie;
- nothing the hooks do would change the answer: the device cookie is already there (else the
  response must set one), and the request cannot be the first top-level navigation that takes
  the silent sign-in round trip (the marker is there, or it is not a navigation);
- the query string is one the cache keeps pages for (``cacheable_query``, the same rule);
- the page is in the cache, fresh and not purged.

Anything else goes on to Quart unchanged, where ``cache_page`` serves, stores or bypasses the
page as before. The answer carries the same headers as a hit through the full stack (ETag,
``Cache-Control: public, no-cache``, ``Vary: Cookie``, security headers, request id) and 304
for a matching ``If-None-Match``. With Redis slow or down, requests go on to Quart.
"""

from __future__ import annotations

import asyncio
import logging
import time

from itsdangerous import BadSignature
from quart import Quart
from redis.exceptions import RedisError
from werkzeug.http import parse_cookie, parse_etags

from shared.infrastructure.asgi import (
    ASGIApp,
    Receive,
    Scope,
    Send,
    encode_security_headers,
    install_in_front,
    send_answer,
)
from shared.infrastructure.context import get_state
from shared.infrastructure.oauth import CLIENT_APPS, device_cookie, silent_marker_cookie
from shared.infrastructure.page_cache import (
    ANONYMOUS_SESSION_KEYS,
    CACHE_HEADER,
    PUBLIC,
    REDIS_TIMEOUT_SECONDS,
    CachedPage,
    anonymous_cookie_names,
    cacheable_query,
    page_cache_key,
    read_page,
)
from shared.infrastructure.redis_client import record_redis_failure

logger = logging.getLogger("rose_ash.page_cache")


class PageCacheFastPath:
    """ASGI middleware: ``app.asgi_app = PageCacheFastPath(app, app.asgi_app)``."""

    def __init__(self, app: Quart, inner: ASGIApp) -> None:
        self.app = app
        self.inner = inner
        state = get_state(app)
        self.name = state.name
        self.settings = state.settings
        self.session_cookie: str = app.config["SESSION_COOKIE_NAME"]
        self.marker_cookie = silent_marker_cookie(self.name, self.settings.cookies)
        self.device_cookie = device_cookie(self.name, self.settings.cookies)
        self.allowed_cookies = anonymous_cookie_names(
            self.name, self.session_cookie, self.settings.cookies
        )
        self.needs_device_cookie = self.name in CLIENT_APPS
        self.static_headers = encode_security_headers(self.settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await self.inner(scope, receive, send)
            return
        headers = request_headers(scope)
        page = await self.find_hit(scope, headers)
        if page is None:
            await self.inner(scope, receive, send)
            return
        await self.send_hit(scope, headers, page, send)

    async def find_hit(self, scope: Scope, headers: dict[bytes, bytes]) -> CachedPage | None:
        settings = self.settings.page_cache
        if not settings.enabled or not self.is_anonymous(headers):
            return None
        query = cacheable_query(scope.get("query_string", b""), settings.query_parameters)
        redis = get_state(self.app).redis
        if redis is None or query is None:
            return None
        key = page_cache_key(self.name, scope["path"], query)
        try:
            return await asyncio.wait_for(read_page(redis, key), REDIS_TIMEOUT_SECONDS)
        except (RedisError, OSError, TimeoutError) as exc:
            if isinstance(exc, TimeoutError):
                record_redis_failure(redis)  # the pages after this one leave Redis alone
            logger.debug("fast path skipped for %s: %r", scope["path"], exc)
            return None

    def is_anonymous(self, headers: dict[bytes, bytes]) -> bool:
        """Whether the full stack would treat this visitor as anonymous and add nothing of its
        own to the response (see the module docstring)."""
        cookies = parse_cookie(headers.get(b"cookie", b"").decode("latin-1"))
        if any(name not in self.allowed_cookies for name in cookies):
            return False
        if self.needs_device_cookie:
            if not cookies.get(self.device_cookie):
                return False  # the response must set the device cookie
            navigating = headers.get(b"sec-fetch-mode") == b"navigate"
            if navigating and not cookies.get(self.marker_cookie):
                return False  # may be the silent sign-in round trip
        session_value = cookies.get(self.session_cookie)
        return not session_value or self.is_anonymous_session(session_value)

    def is_anonymous_session(self, value: str) -> bool:
        serializer = self.app.session_interface.get_signing_serializer(self.app)
        if serializer is None:
            return False
        max_age = int(self.app.permanent_session_lifetime.total_seconds())
        try:
            data = serializer.loads(value, max_age=max_age)
        except BadSignature:
            return False  # Quart would start a new session: let it
        return isinstance(data, dict) and set(data) <= ANONYMOUS_SESSION_KEYS

    async def send_hit(
        self, scope: Scope, headers: dict[bytes, bytes], page: CachedPage, send: Send
    ) -> None:
        started = time.perf_counter()
        etags = parse_etags(headers.get(b"if-none-match", b"").decode("latin-1") or None)
        not_modified = etags.contains_weak(page.etag) or etags.star_tag
        response_headers = [
            (b"etag", f'"{page.etag}"'.encode()),
            (b"cache-control", PUBLIC.encode()),
            (b"vary", b"Cookie"),
            (CACHE_HEADER.lower().encode(), b"hit"),
            *self.static_headers,
        ]
        if not not_modified:
            response_headers += [
                (b"content-type", page.content_type.encode()),
                (b"content-length", str(len(page.body)).encode()),
            ]
        await send_answer(
            scope,
            send,
            app_name=self.name,
            status=304 if not_modified else 200,
            headers=response_headers,
            body=b"" if not_modified else page.body,
            started=started,
            log_extra={"page_cache": "hit"},
        )


def request_headers(scope: Scope) -> dict[bytes, bytes]:
    """The request's headers by lower-case name (repeated Cookie headers joined)."""
    found: dict[bytes, bytes] = {}
    for name, value in scope.get("headers", ()):
        key = bytes(name).lower()
        if key in found and key == b"cookie":
            found[key] += b"; " + bytes(value)
        else:
            found[key] = bytes(value)
    return found


def install_page_cache_fast_path(app: Quart) -> None:
    install_in_front(app, PageCacheFastPath)
