"""The authorization server's HTTP endpoints: discovery, JWKS, authorize (with consent for
third parties), token, revocation (RFC 7009), introspection (RFC 7662) and userinfo.

Views are thin: they read the request, load what Authlib may need (a unit of work, see
federation/services/authorization.py), let Authlib answer, apply its writes and commit.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749.errors import InvalidClientError, InvalidRequestError
from authlib.oauth2.rfc6749.util import extract_basic_authorization
from quart import Blueprint, Response, current_app, redirect, render_template, request
from quart import session as browser_session
from sqlalchemy import select
from werkzeug.datastructures import MultiDict

from federation.services.authorization import (
    SUPPORTED_SCOPES,
    CredentialAlreadyUsedError,
    Member,
    QuartOAuth2Request,
    RoseAshAuthorizationServer,
    Work,
    build_user_info,
    do_revoke_grant,
    load_client,
    load_for_token_request,
    load_member,
    load_nonce_use,
    load_tokens,
)
from federation.services.member_session import get_signed_in
from shared.infrastructure.context import get_session, get_settings
from shared.infrastructure.security import csrf_exempt
from shared.models.identity import OAuthConsent, OAuthGrant
from shared.services.identity.signing_keys import get_jwks
from shared.services.identity.sso import hash_token

oauth_bp = Blueprint("oauth", __name__)
SERVER_KEY = "rose_ash_oauth_server"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# In federation's session cookie: which authorization request sent the member to sign in,
# and when (so the sign-in that follows satisfies its prompt=login or max_age).
FRESH_LOGIN_KEY = "oauth_login_asked"
MAX_AGE_DIGITS = 12


def get_server() -> RoseAshAuthorizationServer:
    server = current_app.extensions.get(SERVER_KEY)
    if server is None:
        server = RoseAshAuthorizationServer(issuer=get_settings().url_of("federation"))
        current_app.extensions[SERVER_KEY] = server
    return server  # type: ignore[no-any-return]


def issuer() -> str:
    return get_settings().url_of("federation")


def provider_metadata() -> dict[str, Any]:
    base = issuer()
    return {
        "issuer": base,
        "authorization_endpoint": f"{base}/oauth/authorize",
        "token_endpoint": f"{base}/oauth/token",
        "userinfo_endpoint": f"{base}/oauth/userinfo",
        "jwks_uri": f"{base}/oauth/jwks",
        "revocation_endpoint": f"{base}/oauth/revoke",
        "introspection_endpoint": f"{base}/oauth/introspect",
        "scopes_supported": list(SUPPORTED_SCOPES),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        "revocation_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        "introspection_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
        ],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "prompt_values_supported": ["none", "login", "consent"],
        "claims_supported": [
            "sub",
            "iss",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "at_hash",
            "sid",
            "name",
            "preferred_username",
            "email",
            "email_verified",
        ],
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
    }


@oauth_bp.get("/.well-known/openid-configuration")
@oauth_bp.get("/.well-known/oauth-authorization-server")
async def discovery() -> Response:
    return json_response(provider_metadata(), headers={"Cache-Control": "public, max-age=300"})


@oauth_bp.get("/oauth/jwks")
async def jwks() -> Response:
    keys = await get_jwks(get_session())
    return json_response(keys, headers={"Cache-Control": "public, max-age=300"})


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = Response(json.dumps(body), status=status, mimetype="application/json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def to_response(result: tuple[int, Any, list[tuple[str, str]]]) -> Response:
    status, body, headers = result
    if isinstance(body, dict):
        response = json_response(body, status)
    else:
        response = Response(body or "", status=status)
    for name, value in headers:
        response.headers[name] = value
    return response


def oauth_request(work: Work, form: MultiDict[str, str] | None = None) -> QuartOAuth2Request:
    return QuartOAuth2Request(
        request.method,
        request.url,
        dict(request.headers),
        MultiDict(request.args),
        form if form is not None else MultiDict(),
        work,
    )


# ---------------------------------------------------------------------------------------------
# Authorization endpoint


async def authorization_params(form: MultiDict[str, str] | None) -> MultiDict[str, str]:
    """GET carries the request in the query; the consent form re-posts it as fields."""
    if form is None:
        return MultiDict(request.args)
    return MultiDict({k: v for k, v in form.items() if k not in ("csrf_token", "decision")})


@oauth_bp.route("/oauth/authorize", methods=["GET", "POST"])
async def authorize() -> Response | str | tuple[str, int]:
    form = await request.form if request.method == "POST" else None
    params = await authorization_params(form)
    session = get_session()
    work = Work()
    await load_client(session, work, params.get("client_id"))
    await load_nonce_use(session, work, params.get("client_id"), params.get("nonce"))
    signed_in = await get_signed_in()
    member: Member | None = None
    if signed_in is not None:
        await load_member(session, work, signed_in.user.id)
        member = replace(
            work.members[signed_in.user.id],
            sso_session_id=signed_in.session.id,
            auth_time=int(signed_in.session.auth_time.timestamp()),
        )
    oauth = QuartOAuth2Request("GET", request.url, dict(request.headers), params, MultiDict(), work)
    server = get_server()
    try:
        grant = server.get_consent_grant(oauth, end_user=member)
    except OAuth2Error as error:
        return await authorization_error(server, oauth, error)

    try:
        max_age = read_max_age(params)
    except InvalidRequestError as error:
        return await authorization_error(server, oauth, error)
    if member is not None and check_fresh_login_needed(params, member, max_age):
        if "none" in prompt_values(params):
            error = interaction_required(
                params,
                "login_required",
                "The member must sign in again, which prompt=none does not allow",
            )
            return await authorization_error(server, oauth, error)
        member = None
    if member is None:
        # Not signed in here (or not recently enough): sign in first, then come back to this
        # very request.
        return redirect_to_login(params)

    client = oauth.client
    scope = oauth.scope or ""
    if not client.first_party and not await check_consented(member.id, client.client_id, scope):
        if "none" in prompt_values(params):
            error = interaction_required(
                params, "consent_required", "The member has not consented to this client yet"
            )
            return await authorization_error(server, oauth, error)
        decision = form.get("decision") if form is not None else None
        if decision is None:
            return await render_template(
                "consent.html", client=client, scope=scope.split(), params=params.items(multi=True)
            )
        if decision != "allow":
            return to_response(server.create_authorization_response(oauth, None, grant))
        session.add(OAuthConsent(user_id=member.id, client_id=client.client_id, scope=scope))

    browser_session.pop(FRESH_LOGIN_KEY, None)  # that sign-in served its request
    work.grant_id = await do_find_or_create_grant(member, client.client_id, scope)
    result = server.create_authorization_response(oauth, grant_user=member, grant=grant)
    await work.apply(session)
    return to_response(result)


def prompt_values(params: MultiDict[str, str]) -> set[str]:
    return set((params.get("prompt") or "").split())


def read_max_age(params: MultiDict[str, str]) -> int | None:
    """The request's max_age (OIDC Core 3.1.2.1): whole seconds, or None when not asked."""
    raw = params.get("max_age")
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > MAX_AGE_DIGITS:
        raise InvalidRequestError(
            "max_age must be a whole number of seconds", redirect_uri=params.get("redirect_uri")
        )
    return int(raw)


