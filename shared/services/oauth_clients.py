"""OAuth clients: the six apps as first-party confidential clients, seeded from config.

A first-party client's secret is derived from SECRET_KEY (HMAC-SHA256 with the client id),
so every app knows its own secret and federation can check it without any extra setting.
Third-party clients are added by operators (`rose-ash oauth client add`) with a random secret.
"""

from __future__ import annotations

import hashlib
import hmac

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import APP_LABELS, APP_NAMES, Settings
from shared.models.identity import OAuthClient

CALLBACK_PATH = "/auth/callback"
BACKCHANNEL_LOGOUT_PATH = "/auth/backchannel-logout"
FIRST_PARTY_SCOPE = "openid profile email"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def first_party_client_secret(settings: Settings, app_name: str) -> str:
    key = settings.secret_key.get_secret_value().encode()
    return hmac.new(key, f"oauth-client-secret:{app_name}".encode(), hashlib.sha256).hexdigest()


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
