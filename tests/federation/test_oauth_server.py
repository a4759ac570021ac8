"""The authorization server: the flows a client relies on, and the attacks it must refuse."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core.grants.util import create_half_hash
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from federation.app import create_app
from federation.bp import oauth as oauth_views
from federation.services.member_session import SSO_COOKIE
from shared.config import Settings
from shared.models.identity import OAuthAuthorizationCode, OAuthClient, OAuthGrant, SsoSession
from shared.services.identity.accounts import SqlAccountService
from shared.services.identity.oauth_clients import first_party_client_secret, hash_secret
from shared.services.identity.sso import SqlSsoService
from shared.services.identity.users import SqlUserService
from tests.conftest import ClientMaker, QuartClient

ISSUER = "http://federation.localhost"
BLOG_CALLBACK = "http://blog.localhost/auth/callback"
MARKET_CALLBACK = "http://market.localhost/auth/callback"
EVENTS_CALLBACK = "http://events.localhost/auth/callback"
THIRD_PARTY_ID = "garden-planner"
THIRD_PARTY_SECRET = "a-third-party-secret-of-some-length"
THIRD_PARTY_CALLBACK = "https://garden.example/callback"


@dataclass
class Flow:
    client: QuartClient
    user_id: int
    sso_session_id: int
    settings: Settings

    def basic(self, client_id: str = "blog", secret: str | None = None) -> dict[str, str]:
        secret = secret or first_party_client_secret(self.settings, client_id)
        raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        return {"Authorization": f"Basic {raw}"}


@pytest.fixture
async def flow(make_client: ClientMaker, session: AsyncSession, settings: Settings) -> Flow:
    # Federation syncs the six first-party clients itself when it starts (committed for
    # real, idempotent); the third party exists only inside this test's transaction.
    session.add(
        OAuthClient(
            client_id=THIRD_PARTY_ID,
            client_secret_hash=hash_secret(THIRD_PARTY_SECRET),
            name="Garden Planner",
            redirect_uris=[THIRD_PARTY_CALLBACK],
            first_party=False,
        )
    )
    client = await make_client(create_app)
    member = await SqlUserService(session).create_user(
        "ada@example.org", username="ada", display_name="Ada Hartley"
    )
    started = await SqlSsoService(session).do_start_session(member.id, user_agent="test")
    await session.commit()
    client.set_cookie("localhost", SSO_COOKIE, started.token)
    return Flow(client, member.id, started.session.id, settings)


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, create_s256_code_challenge(verifier)


def authorize_query(challenge: str, **overrides: str) -> str:
    params = {
        "response_type": "code",
        "client_id": "blog",
        "redirect_uri": BLOG_CALLBACK,
        "scope": "openid profile email",
        "state": "state-123",
        "nonce": secrets.token_urlsafe(12),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    params.update(overrides)
    return "/oauth/authorize?" + urlencode({k: v for k, v in params.items() if v != ""})


def redirect_params(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def get_code(
    flow: Flow, verifier_challenge: tuple[str, str] | None = None, **extra: str
) -> tuple[str, str, str]:
    verifier, challenge = verifier_challenge or pkce()
    nonce = extra.pop("nonce", secrets.token_urlsafe(12))
    response = await flow.client.get(authorize_query(challenge, nonce=nonce, **extra))
    assert response.status_code == 302, await response.get_data(as_text=True)
    location = response.headers["Location"]
    assert location.startswith(BLOG_CALLBACK + "?")
    params = redirect_params(location)
    assert params["state"] == "state-123"
    return params["code"], verifier, nonce


async def exchange(flow: Flow, code: str, verifier: str, **form: str) -> Any:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": BLOG_CALLBACK,
        "code_verifier": verifier,
        **form,
    }
    return await flow.client.post("/oauth/token", form=data, headers=flow.basic())


async def tokens_for(flow: Flow) -> dict[str, Any]:
    code, verifier, _ = await get_code(flow)
    response = await exchange(flow, code, verifier)
    assert response.status_code == 200, await response.get_data(as_text=True)
    body: dict[str, Any] = await response.get_json()
    return body


async def test_discovery_document_lists_the_endpoints_and_rules(flow: Flow) -> None:
    metadata = await (await flow.client.get("/.well-known/openid-configuration")).get_json()
    assert metadata["issuer"] == ISSUER
    assert metadata["authorization_endpoint"] == f"{ISSUER}/oauth/authorize"
    assert metadata["token_endpoint"] == f"{ISSUER}/oauth/token"
    assert metadata["jwks_uri"] == f"{ISSUER}/oauth/jwks"
    assert metadata["revocation_endpoint"] == f"{ISSUER}/oauth/revoke"
    assert metadata["introspection_endpoint"] == f"{ISSUER}/oauth/introspect"
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["response_types_supported"] == ["code"]
    assert metadata["grant_types_supported"] == ["authorization_code", "refresh_token"]
    rfc8414 = await (await flow.client.get("/.well-known/oauth-authorization-server")).get_json()
    assert rfc8414 == metadata


async def test_jwks_publishes_public_keys_with_kid(flow: Flow) -> None:
    keys = (await (await flow.client.get("/oauth/jwks")).get_json())["keys"]
    assert keys
    for key in keys:
        assert key["kty"] == "RSA"
        assert key["kid"]
        assert key["alg"] == "RS256"
        assert "d" not in key
        assert "p" not in key


async def test_code_flow_issues_tokens_and_a_valid_id_token(flow: Flow) -> None:
    code, verifier, nonce = await get_code(flow)
    response = await exchange(flow, code, verifier)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.get_json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["refresh_token"]
    jwks = KeySet.import_key_set(await (await flow.client.get("/oauth/jwks")).get_json())
    decoded = jwt.decode(body["id_token"], jwks, algorithms=["RS256"])
    claims = decoded.claims
    assert decoded.header["kid"]
    assert claims["iss"] == ISSUER
    assert claims["sub"] == str(flow.user_id)
    assert claims["aud"] == ["blog"]
    assert claims["nonce"] == nonce
    assert claims["exp"] > claims["iat"] >= claims["auth_time"] - 5
    assert claims["at_hash"] == create_half_hash(body["access_token"], "RS256").decode()
    assert claims["sid"] == str(flow.sso_session_id)
    assert isinstance(claims["grant_id"], int)
    assert claims["email"] == "ada@example.org"
    assert claims["preferred_username"] == "ada"

    info = await flow.client.get(
        "/oauth/userinfo", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert await info.get_json() == {
        "sub": str(flow.user_id),
        "name": "Ada Hartley",
        "preferred_username": "ada",
        "email": "ada@example.org",
        "email_verified": False,
    }


async def test_visitor_who_is_not_signed_in_is_sent_to_sign_in(flow: Flow) -> None:
    flow.client.delete_cookie("localhost", SSO_COOKIE)
    query = authorize_query(pkce()[1])
    response = await flow.client.get(query)
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith("/login?next=")
    assert redirect_params(location)["next"].startswith("/oauth/authorize?")


async def test_prompt_none_answers_login_required_without_ui(flow: Flow) -> None:
    flow.client.delete_cookie("localhost", SSO_COOKIE)
    response = await flow.client.get(authorize_query(pkce()[1], prompt="none"))
    assert response.status_code == 302
    params = redirect_params(response.headers["Location"])
    assert response.headers["Location"].startswith(BLOG_CALLBACK)
    assert params["error"] == "login_required"
    assert params["state"] == "state-123"


async def test_prompt_none_signs_in_silently_when_signed_in(flow: Flow) -> None:
    code, verifier, _ = await get_code(flow, prompt="none")
    assert (await exchange(flow, code, verifier)).status_code == 200


async def test_replayed_code_is_refused_and_revokes_what_it_issued(
    flow: Flow, session: AsyncSession
) -> None:
    code, verifier, _ = await get_code(flow)
    first = await (await exchange(flow, code, verifier)).get_json()
    replay = await exchange(flow, code, verifier)
    assert replay.status_code == 400
    assert (await replay.get_json())["error"] == "invalid_grant"
    info = await flow.client.get(
        "/oauth/userinfo", headers={"Authorization": f"Bearer {first['access_token']}"}
    )
    assert info.status_code == 401
    refreshed = await flow.client.post(
        "/oauth/token",
        form={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
        headers=flow.basic(),
    )
    assert refreshed.status_code == 400


async def test_interleaved_requests_do_not_read_each_others_work(
    flow: Flow, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One Authlib server serves every request and reads clients without being given the
    request: a flow waiting between consent and its response must still see its own client,
    whatever other requests (another flow, anonymous visitors) ran meanwhile."""
    paused, release = asyncio.Event(), asyncio.Event()
    find_or_create_grant = oauth_views.do_find_or_create_grant

    async def pause_the_blog_flow(member: Any, client_id: str, scope: str) -> int:
        if client_id == "blog":
            paused.set()
            await release.wait()
        return await find_or_create_grant(member, client_id, scope)

    monkeypatch.setattr(oauth_views, "do_find_or_create_grant", pause_the_blog_flow)
    verifier, challenge = pkce()
    blog = asyncio.create_task(flow.client.get(authorize_query(challenge)))
    await asyncio.wait_for(paused.wait(), 10)

    market = await flow.client.get(
        authorize_query(pkce()[1], client_id="market", redirect_uri=MARKET_CALLBACK)
    )
    assert market.headers["Location"].startswith(MARKET_CALLBACK + "?code=")
    visitor = flow.client.app.test_client()  # no SSO cookie
    anonymous = await visitor.get(
        authorize_query(pkce()[1], client_id="events", redirect_uri=EVENTS_CALLBACK)
    )
    assert anonymous.headers["Location"].startswith("/login?")
    unknown = await visitor.get(authorize_query(pkce()[1], client_id="no-such-client"))
    assert unknown.status_code == 400
    release.set()

    response = await asyncio.wait_for(blog, 10)
    assert response.status_code == 302, await response.get_data(as_text=True)
    params = redirect_params(response.headers["Location"])
    assert response.headers["Location"].startswith(BLOG_CALLBACK + "?")
    assert (await exchange(flow, params["code"], verifier)).status_code == 200


