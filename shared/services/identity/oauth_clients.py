"""OAuth clients: the six apps as first-party confidential clients, seeded from config.

A first-party client's secret comes from OAUTH_CLIENT_SECRET_<APP> when set (production:
Swarm secrets; federation must be given all of them), else it is derived from SECRET_KEY
(HMAC-SHA256 with the client id), so development needs no extra setting.
Third-party clients are added by operators (`rose-ash oauth client add`) with a random secret.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import APP_LABELS, APP_NAMES, Settings
from shared.contracts.errors import ConflictError, InvalidInputError, NotFoundError
from shared.models.identity import OAuthClient

CALLBACK_PATH = "/auth/callback"
BACKCHANNEL_LOGOUT_PATH = "/auth/backchannel-logout"
FIRST_PARTY_SCOPE = "openid profile email"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def first_party_client_secret(settings: Settings, app_name: str) -> str:
    """The configured secret (OAUTH_CLIENT_SECRET_<APP>), else one derived from SECRET_KEY."""
    configured = settings.configured_client_secret(app_name)
    if configured:
        return configured
    return settings.derive_from_secret_key(f"oauth-client-secret:{app_name}".encode()).hex()


def first_party_redirect_uri(settings: Settings, app_name: str) -> str:
    return settings.url_of(app_name) + CALLBACK_PATH


async def do_sync_first_party_clients(session: AsyncSession, settings: Settings) -> None:
    """Create or update the six apps' clients to match the configuration."""
    for app_name in APP_NAMES:
        base = settings.url_of(app_name)
        values = {
            "client_id": app_name,
            "client_secret_hash": hash_secret(first_party_client_secret(settings, app_name)),
            "name": f"Rose Ash {APP_LABELS[app_name]}",
            "redirect_uris": [base + CALLBACK_PATH],
            "post_logout_redirect_uris": [base + "/"],
            "backchannel_logout_uri": base + BACKCHANNEL_LOGOUT_PATH,
            "scope": FIRST_PARTY_SCOPE,
            "token_endpoint_auth_method": "client_secret_basic",
            "first_party": True,
        }
        statement = insert(OAuthClient).values(**values)
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=[OAuthClient.client_id],
                set_={k: statement.excluded[k] for k in values if k != "client_id"},
            )
        )


@dataclass(frozen=True)
class NewClient:
    client_id: str
    # Shown once to the operator; only its hash is stored. None for public clients.
    client_secret: str | None


@dataclass(frozen=True)
class ClientSummary:
    client_id: str
    name: str
    redirect_uris: tuple[str, ...]
    first_party: bool
    public: bool


def check_redirect_uri(uri: str) -> str:
    """An absolute https URI without a fragment (http only for loopback development)."""
    parts = urlsplit(uri)
    loopback = parts.hostname in ("localhost", "127.0.0.1", "::1") or (
        parts.hostname or ""
    ).endswith(".localhost")
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.fragment:
        raise InvalidInputError(f"{uri!r} is not an absolute URI without a fragment")
    if parts.scheme == "http" and not loopback:
        raise InvalidInputError(f"{uri!r} must use https (http only for loopback addresses)")
    return uri


async def do_add_third_party_client(
    session: AsyncSession,
    name: str,
    redirect_uris: list[str],
    *,
    public: bool = False,
    scope: str = FIRST_PARTY_SCOPE,
    client_id: str | None = None,
) -> NewClient:
    if not name.strip():
        raise InvalidInputError("a client needs a name")
    if not redirect_uris:
        raise InvalidInputError("a client needs at least one redirect URI")
    uris = [check_redirect_uri(uri) for uri in redirect_uris]
    unknown = set(scope.split()) - set(FIRST_PARTY_SCOPE.split())
    if unknown:
        raise InvalidInputError(f"unknown scopes: {' '.join(sorted(unknown))}")
    client_id = client_id or secrets.token_urlsafe(16)
    if client_id in APP_NAMES or await session.get(OAuthClient, client_id) is not None:
        raise ConflictError(f"a client {client_id!r} exists already")
    secret = None if public else secrets.token_urlsafe(32)
    session.add(
        OAuthClient(
            client_id=client_id,
            client_secret_hash=hash_secret(secret) if secret else None,
            name=name.strip(),
            redirect_uris=uris,
            scope=scope,
            token_endpoint_auth_method="none" if public else "client_secret_basic",
            first_party=False,
        )
    )
    await session.flush()
    return NewClient(client_id, secret)


async def list_clients(session: AsyncSession) -> list[ClientSummary]:
    rows = await session.scalars(
        select(OAuthClient).order_by(OAuthClient.first_party.desc(), OAuthClient.client_id)
    )
    return [
        ClientSummary(
            row.client_id,
            row.name,
            tuple(row.redirect_uris),
            row.first_party,
            row.token_endpoint_auth_method == "none",  # noqa: S105 (a method name)
        )
        for row in rows
    ]


async def do_remove_client(session: AsyncSession, client_id: str) -> None:
    row = await session.get(OAuthClient, client_id)
    if row is None:
        raise NotFoundError(f"no client {client_id!r}")
    if row.first_party:
        raise InvalidInputError("the six apps' clients come from the configuration")
    await session.delete(row)
