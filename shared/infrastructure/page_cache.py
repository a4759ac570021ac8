"""Whole pages cached in Redis for anonymous visitors, opted into per view::

    @home_bp.get("/")
    @cache_page(ttl=30, tags=("members",))
    async def home() -> str: ...

Who is anonymous. A GET/HEAD request by a visitor that is not signed in (no checked sign-in,
``g.app_sign_in``) and carries no cookie but this app's session cookie, its silent sign-in
marker and its device cookie, whose session holds nothing but pending sign-in states (what
the silent ``prompt=none`` round trip leaves behind) and was not changed by this request. So a
visitor with only the marker (or the device cookie) is anonymous; a session with a sign-in or a
CSRF token, federation's SSO cookie or any other cookie is not, and always gets a fresh page
marked ``Cache-Control: private, no-store``. The check runs after the platform's before_request
hooks, so a first visit still takes its silent sign-in round trip first.

What is stored. Only a 200 response of an anonymous GET whose rendering set no cookie (no
``Set-Cookie``, session unchanged: a page that called ``csrf_token()`` is never stored), that
set no ``Cache-Control``/``Vary`` of its own, is not streamed, and used no personalised
fragment and no fragment that fell back. The entry holds the body, its content type, its ETag
(SHA-256 of the body), its tags and when its rendering started; never any header of the
visitor's. The per-browser device cookie is added by its own after_request hook to whichever
response goes out (then ``Cache-Control`` turns ``private``): it is never stored or shared.

Which requests. The query string is part of the key once normalised (``cacheable_query``):
only the parameters of ``PageCacheSettings.query_parameters`` count, sorted, empty ones dropped;
a request with any other parameter, or one of them twice, is rendered and not stored (and not
looked up), so nobody can make the cache store a page per request with ``?r=<random>``.

Purge. An entry is kept for its route's TTL (``PageCacheSettings``) and is dropped at once by a
purge of any of its tags: the app's name, the tags of the decorator, and ``<app>/<type>`` of
every fragment the page used. ``do_purge_fragment`` (the same domain changes that purge
fragments) therefore purges the pages that show them; ``do_purge_pages(tag)`` purges by tag.
Purges are markers with a timestamp: an entry whose rendering started before one is a miss.

Headers. Anonymous pages: ``ETag``, ``Cache-Control: public, no-cache`` (``private, no-cache``
when the response sets a cookie) and ``Vary: Cookie``; ``If-None-Match`` is answered 304, from
the cache or after a fresh rendering. A hit never opens a database session. With Redis down
pages are rendered as if uncached.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from urllib.parse import parse_qsl, urlencode

from quart import Quart, Response, current_app, g, make_response, request, session
from quart.wrappers.response import DataBody
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.config import HOST_PREFIX, CookieSettings
from shared.infrastructure.context import get_settings, get_state
from shared.infrastructure.fragment_cache import purged_key as fragment_purged_key
from shared.infrastructure.fragment_fetch import FragmentResult, FragmentSpec
from shared.infrastructure.oauth import PENDING_STATES_KEY, device_cookie, silent_marker_cookie
from shared.infrastructure.redis_client import RedisUnavailableError, record_redis_failure

logger = logging.getLogger("rose_ash.page_cache")

KEY_PREFIX = "rose_ash:page:"
PURGED_PREFIX = "rose_ash:page-purged:"
# How long a purge is remembered: at least the longest TTL a page may have.
MAX_TTL_SECONDS = 3600
REDIS_TIMEOUT_SECONDS = 0.25
# Session keys that do not make a visitor someone: pending sign-in states (the silent round
# trip leaves an empty list behind). A sign-in, a CSRF token, anything else does.
ANONYMOUS_SESSION_KEYS = frozenset({PENDING_STATES_KEY})
CACHE_HEADER = "X-Page-Cache"  # hit | miss | bypass, for operators and tests
PUBLIC = "public, no-cache"
PRIVATE_REVALIDATE = "private, no-cache"
PRIVATE = "private, no-store"
PUBLIC_FLAG = "page_cache_public"

ViewT = TypeVar("ViewT", bound=Callable[..., Awaitable[Any]])


@dataclass(frozen=True)
class CachedPage:
    body: bytes
    content_type: str
    etag: str  # unquoted
    started_at: float  # when its rendering started: a purge after that makes it stale
    ttl_seconds: int
    tags: tuple[str, ...]

    def is_fresh(self, now: float) -> bool:
        return now - self.started_at < self.ttl_seconds


def cacheable_query(raw: bytes, allowed: Collection[str]) -> bytes | None:
    """The query string ``raw`` as it counts in a page's key, or None when the page must not
    be cached: a parameter not in ``allowed``, or an allowed one given twice (the view would
    read the first, another order the other). Sorted; empty values dropped."""
    pairs = parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
    kept = [(name, value) for name, value in pairs if value]
    names = [name for name, _ in kept]
    if any(name not in allowed for name in names) or len(set(names)) < len(names):
        return None
    return urlencode(sorted(kept)).encode()


def page_cache_key(app_name: str, path: str, query: bytes) -> str:
    """The key of a page; ``query`` as ``cacheable_query`` gives it."""
    digest = hashlib.sha256(path.encode() + b"?" + query).hexdigest()[:32]
    return f"{KEY_PREFIX}{app_name}:{digest}"


def page_purged_key(tag: str) -> str:
    return f"{PURGED_PREFIX}{tag}"


def purge_markers(tag: str) -> list[str]:
    """The Redis keys whose timestamp tells when ``tag`` was last purged: its own, and for a
    fragment tag ``<app>/<type>`` the fragment purge's (shared.infrastructure.fragment_cache)."""
    markers = [page_purged_key(tag)]
    app, slash, fragment_type = tag.partition("/")
    if slash:
        markers.append(fragment_purged_key(app, fragment_type))
    return markers


