"""The client side of single sign-on, registered by create_base_app in every app but federation
(federation is the authorization server itself).

- ``/auth/login``: an OpenID Connect authorization request (code + PKCE S256, ``nonce``). The
  ``state`` is remembered in the app's signed session cookie (it binds the answer to this
  browser); the PKCE verifier, the nonce and where to go next are kept server-side, in Redis
  under the state, for ten minutes and for one use only. ``next`` is accepted only for this
  app's own host.
- ``/auth/callback``: checks the state, exchanges the code (client_secret_basic), verifies the
  id_token against federation's JWKS, and signs the member into this app: its own first-party
  session cookie (HttpOnly, SameSite, Secure outside development) holds the user, the OAuth
  grant and the SSO session (device) at federation.
- ``/auth/logout`` (a POST form with its CSRF token): signs the device out of every app, in
  process through SsoService (the apps share the database), purges the grants' cached status so
  every app sees it at once, and federation's outbox handler sends the back-channel logouts.
- ``/auth/backchannel-logout``: OIDC Back-Channel Logout 1.0 from federation; the logout token
  is verified against the JWKS and the grant's cached status dropped.

On every request the member's grant is checked (grant_cache: Redis, 60 s at most, PostgreSQL
when Redis is down) before the member is loaded. A sign-in is also bounded on the server by the
session lifetimes (``Settings.sessions``): the grant stands only while the SSO session it came
from is live at federation, the sign-in ends ``absolute_lifetime_seconds`` after it was made,
and the session cookie, re-signed on every request, is refused by Quart once its signature is
older than ``idle_lifetime_seconds`` (PERMANENT_SESSION_LIFETIME).

A visitor without a session whose browser navigates to a page gets one silent ``prompt=none``
round trip to federation, which signs them in if they are signed in there; a short-lived marker
cookie stops it from repeating.

Federation's endpoints are reached through an httpx.AsyncClient kept on the app (created in the
serving lifecycle); tests hand it a transport of their own (``get_oauth(app).transport``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import httpx
from authlib.oauth2.rfc7636 import create_s256_code_challenge  # type: ignore[import-untyped]
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from quart import Blueprint, Quart, Response, current_app, g, request, session
from redis.exceptions import RedisError

from shared.config import APP_NAMES, CookieSettings, SessionSettings
from shared.contracts.errors import NotFoundError
from shared.contracts.identity import SsoService, UserDTO, UserService
from shared.infrastructure.context import get_service, get_session, get_settings, get_state
from shared.infrastructure.errors import render_error, wants_json
from shared.infrastructure.grant_cache import check_grant_active, do_purge_grants
from shared.infrastructure.http import create_http_client
from shared.infrastructure.security import csrf_exempt
from shared.services.identity.oauth_clients import (
    BACKCHANNEL_LOGOUT_PATH,
    CALLBACK_PATH,
    FIRST_PARTY_SCOPE,
    first_party_client_secret,
    first_party_redirect_uri,
)

logger = logging.getLogger("rose_ash.oauth")

# The apps that sign members in through federation (federation is the authority itself).
CLIENT_APPS: tuple[str, ...] = tuple(name for name in APP_NAMES if name != "federation")
OAUTH_EXTENSION_KEY = "rose_ash_oauth"
HEADER_EXTENSION_KEY = "rose_ash_header"
AUTH_SESSION_KEY = "auth"
PENDING_STATES_KEY = "oauth_states"
MAX_PENDING_STATES = 5  # sign-ins started in other tabs stay valid
PENDING_TTL_SECONDS = 600
PENDING_KEY_PREFIX = "rose_ash:oauth:pending:"
SILENT_MARKER_MAX_AGE = 300
DEVICE_COOKIE_MAX_AGE = 60 * 60 * 24 * 365 * 2
METADATA_TTL_SECONDS = 3600
HTTP_TIMEOUT_SECONDS = 5.0
CLOCK_LEEWAY_SECONDS = 60
ID_TOKEN_ALGORITHMS = ("RS256",)
BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
# Answers to prompt=none that only mean "not signed in there": the visitor stays anonymous.
SILENT_ERRORS = frozenset(
    {"login_required", "consent_required", "interaction_required", "account_selection_required"}
)
INFRASTRUCTURE_PATHS = ("/healthz", "/readyz")
NO_SILENT_PREFIXES = ("/static/", "/auth/", "/internal/", "/api/", "/.well-known/", "/nodeinfo/")
# Documents for other servers: no device cookie (they are public and cacheable by anyone).
MACHINE_PREFIXES = ("/.well-known/", "/nodeinfo/")
BOT_PATTERN = re.compile(
    r"bot|crawl|spider|slurp|archiver|facebookexternalhit|embedly|preview|monitor|"
    r"curl|wget|python-|httpx|aiohttp|go-http-client|okhttp|java/|libwww|headless",
    re.IGNORECASE,
)


class SignInError(Exception):
    """The sign-in answer cannot be accepted (answered 400, or 502 for federation's faults)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class ProviderError(SignInError):
    """Federation could not be reached or answered something unusable."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=502)


@dataclass(frozen=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str


@dataclass(frozen=True)
class AppSignIn:
    """Who is signed into this app, kept in its session cookie."""

    user_id: int
    grant_id: int
    sso_session_id: int | None
    signed_in_at: int

    def to_session(self) -> dict[str, Any]:
        return {
            "uid": self.user_id,
            "gid": self.grant_id,
            "sid": self.sso_session_id,
            "at": self.signed_in_at,
        }

    @classmethod
    def from_session(cls, value: object) -> AppSignIn | None:
        if not isinstance(value, dict):
            return None
        uid, gid, sid, at = value.get("uid"), value.get("gid"), value.get("sid"), value.get("at")
        if not isinstance(uid, int) or not isinstance(gid, int) or not isinstance(at, int):
            return None
        return cls(uid, gid, sid if isinstance(sid, int) else None, at)

    def check_within_lifetime(self, lifetimes: SessionSettings, now: float) -> bool:
        """Whether the sign-in is younger than the absolute lifetime (the idle one is the
        session cookie's, see the module's docstring)."""
        return now - self.signed_in_at < lifetimes.absolute_lifetime_seconds


@dataclass
class OAuthClientState:
    """What an app keeps for talking to federation."""

    app_name: str
    client_id: str
    client_secret: str
    redirect_uri: str
    issuer: str
    transport: httpx.AsyncBaseTransport | None = None
    http: httpx.AsyncClient | None = None
    metadata: ProviderMetadata | None = None
    metadata_fetched_at: float = 0.0
    jwks: KeySet | None = None
    jwks_fetched_at: float = 0.0

    def client(self) -> httpx.AsyncClient:
        if self.http is None:
            raise RuntimeError("the OAuth client is not connected: the app is not serving")
        return self.http


@dataclass(frozen=True)
class HeaderAccount:
    """What the shared header shows about the visitor: their name, or a sign-in link."""

    member_name: str | None
    account_url: str
    sign_in_url: str | None
    sign_out_url: str | None  # the target of a POST form carrying the CSRF token


HeaderProvider = Callable[[], Awaitable[HeaderAccount | None]]


def get_oauth(app: Quart | None = None) -> OAuthClientState:
    state: OAuthClientState = (app or current_app).extensions[OAUTH_EXTENSION_KEY]
    return state


# ---------------------------------------------------------------------------------------------
# Small pure helpers


def check_next(value: str | None, own_base_url: str) -> str:
    """Where to go after signing in or out: a path on this app's own host, else "/".

    Accepts a path ("/posts?page=2") or an absolute URL of this app's own origin; refuses
    other hosts, scheme-relative ("//evil") and backslash tricks, and returns a path."""
    if not value or any(ord(ch) <= 32 or ch in "\\\x7f" for ch in value):
        return "/"
    if value.startswith("//"):  # scheme-relative: another host
        return "/"
    try:
        parts = urlsplit(value)
    except ValueError:
        return "/"
    if parts.scheme or parts.netloc:
        own = urlsplit(own_base_url)
        if (parts.scheme.lower(), parts.netloc.lower()) != (own.scheme, own.netloc.lower()):
            return "/"
    path = parts.path or "/"
    if not path.startswith("/") or path.startswith("//"):
        return "/"
    return urlunsplit(("", "", path, parts.query, ""))


def is_bot(user_agent: str) -> bool:
    return not user_agent.strip() or BOT_PATTERN.search(user_agent) is not None


def at_hash_of(access_token: str) -> str:
    """OIDC at_hash for RS256: base64url of the left half of SHA-256 of the token."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode("ascii")


def pending_key(app_name: str, state: str) -> str:
    return f"{PENDING_KEY_PREFIX}{app_name}:{state}"


def silent_marker_cookie(app_name: str, cookies: CookieSettings) -> str:
    return cookies.name_of(f"{app_name}_sso_checked")


def device_cookie(app_name: str, cookies: CookieSettings) -> str:
    return cookies.name_of(f"{app_name}_device")


def current_path() -> str:
    query = request.query_string.decode("latin-1")
    return quote(request.path) + (f"?{query}" if query else "")


def is_machine_document(path: str, response: Response) -> bool:
    """A document for other servers (WebFinger, NodeInfo, ActivityPub JSON), not a page: it
    must not carry one browser's device cookie into a shared cache."""
    if path.startswith(MACHINE_PREFIXES):
        return True
    if not path.startswith("/ap/"):
        return False
    return request.method != "GET" or response.mimetype != "text/html"  # inbox POSTs, JSON


def is_infrastructure_path(path: str) -> bool:
    return path in INFRASTRUCTURE_PATHS or path.startswith("/static/")


# ---------------------------------------------------------------------------------------------
# Federation's metadata, keys and tokens


async def get_provider(state: OAuthClientState) -> ProviderMetadata:
    """Federation's endpoints from its discovery document (cached an hour)."""
    now = time.monotonic()
    if state.metadata is not None and now - state.metadata_fetched_at < METADATA_TTL_SECONDS:
        return state.metadata
    url = state.issuer + "/.well-known/openid-configuration"
    try:
        response = await state.client().get(url)
        response.raise_for_status()
        document = response.json()
        metadata = ProviderMetadata(
            issuer=str(document["issuer"]),
            authorization_endpoint=str(document["authorization_endpoint"]),
            token_endpoint=str(document["token_endpoint"]),
            jwks_uri=str(document["jwks_uri"]),
        )
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        raise ProviderError(f"federation's discovery document is unavailable: {exc}") from exc
    if metadata.issuer.rstrip("/") != state.issuer:
        raise ProviderError(f"federation's discovery names another issuer: {metadata.issuer}")
    state.metadata, state.metadata_fetched_at = metadata, now
    return metadata


async def get_jwks(state: OAuthClientState, *, refresh: bool = False) -> KeySet:
    """Federation's signing keys (cached an hour, fetched again for an unknown key id)."""
    now = time.monotonic()
    if (
        not refresh
        and state.jwks is not None
        and now - state.jwks_fetched_at < METADATA_TTL_SECONDS
    ):
        return state.jwks
    metadata = await get_provider(state)
    try:
        response = await state.client().get(metadata.jwks_uri)
        response.raise_for_status()
        keys = KeySet.import_key_set(response.json())
    except (httpx.HTTPError, JoseError, ValueError, KeyError, TypeError) as exc:
        raise ProviderError(f"federation's signing keys are unavailable: {exc}") from exc
    state.jwks, state.jwks_fetched_at = keys, now
    return keys


async def decode_signed(state: OAuthClientState, value: str) -> dict[str, Any]:
    """The claims of a JWT signed by one of federation's keys (signature checked only)."""
    keys = await get_jwks(state)
    try:
        try:
            token = jwt.decode(value, keys, algorithms=ID_TOKEN_ALGORITHMS)
        except InvalidKeyIdError:
            # A new signing key at federation: fetch the key set again, once.
            keys = await get_jwks(state, refresh=True)
            token = jwt.decode(value, keys, algorithms=ID_TOKEN_ALGORITHMS)
    except (JoseError, ValueError, TypeError) as exc:
        raise SignInError(f"the token's signature does not check out: {exc}") from exc
    return dict(token.claims)


def validate_claims(claims: dict[str, Any], **options: dict[str, Any]) -> None:
    registry = jwt.JWTClaimsRegistry(leeway=CLOCK_LEEWAY_SECONDS, **options)  # type: ignore[arg-type]
    try:
        registry.validate(claims)
    except (JoseError, ValueError, TypeError) as exc:
        raise SignInError(f"the token's claims are not acceptable: {exc}") from exc


@dataclass(frozen=True)
class IdTokenClaims:
    user_id: int
    grant_id: int
    sso_session_id: int | None
    auth_time: int | None


async def verify_id_token(
    state: OAuthClientState, id_token: str, *, nonce: str, access_token: str | None
) -> IdTokenClaims:
    claims = await decode_signed(state, id_token)
    validate_claims(
        claims,
        iss={"essential": True, "value": state.issuer},
        sub={"essential": True},
        aud={"essential": True, "value": state.client_id},
        exp={"essential": True},
        iat={"essential": True},
        nonce={"essential": True, "value": nonce},
    )
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if len(audiences) > 1 and claims.get("azp") != state.client_id:
        raise SignInError("the id_token was issued to another party")
    if (
        access_token is not None
        and "at_hash" in claims
        and not secrets.compare_digest(str(claims["at_hash"]), at_hash_of(access_token))
    ):
        raise SignInError("the id_token does not belong to this access token")
    return IdTokenClaims(
        user_id=parse_int_claim(claims, "sub"),
        grant_id=parse_int_claim(claims, "grant_id"),
        sso_session_id=parse_int_claim(claims, "sid") if claims.get("sid") is not None else None,
        auth_time=claims.get("auth_time") if isinstance(claims.get("auth_time"), int) else None,
    )


def parse_int_claim(claims: dict[str, Any], name: str) -> int:
    value = claims.get(name)
    if isinstance(value, bool):
        raise SignInError(f"the token's {name} claim is not an id")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise SignInError(f"the token's {name} claim is missing or not an id")


@dataclass(frozen=True)
class LogoutClaims:
    grant_id: int
    sso_session_id: int | None
    user_id: int | None


async def verify_logout_token(state: OAuthClientState, logout_token: str) -> LogoutClaims:
    """A back-channel logout token (OIDC Back-Channel Logout 1.0, section 2.6)."""
    claims = await decode_signed(state, logout_token)
    validate_claims(
        claims,
        iss={"essential": True, "value": state.issuer},
        aud={"essential": True, "value": state.client_id},
        iat={"essential": True},
        jti={"essential": True},
        events={"essential": True},
    )
    events = claims.get("events")
    if not isinstance(events, dict) or not isinstance(events.get(BACKCHANNEL_LOGOUT_EVENT), dict):
        raise SignInError("the logout token carries no back-channel logout event")
    if "nonce" in claims:
        raise SignInError("a logout token must not carry a nonce")
    if claims.get("sid") is None and claims.get("sub") is None:
        raise SignInError("the logout token names neither a session nor a member")
    return LogoutClaims(
        grant_id=parse_int_claim(claims, "grant_id"),
        sso_session_id=parse_int_claim(claims, "sid") if claims.get("sid") is not None else None,
        user_id=parse_int_claim(claims, "sub") if claims.get("sub") is not None else None,
    )


async def exchange_code(
    state: OAuthClientState, metadata: ProviderMetadata, code: str, verifier: str
) -> dict[str, Any]:
    try:
        response = await state.client().post(
            metadata.token_endpoint,
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": state.redirect_uri,
                "code_verifier": verifier,
            },
            auth=(state.client_id, state.client_secret),
            headers={"Accept": "application/json"},
        )
    except httpx.HTTPError as exc:
        raise ProviderError(f"federation's token endpoint did not answer: {exc}") from exc
    if response.status_code == 400:
        raise SignInError("the sign-in code was refused; please sign in again")
    if response.status_code != 200:
        raise ProviderError(f"federation's token endpoint answered {response.status_code}")
    try:
        tokens = response.json()
    except ValueError as exc:
        raise ProviderError(
            "federation's token endpoint answered something that is not JSON"
        ) from exc
    if not isinstance(tokens, dict) or not isinstance(tokens.get("id_token"), str):
        raise ProviderError("federation's token response carries no id_token")
    return tokens


