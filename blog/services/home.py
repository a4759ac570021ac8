"""What the blog's home page shows, gathered through the domain services."""

from __future__ import annotations

from dataclasses import dataclass

from shared.contracts.key_values import KeyValueService
from shared.infrastructure.context import get_service

DEFAULT_TITLE = "Rose Ash"
DEFAULT_TAGLINE = "News, stories and pages from the co-op."


@dataclass(frozen=True)
class BlogHome:
    title: str
    tagline: str


async def get_blog_home() -> BlogHome:
    values = get_service(KeyValueService)
    return BlogHome(
        title=str(await values.get_value("site.title", DEFAULT_TITLE)),
        tagline=str(await values.get_value("site.tagline", DEFAULT_TAGLINE)),
    )
