"""The market app's home page."""

from __future__ import annotations

from quart import Blueprint, render_template

from shared.infrastructure.page_cache import cache_page

home_bp = Blueprint("home", __name__)


@home_bp.get("/")
@cache_page(ttl=60)
async def home() -> str:
    return await render_template("home.html")
