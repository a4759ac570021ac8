"""The OAuth2 / OpenID Connect authorization server: Authlib's core, adapted to Quart.

Authlib ships server integrations for Flask and Django only, and its grants call storage
synchronously (query_client, save_token, ...). We keep Authlib's protocol logic (request
validation, PKCE, client authentication, token and error responses, id_token encoding) and
adapt its storage to our async sessions with a unit of work:

1. before Authlib runs, everything it may read is loaded with the request's async session
   (the client, the code or token named in the request, the member, the signing key);
2. Authlib runs synchronously against those records; its writes are collected;
3. the view applies the writes with the same session and commits, also when Authlib answered
   with an error (a replayed code or a reused refresh token revokes the grant *and* fails).

Security rules on top of Authlib's defaults: PKCE S256 only (plain refused), exact redirect
URIs, codes single-use and valid 60 s, refresh tokens rotated on every use, a reused refresh
token or a replayed code revokes the whole grant (also when two requests use it at the same
moment: the write that marks it used is guarded, and the loser is the reuse), everything
stored as SHA-256 hashes. The unit of work Authlib reads is per request (CURRENT_WORK).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from authlib.oauth2 import AuthorizationServer as AuthlibServer
from authlib.oauth2.rfc6749 import (
    AuthorizationCodeMixin,
    ClientMixin,
    OAuth2Request,
    TokenMixin,
    grants,
)
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc6749.requests import OAuth2Payload
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from joserfc.jwk import RSAKey
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from werkzeug.datastructures import MultiDict

from shared.config import SessionSettings, Settings
from shared.contracts.identity import get_public_name
from shared.models.identity import (
    OAuthAuthorizationCode,
    OAuthClient,
    OAuthGrant,
    OAuthToken,
    SsoSession,
    User,
)
from shared.services.identity.signing_keys import get_active_signing_key
from shared.services.identity.sso import check_session_live, hash_token

CODE_LIFETIME = timedelta(seconds=60)
ACCESS_TOKEN_LIFETIME = timedelta(hours=1)
REFRESH_TOKEN_LIFETIME = timedelta(days=30)
ID_TOKEN_LIFETIME_SECONDS = 600
SUPPORTED_SCOPES = ("openid", "profile", "email")
AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]


# ---------------------------------------------------------------------------------------------
# Records Authlib works with (plain data, loaded before it runs)


@dataclass
class ClientRecord(ClientMixin):  # type: ignore[misc]
    client_id: str
    client_secret_hash: str | None
    name: str
    redirect_uris: list[str]
    scope: str
    token_endpoint_auth_method: str
    first_party: bool

    @classmethod
    def of(cls, row: OAuthClient) -> ClientRecord:
        return cls(
            row.client_id,
            row.client_secret_hash,
            row.name,
            list(row.redirect_uris),
            row.scope,
            row.token_endpoint_auth_method,
            row.first_party,
        )

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        # No default: every request must name its redirect_uri (checked exactly below).
        return None

    def get_allowed_scope(self, scope: str) -> str:
        allowed = set(self.scope.split())
        return " ".join(s for s in (scope or "").split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris  # exact match, character for character

    def check_client_secret(self, client_secret: str) -> bool:
        if self.client_secret_hash is None:
            return False
        return secrets.compare_digest(hash_token(client_secret), self.client_secret_hash)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.token_endpoint_auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in ("authorization_code", "refresh_token")


@dataclass
class Member:
    """The resource owner as Authlib sees it."""

    id: int
    email: str
    email_verified: bool
    username: str | None
    display_name: str
    sso_session_id: int | None
    auth_time: int

    def get_user_id(self) -> int:
        return self.id

    @classmethod
    def of(cls, user: User, sso_session_id: int | None, auth_time: datetime) -> Member:
        return cls(
            user.id,
            user.email,
            user.email_verified_at is not None,
            user.username,
            user.display_name,
            sso_session_id,
            int(auth_time.timestamp()),
        )


@dataclass
class CodeRecord(AuthorizationCodeMixin):  # type: ignore[misc]
    code_hash: str
    client_id: str
    user_id: int
    grant_id: int
    redirect_uri: str
    scope: str
    nonce: str | None
    code_challenge: str
    code_challenge_method: str
    auth_time: datetime
    expires_at: datetime
    used_at: datetime | None

    @classmethod
    def of(cls, row: OAuthAuthorizationCode) -> CodeRecord:
        return cls(
            row.code_hash,
            row.client_id,
            row.user_id,
            row.grant_id,
            row.redirect_uri,
            row.scope,
            row.nonce,
            row.code_challenge,
            row.code_challenge_method,
            row.auth_time,
            row.expires_at,
            row.used_at,
        )

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return int(self.auth_time.timestamp())

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> None:
        return None


@dataclass
class TokenRecord(TokenMixin):  # type: ignore[misc]
    id: int
    grant_id: int
    client_id: str
    user_id: int
    scope: str
    issued_at: datetime
    access_expires_at: datetime
    refresh_expires_at: datetime | None
    refresh_used_at: datetime | None
    revoked_at: datetime | None
    grant_revoked: bool
    # which of the token's two values the request named
    named: str = "access_token"

    @classmethod
    def of(cls, row: OAuthToken, grant_revoked: bool, named: str) -> TokenRecord:
        return cls(
            row.id,
            row.grant_id,
            row.client_id,
            row.user_id,
            row.scope,
            row.issued_at,
            row.access_expires_at,
            row.refresh_expires_at,
            row.refresh_used_at,
            row.revoked_at,
            grant_revoked,
            named,
        )

    def check_client(self, client: ClientRecord) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return int((self.access_expires_at - self.issued_at).total_seconds())

    def is_expired(self) -> bool:
        expiry = (
            self.refresh_expires_at if self.named == "refresh_token" else self.access_expires_at
        )
        return expiry is None or expiry <= datetime.now(UTC)

    def is_revoked(self) -> bool:
        return self.revoked_at is not None or self.grant_revoked


# ---------------------------------------------------------------------------------------------
# The unit of work: what Authlib may read, and what it asked to write


Write = Callable[[AsyncSession], Awaitable[None]]


@dataclass
class Work:
    clients: dict[str, ClientRecord] = field(default_factory=dict)
    codes: dict[str, CodeRecord] = field(default_factory=dict)  # by hash
    tokens: dict[str, TokenRecord] = field(default_factory=dict)  # by hash of either value
    members: dict[int, Member] = field(default_factory=dict)
    nonces_used: set[str] = field(default_factory=set)
    signing_key: RSAKey | None = None
    signing_kid: str | None = None
    writes: list[Write] = field(default_factory=list)
    # what the authorization response should create (set by the view before Authlib runs)
    grant_id: int | None = None

    async def apply(self, session: AsyncSession) -> None:
        for write in self.writes:
            await write(session)
        self.writes.clear()


# The work of the request Authlib is serving. Some of Authlib's storage hooks get no request
# (query_client, resolve_client_private_key, ...), and one server instance serves every
# request: the work must be per request, never an attribute of the server, or a request
# interleaved at an await (e.g. between consent and the authorization response) would make
# Authlib read another request's clients and tokens. A ContextVar is per asyncio task.
CURRENT_WORK: ContextVar[Work] = ContextVar("rose_ash_oauth_work")


def current_work() -> Work:
    return CURRENT_WORK.get()


class QuartOAuth2Payload(OAuth2Payload):  # type: ignore[misc]
    def __init__(self, values: MultiDict[str, str]) -> None:
        self._values = values

    @property
    def data(self) -> MultiDict[str, str]:
        return self._values

    @property
    def datalist(self) -> dict[str, list[str]]:
        return {key: self._values.getlist(key) for key in self._values}


class QuartOAuth2Request(OAuth2Request):  # type: ignore[misc]
    """A request already read from Quart (its form awaited), plus our unit of work.

    Authlib's constructor refuses http:// URIs outside `localhost`; TLS is terminated by the
    edge proxy in production (the app itself sees http), so the transport is checked by
    configuration (production URLs are https), not here.
    """

    def __init__(
        self,
        method: str,
        uri: str,
        headers: dict[str, str],
        args: MultiDict[str, str],
        form: MultiDict[str, str],
        work: Work,
    ) -> None:
        # Deliberately not OAuth2Request.__init__ (see the docstring); the same attributes.
        self.method = method
        self.uri = uri
        self.headers = headers
        self._args = args
        self._form = form
        self._body = None
        values = MultiDict(args)
        values.update(form)
        self.payload = QuartOAuth2Payload(values)
        self.client = None
        self.auth_method = None
        self.user = None
        self.authorization_code = None
        self.refresh_token = None
        self.credential = None
        self._scope = None
        self.work = work

    @property
    def args(self) -> MultiDict[str, str]:
        return self._args

    @property
    def form(self) -> MultiDict[str, str]:
        return self._form


def now_utc() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------------------------
# Grants and endpoints


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

    def save_authorization_code(self, code: str, request: QuartOAuth2Request) -> None:
        work = request.work
        member: Member = request.user
        grant_id = work.grant_id
        assert grant_id is not None, "the view creates the grant before issuing a code"
        row = OAuthAuthorizationCode(
            code_hash=hash_token(code),
            client_id=request.client.client_id,
            user_id=member.id,
            grant_id=grant_id,
            redirect_uri=request.payload.redirect_uri,
            scope=request.scope or "",
            nonce=request.payload.data.get("nonce"),
            code_challenge=request.payload.data.get("code_challenge"),
            code_challenge_method=request.payload.data.get("code_challenge_method", "plain"),
            auth_time=datetime.fromtimestamp(member.auth_time, UTC),
            expires_at=now_utc() + CODE_LIFETIME,
        )

        async def insert(session: AsyncSession) -> None:
            session.add(row)
            await session.flush()

        work.writes.append(insert)

    def query_authorization_code(self, code: str, client: ClientRecord) -> CodeRecord | None:
        work: Work = self.request.work
        record = work.codes.get(hash_token(code))
        if record is None or record.client_id != client.client_id:
            return None
        if record.used_at is not None:
            # A replayed code: the code was stolen or the client is broken. Revoke
            # everything issued from it (RFC 6749 §4.1.2).
            work.writes.append(revoke_grant_write(record.grant_id, "authorization code replayed"))
            return None
        if record.expires_at <= now_utc():
            return None
        return record

    def delete_authorization_code(self, authorization_code: CodeRecord) -> None:
        work: Work = self.request.work

        async def mark_used(session: AsyncSession) -> None:
            marked = await session.execute(
                update(OAuthAuthorizationCode)
                .where(
                    OAuthAuthorizationCode.code_hash == authorization_code.code_hash,
                    OAuthAuthorizationCode.used_at.is_(None),
                )
                .values(used_at=now_utc())
                .returning(OAuthAuthorizationCode.code_hash)
            )
            if marked.first() is None:  # a concurrent redemption won the race
                raise CredentialAlreadyUsedError(
                    authorization_code.grant_id, "authorization code replayed"
                )

        work.writes.insert(0, mark_used)

    def authenticate_user(self, authorization_code: CodeRecord) -> Member | None:
        return self.request.work.members.get(authorization_code.user_id)  # type: ignore[no-any-return]


class CredentialAlreadyUsedError(Exception):
    """Two requests used one code or refresh token at the same moment: the second finds it
    already used when it writes, and is treated as a replay (the grant is revoked).

    Raised by the first write of the unit of work, so the request has written nothing yet."""

    def __init__(self, grant_id: int, reason: str) -> None:
        super().__init__(f"grant {grant_id}: {reason} (concurrently)")
        self.grant_id = grant_id
        self.reason = reason


class RefreshTokenGrant(grants.RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True  # rotation: every refresh gives a new refresh token

    def authenticate_refresh_token(self, refresh_token: str) -> TokenRecord | None:
        work: Work = self.request.work
        record = work.tokens.get(hash_token(refresh_token))
        if record is None or record.named != "refresh_token":
            return None
        if record.refresh_used_at is not None:
            # Reuse of a rotated refresh token: someone holds a stolen copy. End the grant.
            work.writes.append(revoke_grant_write(record.grant_id, "refresh token reused"))
            return None
        if record.is_revoked() or record.is_expired():
            return None
        return record

    def authenticate_user(self, refresh_token: TokenRecord) -> Member | None:
        return self.request.work.members.get(refresh_token.user_id)  # type: ignore[no-any-return]

    def revoke_old_credential(self, refresh_token: TokenRecord) -> None:
        async def mark_rotated(session: AsyncSession) -> None:
            # Guarded: of two requests that loaded the token unused, only one may rotate it
            # (the other waits on the row lock, then matches nothing). A token revoked since
            # it was loaded (its grant ended) matches nothing either.
            marked = await session.execute(
                update(OAuthToken)
                .where(
                    OAuthToken.id == refresh_token.id,
                    OAuthToken.refresh_used_at.is_(None),
                    OAuthToken.revoked_at.is_(None),
                )
                .values(refresh_used_at=now_utc(), revoked_at=now_utc())
                .returning(OAuthToken.id)
            )
            if marked.first() is None:
                raise CredentialAlreadyUsedError(refresh_token.grant_id, "refresh token reused")

        # First, before the new token is inserted: the loser must not have written anything.
        self.request.work.writes.insert(0, mark_rotated)


class S256CodeChallenge(CodeChallenge):  # type: ignore[misc]
    """PKCE required, and only S256 ("plain" would let a stolen code be redeemed)."""

    SUPPORTED_CODE_CHALLENGE_METHOD: ClassVar[list[str]] = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        request = grant.request
        if not request.payload.data.get("code_challenge"):
            raise InvalidRequestError(
                "PKCE is required: send code_challenge with code_challenge_method=S256",
                redirect_uri=redirect_uri,
            )
        if request.payload.data.get("code_challenge_method") != "S256":
            raise InvalidRequestError(
                "Only code_challenge_method=S256 is supported", redirect_uri=redirect_uri
            )
        super().validate_code_challenge(grant, redirect_uri)


class RoseAshOpenIDCode(OpenIDCode):  # type: ignore[misc]
    def __init__(self, issuer: str) -> None:
        super().__init__(require_nonce=True)
        self.issuer = issuer

    def exists_nonce(self, nonce: str, request: QuartOAuth2Request) -> bool:
        return nonce in request.work.nonces_used

    def resolve_client_private_key(self, client: ClientRecord) -> RSAKey:
        work = current_work()
        assert work.signing_key is not None
        return work.signing_key

    def get_client_algorithm(self, client: ClientRecord) -> str:
        return "RS256"

    def get_encode_header(self, client: ClientRecord) -> dict[str, str]:
        return {"alg": "RS256", "kid": current_work().signing_kid or "", "typ": "JWT"}

    def get_client_claims(self, client: ClientRecord) -> dict[str, Any]:
        now = int(time.time())
        return {
            "iss": self.issuer,
            "aud": [client.client_id],
            "iat": now,
            "exp": now + ID_TOKEN_LIFETIME_SECONDS,
        }

    def generate_user_info(self, user: Member, scope: str) -> UserInfo:
        info = build_user_info(user, scope)
        # Which device session (OIDC `sid`, used by back-channel logout) and which grant the
        # app must check on each request.
        info["sid"] = str(user.sso_session_id or "")
        info["grant_id"] = current_work().grant_id
        return info


def build_user_info(user: Member, scope: str) -> UserInfo:
    scopes = set((scope or "").split())
    info = UserInfo(sub=str(user.id))
    if "profile" in scopes:
        name = get_public_name(user.display_name, user.username)  # never from the email
        if name:
            info["name"] = name
        if user.username:
            info["preferred_username"] = user.username
    if "email" in scopes:
        info["email"] = user.email
        info["email_verified"] = user.email_verified
    return info


class RoseAshRevocation(RevocationEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = AUTH_METHODS

    def query_token(self, token_string: str, token_type_hint: str | None) -> TokenRecord | None:
        return current_work().tokens.get(hash_token(token_string))

    def revoke_token(self, token: TokenRecord, request: QuartOAuth2Request) -> None:
        if token.named == "refresh_token":
            # Revoking a refresh token ends the grant and every token issued under it.
            request.work.writes.append(revoke_grant_write(token.grant_id, "refresh token revoked"))
            return

        async def revoke(session: AsyncSession) -> None:
            await session.execute(
                update(OAuthToken).where(OAuthToken.id == token.id).values(revoked_at=now_utc())
            )

        request.work.writes.append(revoke)


class RoseAshIntrospection(IntrospectionEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS: ClassVar[list[str]] = ["client_secret_basic", "client_secret_post"]

    def query_token(self, token_string: str, token_type_hint: str | None) -> TokenRecord | None:
        return current_work().tokens.get(hash_token(token_string))

    def check_permission(
        self, token: TokenRecord, client: ClientRecord, request: QuartOAuth2Request
    ) -> bool:
        # A client may introspect its own tokens; the first-party apps any member's token.
        return client.first_party or token.client_id == client.client_id

    def introspect_token(self, token: TokenRecord) -> dict[str, Any]:
        member = current_work().members.get(token.user_id)
        expiry = (
            token.refresh_expires_at if token.named == "refresh_token" else token.access_expires_at
        )
        return {
            "active": True,
            "client_id": token.client_id,
            "token_type": "Bearer" if token.named == "access_token" else "refresh_token",
            "username": member.username if member else None,
            "scope": token.scope,
            "sub": str(token.user_id),
            "aud": token.client_id,
            "iss": self.server.issuer,
            "exp": int(expiry.timestamp()) if expiry else None,
            "iat": int(token.issued_at.timestamp()),
        }


def revoke_grant_write(grant_id: int, reason: str) -> Write:
    async def revoke(session: AsyncSession) -> None:
        await do_revoke_grant(session, grant_id, reason)

    return revoke


async def do_revoke_grant(session: AsyncSession, grant_id: int, reason: str) -> None:
    now = now_utc()
    await session.execute(
        update(OAuthGrant)
        .where(OAuthGrant.id == grant_id, OAuthGrant.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason=reason)
    )
    await session.execute(
        update(OAuthToken)
        .where(OAuthToken.grant_id == grant_id, OAuthToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )


class RoseAshAuthorizationServer(AuthlibServer):  # type: ignore[misc]
    """Authlib's server with our storage hooks; one instance per federation app."""

    def __init__(self, issuer: str) -> None:
        super().__init__(scopes_supported=list(SUPPORTED_SCOPES))
        self.issuer = issuer
        self.register_token_generator(
            "default",
            BearerTokenGenerator(
                access_token_generator=lambda **_: secrets.token_urlsafe(32),
                refresh_token_generator=lambda **_: secrets.token_urlsafe(32),
                expires_generator=lambda client, grant_type: int(
                    ACCESS_TOKEN_LIFETIME.total_seconds()
                ),
            ),
        )
        self.register_grant(
            AuthorizationCodeGrant, [S256CodeChallenge(required=True), RoseAshOpenIDCode(issuer)]
        )
        self.register_grant(RefreshTokenGrant)
        self.register_endpoint(RoseAshRevocation)
        self.register_endpoint(RoseAshIntrospection)

    def query_client(self, client_id: str) -> ClientRecord | None:
        return current_work().clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: QuartOAuth2Request) -> None:
        work = request.work
        if request.authorization_code is not None:
            grant_id = request.authorization_code.grant_id
        else:
            grant_id = request.refresh_token.grant_id
        now = now_utc()
        row = OAuthToken(
            grant_id=grant_id,
            client_id=request.client.client_id,
            user_id=request.user.id,
            access_token_hash=hash_token(token["access_token"]),
            refresh_token_hash=hash_token(token["refresh_token"])
            if token.get("refresh_token")
            else None,
            scope=token.get("scope", ""),
            issued_at=now,
            access_expires_at=now + timedelta(seconds=int(token["expires_in"])),
            refresh_expires_at=now + REFRESH_TOKEN_LIFETIME if token.get("refresh_token") else None,
        )
        work.grant_id = grant_id

        async def insert(session: AsyncSession) -> None:
            session.add(row)
            await session.flush()

        work.writes.append(insert)

    def handle_response(
        self, status: int, body: Any, headers: list[tuple[str, str]]
    ) -> tuple[int, Any, list[tuple[str, str]]]:
        return status, body, headers

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None

    # Every entry into Authlib passes our request, which carries its work: make it this
    # request's current work right there, with no await before Authlib reads it.

    def create_oauth2_request(self, request: QuartOAuth2Request) -> QuartOAuth2Request:
        CURRENT_WORK.set(request.work)
        return request

    def create_json_request(self, request: QuartOAuth2Request) -> QuartOAuth2Request:
        CURRENT_WORK.set(request.work)
        return request

    def create_authorization_response(
        self,
        request: QuartOAuth2Request,
        grant_user: Member | None = None,
        grant: grants.AuthorizationCodeGrant | None = None,
    ) -> tuple[int, Any, list[tuple[str, str]]]:
        # Authlib skips create_oauth2_request when given an OAuth2Request already.
        CURRENT_WORK.set(request.work)
        return super().create_authorization_response(request, grant_user, grant)  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------------