# ---------------------------------------------------------------------------------------------
# The app's sign-in


def get_app_sign_in() -> AppSignIn | None:
    """This request's sign-in, after its grant was checked (None when signed out)."""
    sign_in: AppSignIn | None = g.get("app_sign_in")
    return sign_in


async def get_current_user() -> UserDTO | None:
    """The signed-in member, loaded (once per request) only after the grant was checked."""
    if "current_user" in g:
        cached: UserDTO | None = g.current_user
        return cached
    user: UserDTO | None = None
    sign_in = get_app_sign_in()
    if sign_in is not None:
        try:
            user = await get_service(UserService).get_user(sign_in.user_id)
        except NotFoundError:
            session.pop(AUTH_SESSION_KEY, None)
    g.current_user = user
    return user


def get_device_id() -> str:
    """This browser's id in this app (the long-lived ``<app>_device`` cookie)."""
    state = get_state()
    existing = request.cookies.get(device_cookie(state.name, state.settings.cookies))
    if existing:
        return existing
    if "new_device_id" not in g:
        g.new_device_id = secrets.token_urlsafe(24)
    made: str = g.new_device_id
    return made


def set_silent_marker(response: Response) -> None:
    settings = get_settings()
    response.set_cookie(
        silent_marker_cookie(get_state().name, settings.cookies),
        "1",
        max_age=SILENT_MARKER_MAX_AGE,
        secure=settings.cookies.secure,
        httponly=True,
        samesite=settings.cookies.samesite,
    )