def etag_of(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:40]


# ---------------------------------------------------------------------------------------------
# Redis


# One round trip for a hit: the entry and the latest purge of any of its tags, read together
# by a script (the marker keys are stored in the entry when it is written).
READ_PAGE_SCRIPT = """
local raw = redis.call('HMGET', KEYS[1], 'meta', 'body', 'markers')
if not raw[1] then return false end
local purged = ''
local markers = cjson.decode(raw[3] or '[]')
if #markers > 0 then
  local latest = nil
  for _, value in ipairs(redis.call('MGET', unpack(markers))) do
    local at = value and tonumber(value)
    if at and (latest == nil or at > latest) then latest = at; purged = value end
  end
end
return {raw[1], raw[2], purged}
"""


def parse_page(meta_raw: bytes, body: bytes, now: float) -> CachedPage | None:
    try:
        meta = json.loads(meta_raw)
        page = CachedPage(
            body=body,
            content_type=str(meta["type"]),
            etag=str(meta["etag"]),
            started_at=float(meta["at"]),
            ttl_seconds=int(meta["ttl"]),
            tags=tuple(str(tag) for tag in meta["tags"]),
        )
    except (KeyError, ValueError, TypeError):
        return None  # unreadable: a miss, overwritten by the next rendering
    return page if page.is_fresh(now) else None


async def read_page(redis: Redis, key: str, now: float | None = None) -> CachedPage | None:
    """The cached page under ``key`` if it is fresh and none of its tags was purged since."""
    found = await redis.register_script(READ_PAGE_SCRIPT)(keys=[key])
    if not found:
        return None
    meta_raw, body, purged = cast(list[bytes], found)
    page = parse_page(meta_raw, body or b"", time.time() if now is None else now)
    if page is None or (purged and float(purged) >= page.started_at):
        return None
    return page


async def write_page(redis: Redis, key: str, page: CachedPage) -> None:
    meta = {
        "type": page.content_type,
        "etag": page.etag,
        "at": page.started_at,
        "ttl": page.ttl_seconds,
        "tags": list(page.tags),
    }
    markers = [marker for tag in page.tags for marker in purge_markers(tag)]
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        pipe.hset(
            key,
            mapping={"meta": json.dumps(meta), "body": page.body, "markers": json.dumps(markers)},
        )
        pipe.expire(key, max(page.ttl_seconds, 1))
        await pipe.execute()


