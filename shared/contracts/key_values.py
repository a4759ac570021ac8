"""The key-value store's contract: small named settings kept in the database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class KeyValueDTO:
    key: str
    value: Any
    updated_at: datetime


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
