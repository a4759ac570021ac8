"""The identity domain's contract: members (users), their accounts and sign-in links, SSO sessions
and grants. Apps depend on these protocols and DTOs only; the registry hands out the
implementation bound to the request's session.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable


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


@runtime_checkable
class UserService(Protocol):
    """Members of the co-op (the identity domain; federation is its authority)."""

    async def get_user(self, user_id: int) -> UserDTO:
        """The member with this id; NotFoundError if there is none."""
        ...

    async def get_user_by_email(self, email: str) -> UserDTO | None:
        """The member with this email, compared case-insensitively, or None."""
        ...

    async def list_users(
        self, *, limit: int = 50, offset: int = 0, public_only: bool = False
    ) -> list[UserDTO]:
        """Members, oldest first; ``public_only``: only those who chose a username (a public
        handle), the members who may be listed to others."""
        ...

    async def count_users(self, *, public_only: bool = False) -> int:
        """How many members (``public_only``: who chose a username)."""
        ...

    async def create_user(
        self,
        email: str,
        *,
        username: str | None = None,
        display_name: str = "",
        email_verified: bool = False,
    ) -> UserDTO:
        """A new member (``email_verified``: the caller vouches for the address, as the demo
        seed does for its own); ConflictError if the email or username is taken (any case),
        InvalidInputError if either is malformed."""
        ...

    async def do_record_login(self, user_id: int) -> UserDTO:
        """Stamp the member's last-login time with now."""
        ...


@runtime_checkable
class SsoService(Protocol):
    """Single sign-on sessions (one per member per device) and the app grants made from them.

    Federation starts and ends sessions; every app checks its grant through here."""

    async def do_start_session(
        self, user_id: int, *, user_agent: str = "", ip_address: str = ""
    ) -> StartedSession:
        """Sign the member in on a new device; the token goes into federation's cookie."""
        ...

    async def get_active_session(self, token: str) -> SsoSessionDTO | None:
        """The live session this token belongs to (unrevoked, within the idle and absolute
        lifetimes), or None."""
        ...

    async def do_touch_session(self, sso_session_id: int) -> None:
        """Record that the device is in use now, so its live session does not idle out."""
        ...

    async def do_record_authentication(self, sso_session_id: int) -> None:
        """The member signed in again on this device: the session's auth_time becomes now."""
        ...

    async def list_sessions(self, user_id: int) -> list[SsoSessionDTO]:
        """The member's live sessions (devices), most recently seen first."""
        ...

    async def do_sign_out_device(self, sso_session_id: int, *, reason: str) -> list[int]:
        """Revoke the session, every grant made from it and their tokens; queue the apps'
        back-channel logout. Returns the revoked grant ids (none if already signed out)."""
        ...

    async def do_sign_out_everywhere(self, user_id: int) -> int:
        """Sign the member out on every device; returns how many sessions were ended."""
        ...

    async def get_grant_status(self, grant_id: int) -> GrantStatusDTO | None:
        """The grant's current status, or None if there is no such grant. A grant made from
        an SSO session is active only while that session is live."""
        ...


@runtime_checkable
class AccountService(Protocol):
    """Members' own accounts at federation: magic-link sign-in (and implicit sign-up), an
    optional password, the username, and email changes re-verified by a link.

    Nothing here tells a caller whether an email has an account: requesting a link answers
    the same either way, and a wrong password and an unknown email fail alike. Mails are
    queued on the transactional outbox ("mail.send") in the caller's transaction. Rate limits
    are the views' business (they know the client's address); see
    shared.infrastructure.rate_limit.
    """

    async def do_request_sign_in_link(
        self, email: str, *, next_url: str | None = None, registration_open: bool = True
    ) -> None:
        """Queue a single-use sign-in link (15 minutes) to ``email``, for a member or, when
        registration is open, a newcomer; when it is closed a newcomer gets a mail saying so.
        InvalidInputError only when ``email`` is not an address."""
        ...

    async def get_sign_in_link_account(self, token: str) -> SignInLinkAccount:
        """Whose account the link would sign in to, without using it. InvalidInputError if
        the link is unknown, expired or used (as do_consume_sign_in_link would say)."""
        ...

    async def do_consume_sign_in_link(self, token: str) -> SignInLinkResult:
        """Use the link once: the member it signs in (created now for a newcomer, and the
        address marked verified). InvalidInputError if the link is unknown, expired or used."""
        ...

    async def check_password(self, email: str, password: str) -> UserDTO:
        """The member whose email and password these are; InvalidInputError (one message for
        an unknown email, a member without a password and a wrong password) otherwise."""
        ...

    async def do_set_password(self, user_id: int, password: str) -> None:
        """Set or replace the member's password (argon2id); InvalidInputError if it is too
        short or too long, NotFoundError if there is no such member."""
        ...

    async def do_remove_password(self, user_id: int) -> None:
        """Go back to magic links only."""
        ...

    async def check_username_available(self, username: str, *, user_id: int | None = None) -> str:
        """The username normalised (lower case); InvalidInputError if malformed, ConflictError
        if reserved or taken by another member than ``user_id``."""
        ...

    async def do_change_username(self, user_id: int, username: str) -> UserDTO:
        """Choose or change the username (the member's fediverse handle); errors as
        check_username_available."""
        ...

    async def do_request_email_change(self, user_id: int, new_email: str) -> None:
        """Queue a confirmation link to the new address (15 minutes). If the address belongs to
        another member, that address is told instead; either way the change shows as pending
        in get_account (the caller cannot tell the difference). InvalidInputError if malformed
        or unchanged."""
        ...

    async def check_email_change(self, token: str, user_id: int | None) -> str:
        """The new address a confirmation link would give the member ``user_id`` (the member
        signed in, None for a visitor), without using the link. InvalidInputError if the link
        is unknown, expired or used, ForbiddenError if another member asked for it."""
        ...

    async def do_confirm_email_change(self, token: str, user_id: int | None) -> UserDTO:
        """Use a confirmation link once, only for the member who asked for it and is signed in
        (``user_id``): the address becomes the member's (verified), their password is removed
        and the old address is told. Errors as check_email_change, and ConflictError if the
        address was taken meanwhile. Signing the member's other devices out is the caller's
        part (SsoService)."""
        ...

    async def get_account(self, user_id: int) -> AccountDTO:
        """The member's account; NotFoundError if there is none."""
        ...
