"""Frozen data transfer objects: what services hand back instead of ORM rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


def get_public_name(display_name: str, username: str | None) -> str | None:
    """The name a member chose to be shown by (display name, else username), or None."""
    return display_name or username or None


@dataclass(frozen=True, slots=True)
class UserDTO:
    id: int
    email: str
    username: str | None
    display_name: str
    created_at: datetime
    last_login_at: datetime | None

    @property
    def name(self) -> str:
        """What to call the member on their own pages: display name, else username, else the
        email's local part. Only for the member themselves: others see ``public_name``."""
        return self.public_name or self.email.split("@", 1)[0]

    @property
    def public_name(self) -> str | None:
        """What others may call the member: the display name or username they chose, never
        anything taken from their email (None when they chose neither)."""
        return get_public_name(self.display_name, self.username)


@dataclass(frozen=True, slots=True)
class KeyValueDTO:
    key: str
    value: Any
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class SsoSessionDTO:
    """A member signed in at federation on one device, and the apps signed in from it."""

    id: int
    user_id: int
    auth_time: datetime
    created_at: datetime
    last_seen_at: datetime
    user_agent: str
    ip_address: str
    app_names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StartedSession:
    """A new SSO session and its token (kept only in the member's federation cookie)."""

    token: str
    session: SsoSessionDTO


@dataclass(frozen=True, slots=True)
class GrantStatusDTO:
    """Whether an app's sign-in (an OAuth grant) still stands."""

    grant_id: int
    user_id: int
    client_id: str
    sso_session_id: int | None
    active: bool


@dataclass(frozen=True, slots=True)
class AccountDTO:
    """What a member can see and change of their own account (the account dashboard)."""

    user: UserDTO
    email_verified_at: datetime | None
    has_password: bool
    # The new address of an email change waiting for its confirmation link, if any.
    pending_email: str | None


@dataclass(frozen=True, slots=True)
class SignInLinkResult:
    """A followed sign-in link: who is now signed in and where they were going."""

    user: UserDTO
    next_url: str | None
    # True when following the link created the account (implicit sign-up).
    new_account: bool


@dataclass(frozen=True, slots=True)
class SignInLinkAccount:
    """Whose account a sign-in link would sign in to, told before it is used (so a person
    sent someone else's link sees whose account it is)."""

    email: str
    username: str | None
    # True when no account has the address yet: following the link creates it.
    new_account: bool


@dataclass(frozen=True, slots=True)
class MenuNodeDTO:
    """An entry of the site navigation, with its children in order (``nav-tree``)."""

    id: int
    parent_id: int | None
    label: str
    # An absolute http(s) URL, or a path on blog ("/about").
    url: str
    position: int
    children: tuple[MenuNodeDTO, ...] = ()