def clear_silent_marker(response: Response) -> None:
    settings = get_settings()
    response.delete_cookie(
        silent_marker_cookie(get_state().name, settings.cookies),
        secure=settings.cookies.secure,
        httponly=True,
        samesite=settings.cookies.samesite,
    )


def redirect(location: str) -> Response:
    """A 302 to ``location`` (an absolute URL at federation, or a path of this app)."""
    return Response("", 302, headers={"Location": location})


def no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


async def do_commit_and_purge(grant_ids: list[int]) -> None:
    """Commit the request's revocations, then drop the grants' cached status everywhere.

    Purging after the commit (not before) means no app can re-cache "active" in between."""
    await get_session().commit()
    await do_purge_grants(get_state().state_redis, grant_ids)


async def do_sign_out_here(*, reason: str) -> list[int]:
    """Sign this device out of every app: revoke its SSO session and every grant made from it
    (SsoService, which also queues the back-channel logouts), purge their cached status, and
    forget the sign-in in this app's session. Returns the revoked grant ids."""
    sign_in = AppSignIn.from_session(session.get(AUTH_SESSION_KEY))
    grant_ids: list[int] = []
    if sign_in is not None:
        if sign_in.sso_session_id is not None:
            grant_ids = await get_service(SsoService).do_sign_out_device(
                sign_in.sso_session_id, reason=reason
            )
        grant_ids = sorted({*grant_ids, sign_in.grant_id})
        await do_commit_and_purge(grant_ids)
    session.pop(AUTH_SESSION_KEY, None)
    g.app_sign_in = None
    g.current_user = None
    return grant_ids


