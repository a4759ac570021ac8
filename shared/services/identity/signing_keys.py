"""The keys that sign id_tokens and back-channel logout tokens (RS256), and the JWKS.

Key rotation (`rose-ash oauth key rotate`): a new key is created and signs from then on; the
old one is marked retired but stays in the JWKS, so tokens it signed still verify, until
`rose-ash oauth key prune` deletes keys retired longer ago than RETIRED_KEY_GRACE (longer
than any token they signed lives). Clients refetch the JWKS when they meet an unknown `kid`.

Private keys are stored encrypted with OIDC_KEY_SECRET (shared.infrastructure.key_encryption), which
only federation and the worker hold: neither a database dump nor another app's SECRET_KEY can
sign tokens. joserfc generates and serialises the keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from joserfc.jwk import RSAKey
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import Settings
from shared.infrastructure.key_encryption import decrypt_private_key, encrypt_private_key
from shared.models.identity import SigningKey

KEY_SIZE = 2048
RETIRED_KEY_GRACE = timedelta(days=1)


@dataclass(frozen=True)
class ActiveKey:
    kid: str
    key: RSAKey


async def do_create_signing_key(session: AsyncSession, settings: Settings) -> ActiveKey:
    key = RSAKey.generate_key(KEY_SIZE, {"use": "sig", "alg": "RS256"}, private=True)
    kid = key.thumbprint()
    public = key.as_dict(private=False)
    public.update({"kid": kid, "use": "sig", "alg": "RS256"})
    pem = key.as_pem(private=True)
    session.add(
        SigningKey(
            kid=kid,
            private_key_encrypted=encrypt_private_key(settings, "oidc", pem),
            public_jwk=public,
        )
    )
    await session.flush()
    return ActiveKey(kid, RSAKey.import_key(pem, {"kid": kid, "use": "sig", "alg": "RS256"}))


async def get_active_signing_key(session: AsyncSession, settings: Settings) -> ActiveKey:
    """The newest unretired key, created on first use."""
    row = await session.scalar(
        select(SigningKey)
        .where(SigningKey.retired_at.is_(None))
        .order_by(SigningKey.created_at.desc())
        .limit(1)
    )
    if row is None:
        return await do_create_signing_key(session, settings)
    pem = decrypt_private_key(settings, "oidc", row.private_key_encrypted)
    return ActiveKey(
        row.kid, RSAKey.import_key(pem, {"kid": row.kid, "use": "sig", "alg": "RS256"})
    )


async def do_rotate_signing_key(session: AsyncSession, settings: Settings) -> ActiveKey:
    """Retire every current key and start signing with a new one."""
    await session.execute(
        update(SigningKey)
        .where(SigningKey.retired_at.is_(None))
        .values(retired_at=datetime.now(UTC))
    )
    return await do_create_signing_key(session, settings)


async def do_prune_signing_keys(session: AsyncSession) -> int:
    """Delete keys retired longer ago than the grace period; returns how many."""
    result = await session.execute(
        delete(SigningKey)
        .where(SigningKey.retired_at < datetime.now(UTC) - RETIRED_KEY_GRACE)
        .returning(SigningKey.kid)
    )
    return len(result.all())


async def get_jwks(session: AsyncSession) -> dict[str, list[dict[str, Any]]]:
    """Every key a valid token may have been signed with (active and retired)."""
    rows = await session.scalars(select(SigningKey).order_by(SigningKey.created_at.desc()))
    return {"keys": [dict(row.public_jwk) for row in rows]}
