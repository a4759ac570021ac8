"""Federation's home page: the social hub's member directory."""

from __future__ import annotations

from quart import Blueprint, render_template

from federation.services.directory import get_directory
from shared.infrastructure.member_views import MEMBERS_PAGE_TAG
from shared.infrastructure.page_cache import cache_page

home_bp = Blueprint("home", __name__)


@home_bp.get("/")
@cache_page(ttl=30, tags=(MEMBERS_PAGE_TAG,))  # purged when members change
async def home() -> str:
    return await render_template("home.html", directory=await get_directory())