def wants_silent_sign_in() -> bool:
    """Whether this request may take the one silent prompt=none round trip to federation:
    a top-level browser navigation (GET, Fetch Metadata ``Sec-Fetch-Mode: navigate`` and
    ``Sec-Fetch-Dest: document``, HTML preferred over JSON) by a visitor who is not a bot,
    to a page of this app, without the marker of an earlier attempt."""
    if request.method != "GET" or request.routing_exception is not None:
        return False
    if is_infrastructure_path(request.path) or request.path.startswith(NO_SILENT_PREFIXES):
        return False
    state = get_state()
    if request.cookies.get(silent_marker_cookie(state.name, state.settings.cookies)):
        return False
    headers = request.headers
    # Fetch Metadata tells a top-level navigation from fetch/XHR, iframes and prefetches;
    # every current browser sends it, crawlers and scripts do not.
    if headers.get("Sec-Fetch-Mode") != "navigate":
        return False
    if headers.get("Sec-Fetch-Dest", "document") != "document":
        return False
    if headers.get("Purpose", "").lower() == "prefetch" or headers.get("Sec-Purpose"):
        return False
    if is_bot(headers.get("User-Agent", "")):
        return False
    return not wants_json()


async def start_authorization(next_path: str, *, silent: bool) -> Response:
    """Redirect the browser to federation's authorization endpoint."""
    oauth = get_oauth()
    metadata = await get_provider(oauth)
    state = secrets.token_urlsafe(32)
    nonce = secrets.token_urlsafe(32)
    verifier = secrets.token_urlsafe(64)  # 86 characters, within PKCE's 43-128
    pending = {"nonce": nonce, "verifier": verifier, "next": next_path, "silent": silent}
    redis = get_state().state_redis
    if redis is None:
        raise ProviderError("sign-in is unavailable: the app is not serving")
    try:
        await redis.set(
            pending_key(oauth.app_name, state), json.dumps(pending), ex=PENDING_TTL_SECONDS
        )
    except RedisError as exc:
        raise ProviderError("sign-in is unavailable for a moment; please try again") from exc
    earlier = [s for s in session.get(PENDING_STATES_KEY, []) if isinstance(s, str)]
    session[PENDING_STATES_KEY] = [*earlier[-(MAX_PENDING_STATES - 1) :], state]
    params = {
        "response_type": "code",
        "client_id": oauth.client_id,
        "redirect_uri": oauth.redirect_uri,
        "scope": FIRST_PARTY_SCOPE,
        "state": state,
        "nonce": nonce,
        "code_challenge": create_s256_code_challenge(verifier),
        "code_challenge_method": "S256",
    }
    if silent:
        params["prompt"] = "none"
    response = no_store(redirect(f"{metadata.authorization_endpoint}?{urlencode(params)}"))
    if silent:
        set_silent_marker(response)
    return response


