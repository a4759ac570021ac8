"""Frozen data transfer objects: what services hand back instead of ORM rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


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
        """What to call the member on a page: display name, else username, else email."""
        return self.display_name or self.username or self.email.split("@", 1)[0]


@dataclass(frozen=True, slots=True)
class KeyValueDTO:
    key: str
    value: Any
    updated_at: datetime
