"""One typing.Protocol per domain service: how an app reaches another domain.

Apps depend on these protocols only; the registry hands out the implementation bound to the
request's session. Every implementation has a conformance test (tests/shared/test_registry.py).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from shared.contracts.dtos import KeyValueDTO, UserDTO


@runtime_checkable
class UserService(Protocol):
    """Members of the co-op (the identity domain; federation is its authority)."""

    async def get_user(self, user_id: int) -> UserDTO:
        """The member with this id; NotFoundError if there is none."""
        ...

    async def get_user_by_email(self, email: str) -> UserDTO | None:
        """The member with this email, compared case-insensitively, or None."""
        ...

    async def list_users(self, *, limit: int = 50, offset: int = 0) -> list[UserDTO]:
        """Members, oldest first."""
        ...

    async def count_users(self) -> int: ...

    async def create_user(
        self, email: str, *, username: str | None = None, display_name: str = ""
    ) -> UserDTO:
        """A new member; ConflictError if the email or username is taken (any case),
        InvalidInputError if either is malformed."""
        ...

    async def do_record_login(self, user_id: int) -> UserDTO:
        """Stamp the member's last-login time with now."""
        ...


@runtime_checkable
class KeyValueService(Protocol):
    """Site-wide values stored as JSON under a key."""

    async def get_value(self, key: str, default: Any = None) -> Any: ...

    async def get_entry(self, key: str) -> KeyValueDTO:
        """The stored entry; NotFoundError if the key is unset."""
        ...

    async def do_set_value(self, key: str, value: Any) -> KeyValueDTO:
        """Create or replace the value under ``key``."""
        ...

    async def do_delete_value(self, key: str) -> bool:
        """Remove ``key``; True if it existed."""
        ...