async def take_pending(state: str) -> dict[str, Any]:
    """The pending sign-in this browser started under ``state``, used up by taking it."""
    issued = [s for s in session.get(PENDING_STATES_KEY, []) if isinstance(s, str)]
    if not state or state not in issued:
        raise SignInError("This sign-in was not started in this browser. Please sign in again.")
    session[PENDING_STATES_KEY] = [s for s in issued if s != state]
    redis = get_state().state_redis
    try:
        raw = await redis.getdel(pending_key(get_oauth().app_name, state)) if redis else None
    except RedisError as exc:
        raise ProviderError("sign-in is unavailable for a moment; please try again") from exc
    if raw is None:
        raise SignInError("This sign-in has expired or was already used. Please sign in again.")
    pending: dict[str, Any] = json.loads(raw)
    return pending


async def finish_authorization() -> Response:
    oauth = get_oauth()
    settings = get_settings()
    args = request.args
    pending = await take_pending(args.get("state", ""))
    next_path = check_next(str(pending.get("next", "/")), settings.url_of(oauth.app_name))
    if "iss" in args and args["iss"].rstrip("/") != oauth.issuer:
        raise SignInError("the sign-in answer came from another issuer")
    error = args.get("error")
    if error is not None:
        if (pending.get("silent") and error in SILENT_ERRORS) or error == "access_denied":
            response = no_store(redirect(next_path))
            set_silent_marker(response)
            return response
        raise SignInError(f"Federation refused the sign-in ({error[:60]}).")
    code = args.get("code")
    if not code:
        raise SignInError("the sign-in answer carries no code")
    metadata = await get_provider(oauth)
    tokens = await exchange_code(oauth, metadata, code, str(pending["verifier"]))
    access_token = tokens.get("access_token")
    claims = await verify_id_token(
        oauth,
        tokens["id_token"],
        nonce=str(pending["nonce"]),
        access_token=access_token if isinstance(access_token, str) else None,
    )
    status = await get_service(SsoService).get_grant_status(claims.grant_id)
    if status is None or not status.active or status.user_id != claims.user_id:
        raise SignInError("this sign-in was revoked; please sign in again")
    if status.client_id != oauth.client_id:
        raise SignInError("the sign-in was granted to another app")
    sign_in = AppSignIn(
        user_id=claims.user_id,
        grant_id=claims.grant_id,
        sso_session_id=claims.sso_session_id,
        signed_in_at=int(time.time()),
    )
    session.pop("csrf_token", None)  # a new sign-in gets a new CSRF token
    session[AUTH_SESSION_KEY] = sign_in.to_session()
    session.permanent = True
    g.app_sign_in = sign_in
    response = no_store(redirect(next_path))
    clear_silent_marker(response)
    return response


