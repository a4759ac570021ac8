"""The one RSA keypair that every local actor (each app's and the instance actor) presents.

Stored once in ``ap_keypairs``; the private key is encrypted at rest with AP_KEY_SECRET
(shared.infrastructure.key_encryption), so a database dump alone cannot sign as us.
Each actor has its own key id (``<actor>#main-key``) over the same public key. Created on first
use under an advisory lock, so concurrent processes agree on one keypair; kept in memory per
process once loaded (decrypting and parsing a PEM per signature would cost more than signing).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import Settings
from shared.infrastructure.key_encryption import decrypt_private_key, encrypt_private_key
from shared.models.social.actors import ApKeypair

KEY_SIZE = 2048
KEYPAIR_LOCK_ID = 0x705E_A5F1  # pg_advisory_xact_lock while the first keypair is created


@dataclass(frozen=True)
class ActorKeypair:
    id: int
    public_key_pem: str
    private_key: rsa.RSAPrivateKey


# Loaded keypairs by (database URL, row id); the active row id is re-read per call site that
# asks get_keypair (one indexed query) only when the cache is empty.
_loaded: dict[str, ActorKeypair] = {}
_loading: dict[str, asyncio.Lock] = {}


def public_pem_of(private: rsa.RSAPrivateKey) -> str:
    """The public half of ``private`` as the PEM text actor documents carry."""
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def generate_keypair() -> tuple[str, bytes]:
    """A new RSA key: (public PEM text, private PKCS#8 PEM bytes)."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=KEY_SIZE)
    public_pem = public_pem_of(private)
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return public_pem, private_pem


def load_row(row: ApKeypair, settings: Settings) -> ActorKeypair:
    pem = decrypt_private_key(settings, "activitypub", row.private_key_encrypted)
    private = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(private, rsa.RSAPrivateKey):
        raise TypeError("the stored ActivityPub key is not an RSA key")
    return ActorKeypair(id=row.id, public_key_pem=row.public_key_pem, private_key=private)


async def get_keypair(session: AsyncSession, settings: Settings) -> ActorKeypair:
    """The active keypair, created (once, whoever asks first) on first use."""
    cache_key = settings.database_url
    cached = _loaded.get(cache_key)
    if cached is not None:
        return cached
    # One request of the process reads and parses it; the others wait for that one. Parsing
    # (decrypting, loading and checking an RSA key) takes tens of milliseconds of CPU: twenty
    # requests each doing it at a cold start held the event loop for over a second.
    lock = _loading.setdefault(cache_key, asyncio.Lock())
    async with lock:
        cached = _loaded.get(cache_key)
        if cached is not None:
            return cached
        return await load_or_create_keypair(session, settings, cache_key)


async def load_or_create_keypair(
    session: AsyncSession, settings: Settings, cache_key: str
) -> ActorKeypair:
    row = await session.scalar(
        select(ApKeypair).where(ApKeypair.active.is_(True)).order_by(ApKeypair.id.desc()).limit(1)
    )
    if row is None:
        await session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": KEYPAIR_LOCK_ID})
        row = await session.scalar(
            select(ApKeypair).where(ApKeypair.active.is_(True)).order_by(ApKeypair.id.desc())
        )
    if row is None:
        public_pem, private_pem = generate_keypair()
        row = ApKeypair(
            public_key_pem=public_pem,
            private_key_encrypted=encrypt_private_key(settings, "activitypub", private_pem),
        )
        session.add(row)
        await session.flush()
        # Not cached yet: the creating transaction may still roll back.
        return load_row(row, settings)
    keypair = load_row(row, settings)
    _loaded[cache_key] = keypair
    return keypair


def get_held_keypair(settings: Settings) -> ActorKeypair | None:
    """The keypair this process already holds, without a query (None until one was loaded)."""
    return _loaded.get(settings.database_url)


def forget_keypairs() -> None:
    """Drop the in-memory keypairs (tests that roll back the row that created one)."""
    _loaded.clear()
    _loading.clear()
