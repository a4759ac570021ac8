"""What reaches us: received activities, follow relations, reactions, remote objects, blocks.

An inbox POST is verified, stored in ``ap_inbox_items`` (unique on the activity id, so a
redelivery is stored once and has no second effect) and answered 202; the worker applies
each stored item's effect.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base, utc_now_column


class ApInboxItem(Base):
    __tablename__ = "ap_inbox_items"
    __table_args__ = (
        Index(
            "ix_ap_inbox_items_pending",
            "next_attempt_at",
            postgresql_where=text("state = 'pending'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    activity_uri: Mapped[str] = mapped_column(String(2000), nullable=False, unique=True)
    activity_type: Mapped[str] = mapped_column(String(40), nullable=False)
    # The local actor whose inbox received it (None: a shared inbox).
    app: Mapped[str | None] = mapped_column(String(20))
    actor_uri: Mapped[str] = mapped_column(String(2000), nullable=False)
    document: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    # pending -> done | ignored (blocked, unsupported) | failed
    state: Mapped[str] = mapped_column(String(20), nullable=False, server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    next_attempt_at: Mapped[datetime] = utc_now_column()
    last_error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = utc_now_column()
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ApFollower(Base):
    """A remote actor following one of our actors."""

    __tablename__ = "ap_followers"
    __table_args__ = (
        UniqueConstraint("app", "remote_actor_id"),
        Index("ix_ap_followers_app_id", "app", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    app: Mapped[str] = mapped_column(String(20), nullable=False)
    remote_actor_id: Mapped[int] = mapped_column(
        ForeignKey("ap_remote_actors.id", ondelete="CASCADE"), nullable=False
    )
    follow_uri: Mapped[str] = mapped_column(String(2000), nullable=False)
    inbox: Mapped[str] = mapped_column(String(2000), nullable=False)
    shared_inbox: Mapped[str | None] = mapped_column(String(2000))
    created_at: Mapped[datetime] = utc_now_column()


class ApFollowing(Base):
    """One of our actors following a remote actor (pending until the Accept arrives)."""

    __tablename__ = "ap_following"
    __table_args__ = (
        UniqueConstraint("app", "remote_actor_id"),
        Index("ix_ap_following_app_id", "app", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    app: Mapped[str] = mapped_column(String(20), nullable=False)
    remote_actor_id: Mapped[int] = mapped_column(
        ForeignKey("ap_remote_actors.id", ondelete="CASCADE"), nullable=False
    )
    follow_uri: Mapped[str] = mapped_column(String(2000), nullable=False)
    state: Mapped[str] = mapped_column(String(20), nullable=False, server_default="pending")
    created_at: Mapped[datetime] = utc_now_column()
    accepted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ApReaction(Base):
    """A Like or Announce of one of our objects."""

    __tablename__ = "ap_reactions"
    __table_args__ = (Index("ix_ap_reactions_object_uri", "object_uri"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    activity_uri: Mapped[str] = mapped_column(String(2000), nullable=False, unique=True)
    kind: Mapped[str] = mapped_column(String(20), nullable=False)  # like | announce
    object_uri: Mapped[str] = mapped_column(String(2000), nullable=False)
    actor_uri: Mapped[str] = mapped_column(String(2000), nullable=False)
    created_at: Mapped[datetime] = utc_now_column()


class ApRemoteObject(Base):
    """A post by a remote actor we follow, kept for the social hub."""

    __tablename__ = "ap_remote_objects"
    __table_args__ = (Index("ix_ap_remote_objects_actor_uri", "actor_uri"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    uri: Mapped[str] = mapped_column(String(2000), nullable=False, unique=True)
    actor_uri: Mapped[str] = mapped_column(String(2000), nullable=False)
    object_type: Mapped[str] = mapped_column(String(40), nullable=False)
    document: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = utc_now_column()
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ApBlock(Base):
    """A blocked domain (``kind='domain'``, value a host) or actor (value its id)."""

    __tablename__ = "ap_blocks"
    __table_args__ = (UniqueConstraint("kind", "value"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(String(10), nullable=False)
    value: Mapped[str] = mapped_column(String(2000), nullable=False)
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = utc_now_column()
