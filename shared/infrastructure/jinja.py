"""Templates: an app's own templates override the shared ones of the same name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, FileSystemLoader
from quart import Quart

from shared.config import APP_LABELS, APP_NAMES, Settings

SHARED_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


@dataclass(frozen=True)
class AppLink:
    name: str
    label: str
    url: str


def build_app_links(settings: Settings) -> list[AppLink]:
    return [AppLink(name, APP_LABELS[name], settings.url_of(name) + "/") for name in APP_NAMES]


def install_templates(app: Quart, name: str, settings: Settings) -> None:
    app_templates = Path(app.root_path) / "templates"
    # Assigning over Quart's cached jinja_loader before the environment is first built.
    app.jinja_loader = ChoiceLoader(
        [FileSystemLoader(app_templates), FileSystemLoader(SHARED_TEMPLATES)]
    )
    links = build_app_links(settings)

    @app.context_processor
    async def layout_context() -> dict[str, Any]:
        return {"current_app_name": name, "app_links": links}
