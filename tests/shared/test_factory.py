"""What create_base_app gives every app: errors, headers, CSRF, body limit, sessions, ids."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from quart import Quart, Response, request
from quart.typing import TestClientProtocol as QuartClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from shared.config import Settings
from shared.contracts.errors import ConflictError, NotFoundError
from shared.contracts.protocols import KeyValueService
from shared.infrastructure.context import get_service
from shared.infrastructure.factory import create_base_app
from shared.infrastructure.security import csrf_exempt, get_csrf_token
from shared.models.key_values import KeyValue
from tests.conftest import ClientMaker, serving

HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
JSON = {"Accept": "application/json"}


def create_probe_app(settings: Settings) -> Quart:
    """An app with routes that exercise the factory's behaviour."""
    app = create_base_app("blog", settings=settings)

    @app.get("/boom")
    async def boom() -> str:
        raise RuntimeError("kaput")

    @app.get("/taken")
    async def taken() -> str:
        raise ConflictError("that username is taken")

    @app.get("/missing")
    async def missing() -> str:
        raise NotFoundError("no such post")

    @app.get("/token")
    async def token() -> str:
        return get_csrf_token()

    @app.post("/form")
    async def form() -> str:
        return "accepted " + (await request.form).get("name", "")

    @app.post("/hook")
    @csrf_exempt
    async def hook() -> str:
        return "hooked"

    @app.post("/upload")
    async def upload() -> str:
        return str(len(await request.get_data()))

    @app.post("/write/<int:status>")
    @csrf_exempt
    async def write(status: int) -> Response:
        await get_service(KeyValueService).do_set_value(f"probe.{status}", status)
        return Response("written", status=status)

    return app


@pytest.fixture
async def client(make_client: ClientMaker) -> QuartClient:
    return await make_client(create_probe_app)


async def csrf_token(client: QuartClient) -> str:
    return await (await client.get("/token")).get_data(as_text=True)


async def test_404_is_a_page_in_the_layout_for_browsers(client: QuartClient) -> None:
    response = await client.get("/no/such/page", headers=HTML)
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    page = await response.get_data(as_text=True)
    assert "<h1>Page not found</h1>" in page
    assert 'href="http://market.localhost/">Market</a>' in page  # the shared header


async def test_404_is_json_for_json_clients(client: QuartClient) -> None:
    response = await client.get("/no/such/page", headers=JSON)
    assert response.status_code == 404
    body = await response.get_json()
    assert body["status"] == 404
    assert body["error"] == "Page not found"


async def test_500_hides_the_error_and_logs_it(
    client: QuartClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="rose_ash.errors"):
        page = await client.get("/boom", headers=HTML)
        api = await client.get("/boom", headers=JSON)
    assert page.status_code == 500
    text = await page.get_data(as_text=True)
    assert "Something went wrong" in text
    assert "kaput" not in text
    assert api.status_code == 500
    assert (await api.get_json())["error"] == "Something went wrong"
    assert any("kaput" in str(record.exc_info) for record in caplog.records)


async def test_domain_errors_map_to_their_status(client: QuartClient) -> None:
    taken = await client.get("/taken", headers=JSON)
    assert taken.status_code == 409
    assert (await taken.get_json())["message"] == "that username is taken"
    missing = await client.get("/missing", headers=HTML)
    assert missing.status_code == 404
    assert "no such post" in await missing.get_data(as_text=True)


async def test_security_headers_on_every_response(client: QuartClient) -> None:
    for path in ("/", "/no/such/page", "/healthz"):
        headers = (await client.get(path)).headers
        policy = headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in policy
        assert "default-src 'self'" in policy
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
        assert headers["X-Frame-Options"] == "DENY"


async def test_form_post_without_csrf_token_is_refused(client: QuartClient) -> None:
    response = await client.post("/form", form={"name": "x"}, headers=HTML)
    assert response.status_code == 403
    assert "did not come from this site" in await response.get_data(as_text=True)


