"""The stored private keys are encrypted with their own secrets, not with SECRET_KEY.

SECRET_KEY is given to every app; OIDC_KEY_SECRET only to federation and the worker. Rows
encrypted with SECRET_KEY by older versions stay readable until `rose-ash keys reencrypt`
moves them, after which SECRET_KEY alone decrypts nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.fernet import InvalidToken
from pydantic import SecretStr
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import Settings
from shared.infrastructure.activitypub import keys
from shared.infrastructure.key_encryption import (
    KeyEncryptionError,
    do_reencrypt_keys,
    get_secret_material,
)
from shared.models.identity import SigningKey
from shared.models.social.actors import ApKeypair
from shared.services.identity.signing_keys import do_create_signing_key, get_active_signing_key
from tests.key_support import AP_LABEL, OIDC_LABEL, old_derivation, store_old_rows


@pytest.fixture
def federation_settings(settings: Settings) -> Settings:
    """Federation's (and the worker's) settings: both key secrets set (tests/conftest.py)."""
    assert settings.oidc_key_secret is not None
    assert settings.ap_key_secret is not None
    return settings


@pytest.fixture
def other_app_settings(settings: Settings) -> Settings:
    """What any other app (blog, cart, ...) holds: SECRET_KEY, and no OIDC_KEY_SECRET."""
    return settings.model_copy(update={"oidc_key_secret": None, "ap_key_secret": None})


@pytest.fixture(autouse=True)
def fresh_keys() -> Iterator[None]:
    keys.forget_keypairs()
    yield
    keys.forget_keypairs()


@pytest.fixture
async def no_stored_keys(session: AsyncSession) -> None:
    """Start from empty key tables (inside the test's transaction, rolled back after)."""
    await session.execute(delete(SigningKey))
    await session.execute(delete(ApKeypair))


async def stored_token(session: AsyncSession, model: type[SigningKey] | type[ApKeypair]) -> bytes:
    row = await session.scalar(select(model).execution_options(populate_existing=True))
    assert row is not None
    return row.private_key_encrypted.encode()


@pytest.mark.usefixtures("no_stored_keys")
async def test_new_keys_are_encrypted_with_their_own_secrets_not_secret_key(
    session: AsyncSession, federation_settings: Settings
) -> None:
    await do_create_signing_key(session, federation_settings)
    await keys.get_keypair(session, federation_settings)
    secret_key = federation_settings.secret_key.get_secret_value()
    with pytest.raises(InvalidToken):
        old_derivation(secret_key, OIDC_LABEL).decrypt(await stored_token(session, SigningKey))
    with pytest.raises(InvalidToken):
        old_derivation(secret_key, AP_LABEL).decrypt(await stored_token(session, ApKeypair))


@pytest.mark.usefixtures("no_stored_keys")
async def test_rows_encrypted_by_older_versions_are_still_read(
    session: AsyncSession, federation_settings: Settings
) -> None:
    kid, keypair_id = await store_old_rows(
        session, federation_settings.secret_key.get_secret_value()
    )
    assert (await get_active_signing_key(session, federation_settings)).kid == kid
    assert (await keys.get_keypair(session, federation_settings)).id == keypair_id


@pytest.mark.usefixtures("no_stored_keys")
async def test_reencrypt_moves_old_rows_to_the_new_secrets_once(
    session: AsyncSession, federation_settings: Settings
) -> None:
    kid, keypair_id = await store_old_rows(
        session, federation_settings.secret_key.get_secret_value()
    )
    first = await do_reencrypt_keys(session, federation_settings)
    assert [(r.kind, r.reencrypted, r.current) for r in first] == [
        ("oidc", 1, 0),
        ("activitypub", 1, 0),
    ]
    again = await do_reencrypt_keys(session, federation_settings)
    assert [(r.kind, r.reencrypted, r.current) for r in again] == [
        ("oidc", 0, 1),
        ("activitypub", 0, 1),
    ]
    # The same keys, now readable with the new secrets only.
    assert (await get_active_signing_key(session, federation_settings)).kid == kid
    assert (await keys.get_keypair(session, federation_settings)).id == keypair_id
    secret_key = federation_settings.secret_key.get_secret_value()
    with pytest.raises(InvalidToken):
        old_derivation(secret_key, AP_LABEL).decrypt(await stored_token(session, ApKeypair))


@pytest.mark.usefixtures("no_stored_keys")
async def test_after_reencryption_secret_key_alone_cannot_decrypt_the_oidc_key(
    session: AsyncSession, other_app_settings: Settings, federation_settings: Settings
) -> None:
    await store_old_rows(session, federation_settings.secret_key.get_secret_value())
    await do_reencrypt_keys(session, federation_settings)
    token = await stored_token(session, SigningKey)
    secret_key = other_app_settings.secret_key.get_secret_value()
    with pytest.raises(InvalidToken):
        old_derivation(secret_key, OIDC_LABEL).decrypt(token)
    with pytest.raises(KeyEncryptionError, match="cannot be decrypted with OIDC_KEY_SECRET"):
        await get_active_signing_key(session, other_app_settings)
    production = other_app_settings.model_copy(update={"env": "production"})
    with pytest.raises(KeyEncryptionError, match="OIDC_KEY_SECRET is required in production"):
        await get_active_signing_key(session, production)


@pytest.mark.usefixtures("no_stored_keys")
async def test_reencrypt_with_the_wrong_secret_is_refused_and_changes_nothing(
    session: AsyncSession, federation_settings: Settings
) -> None:
    await store_old_rows(session, federation_settings.secret_key.get_secret_value())
    await do_reencrypt_keys(session, federation_settings)
    before = await stored_token(session, SigningKey)
    wrong = federation_settings.model_copy(update={"oidc_key_secret": SecretStr("w" * 40)})
    with pytest.raises(KeyEncryptionError, match="OIDC signing keys cannot be decrypted"):
        await do_reencrypt_keys(session, wrong, ("oidc",))
    assert await stored_token(session, SigningKey) == before


def test_development_derives_distinct_secrets_from_secret_key(
    other_app_settings: Settings,
) -> None:
    oidc = get_secret_material(other_app_settings, "oidc")
    ap = get_secret_material(other_app_settings, "activitypub")
    assert oidc != ap
    assert other_app_settings.secret_key.get_secret_value().encode() not in (oidc, ap)
