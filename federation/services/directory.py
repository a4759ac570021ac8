"""The member directory on federation's home page: members and their fediverse handles.

Only members who chose a username (their public handle) are listed, by the name they chose
(display name, else username); nothing shown here is ever taken from an email address.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.contracts.identity import UserService
from shared.infrastructure.context import get_service, get_settings

DIRECTORY_PAGE_SIZE = 50


@dataclass(frozen=True)
class DirectoryEntry:
    name: str
    handle: str | None


@dataclass(frozen=True)
class Directory:
    member_count: int
    entries: list[DirectoryEntry]


async def get_directory() -> Directory:
    users = get_service(UserService)
    host = urlsplit(get_settings().url_of("federation")).hostname or ""
    members = await users.list_users(limit=DIRECTORY_PAGE_SIZE, public_only=True)
    return Directory(
        member_count=await users.count_users(public_only=True),
        entries=[
            DirectoryEntry(
                name=member.public_name or "",
                handle=f"@{member.username}@{host}" if member.username else None,
            )
            for member in members
        ],
    )