async def test_form_post_with_a_wrong_csrf_token_is_refused(client: QuartClient) -> None:
    await csrf_token(client)  # the session has a token, the form carries another
    response = await client.post("/form", form={"name": "x", "csrf_token": "forged"})
    assert response.status_code == 403


async def test_form_post_with_the_session_token_is_accepted(client: QuartClient) -> None:
    token = await csrf_token(client)
    response = await client.post("/form", form={"name": "rose", "csrf_token": token})
    assert response.status_code == 200
    assert await response.get_data(as_text=True) == "accepted rose"
    header = await client.post("/form", headers={"X-CSRFToken": token})
    assert header.status_code == 200


async def test_csrf_token_from_another_visitor_is_refused(
    make_client: ClientMaker, client: QuartClient
) -> None:
    stolen = await csrf_token(client)
    other_visitor = await make_client(create_probe_app)
    await csrf_token(other_visitor)
    response = await other_visitor.post("/form", form={"csrf_token": stolen})
    assert response.status_code == 403


async def test_exempt_endpoints_skip_csrf(client: QuartClient) -> None:
    response = await client.post("/hook", data=b"{}", headers={"Content-Type": "application/json"})
    assert response.status_code == 200


async def test_oversized_body_gets_413(client: QuartClient, settings: Settings) -> None:
    token = await csrf_token(client)
    limit = settings.max_body_bytes
    ok = await client.post("/upload", data=b"x" * limit, headers={"X-CSRFToken": token})
    assert ok.status_code == 200
    assert await ok.get_data(as_text=True) == str(limit)
    too_big = await client.post(
        "/upload", data=b"x" * (limit + 1), headers={"X-CSRFToken": token, **JSON}
    )
    assert too_big.status_code == 413
    assert (await too_big.get_json())["error"] == "Request too large"


async def test_oversized_form_is_refused_before_the_csrf_check(client: QuartClient) -> None:
    body = "name=" + "x" * (2 * 1024 * 1024)
    response = await client.post(
        "/form", data=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 413


async def test_request_session_commits_below_400_and_rolls_back_otherwise(
    client: QuartClient, session: AsyncSession, connection: AsyncConnection
) -> None:
    assert (await client.post("/write/201")).status_code == 201
    assert (await client.post("/write/422")).status_code == 422
    stored = await session.scalars(select(KeyValue.key).where(KeyValue.key.like("probe.%")))
    assert list(stored) == ["probe.201"]


async def test_request_id_is_echoed_or_generated(
    client: QuartClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="rose_ash.access"):
        given = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
        made = await client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert given.headers["X-Request-ID"] == "abc-123"
    assert made.headers["X-Request-ID"] != "bad id with spaces"
    assert len(made.headers["X-Request-ID"]) == 32
    access = [r for r in caplog.records if r.name == "rose_ash.access"]
    assert [getattr(r, "status", None) for r in access] == [200, 200]
    assert getattr(access[0], "request_id", None) == "abc-123"


async def test_logs_are_json_lines_with_the_request_id(
    client: QuartClient, capfd: pytest.CaptureFixture[str]
) -> None:
    await client.get("/healthz", headers={"X-Request-ID": "trace-me"})
    lines = [line for line in capfd.readouterr().err.splitlines() if "trace-me" in line]
    assert lines, "the access log line carries the request id"
    record = json.loads(lines[-1])
    assert record["request_id"] == "trace-me"
    assert record["logger"] == "rose_ash.access"
    assert record["status"] == 200
    assert record["app"] == "blog"


async def test_healthz_answers_without_dependencies(client: QuartClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert await response.get_json() == {"status": "ok", "app": "blog"}


async def test_an_app_template_overrides_the_shared_one(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "override_probe"
    (package / "templates").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "templates" / "error.html").write_text(
        '{% extends "base.html" %}{% block content %}<p>our own {{ status }}</p>{% endblock %}'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    app = create_base_app("override_probe", settings=settings)
    async with serving(app) as client:
        page = await (await client.get("/nowhere", headers=HTML)).get_data(as_text=True)
    assert "<p>our own 404</p>" in page  # the app's error.html won
    assert 'class="site-header"' in page  # and it still extends the shared layout