# ---------------------------------------------------------------------------------------------
# Routes

oauth_bp = Blueprint("oauth", __name__)


@oauth_bp.get("/auth/login")
async def login() -> Response:
    settings = get_settings()
    next_path = check_next(request.args.get("next"), settings.url_of(get_oauth().app_name))
    if get_app_sign_in() is not None:
        return redirect(next_path)
    return await start_authorization(next_path, silent=False)


@oauth_bp.get(CALLBACK_PATH)
async def callback() -> Response:
    return await finish_authorization()


@oauth_bp.post("/auth/logout")
async def logout() -> Response:
    app_name = get_oauth().app_name
    form = await request.form
    await do_sign_out_here(reason=f"signed out in {app_name}")
    response = no_store(redirect(check_next(form.get("next"), get_settings().url_of(app_name))))
    # Signed out at federation too, so a silent attempt would only come back empty-handed.
    set_silent_marker(response)
    return response


@oauth_bp.post(BACKCHANNEL_LOGOUT_PATH)
@csrf_exempt
async def backchannel_logout() -> Response:
    form = await request.form
    token = form.get("logout_token", "")
    try:
        claims = await verify_logout_token(get_oauth(), token)
    except ProviderError:
        logger.warning("back-channel logout: federation's keys are unavailable")
        return no_store(
            Response('{"error":"temporarily_unavailable"}', 503, mimetype="application/json")
        )
    except SignInError as exc:
        logger.warning("back-channel logout refused: %s", exc)
        return no_store(Response('{"error":"invalid_request"}', 400, mimetype="application/json"))
    await do_purge_grants(get_state().state_redis, [claims.grant_id])
    logger.info("back-channel logout of grant %s", claims.grant_id)
    return no_store(Response("", 200))