async def do_purge_page_tags(redis: Redis, tags: Sequence[str]) -> None:
    """Mark ``tags`` purged now: every page carrying one of them is a miss from now on."""
    now = repr(time.time())
    async with redis.pipeline(transaction=False) as pipe:
        for tag in tags:
            pipe.set(page_purged_key(tag), now, ex=MAX_TTL_SECONDS)
        await pipe.execute()


async def do_purge_pages(*tags: str, redis: Redis | None = None) -> bool:
    """Drop the cached pages tagged with any of ``tags`` (an app's name, a domain tag given to
    ``cache_page``, or a fragment ``<app>/<type>``) after the change is committed. A Redis
    failure is logged (the TTL ends the pages anyway); returns whether the purge was recorded."""
    client = redis if redis is not None else get_state().redis
    if client is None or not tags:
        return False
    try:
        await do_purge_page_tags(client, tags)
    except (RedisError, OSError) as exc:
        logger.warning("could not purge pages %s: %s", ", ".join(tags), exc)
        return False
    return True


async def read_page_safely(key: str) -> CachedPage | None:
    redis = get_state().redis
    if redis is None:
        return None
    try:
        return await asyncio.wait_for(read_page(redis, key), REDIS_TIMEOUT_SECONDS)
    except (RedisError, OSError, TimeoutError) as exc:
        note_cache_failure(redis, exc, "page cache unavailable, rendering %s: %r")
        return None


async def write_page_safely(key: str, page: CachedPage) -> None:
    redis = get_state().redis
    if redis is None:
        return
    try:
        await asyncio.wait_for(write_page(redis, key, page), REDIS_TIMEOUT_SECONDS)
    except (RedisError, OSError, TimeoutError) as exc:
        note_cache_failure(redis, exc, "page %s not cached: %r")


def note_cache_failure(redis: Redis, error: BaseException, message: str) -> None:
    """Log a failed cache call; a timeout of ours makes Redis be left alone for a moment
    (shared.infrastructure.redis_client). While it is, say so once per request at most."""
    if isinstance(error, TimeoutError):
        record_redis_failure(redis)
    if isinstance(error, RedisUnavailableError):
        logger.debug(message, request.path, error)
    else:
        logger.warning(message, request.path, error)


# ---------------------------------------------------------------------------------------------
# Requests and responses


def anonymous_cookie_names(
    app_name: str, session_cookie: str, cookies: CookieSettings
) -> frozenset[str]:
    """The cookies an anonymous visitor may carry: the app's session cookie, its silent sign-in
    marker and its device cookie. Where they are named ``__Host-…`` (Secure), their plain names
    from before that rename too: nothing reads those any more, so a returning visitor who
    still carries them (a device cookie lasts two years) is as anonymous as a new one."""
    names = {
        session_cookie,
        silent_marker_cookie(app_name, cookies),
        device_cookie(app_name, cookies),
    }
    return frozenset(names | {name.removeprefix(HOST_PREFIX) for name in names})


def is_anonymous_request() -> bool:
    """Whether this request may be served, and its page stored, as everyone's (see above)."""
    if request.method not in ("GET", "HEAD") or g.get("app_sign_in") is not None:
        return False
    state = get_state()
    allowed = anonymous_cookie_names(
        state.name, current_app.config["SESSION_COOKIE_NAME"], state.settings.cookies
    )
    if any(cookie not in allowed for cookie in request.cookies):
        return False
    if session.modified:
        return False
    return set(session.keys()) <= ANONYMOUS_SESSION_KEYS


def fragments_used() -> list[FragmentResult]:
    known: dict[FragmentSpec, FragmentResult] = g.get("fragment_results") or {}
    return list(known.values())


def check_storable(response: Response) -> str | None:
    """Why ``response`` must not be stored, or None when it may be."""
    if request.method != "GET":
        return "not a GET"
    if response.status_code != 200:
        return f"status {response.status_code}"
    if "Set-Cookie" in response.headers or session.modified:
        return "sets a cookie"
    if "Cache-Control" in response.headers or "Vary" in response.headers:
        return "the view chose its own caching"
    if not isinstance(response.response, DataBody):
        return "streamed"
    results = fragments_used()
    if any(result.spec.personalised for result in results):
        return "personalised fragment"
    if any(not result.ok for result in results):
        return "a fragment fell back"
    if not is_anonymous_request():
        return "not anonymous"
    return None


