"""Support for tests of the client side of SSO: a fake federation and signed-in members.

Federation is replaced by a small fake of the contract (discovery, JWKS, a token endpoint that
checks client_secret_basic, the redirect URI and PKCE, and signs RS256 id_tokens with joserfc),
reached through the httpx transport the apps keep for federation. Members, SSO sessions and
grants are real rows in the test's transaction. The ``fake`` and ``member`` fixtures are in
tests/conftest.py.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

import httpx
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.jwk import RSAKey
from quart import Quart
from quart.typing import TestClientProtocol as QuartClient
from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import Settings
from shared.contracts.identity import UserDTO
from shared.infrastructure.oauth import (
    BACKCHANNEL_LOGOUT_EVENT,
    at_hash_of,
    get_oauth,
)
from shared.models.identity import OAuthGrant
from shared.services.identity.oauth_clients import (
    FIRST_PARTY_SCOPE,
    do_sync_first_party_clients,
    first_party_client_secret,
)
from shared.services.identity.sso import SqlSsoService
from shared.services.identity.users import SqlUserService

if TYPE_CHECKING:  # tests.conftest imports this module: no import cycle at run time
    pass

BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0"
# A top-level navigation as a browser sends it (Fetch Metadata included).
NAVIGATE = {
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Sec-Fetch-Mode": "navigate",
    "Sec-Fetch-Dest": "document",
    "Sec-Fetch-Site": "none",
    "User-Agent": BROWSER_UA,
}


@dataclass
class FakeFederation:
    """Federation's side of the contract, as far as the apps' clients see it."""

    settings: Settings
    key: RSAKey = field(
        default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "fake-1"})
    )
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    token_requests: list[dict[str, str]] = field(default_factory=list)

    @property
    def issuer(self) -> str:
        return self.settings.url_of("federation")

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        assert str(request.url).startswith(self.issuer + "/")
        path = request.url.path
        if path == "/.well-known/openid-configuration":
            return httpx.Response(
                200,
                json={
                    "issuer": self.issuer,
                    "authorization_endpoint": self.issuer + "/oauth/authorize",
                    "token_endpoint": self.issuer + "/oauth/token",
                    "jwks_uri": self.issuer + "/oauth/jwks",
                    "code_challenge_methods_supported": ["S256"],
                },
            )
        if path == "/oauth/jwks":
            return httpx.Response(200, json={"keys": [self.key.as_dict(private=False)]})
        if path == "/oauth/token" and request.method == "POST":
            return self.token(request)
        return httpx.Response(404)

    def token(self, request: httpx.Request) -> httpx.Response:
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        self.token_requests.append(form)
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        client_id, _, secret = base64.b64decode(encoded).decode().partition(":")
        if scheme != "Basic" or secret != first_party_client_secret(self.settings, client_id):
            return httpx.Response(401, json={"error": "invalid_client"})
        entry = self.codes.pop(form.get("code", ""), None)
        if (
            entry is None
            or form.get("grant_type") != "authorization_code"
            or entry["client_id"] != client_id
            or entry["redirect_uri"] != form.get("redirect_uri")
            or create_s256_code_challenge(form.get("code_verifier", "")) != entry["challenge"]
        ):
            return httpx.Response(400, json={"error": "invalid_grant"})
        access_token = f"at-{time.time_ns()}"
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": str(entry["user_id"]),
            "aud": client_id,
            "exp": now + 300,
            "iat": now,
            "auth_time": now,
            "nonce": entry["nonce"],
            "at_hash": at_hash_of(access_token),
            "sid": str(entry["sid"]),
            "grant_id": entry["grant_id"],
            **entry["overrides"],
        }
        return httpx.Response(
            200,
            json={
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": 3600,
                "refresh_token": "rt",
                "id_token": self.sign(claims, entry["key"] or self.key),
            },
        )

    def sign(self, claims: dict[str, Any], key: RSAKey | None = None) -> str:
        key = key or self.key
        return jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)

    def authorization_request(self, location: str) -> dict[str, str]:
        parts = urlsplit(location)
        assert f"{parts.scheme}://{parts.netloc}{parts.path}" == self.issuer + "/oauth/authorize"
        return dict(parse_qsl(parts.query))

    def authorize(
        self,
        location: str,
        *,
        user_id: int,
        grant_id: int,
        sid: int,
        key: RSAKey | None = None,
        claims: dict[str, Any] | None = None,
    ) -> str:
        """Federation signs the member in: the callback (path and query) it redirects to."""
        params = self.authorization_request(location)
        client_id = params["client_id"]
        assert params["response_type"] == "code"
        assert params["code_challenge_method"] == "S256"
        assert params["scope"] == FIRST_PARTY_SCOPE
        assert params["redirect_uri"] == self.settings.url_of(client_id) + "/auth/callback"
        code = f"code-{len(self.codes)}-{time.time_ns()}"
        self.codes[code] = {
            "client_id": client_id,
            "redirect_uri": params["redirect_uri"],
            "challenge": params["code_challenge"],
            "nonce": params["nonce"],
            "user_id": user_id,
            "grant_id": grant_id,
            "sid": sid,
            "key": key,
            "overrides": claims or {},
        }
        return "/auth/callback?" + urlencode({"code": code, "state": params["state"]})

    def refuse(self, location: str, error: str = "login_required") -> str:
        params = self.authorization_request(location)
        return "/auth/callback?" + urlencode({"error": error, "state": params["state"]})

    def logout_token(
        self, client_id: str, grant_id: int, sid: int, claims: dict[str, Any] | None = None
    ) -> str:
        token_claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": client_id,
            "iat": int(time.time()),
            "jti": f"jti-{time.time_ns()}",
            "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
            "sid": str(sid),
            "sub": "1",
            "grant_id": grant_id,
        }
        token_claims = {**token_claims, **(claims or {})}
        return self.sign({k: v for k, v in token_claims.items() if v is not None})


@dataclass(frozen=True)
class Member:
    user: UserDTO
    sid: int  # the SSO session (device) at federation


async def make_member(
    session: AsyncSession,
    settings: Settings,
    email: str = "ada@example.org",
    *,
    username: str | None = "ada",
    display_name: str = "Ada Hartley",
) -> Member:
    await do_sync_first_party_clients(session, settings)
    user = await SqlUserService(session).create_user(
        email, username=username, display_name=display_name
    )
    started = await SqlSsoService(session).do_start_session(
        user.id, user_agent=BROWSER_UA, ip_address="127.0.0.1"
    )
    await session.commit()
    return Member(user, started.session.id)


async def new_device(session: AsyncSession, member: Member, user_agent: str) -> int:
    started = await SqlSsoService(session).do_start_session(member.user.id, user_agent=user_agent)
    await session.commit()
    return started.session.id


async def add_grant(
    session: AsyncSession, member: Member, client_id: str, sid: int | None = None
) -> int:
    grant = OAuthGrant(
        user_id=member.user.id,
        client_id=client_id,
        sso_session_id=member.sid if sid is None else sid,
        scope=FIRST_PARTY_SCOPE,
    )
    session.add(grant)
    await session.commit()
    return grant.id


def with_federation(
    factory: Callable[[Settings], Quart], fake: FakeFederation
) -> Callable[[Settings], Quart]:
    def build(settings: Settings) -> Quart:
        app = factory(settings)
        get_oauth(app).transport = fake.transport
        return app

    return build


async def sign_in(
    client: QuartClient,
    fake: FakeFederation,
    member: Member,
    grant_id: int,
    *,
    next_path: str = "/",
    sid: int | None = None,
) -> Any:
    login = await client.get("/auth/login", query_string={"next": next_path})
    assert login.status_code == 302, await login.get_data(as_text=True)
    callback = fake.authorize(
        login.headers["Location"],
        user_id=member.user.id,
        grant_id=grant_id,
        sid=member.sid if sid is None else sid,
    )
    return await client.get(callback)


async def signed_in_as(client: QuartClient) -> str | None:
    """The member name the header shows, or None when it offers "Sign in"."""
    page = await (await client.get("/", headers={"Accept": "text/html"})).get_data(as_text=True)
    if 'class="sign-in"' in page:
        return None
    marker = 'class="member" href="http://account.localhost/" title="Your account">'
    assert marker in page, page
    return page.split(marker, 1)[1].split("<", 1)[0]


async def csrf_of(client: QuartClient) -> str:
    page = await (await client.get("/", headers={"Accept": "text/html"})).get_data(as_text=True)
    return page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]


def cookie_header(response: Any, name: str) -> str:
    found = [h for h in response.headers.getlist("Set-Cookie") if h.startswith(name + "=")]
    assert found, f"no {name} cookie in {response.headers.getlist('Set-Cookie')}"
    return str(found[-1])
