"""The identity domain's user service (implements shared.contracts.identity.UserService)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from shared.contracts.errors import ConflictError, InvalidInputError, NotFoundError
from shared.contracts.identity import UserDTO
from shared.models.identity import USERNAME_PATTERN, User

EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_EMAIL_LENGTH = 320
MAX_DISPLAY_NAME_LENGTH = 100


def to_user_dto(user: User) -> UserDTO:
    return UserDTO(
        id=user.id,
        email=user.email,
        username=user.username,
        display_name=user.display_name,
        created_at=user.created_at,
        last_login_at=user.last_login_at,
    )


def check_email(email: str) -> str:
    """The email trimmed; InvalidInputError if it is not an address."""
    email = email.strip()
    if len(email) > MAX_EMAIL_LENGTH or not EMAIL_PATTERN.match(email):
        raise InvalidInputError(f"{email!r} is not a valid email address")
    return email


def check_username(username: str) -> str:
    """The username lower-cased; InvalidInputError unless 1-30 of a-z, 0-9 and _."""
    username = username.strip().lower()
    if not re.fullmatch(USERNAME_PATTERN, username):
        raise InvalidInputError(
            "a username is 1 to 30 characters of lower-case letters, digits and underscores"
        )
    return username


class SqlUserService:
    """Users in PostgreSQL, through the request's session."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get_user(self, user_id: int) -> UserDTO:
        user = await self.session.get(User, user_id)
        if user is None:
            raise NotFoundError(f"no member with id {user_id}")
        return to_user_dto(user)

    async def get_user_by_email(self, email: str) -> UserDTO | None:
        found = await self.session.scalar(
            select(User).where(func.lower(User.email) == email.strip().lower())
        )
        return to_user_dto(found) if found is not None else None

    async def list_users(
        self, *, limit: int = 50, offset: int = 0, public_only: bool = False
    ) -> list[UserDTO]:
        query = select(User).order_by(User.id).limit(limit).offset(offset)
        if public_only:
            query = query.where(User.username.is_not(None))
        return [to_user_dto(user) for user in await self.session.scalars(query)]

    async def count_users(self, *, public_only: bool = False) -> int:
        query = select(func.count()).select_from(User)
        if public_only:
            query = query.where(User.username.is_not(None))
        return int(await self.session.scalar(query) or 0)

    async def create_user(
        self,
        email: str,
        *,
        username: str | None = None,
        display_name: str = "",
        email_verified: bool = False,
    ) -> UserDTO:
        email = check_email(email)
        if username is not None:
            username = check_username(username)
        display_name = display_name.strip()
        if len(display_name) > MAX_DISPLAY_NAME_LENGTH:
            raise InvalidInputError(
                f"a display name is at most {MAX_DISPLAY_NAME_LENGTH} characters"
            )
        user = User(email=email, username=username, display_name=display_name)
        if email_verified:
            user.email_verified_at = datetime.now(UTC)
        try:
            # A savepoint: a clash rolls back this insert only, not the caller's transaction.
            async with self.session.begin_nested():
                self.session.add(user)
        except IntegrityError as exc:
            if "uq_users_email_lower" in str(exc.orig):
                raise ConflictError(f"{email} already has an account") from None
            if "uq_users_username" in str(exc.orig):
                raise ConflictError(f"the username {username!r} is taken") from None
            raise
        await self.session.refresh(user)
        return to_user_dto(user)

    async def do_record_login(self, user_id: int) -> UserDTO:
        user = await self.session.get(User, user_id)
        if user is None:
            raise NotFoundError(f"no member with id {user_id}")
        user.last_login_at = func.now()
        await self.session.flush()
        await self.session.refresh(user)
        return to_user_dto(user)
