"""Keys as versions before OIDC_KEY_SECRET / AP_KEY_SECRET stored them (encrypted with a key
derived from SECRET_KEY), for the tests of the re-encryption."""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from joserfc.jwk import RSAKey
from sqlalchemy.ext.asyncio import AsyncSession

from shared.infrastructure.activitypub.keys import generate_keypair
from shared.models.identity import SigningKey
from shared.models.social.actors import ApKeypair

# The labels older versions derived their keys from SECRET_KEY with (HKDF info).
OIDC_LABEL = b"rose-ash oauth signing keys"
AP_LABEL = b"rose-ash activitypub keypair"


def old_derivation(secret_key: str, label: bytes) -> Fernet:
    """The key every app could compute from SECRET_KEY, as versions before 11h used it."""
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(
        secret_key.encode()
    )
    return Fernet(base64.urlsafe_b64encode(derived))


async def store_old_rows(session: AsyncSession, secret_key: str) -> tuple[str, int]:
    """An OIDC signing key and an AP keypair as an older version stored them."""
    key = RSAKey.generate_key(2048, {"use": "sig", "alg": "RS256"}, private=True)
    kid = key.thumbprint()
    session.add(
        SigningKey(
            kid=kid,
            private_key_encrypted=old_derivation(secret_key, OIDC_LABEL)
            .encrypt(key.as_pem(private=True))
            .decode(),
            public_jwk=key.as_dict(private=False),
        )
    )
    public_pem, private_pem = generate_keypair()
    keypair = ApKeypair(
        public_key_pem=public_pem,
        private_key_encrypted=old_derivation(secret_key, AP_LABEL).encrypt(private_pem).decode(),
    )
    session.add(keypair)
    await session.flush()
    return kid, keypair.id
