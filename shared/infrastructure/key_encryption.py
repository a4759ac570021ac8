"""Encryption at rest of the private keys the platform stores, each kind under its own secret.

- The OIDC signing keys (``oauth_signing_keys``, shared.services.identity.signing_keys) are
  encrypted with a key derived from ``OIDC_KEY_SECRET``, which only federation and the worker
  are given: an app that holds SECRET_KEY (every app does) cannot read them, so cannot forge
  id_tokens.
- The ActivityPub keypair (``ap_keypairs``, shared.infrastructure.activitypub.keys) is
  encrypted with a key derived from ``AP_KEY_SECRET``. All local actors present that one
  keypair, and every app signs with it (signed GETs when it checks an incoming signature, the
  worker delivers for all of them), so every app and the worker are given it.

The Fernet key is HKDF-SHA256 of the secret with a label per kind. Unset, the secret is
derived from SECRET_KEY (HMAC-SHA256 with the setting's name), in development and tests only:
production refuses to run without it.

Rows written before these secrets existed were encrypted with HKDF of SECRET_KEY itself (the
legacy key). They are still read (the current key is tried first, then the legacy one), and
new rows are written with the current key. ``rose-ash keys reencrypt``
(:func:`do_reencrypt_keys`) rewrites old rows under the current key; once it has run, SECRET_KEY
alone decrypts nothing.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import Settings
from shared.models.identity import SigningKey
from shared.models.social.actors import ApKeypair

KeyKind = Literal["oidc", "activitypub"]
# The variable that sets each kind's secret, and the HKDF label (the same as before these
# secrets existed, so the legacy key is HKDF(SECRET_KEY, label)).
SECRET_NAMES: dict[KeyKind, str] = {"oidc": "OIDC_KEY_SECRET", "activitypub": "AP_KEY_SECRET"}
LABELS: dict[KeyKind, bytes] = {
    "oidc": b"rose-ash oauth signing keys",
    "activitypub": b"rose-ash activitypub keypair",
}
DESCRIPTIONS: dict[KeyKind, str] = {
    "oidc": "OIDC signing keys",
    "activitypub": "ActivityPub keypairs",
}


class KeyEncryptionError(RuntimeError):
    """A stored key cannot be encrypted or decrypted with the configured secrets."""


@dataclass(frozen=True)
class ReencryptionReport:
    kind: KeyKind
    reencrypted: int  # rows moved from the legacy key to the current one
    current: int  # rows already under the current key


def derive_fernet(material: bytes, kind: KeyKind) -> Fernet:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=LABELS[kind]).derive(
        material
    )
    return Fernet(base64.urlsafe_b64encode(derived))


def get_secret_material(settings: Settings, kind: KeyKind) -> bytes:
    """The kind's configured secret; unset, one derived from SECRET_KEY (not in production)."""
    configured = settings.oidc_key_secret if kind == "oidc" else settings.ap_key_secret
    if configured is not None:
        return configured.get_secret_value().encode()
    name = SECRET_NAMES[kind]
    if settings.env == "production":
        raise KeyEncryptionError(f"{name} is required in production but not set")
    return settings.derive_from_secret_key(f"rose-ash {name}".encode())


def current_fernet(settings: Settings, kind: KeyKind) -> Fernet:
    return derive_fernet(get_secret_material(settings, kind), kind)


def legacy_fernet(settings: Settings, kind: KeyKind) -> Fernet:
    """The key of rows written before the kind had its own secret: HKDF of SECRET_KEY."""
    return derive_fernet(settings.secret_key.get_secret_value().encode(), kind)


def encrypt_private_key(settings: Settings, kind: KeyKind, plaintext: bytes) -> str:
    return current_fernet(settings, kind).encrypt(plaintext).decode()


def decrypt_private_key(settings: Settings, kind: KeyKind, token: str) -> bytes:
    """Decrypt with the current key, else the legacy one (rows not re-encrypted yet)."""
    keys = MultiFernet([current_fernet(settings, kind), legacy_fernet(settings, kind)])
    try:
        return keys.decrypt(token.encode())
    except InvalidToken:
        raise KeyEncryptionError(
            f"one of the stored {DESCRIPTIONS[kind]} cannot be decrypted with "
            f"{SECRET_NAMES[kind]} (nor with SECRET_KEY, as older versions encrypted them): "
            "is it the secret they were encrypted with?"
        ) from None


def is_current(settings: Settings, kind: KeyKind, token: str) -> bool:
    try:
        current_fernet(settings, kind).decrypt(token.encode())
    except InvalidToken:
        return False
    return True


async def lock_rows(session: AsyncSession, kind: KeyKind) -> Sequence[SigningKey | ApKeypair]:
    """Every stored key of the kind, locked until the transaction ends."""
    if kind == "oidc":
        return (await session.scalars(select(SigningKey).with_for_update())).all()
    return (await session.scalars(select(ApKeypair).with_for_update())).all()


async def do_reencrypt_kind(
    session: AsyncSession, settings: Settings, kind: KeyKind
) -> ReencryptionReport:
    """Rewrite the kind's rows still under the legacy key with the current one."""
    rows = await lock_rows(session, kind)
    moved = 0
    for row in rows:
        if is_current(settings, kind, row.private_key_encrypted):
            continue
        plaintext = decrypt_private_key(settings, kind, row.private_key_encrypted)
        row.private_key_encrypted = encrypt_private_key(settings, kind, plaintext)
        moved += 1
    await session.flush()
    return ReencryptionReport(kind=kind, reencrypted=moved, current=len(rows) - moved)


async def do_reencrypt_keys(
    session: AsyncSession, settings: Settings, kinds: Sequence[KeyKind] = ("oidc", "activitypub")
) -> list[ReencryptionReport]:
    """Re-encrypt every stored private key of ``kinds`` under its own secret (idempotent)."""
    return [await do_reencrypt_kind(session, settings, kind) for kind in kinds]
