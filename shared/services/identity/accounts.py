"""Members' own accounts (implements shared.contracts.identity.AccountService).

- Sign-in links: ``secrets.token_urlsafe(32)``, stored as SHA-256 (``hash_token``), valid for
  15 minutes and used at most once: consuming is one ``UPDATE ... WHERE used_at IS NULL AND
  expires_at > now() RETURNING``, so two concurrent clicks cannot both succeed.
- Sign-up is implicit: a link requested for an unknown email creates the member when it is
  followed (which proves the address). Whether an email has an account never changes what the
  caller gets back: only the mail that is queued differs.
- Passwords are optional, hashed with argon2id (argon2-cffi's defaults, RFC 9106); checking an
  unknown email still runs one verification against a dummy hash, so both fail alike.
- Email changes: a link to the new address. Following it opens a page; the change happens
  only when the member who asked for it, signed in, confirms there (a POST), so neither a mail
  scanner opening the link nor anyone else holding it can move an account to an address. A
  change removes the password (the address is how the account is proven from now on) and
  the view signs the member's other devices out; the old address is told. If the new address
  belongs to someone else, that address gets a notice instead of the link, and a link is
  recorded all the same (its token never leaves this process), so the requester sees the
  same "waiting for confirmation" either way.

Mail goes through the transactional outbox: ``mail.send`` events whose payload names a
template (rendered at send time by shared.infrastructure.mail, with the app URLs of the
process that sends it). The payload of a link mail carries the link's token until it is sent:
the outbox row is the mail spool. Tokens expire within 15 minutes, and the table that is
looked up (magic_links) holds hashes only.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import APP_NAMES
from shared.contracts.errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
)
from shared.contracts.identity import AccountDTO, SignInLinkAccount, SignInLinkResult, UserDTO
from shared.models.identity import MagicLink, User
from shared.services.identity.sso import hash_token, new_token
from shared.services.identity.users import check_email, check_username, to_user_dto
from shared.services.outbox import do_enqueue

MAIL_EVENT = "mail.send"
MAGIC_LINK_TTL = timedelta(minutes=15)
PURPOSE_SIGN_IN = "sign_in"
PURPOSE_CHANGE_EMAIL = "change_email"
MIN_PASSWORD_LENGTH = 10
# argon2 hashes whatever it is given; a cap keeps one request from costing much more than another.
MAX_PASSWORD_LENGTH = 1024
MAX_NEXT_URL_LENGTH = 2000

# Mail templates (shared.infrastructure.mail renders them).
MAIL_SIGN_IN_LINK = "sign_in_link"
MAIL_REGISTRATION_CLOSED = "registration_closed"
MAIL_CHANGE_EMAIL_LINK = "change_email_link"
MAIL_EMAIL_TAKEN = "email_taken"
MAIL_EMAIL_CHANGED = "email_changed"

INVALID_LINK = "This link has expired or has already been used. Ask for a new one."
WRONG_CREDENTIALS = "That email address and password do not match an account with a password."
WRONG_MEMBER = "This link confirms an email change that another account asked for."

# Usernames become fediverse handles next to the apps' own actors and the usual role mailboxes.
RESERVED_USERNAMES = frozenset(
    {
        *APP_NAMES,
        "abuse",
        "admin",
        "administrator",
        "actor",
        "api",
        "coop",
        "help",
        "hostmaster",
        "inbox",
        "info",
        "instance",
        "mail",
        "moderator",
        "no_reply",
        "noreply",
        "outbox",
        "postmaster",
        "root",
        "rose_ash",
        "roseash",
        "security",
        "staff",
        "support",
        "system",
        "webmaster",
        "www",
    }
)

_DEFAULT_HASHER = PasswordHasher()  # argon2id with RFC 9106's low-memory parameters
_DUMMY_HASHES: dict[tuple[Any, ...], str] = {}


async def do_enqueue_mail(
    session: AsyncSession, to: str, template: str, data: dict[str, Any] | None = None
) -> None:
    """Queue a mail (sent after commit by the ``mail.send`` handler)."""
    await do_enqueue(session, MAIL_EVENT, {"to": to, "template": template, "data": data or {}})


def check_password_rules(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInputError(f"a password is at least {MIN_PASSWORD_LENGTH} characters long")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInputError(f"a password is at most {MAX_PASSWORD_LENGTH} characters long")
    return password


def usable_link(token: str, purpose: str) -> tuple[ColumnElement[bool], ...]:
    """The conditions of a link with ``token`` that can still be used for ``purpose``."""
    return (
        MagicLink.token_hash == hash_token(token),
        MagicLink.purpose == purpose,
        MagicLink.used_at.is_(None),
        MagicLink.expires_at > func.now(),
    )


class SqlAccountService:
    def __init__(self, session: AsyncSession, *, hasher: PasswordHasher | None = None) -> None:
        self.session = session
        self.hasher = hasher or _DEFAULT_HASHER

    # --- magic links ---------------------------------------------------------------------

    async def _create_link(
        self, purpose: str, email: str, user_id: int | None, next_url: str | None = None
    ) -> str:
        token = new_token()
        self.session.add(
            MagicLink(
                token_hash=hash_token(token),
                purpose=purpose,
                email=email,
                user_id=user_id,
                next_url=next_url,
                expires_at=func.now() + MAGIC_LINK_TTL,
            )
        )
        await self.session.flush()
        return token

    async def _find_link(self, token: str, purpose: str) -> MagicLink | None:
        """The link if it can still be used (without using it)."""
        return await self.session.scalar(select(MagicLink).where(*usable_link(token, purpose)))

    async def _use_link(
        self, token: str, purpose: str, *, user_id: int | None = None
    ) -> MagicLink | None:
        """Mark the link used, atomically; the row as it was, or None if it cannot be used
        (or, given ``user_id``, belongs to another member)."""
        conditions = usable_link(token, purpose)
        if user_id is not None:
            conditions = (*conditions, MagicLink.user_id == user_id)
        used = await self.session.execute(
            update(MagicLink)
            .where(*conditions)
            .values(used_at=func.now())
            .returning(MagicLink)
            .execution_options(synchronize_session=False)
        )
        return used.scalar_one_or_none()

    async def _user_by_email(self, email: str) -> User | None:
        return await self.session.scalar(
            select(User).where(func.lower(User.email) == email.strip().lower())
        )

    async def do_request_sign_in_link(
        self, email: str, *, next_url: str | None = None, registration_open: bool = True
    ) -> None:
        email = check_email(email)
        if next_url is not None and len(next_url) > MAX_NEXT_URL_LENGTH:
            next_url = None
        user = await self._user_by_email(email)
        if user is None and not registration_open:
            await do_enqueue_mail(self.session, email, MAIL_REGISTRATION_CLOSED)
            return
        user_id = user.id if user is not None else None
        token = await self._create_link(PURPOSE_SIGN_IN, email, user_id, next_url)
        await do_enqueue_mail(
            self.session, email, MAIL_SIGN_IN_LINK, {"token": token, "new_account": user is None}
        )

    async def _member_of_link(self, link: MagicLink) -> User | None:
        """The member a sign-in link signs in, None for a newcomer's address;
        InvalidInputError if it was sent to an address the member no longer has."""
        if link.user_id is None:
            return await self._user_by_email(link.email)
        user = await self.session.get(User, link.user_id)
        # A link sent before the member changed their address proves the old one only.
        if user is None or user.email.lower() != link.email.lower():
            raise InvalidInputError(INVALID_LINK)
        return user

    async def get_sign_in_link_account(self, token: str) -> SignInLinkAccount:
        link = await self.session.scalar(
            select(MagicLink).where(*usable_link(token, PURPOSE_SIGN_IN))
        )
        if link is None:
            raise InvalidInputError(INVALID_LINK)
        user = await self._member_of_link(link)
        if user is None:
            return SignInLinkAccount(email=link.email, username=None, new_account=True)
        return SignInLinkAccount(email=user.email, username=user.username, new_account=False)

    async def do_consume_sign_in_link(self, token: str) -> SignInLinkResult:
        link = await self._use_link(token, PURPOSE_SIGN_IN)
        if link is None:
            raise InvalidInputError(INVALID_LINK)
        new_account = False
        user = await self._member_of_link(link)
        if user is None:
            user = await self._create_member(link.email)
            new_account = True
        if user.email_verified_at is None:
            user.email_verified_at = datetime.now(UTC)
            await self.session.flush()
        return SignInLinkResult(
            user=to_user_dto(user), next_url=link.next_url, new_account=new_account
        )

    async def _create_member(self, email: str) -> User:
        user = User(email=email)
        try:
            async with self.session.begin_nested():
                self.session.add(user)
        except IntegrityError:
            # Someone signed up with this address a moment ago: it is theirs, and ours.
            found = await self._user_by_email(email)
            if found is None:
                raise
            return found
        await self.session.refresh(user)
        return user

    # --- passwords -----------------------------------------------------------------------

    async def _dummy(self) -> str:
        """A hash with this hasher's parameters that no password matches (made once)."""
        h = self.hasher
        key = (h.time_cost, h.memory_cost, h.parallelism, h.hash_len, h.salt_len, h.type)
        if key not in _DUMMY_HASHES:
            _DUMMY_HASHES[key] = await asyncio.to_thread(h.hash, new_token())
        return _DUMMY_HASHES[key]

    async def check_password(self, email: str, password: str) -> UserDTO:
        user = await self._user_by_email(email) if len(password) <= MAX_PASSWORD_LENGTH else None
        stored = user.password_hash if user is not None else None
        try:
            # An unknown email costs one verification too, so timing tells nothing.
            await asyncio.to_thread(self.hasher.verify, stored or await self._dummy(), password)
        except (VerificationError, InvalidHashError):
            raise InvalidInputError(WRONG_CREDENTIALS) from None
        if user is None or stored is None:
            raise InvalidInputError(WRONG_CREDENTIALS)
        if self.hasher.check_needs_rehash(stored):
            user.password_hash = await asyncio.to_thread(self.hasher.hash, password)
            await self.session.flush()
        return to_user_dto(user)

    async def _get_user(self, user_id: int) -> User:
        user = await self.session.get(User, user_id)
        if user is None:
            raise NotFoundError(f"no member with id {user_id}")
        return user

    async def do_set_password(self, user_id: int, password: str) -> None:
        check_password_rules(password)
        user = await self._get_user(user_id)
        user.password_hash = await asyncio.to_thread(self.hasher.hash, password)
        await self.session.flush()

    async def do_remove_password(self, user_id: int) -> None:
        user = await self._get_user(user_id)
        user.password_hash = None
        await self.session.flush()

    # --- username ------------------------------------------------------------------------

    async def check_username_available(self, username: str, *, user_id: int | None = None) -> str:
        username = check_username(username)
        if username in RESERVED_USERNAMES:
            raise ConflictError(f"the username {username!r} is reserved")
        holder = await self.session.scalar(select(User.id).where(User.username == username))
        if holder is not None and holder != user_id:
            raise ConflictError(f"the username {username!r} is taken")
        return username

    async def do_change_username(self, user_id: int, username: str) -> UserDTO:
        username = await self.check_username_available(username, user_id=user_id)
        user = await self._get_user(user_id)
        try:
            async with self.session.begin_nested():
                user.username = username
        except IntegrityError:
            await self.session.refresh(user)
            raise ConflictError(f"the username {username!r} is taken") from None
        return to_user_dto(user)

    # --- email change --------------------------------------------------------------------

    async def do_request_email_change(self, user_id: int, new_email: str) -> None:
        new_email = check_email(new_email)
        user = await self._get_user(user_id)
        if user.email.lower() == new_email.lower():
            raise InvalidInputError(f"{new_email} is already your email address")
        # Recorded whether or not the address is taken, so the member's account shows the same
        # pending change either way (a taken address cannot be confirmed: its token is dropped).
        token = await self._create_link(PURPOSE_CHANGE_EMAIL, new_email, user.id)
        if await self._user_by_email(new_email) is not None:
            await do_enqueue_mail(self.session, new_email, MAIL_EMAIL_TAKEN)
            return
        await do_enqueue_mail(
            self.session, new_email, MAIL_CHANGE_EMAIL_LINK, {"token": token, "old": user.email}
        )

    async def check_email_change(self, token: str, user_id: int | None) -> str:
        link = await self._find_link(token, PURPOSE_CHANGE_EMAIL)
        if link is None or link.user_id is None:
            raise InvalidInputError(INVALID_LINK)
        if link.user_id != user_id:
            raise ForbiddenError(WRONG_MEMBER)
        return link.email

    async def do_confirm_email_change(self, token: str, user_id: int | None) -> UserDTO:
        await self.check_email_change(token, user_id)
        link = await self._use_link(token, PURPOSE_CHANGE_EMAIL, user_id=user_id)
        if link is None or link.user_id is None:  # used by a concurrent request just now
            raise InvalidInputError(INVALID_LINK)
        user = await self._get_user(link.user_id)
        old_email = user.email
        try:
            async with self.session.begin_nested():
                user.email = link.email
                user.email_verified_at = datetime.now(UTC)
                # The new address is how the account is proven from now on: a password set
                # before the change is not carried over to it.
                user.password_hash = None
        except IntegrityError:
            await self.session.refresh(user)
            raise ConflictError(f"{link.email} already has an account") from None
        # Other pending changes of this member are void now.
        await self.session.execute(
            update(MagicLink)
            .where(
                MagicLink.user_id == user.id,
                MagicLink.purpose == PURPOSE_CHANGE_EMAIL,
                MagicLink.used_at.is_(None),
            )
            .values(used_at=func.now())
            .execution_options(synchronize_session=False)
        )
        await do_enqueue_mail(self.session, old_email, MAIL_EMAIL_CHANGED, {"new": link.email})
        await self.session.refresh(user)
        return to_user_dto(user)

    # --- reading ---------------------------------------------------------------------------

    async def get_account(self, user_id: int) -> AccountDTO:
        user = await self._get_user(user_id)
        pending = await self.session.scalar(
            select(MagicLink.email)
            .where(
                MagicLink.user_id == user_id,
                MagicLink.purpose == PURPOSE_CHANGE_EMAIL,
                MagicLink.used_at.is_(None),
                MagicLink.expires_at > func.now(),
            )
            .order_by(MagicLink.created_at.desc(), MagicLink.id.desc())
            .limit(1)
        )
        return AccountDTO(
            user=to_user_dto(user),
            email_verified_at=user.email_verified_at,
            has_password=user.password_hash is not None,
            pending_email=pending,
        )
