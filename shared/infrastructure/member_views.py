"""What shows a member to others or to themselves, purged when how they are shown changes.

A member is shown to themselves by name (display name, else username, else the email's local
part) in account's ``auth-menu`` fragment (cached per member for 60 s), and to everyone by the
name they chose (never from the email) in federation's member directory (its home page, in the
anonymous page cache under the ``members`` tag). A change of
username or email, or a new member, purges both at once instead of waiting out their TTLs.
"""

from __future__ import annotations

from shared.infrastructure.context import get_session
from shared.infrastructure.fragments import do_purge_fragment
from shared.infrastructure.page_cache import do_purge_pages

MEMBERS_PAGE_TAG = "members"  # pages that list members (federation's directory)


async def do_commit_and_purge_member_views(member_id: int) -> None:
    """Commit the request's change to the member, then purge what shows them. Purging after
    the commit means no page or fragment can be re-rendered from the old row in between."""
    await get_session().commit()
    await do_purge_fragment("account", "auth-menu", member_id=member_id)
    await do_purge_pages(MEMBERS_PAGE_TAG)