def interaction_required(
    params: MultiDict[str, str], code: str, description: str
) -> InvalidRequestError:
    """An OIDC error that prompt=none answers instead of showing a page (``login_required``,
    ``consent_required``), sent back to the client's redirect URI."""
    error = InvalidRequestError(redirect_uri=params.get("redirect_uri"))
    error.error = code
    error.description = description
    return error


def request_digest(params: MultiDict[str, str]) -> str:
    return hashlib.sha256(urlencode(sorted(params.items(multi=True))).encode()).hexdigest()


def check_fresh_login_needed(
    params: MultiDict[str, str], member: Member, max_age: int | None
) -> bool:
    """Whether the member must sign in again for this request: it asks prompt=login, or its
    max_age is shorter than the time since the member's last sign-in (OIDC Core 3.1.2.1), and
    the member has not signed in since federation sent them to sign in for this very request."""
    too_old = max_age is not None and int(time.time()) - member.auth_time > max_age
    if "login" not in prompt_values(params) and not too_old:
        return False
    asked = browser_session.get(FRESH_LOGIN_KEY)
    if not isinstance(asked, dict) or asked.get("request") != request_digest(params):
        return True
    asked_at = asked.get("at")
    return not isinstance(asked_at, int) or member.auth_time < asked_at


def redirect_to_login(params: MultiDict[str, str]) -> Response:
    if "login" in prompt_values(params) or params.get("max_age"):
        asked = {"request": request_digest(params), "at": int(time.time())}
        browser_session[FRESH_LOGIN_KEY] = asked
    return redirect("/login?" + urlencode({"next": "/oauth/authorize?" + urlencode(params)}))


