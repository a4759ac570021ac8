"""The transactional outbox: side effects that leave the process (mail, back-channel logout
notices, cache purges) are written here in the same transaction as the change that causes
them, and performed after commit by shared.services.outbox (at once, then by the worker with
retries), so none is lost and none happens for a change that rolled back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Index, Integer, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base, utc_now_column


class OutboxEvent(Base):
    __tablename__ = "outbox_events"
    __table_args__ = (
        # What the processor scans: pending rows by due time.
        Index(
            "ix_outbox_events_pending",
            "next_attempt_at",
            postgresql_where=text("completed_at IS NULL AND failed_at IS NULL"),
        ),
        Index("ix_outbox_events_kind_created", "kind", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(String(60), nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[datetime] = utc_now_column()
    next_attempt_at: Mapped[datetime] = utc_now_column()
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set when the handler gave up for good (a permanent error or too many attempts).
    failed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