# Loading what Authlib may read


async def load_client(session: AsyncSession, work: Work, client_id: str | None) -> None:
    if not client_id or client_id in work.clients:
        return
    row = await session.get(OAuthClient, client_id)
    if row is not None:
        work.clients[client_id] = ClientRecord.of(row)


async def load_member(
    session: AsyncSession, work: Work, user_id: int, grant_id: int | None = None
) -> None:
    user = await session.get(User, user_id)
    if user is None:
        return
    sso_session_id: int | None = None
    auth_time = user.last_login_at or user.created_at
    if grant_id is not None:
        grant = await session.get(OAuthGrant, grant_id)
        if grant is not None and grant.sso_session_id is not None:
            sso = await session.get(SsoSession, grant.sso_session_id)
            if sso is not None:
                sso_session_id, auth_time = sso.id, sso.auth_time
    work.members[user_id] = Member.of(user, sso_session_id, auth_time)


async def load_tokens(
    session: AsyncSession, work: Work, *values: str | None, lifetimes: SessionSettings
) -> None:
    """The tokens named by ``values``; one whose grant is revoked, or whose device sign-in has
    ended, is loaded as revoked."""
    for value in values:
        if not value:
            continue
        digest = hash_token(value)
        row = await session.scalar(
            select(OAuthToken).where(
                or_(OAuthToken.access_token_hash == digest, OAuthToken.refresh_token_hash == digest)
            )
        )
        if row is None:
            continue
        grant = await session.get(OAuthGrant, row.grant_id)
        named = "refresh_token" if row.refresh_token_hash == digest else "access_token"
        ended = (
            grant is None
            or grant.revoked_at is not None
            or not await check_session_live(session, lifetimes, grant.sso_session_id)
        )
        work.tokens[digest] = TokenRecord.of(row, ended, named)
        await load_member(session, work, row.user_id, row.grant_id)
        await load_client(session, work, row.client_id)


async def load_for_token_request(
    session: AsyncSession,
    settings: Settings,
    work: Work,
    form: MultiDict[str, str],
    client_id: str | None,
) -> None:
    await load_client(session, work, client_id)
    code = form.get("code")
    if code:
        row = await session.get(OAuthAuthorizationCode, hash_token(code))
        if row is not None:
            work.codes[row.code_hash] = CodeRecord.of(row)
            work.grant_id = row.grant_id
            await load_member(session, work, row.user_id, row.grant_id)
    await load_tokens(session, work, form.get("refresh_token"), lifetimes=settings.sessions)
    key = await get_active_signing_key(session, settings)
    work.signing_key, work.signing_kid = key.key, key.kid


async def load_nonce_use(
    session: AsyncSession, work: Work, client_id: str | None, nonce: str | None
) -> None:
    if not client_id or not nonce:
        return
    found = await session.scalar(
        select(OAuthAuthorizationCode.code_hash).where(
            OAuthAuthorizationCode.client_id == client_id, OAuthAuthorizationCode.nonce == nonce
        )
    )
    if found is not None:
        work.nonces_used.add(nonce)
