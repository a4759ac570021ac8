"""One typing.Protocol per domain service: how an app reaches another domain.

Apps depend on these protocols only; the registry hands out the implementation bound to the
request's session. Every implementation has a conformance test (tests/shared/test_registry.py).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from shared.contracts.dtos import (
    GrantStatusDTO,
    KeyValueDTO,
    SsoSessionDTO,
    StartedSession,
    UserDTO,
)


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
        """The unrevoked session this token belongs to, or None."""
        ...

    async def list_sessions(self, user_id: int) -> list[SsoSessionDTO]:
        """The member's active sessions (devices), most recently seen first."""
        ...

    async def do_sign_out_device(self, sso_session_id: int, *, reason: str) -> list[int]:
        """Revoke the session, every grant made from it and their tokens; queue the apps'
        back-channel logout. Returns the revoked grant ids (none if already signed out)."""
        ...

    async def do_sign_out_everywhere(self, user_id: int) -> int:
        """Sign the member out on every device; returns how many sessions were ended."""
        ...

    async def get_grant_status(self, grant_id: int) -> GrantStatusDTO | None:
        """The grant's current status, or None if there is no such grant."""
        ...