def add_vary_cookie(response: Response) -> None:
    response.vary.add("Cookie")


def mark_private(response: Response, outcome: str = "bypass") -> Response:
    response.headers["Cache-Control"] = PRIVATE
    add_vary_cookie(response)
    response.headers[CACHE_HEADER] = outcome
    return response


def answer_anonymous(response: Response, etag: str, outcome: str) -> Response:
    """``response`` (or a 304 when the browser has it) with the shared page's headers."""
    if request.if_none_match.contains_weak(etag) or request.if_none_match.star_tag:
        response = Response("", 304)
    response.set_etag(etag)
    response.headers["Cache-Control"] = PUBLIC
    add_vary_cookie(response)
    response.headers[CACHE_HEADER] = outcome
    g.setdefault(PUBLIC_FLAG, True)
    return response


def page_tags(app_name: str, declared: Sequence[str]) -> tuple[str, ...]:
    used = [f"{result.spec.app}/{result.spec.type}" for result in fragments_used()]
    return tuple(dict.fromkeys([app_name, *declared, *used]))


async def to_response(value: Any) -> Response:
    response = await make_response(value)
    if not isinstance(response, Response):  # a plain Werkzeug response: not ours to cache
        raise TypeError("a view under cache_page must answer with a Quart response")
    return response


def cache_page(ttl: int | None = None, tags: Sequence[str] = ()) -> Callable[[ViewT], ViewT]:
    """Serve the view's page to anonymous visitors from Redis for ``ttl`` seconds (else
    ``ROSE_ASH_PAGE_CACHE__DEFAULT_TTL_SECONDS``; ``TTLS_SECONDS`` by endpoint wins), purged
    early by any of ``tags`` (see ``do_purge_pages``). Put it under the route decorator."""
    if ttl is not None and not 0 <= ttl <= MAX_TTL_SECONDS:
        raise ValueError(f"a page's TTL is 0..{MAX_TTL_SECONDS} seconds, not {ttl}")
    declared = tuple(tags)

    def decorate(view: ViewT) -> ViewT:
        @functools.wraps(view)
        async def cached_view(*args: Any, **kwargs: Any) -> Response:
            state = get_state()
            settings = get_settings().page_cache
            seconds = settings.ttl_for(state.name, request.endpoint or "", ttl)
            if request.method not in ("GET", "HEAD") or not settings.enabled or seconds <= 0:
                return await to_response(await view(*args, **kwargs))
            query = cacheable_query(request.query_string, settings.query_parameters)
            if query is None or not is_anonymous_request():
                return mark_private(await to_response(await view(*args, **kwargs)))
            key = page_cache_key(state.name, request.path, query)
            cached = await read_page_safely(key)
            if cached is not None:
                hit = Response(cached.body, 200, content_type=cached.content_type)
                return answer_anonymous(hit, cached.etag, "hit")
            started_at = time.time()
            response = await to_response(await view(*args, **kwargs))
            reason = check_storable(response)
            if reason is not None:
                logger.debug("page %s not cached: %s", request.path, reason)
                return mark_private(response)
            body = await response.get_data(as_text=False)
            page = CachedPage(
                body=body,
                content_type=response.content_type or "text/html; charset=utf-8",
                etag=etag_of(body),
                started_at=started_at,
                ttl_seconds=seconds,
                tags=page_tags(state.name, declared),
            )
            await write_page_safely(key, page)
            return answer_anonymous(response, page.etag, "miss")

        return cast(ViewT, cached_view)

    return decorate


def install_page_cache(app: Quart) -> None:
    """The last word on a shared page's headers. Registered before the hooks that may add a
    cookie (the device cookie), so it runs after them: a page that goes out with a cookie must
    not be stored by a shared cache on the way."""

    @app.after_request
    async def keep_cookies_private(response: Response) -> Response:
        if g.get(PUBLIC_FLAG) and "Set-Cookie" in response.headers:
            response.headers["Cache-Control"] = PRIVATE_REVALIDATE
        return response