async def test_pkce_is_required(flow: Flow) -> None:
    response = await flow.client.get(authorize_query("", code_challenge_method=""))
    params = redirect_params(response.headers["Location"])
    assert params["error"] == "invalid_request"
    assert "PKCE is required" in params["error_description"]


async def test_pkce_plain_is_refused(flow: Flow) -> None:
    verifier = secrets.token_urlsafe(48)
    response = await flow.client.get(authorize_query(verifier, code_challenge_method="plain"))
    params = redirect_params(response.headers["Location"])
    assert params["error"] == "invalid_request"
    assert "S256" in params["error_description"]


async def test_wrong_code_verifier_is_refused(flow: Flow) -> None:
    code, _, _ = await get_code(flow)
    response = await exchange(flow, code, secrets.token_urlsafe(48))
    assert response.status_code == 400
    assert (await response.get_json())["error"] == "invalid_grant"


async def test_missing_code_verifier_is_refused(flow: Flow) -> None:
    code, _, _ = await get_code(flow)
    response = await flow.client.post(
        "/oauth/token",
        form={"grant_type": "authorization_code", "code": code, "redirect_uri": BLOG_CALLBACK},
        headers=flow.basic(),
    )
    assert response.status_code == 400


@pytest.mark.parametrize(
    "redirect_uri",
    [
        BLOG_CALLBACK + "/",
        BLOG_CALLBACK.replace("callback", "callbacc"),
        BLOG_CALLBACK.replace("http://", "https://"),
        "http://evil.example/auth/callback",
    ],
)
async def test_redirect_uri_must_match_exactly(flow: Flow, redirect_uri: str) -> None:
    response = await flow.client.get(authorize_query(pkce()[1], redirect_uri=redirect_uri))
    assert response.status_code == 400
    assert "Location" not in response.headers  # never redirect to an unregistered URI
    assert "cannot be accepted" in await response.get_data(as_text=True)


