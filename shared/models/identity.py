"""Identity: the co-op's members and federation's records of who is signed in where.

- User: a member of the co-op. Federation is the authority for them; every app reads them.
- SsoSession: a member signed in at federation on one device (browser). Signing out on that
  device revokes it, and with it every app's grant made from it.
- OAuthClient: an app (first-party, seeded from config) or an operator-added third party.
- OAuthGrant: one client's authorization for one member on one device (one SSO session).
- OAuthAuthorizationCode, OAuthToken: the OAuth2 artefacts, stored hashed (SHA-256).
- MagicLink: a single-use sign-in or email-change link, stored hashed.
- SigningKey: the id_token signing keys (private key encrypted with the app secret).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base, utc_now_column

HASH_LENGTH = 64  # hex SHA-256
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


class SsoSession(Base):
    __tablename__ = "sso_sessions"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(HASH_LENGTH), nullable=False, unique=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    auth_time: Mapped[datetime] = utc_now_column()
    created_at: Mapped[datetime] = utc_now_column()
    last_seen_at: Mapped[datetime] = utc_now_column()
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    user_agent: Mapped[str] = mapped_column(String(300), nullable=False, server_default="")
    ip_address: Mapped[str] = mapped_column(String(64), nullable=False, server_default="")


class OAuthClient(Base):
    __tablename__ = "oauth_clients"
    __table_args__ = (
        CheckConstraint(
            "token_endpoint_auth_method IN ('client_secret_basic', 'client_secret_post', 'none')",
            name="auth_method",
        ),
    )

    client_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    # None for public clients (token_endpoint_auth_method 'none'); PKCE protects them.
    client_secret_hash: Mapped[str | None] = mapped_column(String(HASH_LENGTH))
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    redirect_uris: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    post_logout_redirect_uris: Mapped[list[str]] = mapped_column(
        ARRAY(Text), nullable=False, server_default="{}"
    )
    backchannel_logout_uri: Mapped[str | None] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(Text, nullable=False, server_default="openid profile email")
    token_endpoint_auth_method: Mapped[str] = mapped_column(
        String(40), nullable=False, server_default="client_secret_basic"
    )
    # First-party clients are the six apps: no consent screen.
    first_party: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false")
    created_at: Mapped[datetime] = utc_now_column()


class OAuthGrant(Base):
    __tablename__ = "oauth_grants"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    client_id: Mapped[str] = mapped_column(
        ForeignKey("oauth_clients.client_id", ondelete="CASCADE"), nullable=False
    )
    sso_session_id: Mapped[int | None] = mapped_column(
        ForeignKey("sso_sessions.id", ondelete="SET NULL"), index=True
    )
    scope: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = utc_now_column()
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_reason: Mapped[str | None] = mapped_column(String(100))


class OAuthConsent(Base):
    """A member's consent to a third-party client's scopes (first parties need none)."""

    __tablename__ = "oauth_consents"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    client_id: Mapped[str] = mapped_column(
        ForeignKey("oauth_clients.client_id", ondelete="CASCADE"), primary_key=True
    )
    scope: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = utc_now_column()


class OAuthAuthorizationCode(Base):
    __tablename__ = "oauth_authorization_codes"

    code_hash: Mapped[str] = mapped_column(String(HASH_LENGTH), primary_key=True)
    client_id: Mapped[str] = mapped_column(
        ForeignKey("oauth_clients.client_id", ondelete="CASCADE"), nullable=False
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    grant_id: Mapped[int] = mapped_column(
        ForeignKey("oauth_grants.id", ondelete="CASCADE"), nullable=False, index=True
    )
    redirect_uri: Mapped[str] = mapped_column(Text, nullable=False)
    scope: Mapped[str] = mapped_column(Text, nullable=False)
    nonce: Mapped[str | None] = mapped_column(Text)
    code_challenge: Mapped[str] = mapped_column(String(128), nullable=False)
    code_challenge_method: Mapped[str] = mapped_column(String(10), nullable=False)
    auth_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    created_at: Mapped[datetime] = utc_now_column()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class OAuthToken(Base):
    """An access token and its refresh token. Rotation marks the old row's refresh as used;
    presenting a used refresh token again revokes the whole grant (reuse detection)."""

    __tablename__ = "oauth_tokens"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    grant_id: Mapped[int] = mapped_column(
        ForeignKey("oauth_grants.id", ondelete="CASCADE"), nullable=False, index=True
    )
    client_id: Mapped[str] = mapped_column(
        ForeignKey("oauth_clients.client_id", ondelete="CASCADE"), nullable=False
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    access_token_hash: Mapped[str] = mapped_column(String(HASH_LENGTH), nullable=False, unique=True)
    refresh_token_hash: Mapped[str | None] = mapped_column(String(HASH_LENGTH), unique=True)
    scope: Mapped[str] = mapped_column(Text, nullable=False)
    issued_at: Mapped[datetime] = utc_now_column()
    access_expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    refresh_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    refresh_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class MagicLink(Base):
    __tablename__ = "magic_links"
    __table_args__ = (
        CheckConstraint("purpose IN ('sign_in', 'change_email')", name="purpose"),
        Index("ix_magic_links_email_created", "email", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(HASH_LENGTH), nullable=False, unique=True)
    purpose: Mapped[str] = mapped_column(String(20), nullable=False)
    # sign_in: the address the link was sent to; change_email: the new address.
    email: Mapped[str] = mapped_column(String(320), nullable=False)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # Where to continue after signing in (an authorization request at federation).
    next_url: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = utc_now_column()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class SigningKey(Base):
    """RSA keys that sign id_tokens. The newest active key signs; retired keys stay in the
    JWKS until every token they signed has expired, then are deleted."""

    __tablename__ = "oauth_signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    private_key_encrypted: Mapped[str] = mapped_column(Text, nullable=False)
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[datetime] = utc_now_column()
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