async def authorization_error(
    server: RoseAshAuthorizationServer, oauth: QuartOAuth2Request, error: OAuth2Error
) -> Response | tuple[str, int]:
    """Errors go back to the client only when its redirect URI was validated; an unknown
    client or a wrong redirect URI gets a page here (never an open redirect)."""
    if isinstance(error, InvalidClientError) or not error.redirect_uri:
        return await render_template(
            "oauth_error.html", error=error.error, description=error.description
        ), 400
    error.state = oauth.payload.state
    return to_response(server.handle_error_response(oauth, error))


async def check_consented(user_id: int, client_id: str, scope: str) -> bool:
    consent = await get_session().get(OAuthConsent, (user_id, client_id))
    return consent is not None and set(scope.split()) <= set(consent.scope.split())


async def do_find_or_create_grant(member: Member, client_id: str, scope: str) -> int:
    """One grant per app per device: reuse the active one of this SSO session."""
    session = get_session()
    existing = await session.scalar(
        select(OAuthGrant).where(
            OAuthGrant.user_id == member.id,
            OAuthGrant.client_id == client_id,
            OAuthGrant.sso_session_id == member.sso_session_id,
            OAuthGrant.revoked_at.is_(None),
        )
    )
    if existing is not None:
        existing.scope = " ".join(sorted(set(existing.scope.split()) | set(scope.split())))
        return existing.id
    grant = OAuthGrant(
        user_id=member.id, client_id=client_id, sso_session_id=member.sso_session_id, scope=scope
    )
    session.add(grant)
    await session.flush()
    return grant.id


# ---------------------------------------------------------------------------------------------
# Token, revocation, introspection, userinfo


async def read_client_id(form: MultiDict[str, str]) -> str | None:
    basic_id, _ = extract_basic_authorization(dict(request.headers))
    return basic_id or form.get("client_id")


@oauth_bp.post("/oauth/token")
@csrf_exempt
async def token() -> Response:
    form = MultiDict(await request.form)
    session = get_session()
    work = Work()
    await load_for_token_request(session, get_settings(), work, form, await read_client_id(form))
    result = get_server().create_token_response(oauth_request(work, form))
    try:
        await work.apply(session)
    except CredentialAlreadyUsedError as race:
        # A concurrent request used the same code or refresh token first: a replay. The
        # failed write was this request's first, so there is nothing of it to undo.
        await do_revoke_grant(session, race.grant_id, race.reason)
        await session.commit()
        return json_response({"error": "invalid_grant"}, 400, NO_STORE)
    # Commit also when Authlib refused: a replayed code or reused refresh token has just
    # revoked its grant, and that must stick.
    await session.commit()
    response = to_response(result)
    response.headers.update(NO_STORE)
    return response


async def token_endpoint(name: str) -> Response:
    form = MultiDict(await request.form)
    session = get_session()
    work = Work()
    await load_client(session, work, await read_client_id(form))
    await load_tokens(session, work, form.get("token"), lifetimes=get_settings().sessions)
    result = get_server().create_endpoint_response(name, oauth_request(work, form))
    await work.apply(session)
    await session.commit()
    response = to_response(result)
    response.headers.update(NO_STORE)
    return response


@oauth_bp.post("/oauth/revoke")
@csrf_exempt
async def revoke() -> Response:
    return await token_endpoint("revocation")


@oauth_bp.post("/oauth/introspect")
@csrf_exempt
async def introspect() -> Response:
    return await token_endpoint("introspection")


@oauth_bp.route("/oauth/userinfo", methods=["GET", "POST"])
@csrf_exempt
async def userinfo() -> Response:
    kind, _, value = request.headers.get("Authorization", "").partition(" ")
    work = Work()
    if kind.lower() == "bearer" and value:
        await load_tokens(get_session(), work, value, lifetimes=get_settings().sessions)
    record = work.tokens.get(hash_token(value)) if value else None
    if (
        record is None
        or record.named != "access_token"
        or record.is_revoked()
        or record.access_expires_at <= datetime.now(UTC)
    ):
        return json_response(
            {"error": "invalid_token"},
            401,
            {"WWW-Authenticate": 'Bearer error="invalid_token"', **NO_STORE},
        )
    member = work.members[record.user_id]
    return json_response(dict(build_user_info(member, record.scope)), headers=NO_STORE)
