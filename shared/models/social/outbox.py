"""What we publish: our objects, the transactional outbox of activities, and deliveries.

``ap_activities`` is written in the same transaction as the domain change it announces
(``emit_activity``); the EventProcessor (``rose-ash worker``) claims pending rows with FOR
UPDATE SKIP LOCKED. A public activity is fanned out into one ``ap_deliveries`` row per
distinct inbox (followers deduplicated by shared inbox); a row with visibility "internal" is
an event on the internal bus, handled by registered handlers and never delivered.
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
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base, utc_now_column


class ApObject(Base):
    """A local object (Note, Article, Event) as last published; served at its id."""

    __tablename__ = "ap_objects"
    __table_args__ = (Index("ix_ap_objects_app_published", "app", "published_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    uri: Mapped[str] = mapped_column(String(2000), nullable=False, unique=True)
    app: Mapped[str] = mapped_column(String(20), nullable=False)
    object_type: Mapped[str] = mapped_column(String(40), nullable=False)
    document: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    published_at: Mapped[datetime] = utc_now_column()
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A deleted object is served as a Tombstone (410).
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ApActivity(Base):
    __tablename__ = "ap_activities"
    __table_args__ = (
        # What the processor scans: pending rows by due time.
        Index(
            "ix_ap_activities_pending",
            "next_attempt_at",
            postgresql_where=text("state = 'pending'"),
        ),
        # The actor's outbox collection: its public activities, newest first.
        Index("ix_ap_activities_app_visibility_id", "app", "visibility", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    uri: Mapped[str] = mapped_column(String(2000), nullable=False, unique=True)
    app: Mapped[str] = mapped_column(String(20), nullable=False)  # the actor that acts
    activity_type: Mapped[str] = mapped_column(String(40), nullable=False)
    object_uri: Mapped[str | None] = mapped_column(String(2000))
    # public | unlisted | followers | direct | internal
    visibility: Mapped[str] = mapped_column(String(20), nullable=False)
    document: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    # Extra inboxes to deliver to besides the followers (an Accept goes to the follower only).
    target_inboxes: Mapped[list[str]] = mapped_column(
        JSONB, nullable=False, server_default=text("'[]'::jsonb")
    )
    # pending -> done (fanned out, or handled) | failed (an internal handler gave up)
    state: Mapped[str] = mapped_column(String(20), nullable=False, server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    next_attempt_at: Mapped[datetime] = utc_now_column()
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = utc_now_column()
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ApDelivery(Base):
    __tablename__ = "ap_deliveries"
    __table_args__ = (
        UniqueConstraint("activity_id", "inbox"),
        Index(
            "ix_ap_deliveries_pending",
            "next_attempt_at",
            postgresql_where=text("state = 'pending'"),
        ),
        Index("ix_ap_deliveries_state", "state"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    activity_id: Mapped[int] = mapped_column(
        ForeignKey("ap_activities.id", ondelete="CASCADE"), nullable=False
    )
    inbox: Mapped[str] = mapped_column(String(2000), nullable=False)
    # pending -> delivered | failed (dead letter: permanent error or out of attempts)
    state: Mapped[str] = mapped_column(String(20), nullable=False, server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    next_attempt_at: Mapped[datetime] = utc_now_column()
    last_status: Mapped[int | None] = mapped_column(SmallInteger)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = utc_now_column()
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
