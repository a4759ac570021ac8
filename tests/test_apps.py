"""Every app: a home page in the shared layout saying what it is for, health and readiness."""

from __future__ import annotations

import importlib

import pytest

from shared.config import APP_NAMES
from tests.conftest import ClientMaker

PURPOSE = {
    "blog": "where the co-op publishes",
    "market": "The co-op's shop",
    "cart": "Your cart, checkout and orders",
    "events": "What is on at the co-op",
    "federation": "the one sign-in for every part of Rose Ash",
    "account": "Your membership in one place",
}


@pytest.mark.parametrize("name", APP_NAMES)
async def test_home_page_in_the_shared_layout(make_client: ClientMaker, name: str) -> None:
    client = await make_client(importlib.import_module(f"{name}.app").create_app)
    response = await client.get("/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = await response.get_data(as_text=True)
    assert PURPOSE[name] in page
    assert f'<body class="app-{name}">' in page
    for other in APP_NAMES:  # the header links all six apps by their configured URLs
        assert f'href="http://{other}.localhost/"' in page
    assert f'href="http://{name}.localhost/" aria-current="page"' in page
    stylesheet = await client.get("/static/site.css")
    assert stylesheet.status_code == 200


@pytest.mark.parametrize("name", APP_NAMES)
async def test_health_and_readiness(make_client: ClientMaker, name: str) -> None:
    client = await make_client(importlib.import_module(f"{name}.app").create_app)
    health = await client.get("/healthz")
    assert await health.get_json() == {"status": "ok", "app": name}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert await ready.get_json() == {
        "status": "ok",
        "app": name,
        "checks": {"postgres": "ok", "redis": "ok"},
    }
