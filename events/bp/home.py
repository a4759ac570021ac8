"""The events app's home page."""

from __future__ import annotations

from quart import Blueprint, render_template

home_bp = Blueprint("home", __name__)


@home_bp.get("/")
async def home() -> str:
    return await render_template("home.html")
