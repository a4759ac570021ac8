"""Federation's home page: the social hub's member directory."""

from __future__ import annotations

from quart import Blueprint, render_template

from federation.services.directory import get_directory
from shared.infrastructure.page_cache import cache_page

home_bp = Blueprint("home", __name__)


@home_bp.get("/")
@cache_page(ttl=30)
async def home() -> str:
    return await render_template("home.html", directory=await get_directory())
