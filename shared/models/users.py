"""Members of the co-op. Federation is the authority for them; every app reads them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Index, String, func
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base, utc_now_column

USERNAME_PATTERN = "^[a-z0-9_]{1,30}$"


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint(f"username ~ '{USERNAME_PATTERN}'", name="username_format"),
        CheckConstraint("position('@' in email) > 1", name="email_has_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), nullable=False)
    # Optional until the member chooses one; it becomes their fediverse handle.
    # Stored lower-case (the check constraint enforces it), so a plain unique constraint
    # makes it unique regardless of case.
    username: Mapped[str | None] = mapped_column(String(30), nullable=True, unique=True)
    display_name: Mapped[str] = mapped_column(String(100), nullable=False, server_default="")
    created_at: Mapped[datetime] = utc_now_column()
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Set when the member proves the address by following a magic link sent to it.
    email_verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # argon2id, for members who choose a password; None: magic links only.
    password_hash: Mapped[str | None] = mapped_column(String(200))


# Email is kept as typed and is unique regardless of case: "Ann@x" and "ann@x" are one member.
Index("uq_users_email_lower", func.lower(User.email), unique=True)
