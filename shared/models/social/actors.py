"""ActivityPub identity: our one signing keypair, and the remote actors we know.

Every local actor (one per app, and the instance actor) is a projection of the single
keypair in ``ap_keypairs``; its private key is stored encrypted with a key derived from
AP_KEY_SECRET (shared.infrastructure.key_encryption). Remote actors are cached with their
public key and refetched when a signature names a key we do not hold (key rotation).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, Index, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base, utc_now_column


class ApKeypair(Base):
    __tablename__ = "ap_keypairs"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    public_key_pem: Mapped[str] = mapped_column(Text, nullable=False)
    # The PKCS#8 PEM, encrypted (Fernet) with a key derived from AP_KEY_SECRET (rows of older
    # versions: from SECRET_KEY, until `rose-ash keys reencrypt`).
    private_key_encrypted: Mapped[str] = mapped_column(Text, nullable=False)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="true")
    created_at: Mapped[datetime] = utc_now_column()


class ApRemoteActor(Base):
    __tablename__ = "ap_remote_actors"
    __table_args__ = (
        Index("ix_ap_remote_actors_key_id", "key_id"),
        Index("ix_ap_remote_actors_domain", "domain"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    uri: Mapped[str] = mapped_column(String(2000), nullable=False, unique=True)
    domain: Mapped[str] = mapped_column(String(255), nullable=False)
    actor_type: Mapped[str] = mapped_column(String(40), nullable=False)
    preferred_username: Mapped[str | None] = mapped_column(String(255))
    # What the actor is shown as: user@domain as its WebFinger confirms it, else user@host of
    # its URL; NULL until looked up (shared.infrastructure.activitypub.remote.resolve_handle).
    handle: Mapped[str | None] = mapped_column(Text)
    name: Mapped[str | None] = mapped_column(Text)
    inbox: Mapped[str] = mapped_column(String(2000), nullable=False)
    shared_inbox: Mapped[str | None] = mapped_column(String(2000))
    key_id: Mapped[str | None] = mapped_column(String(2000))
    public_key_pem: Mapped[str | None] = mapped_column(Text)
    document: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    fetched_at: Mapped[datetime] = utc_now_column()
    # Set when the actor was deleted remotely (Delete of the actor): its follows are gone.
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