# ---------------------------------------------------------------------------------------------
# Installation


async def client_header() -> HeaderAccount:
    user = await get_current_user()
    settings = get_settings()
    return HeaderAccount(
        member_name=user.name if user is not None else None,
        account_url=settings.url_of("account") + "/",
        sign_in_url="/auth/login?" + urlencode({"next": current_path()}),
        sign_out_url="/auth/logout",
    )


def install_header_provider(app: Quart, provider: HeaderProvider) -> None:
    """Give the shared header (``header_account``) who is signed in, as this app knows it.
    Federation, the authority, installs its own provider (its SSO cookie)."""
    app.extensions[HEADER_EXTENSION_KEY] = provider

    @app.context_processor
    async def header_context() -> dict[str, Any]:
        current: HeaderProvider = app.extensions[HEADER_EXTENSION_KEY]
        try:
            return {"header_account": await current()}
        except Exception:  # the header must never take an error page down with it
            logger.exception("the header could not tell who is signed in")
            return {"header_account": None}


def install_oauth_client(app: Quart) -> None:
    """The client side of SSO for ``app``: routes, the per-request grant check, silent SSO,
    the device cookie and the header's account links."""
    state = get_state(app)
    settings = state.settings
    oauth = OAuthClientState(
        app_name=state.name,
        client_id=state.name,
        client_secret=first_party_client_secret(settings, state.name),
        redirect_uri=first_party_redirect_uri(settings, state.name),
        issuer=settings.url_of("federation"),
    )
    app.extensions[OAUTH_EXTENSION_KEY] = oauth
    # Quart refuses a session cookie signed longer ago than this: the idle lifetime.
    app.config["PERMANENT_SESSION_LIFETIME"] = settings.sessions.idle_lifetime_seconds

    @app.before_serving
    async def open_http_client() -> None:
        # *.localhost reaches loopback as in a browser; tests hand in a transport of their own.
        oauth.http = create_http_client(oauth.transport, HTTP_TIMEOUT_SECONDS)

    @app.after_serving
    async def close_http_client() -> None:
        if oauth.http is not None:
            await oauth.http.aclose()
            oauth.http = None

    @app.before_request
    async def check_sign_in() -> Response | None:
        g.app_sign_in = None
        if is_infrastructure_path(request.path):
            return None
        sign_in = AppSignIn.from_session(session.get(AUTH_SESSION_KEY))
        if sign_in is not None and not sign_in.check_within_lifetime(
            settings.sessions, time.time()
        ):
            sign_in = None  # too old: dropped below, then signed in again silently if it can
        if sign_in is not None:
            sso = get_service(SsoService)
            if await check_grant_active(get_state().state_redis, sso, sign_in.grant_id):
                g.app_sign_in = sign_in
                return None
            session.pop(AUTH_SESSION_KEY, None)  # signed out elsewhere: this app follows
        elif session.get(AUTH_SESSION_KEY) is not None:
            session.pop(AUTH_SESSION_KEY, None)
        if not wants_silent_sign_in():
            return None
        try:
            return await start_authorization(current_path(), silent=True)
        except SignInError as exc:
            logger.warning("silent sign-in skipped: %s", exc)
            return None

    @app.after_request
    async def set_device_cookie(response: Response) -> Response:
        name = device_cookie(state.name, settings.cookies)
        if is_infrastructure_path(request.path) or request.cookies.get(name):
            return response
        if is_machine_document(request.path, response):
            return response
        response.set_cookie(
            name,
            get_device_id(),
            max_age=DEVICE_COOKIE_MAX_AGE,
            secure=settings.cookies.secure,
            httponly=True,
            samesite=settings.cookies.samesite,
        )
        return response

    @app.errorhandler(SignInError)
    async def handle_sign_in_error(error: SignInError) -> tuple[Response | str, int]:
        return await render_error(error.status, str(error))

    app.register_blueprint(oauth_bp)
    install_header_provider(app, client_header)