async def test_token_request_with_another_redirect_uri_is_refused(flow: Flow) -> None:
    code, verifier, _ = await get_code(flow)
    response = await exchange(flow, code, verifier, redirect_uri=BLOG_CALLBACK + "x")
    assert response.status_code == 400


async def test_code_expires_after_60_seconds(flow: Flow, session: AsyncSession) -> None:
    code, verifier, _ = await get_code(flow)
    await session.execute(
        update(OAuthAuthorizationCode).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    )
    response = await exchange(flow, code, verifier)
    assert response.status_code == 400
    assert (await response.get_json())["error"] == "invalid_grant"


async def test_codes_are_stored_hashed_and_live_60_seconds(
    flow: Flow, session: AsyncSession
) -> None:
    code, _, _ = await get_code(flow)
    row = await session.get(OAuthAuthorizationCode, code)
    assert row is None  # the code itself is nowhere in the database
    stored = (await session.execute(OAuthAuthorizationCode.__table__.select())).mappings().all()
    assert len(stored) == 1
    lifetime = stored[0]["expires_at"] - stored[0]["created_at"]
    assert timedelta(seconds=55) <= lifetime <= timedelta(seconds=61)


async def test_wrong_client_secret_is_refused(flow: Flow) -> None:
    code, verifier, _ = await get_code(flow)
    response = await flow.client.post(
        "/oauth/token",
        form={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": BLOG_CALLBACK,
            "code_verifier": verifier,
        },
        headers=flow.basic(secret="not-the-secret"),
    )
    assert response.status_code == 401
    assert (await response.get_json())["error"] == "invalid_client"


