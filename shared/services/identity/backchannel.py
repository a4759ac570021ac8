"""Back-channel logout (OpenID Connect Back-Channel Logout 1.0), the sending side.

When a device is signed out, the SSO service enqueues an "sso.logout" outbox event in the same
transaction. After commit this handler drops the cached status of the revoked grants (so every
app sees the revocation at once) and POSTs a signed logout token to each app's
backchannel_logout_uri. A failed delivery raises, so the outbox retries the event; receiving
the same notice twice is harmless.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import httpx
from joserfc import jwt
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.config import Settings
from shared.infrastructure.grant_cache import do_purge_grants
from shared.infrastructure.http import create_http_client
from shared.models.identity import OAuthClient
from shared.services.identity.signing_keys import ActiveKey, get_active_signing_key
from shared.services.outbox import OutboxHandler

BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LOGOUT_TOKEN_LIFETIME_SECONDS = 120
DELIVERY_TIMEOUT_SECONDS = 5.0


def encode_logout_token(
    key: ActiveKey, issuer: str, client_id: str, user_id: int, sid: int, grant_id: int
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": client_id,
        "iat": now,
        "exp": now + LOGOUT_TOKEN_LIFETIME_SECONDS,
        "jti": secrets.token_urlsafe(16),
        "sub": str(user_id),
        "sid": str(sid),
        "events": {BACKCHANNEL_EVENT: {}},
        "grant_id": grant_id,
    }
    header = {"alg": "RS256", "kid": key.kid, "typ": "logout+jwt"}
    return jwt.encode(header, claims, key.key, algorithms=["RS256"])


def build_logout_handler(
    settings: Settings,
    redis: Redis,
    session_factory: async_sessionmaker[AsyncSession],
    transport: httpx.AsyncBaseTransport | None = None,
) -> OutboxHandler:
    issuer = settings.url_of("federation")

    async def handle(payload: dict[str, Any]) -> None:
        grants: list[dict[str, Any]] = payload.get("grants", [])
        await do_purge_grants(redis, [int(grant["id"]) for grant in grants])
        if not grants:
            return
        async with session_factory() as session:
            key = await get_active_signing_key(session, settings)
            rows = await session.scalars(
                select(OAuthClient).where(
                    OAuthClient.client_id.in_({grant["client_id"] for grant in grants})
                )
            )
            uris = {row.client_id: row.backchannel_logout_uri for row in rows}
            await session.commit()
        failures = []
        async with create_http_client(transport, DELIVERY_TIMEOUT_SECONDS) as http:
            for grant in grants:
                uri = uris.get(grant["client_id"])
                if not uri:
                    continue
                token = encode_logout_token(
                    key,
                    issuer,
                    grant["client_id"],
                    int(payload["user_id"]),
                    int(payload["sso_session_id"]),
                    int(grant["id"]),
                )
                try:
                    response = await http.post(uri, data={"logout_token": token})
                except httpx.HTTPError as exc:
                    failures.append(f"{uri}: {type(exc).__name__}")
                    continue
                if response.status_code >= 400:
                    failures.append(f"{uri}: HTTP {response.status_code}")
        if failures:
            raise RuntimeError("back-channel logout not delivered to " + ", ".join(failures))

    return handle