async def test_another_client_cannot_redeem_the_code(flow: Flow) -> None:
    code, verifier, _ = await get_code(flow)
    response = await flow.client.post(
        "/oauth/token",
        form={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": BLOG_CALLBACK,
            "code_verifier": verifier,
        },
        headers=flow.basic("market"),
    )
    assert response.status_code == 400
    assert (await response.get_json())["error"] == "invalid_grant"


async def refresh(flow: Flow, refresh_token: str) -> Any:
    return await flow.client.post(
        "/oauth/token",
        form={"grant_type": "refresh_token", "refresh_token": refresh_token},
        headers=flow.basic(),
    )


async def test_refresh_rotates_the_refresh_token(flow: Flow) -> None:
    first = await tokens_for(flow)
    response = await refresh(flow, first["refresh_token"])
    assert response.status_code == 200
    second = await response.get_json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    again = await refresh(flow, second["refresh_token"])
    assert again.status_code == 200


@pytest.mark.parametrize("aged", ["last_seen_at", "created_at"])
async def test_tokens_end_with_a_device_sign_in_past_its_lifetime(
    flow: Flow, session: AsyncSession, aged: str
) -> None:
    """A client's refresh token cannot outlive the SSO session it was granted under: once
    that session is past its idle (or absolute) lifetime, refresh is invalid_grant and the
    access token no longer reads userinfo."""
    first = await tokens_for(flow)
    lifetimes = flow.settings.sessions
    seconds = max(lifetimes.idle_lifetime_seconds, lifetimes.absolute_lifetime_seconds) + 60
    await session.execute(
        update(SsoSession)
        .where(SsoSession.id == flow.sso_session_id)
        .values({aged: datetime.now(UTC) - timedelta(seconds=seconds)})
    )
    await session.commit()
    response = await refresh(flow, first["refresh_token"])
    assert response.status_code == 400
    assert (await response.get_json())["error"] == "invalid_grant"
    info = await flow.client.get(
        "/oauth/userinfo", headers={"Authorization": f"Bearer {first['access_token']}"}
    )
    assert info.status_code == 401


async def test_reused_refresh_token_revokes_the_whole_grant(
    flow: Flow, session: AsyncSession
) -> None:
    first = await tokens_for(flow)
    second = await (await refresh(flow, first["refresh_token"])).get_json()
    reuse = await refresh(flow, first["refresh_token"])
    assert reuse.status_code == 400
    assert (await reuse.get_json())["error"] == "invalid_grant"
    # the thief's reuse also ends the legitimate holder's newer tokens
    assert (await refresh(flow, second["refresh_token"])).status_code == 400
    info = await flow.client.get(
        "/oauth/userinfo", headers={"Authorization": f"Bearer {second['access_token']}"}
    )
    assert info.status_code == 401
    grant = await session.get(OAuthGrant, flow_grant_id(first))
    assert grant is not None
    await session.refresh(grant)
    assert grant.revoked_at is not None
    assert grant.revoked_reason == "refresh token reused"


def pause_the_first_token_request_after_loading(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """Make the next token request wait after it has loaded its code or refresh token (and
    before it writes anything) until `release` is set; `paused` is set when it waits."""
    paused, release = asyncio.Event(), asyncio.Event()
    load = oauth_views.load_for_token_request

    async def load_then_pause(*args: Any) -> None:
        await load(*args)
        if not paused.is_set():
            paused.set()
            await release.wait()

    monkeypatch.setattr(oauth_views, "load_for_token_request", load_then_pause)
    return paused, release


async def test_concurrent_uses_of_one_refresh_token_revoke_the_grant(
    flow: Flow, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two requests that both loaded the refresh token unused: only one may rotate it; the
    other is a reuse, and ends the grant with the winner's new tokens."""
    first = await tokens_for(flow)
    paused, release = pause_the_first_token_request_after_loading(monkeypatch)
    slow = asyncio.create_task(refresh(flow, first["refresh_token"]))
    await asyncio.wait_for(paused.wait(), 10)
    fast = await refresh(flow, first["refresh_token"])
    release.set()
    late = await asyncio.wait_for(slow, 10)

    assert fast.status_code == 200
    assert late.status_code == 400
    assert (await late.get_json())["error"] == "invalid_grant"
    winner = await fast.get_json()
    assert (await refresh(flow, winner["refresh_token"])).status_code == 400
    info = await flow.client.get(
        "/oauth/userinfo", headers={"Authorization": f"Bearer {winner['access_token']}"}
    )
    assert info.status_code == 401
    grant = await session.get(OAuthGrant, flow_grant_id(first))
    assert grant is not None
    await session.refresh(grant)
    assert grant.revoked_at is not None
    assert grant.revoked_reason == "refresh token reused"


async def test_concurrent_redemptions_of_one_code_revoke_the_grant(
    flow: Flow, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, verifier, _ = await get_code(flow)
    paused, release = pause_the_first_token_request_after_loading(monkeypatch)
    slow = asyncio.create_task(exchange(flow, code, verifier))
    await asyncio.wait_for(paused.wait(), 10)
    fast = await exchange(flow, code, verifier)
    release.set()
    late = await asyncio.wait_for(slow, 10)

    assert fast.status_code == 200
    assert late.status_code == 400
    assert (await late.get_json())["error"] == "invalid_grant"
    winner = await fast.get_json()
    info = await flow.client.get(
        "/oauth/userinfo", headers={"Authorization": f"Bearer {winner['access_token']}"}
    )
    assert info.status_code == 401
    grant = await session.get(OAuthGrant, flow_grant_id(winner))
    assert grant is not None
    await session.refresh(grant)
    assert grant.revoked_reason == "authorization code replayed"


async def test_refresh_is_refused_when_the_grant_ends_while_it_runs(
    flow: Flow, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await tokens_for(flow)
    paused, release = pause_the_first_token_request_after_loading(monkeypatch)
    pending = asyncio.create_task(refresh(flow, first["refresh_token"]))
    await asyncio.wait_for(paused.wait(), 10)
    await SqlSsoService(session).do_sign_out_device(flow.sso_session_id, reason="signed out")
    await session.commit()
    release.set()
    response = await asyncio.wait_for(pending, 10)
    assert response.status_code == 400
    assert (await response.get_json())["error"] == "invalid_grant"


def flow_grant_id(tokens: dict[str, Any]) -> int:
    """The grant id claim of an id_token (its signature is checked in another test)."""
    payload = tokens["id_token"].split(".")[1]
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return int(decoded["grant_id"])


async def test_revoking_an_access_token(flow: Flow) -> None:
    tokens = await tokens_for(flow)
    response = await flow.client.post(
        "/oauth/revoke", form={"token": tokens["access_token"]}, headers=flow.basic()
    )
    assert response.status_code == 200
    info = await flow.client.get(
        "/oauth/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert info.status_code == 401


async def test_revoking_a_refresh_token_ends_the_grant(flow: Flow) -> None:
    tokens = await tokens_for(flow)
    response = await flow.client.post(
        "/oauth/revoke",
        form={"token": tokens["refresh_token"], "token_type_hint": "refresh_token"},
        headers=flow.basic(),
    )
    assert response.status_code == 200
    assert (await refresh(flow, tokens["refresh_token"])).status_code == 400
    info = await flow.client.get(
        "/oauth/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert info.status_code == 401


async def test_revocation_of_an_unknown_token_still_answers_200(flow: Flow) -> None:
    response = await flow.client.post(
        "/oauth/revoke", form={"token": "never-issued"}, headers=flow.basic()
    )
    assert response.status_code == 200


async def test_introspection_needs_client_authentication(flow: Flow) -> None:
    tokens = await tokens_for(flow)
    anonymous = await flow.client.post("/oauth/introspect", form={"token": tokens["access_token"]})
    assert anonymous.status_code == 401
    response = await flow.client.post(
        "/oauth/introspect", form={"token": tokens["access_token"]}, headers=flow.basic()
    )
    body = await response.get_json()
    assert body["active"] is True
    assert body["client_id"] == "blog"
    assert body["sub"] == str(flow.user_id)
    assert body["username"] == "ada"
    assert body["iss"] == ISSUER
    await flow.client.post(
        "/oauth/revoke", form={"token": tokens["access_token"]}, headers=flow.basic()
    )
    after = await flow.client.post(
        "/oauth/introspect", form={"token": tokens["access_token"]}, headers=flow.basic()
    )
    assert await after.get_json() == {"active": False}


async def test_signing_out_the_device_revokes_its_tokens(flow: Flow, session: AsyncSession) -> None:
    tokens = await tokens_for(flow)
    await SqlSsoService(session).do_sign_out_device(flow.sso_session_id, reason="signed out")
    info = await flow.client.get(
        "/oauth/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert info.status_code == 401
    assert (await refresh(flow, tokens["refresh_token"])).status_code == 400


# Third-party clients get a consent screen; first-party apps never do.


def third_party_query(challenge: str, **extra: str) -> str:
    return authorize_query(
        challenge, client_id=THIRD_PARTY_ID, redirect_uri=THIRD_PARTY_CALLBACK, **extra
    )


async def test_third_party_client_shows_a_consent_screen(flow: Flow) -> None:
    response = await flow.client.get(third_party_query(pkce()[1]))
    assert response.status_code == 200
    page = await response.get_data(as_text=True)
    assert "Allow Garden Planner to use your Rose Ash account?" in page
    assert "see your email address" in page


async def test_third_party_prompt_none_answers_consent_required(flow: Flow) -> None:
    response = await flow.client.get(third_party_query(pkce()[1], prompt="none"))
    params = redirect_params(response.headers["Location"])
    assert response.headers["Location"].startswith(THIRD_PARTY_CALLBACK)
    assert params["error"] == "consent_required"


async def consent(flow: Flow, decision: str, challenge: str) -> Any:
    page = await flow.client.get("/oauth/jwks")  # any page: gives this visitor a CSRF token
    assert page.status_code == 200
    form_page = await (await flow.client.get(third_party_query(challenge))).get_data(as_text=True)
    token = form_page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    fields = parse_qs(urlsplit(third_party_query(challenge, nonce="n-1")).query)
    data = {key: values[0] for key, values in fields.items()}
    return await flow.client.post(
        "/oauth/authorize", form={**data, "csrf_token": token, "decision": decision}
    )


async def test_consent_allowed_issues_a_code_and_is_remembered(flow: Flow) -> None:
    response = await consent(flow, "allow", pkce()[1])
    assert response.status_code == 302
    assert "code" in redirect_params(response.headers["Location"])
    again = await flow.client.get(third_party_query(pkce()[1], prompt="none"))
    assert "code" in redirect_params(again.headers["Location"])


async def test_consent_denied_answers_access_denied(flow: Flow) -> None:
    response = await consent(flow, "deny", pkce()[1])
    params = redirect_params(response.headers["Location"])
    assert params["error"] == "access_denied"


async def test_consent_form_without_csrf_token_is_refused(flow: Flow) -> None:
    fields = parse_qs(urlsplit(third_party_query(pkce()[1])).query)
    data = {key: values[0] for key, values in fields.items()}
    response = await flow.client.post("/oauth/authorize", form={**data, "decision": "allow"})
    assert response.status_code == 403


# prompt=login and max_age (OIDC Core 3.1.2.1): a sign-in recent enough, else a fresh one.

PASSWORD = "correct horse battery staple"


async def id_token_claims(flow: Flow, location: str, verifier: str) -> dict[str, Any]:
    code = redirect_params(location)["code"]
    body = await (await exchange(flow, code, verifier)).get_json()
    jwks = KeySet.import_key_set(await (await flow.client.get("/oauth/jwks")).get_json())
    return dict(jwt.decode(body["id_token"], jwks, algorithms=["RS256"]).claims)


async def sign_in_again(flow: Flow, session: AsyncSession, next_url: str) -> str:
    """The member signs in again with their password on the login page; where it goes next."""
    await SqlAccountService(session).do_set_password(flow.user_id, PASSWORD)
    await session.commit()
    page = await (await flow.client.get("/login")).get_data(as_text=True)
    token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    form = {"email": "ada@example.org", "password": PASSWORD, "next": next_url}
    done = await flow.client.post("/login/password", form={**form, "csrf_token": token})
    assert done.status_code == 303, await done.get_data(as_text=True)
    return str(done.headers["Location"])


async def set_auth_time(session: AsyncSession, flow: Flow, age: timedelta) -> datetime:
    auth_time = datetime.now(UTC) - age
    await session.execute(
        update(SsoSession).where(SsoSession.id == flow.sso_session_id).values(auth_time=auth_time)
    )
    await session.commit()
    return auth_time


async def test_prompt_login_makes_a_signed_in_member_sign_in_again(
    flow: Flow, session: AsyncSession
) -> None:
    old = await set_auth_time(session, flow, timedelta(hours=1))
    verifier, challenge = pkce()
    query = authorize_query(challenge, prompt="login")
    response = await flow.client.get(query)
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith("/login?next=")  # not a code, though the session is live
    next_url = redirect_params(location)["next"]
    assert next_url == query  # back to this very request afterwards
    # Coming back without signing in ("Continue as Ada") is sent to sign in again.
    again = await flow.client.get(next_url)
    assert again.headers["Location"].startswith("/login?next=")
    assert await sign_in_again(flow, session, next_url) == next_url
    issued = await flow.client.get(next_url)
    assert issued.headers["Location"].startswith(BLOG_CALLBACK + "?")
    claims = await id_token_claims(flow, issued.headers["Location"], verifier)
    assert claims["auth_time"] > old.timestamp() + 60  # the new sign-in, on the same device
    assert claims["sid"] == str(flow.sso_session_id)
    # That sign-in satisfied that request; a new prompt=login asks again.
    fresh = await flow.client.get(authorize_query(pkce()[1], prompt="login"))
    assert fresh.headers["Location"].startswith("/login?next=")


async def test_max_age_asks_for_a_sign_in_newer_than_it(flow: Flow, session: AsyncSession) -> None:
    old = await set_auth_time(session, flow, timedelta(hours=2))
    verifier, challenge = pkce()
    recent_enough = await flow.client.get(authorize_query(challenge, max_age="86400"))
    claims = await id_token_claims(flow, recent_enough.headers["Location"], verifier)
    assert claims["auth_time"] == int(old.timestamp())  # auth_time, as max_age was asked

    verifier, challenge = pkce()
    query = authorize_query(challenge, max_age="3600")
    too_old = await flow.client.get(query)
    assert too_old.headers["Location"].startswith("/login?next=")
    next_url = redirect_params(too_old.headers["Location"])["next"]
    assert await sign_in_again(flow, session, next_url) == next_url
    issued = await flow.client.get(next_url)
    claims = await id_token_claims(flow, issued.headers["Location"], verifier)
    assert claims["auth_time"] >= int(datetime.now(UTC).timestamp()) - 60


async def test_max_age_zero_after_signing_in_does_not_loop(
    flow: Flow, session: AsyncSession
) -> None:
    await set_auth_time(session, flow, timedelta(seconds=5))
    verifier, challenge = pkce()
    response = await flow.client.get(authorize_query(challenge, max_age="0"))
    next_url = redirect_params(response.headers["Location"])["next"]
    await sign_in_again(flow, session, next_url)
    issued = await flow.client.get(next_url)
    assert issued.headers["Location"].startswith(BLOG_CALLBACK + "?")
    assert "auth_time" in await id_token_claims(flow, issued.headers["Location"], verifier)


async def test_prompt_none_with_a_sign_in_older_than_max_age_answers_login_required(
    flow: Flow, session: AsyncSession
) -> None:
    await set_auth_time(session, flow, timedelta(hours=2))
    response = await flow.client.get(authorize_query(pkce()[1], prompt="none", max_age="60"))
    assert response.headers["Location"].startswith(BLOG_CALLBACK + "?")
    params = redirect_params(response.headers["Location"])
    assert params["error"] == "login_required"
    assert params["state"] == "state-123"


@pytest.mark.parametrize("max_age", ["-1", "soon", "1.5", "9" * 40])
async def test_max_age_that_is_not_whole_seconds_is_invalid(flow: Flow, max_age: str) -> None:
    response = await flow.client.get(authorize_query(pkce()[1], max_age=max_age))
    assert response.status_code == 302
    assert redirect_params(response.headers["Location"])["error"] == "invalid_request"


async def test_prompt_login_then_consent_issues_a_code(flow: Flow, session: AsyncSession) -> None:
    await set_auth_time(session, flow, timedelta(hours=1))
    query = third_party_query(pkce()[1], prompt="login")
    response = await flow.client.get(query)
    next_url = redirect_params(response.headers["Location"])["next"]
    await sign_in_again(flow, session, next_url)
    form_page = await flow.client.get(next_url)
    assert form_page.status_code == 200  # the consent screen, not the login page again
    page = await form_page.get_data(as_text=True)
    token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    fields = {key: values[0] for key, values in parse_qs(urlsplit(next_url).query).items()}
    allowed = await flow.client.post(
        "/oauth/authorize", form={**fields, "csrf_token": token, "decision": "allow"}
    )
    assert allowed.headers["Location"].startswith(THIRD_PARTY_CALLBACK + "?")
    assert "code" in redirect_params(allowed.headers["Location"])
