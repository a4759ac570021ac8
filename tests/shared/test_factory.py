"""What create_base_app gives every app: errors, headers, CSRF, body limit, sessions, ids."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from hypercorn.config import Config as HypercornConfig
from quart import Quart, Response, request
from quart.typing import TestClientProtocol as QuartClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from shared.config import Settings
from shared.contracts.errors import ConflictError, NotFoundError
from shared.contracts.key_values import KeyValueService
from shared.infrastructure.asgi import send_answer
from shared.infrastructure.context import get_service
from shared.infrastructure.factory import create_base_app
from shared.infrastructure.logging import REDACTED, redact_tokens
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

    @app.get("/unsubscribe/<secret>")
    async def unsubscribe(secret: str) -> str:
        raise RuntimeError("kaput")  # logged as an unhandled error, with the path

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


SECRET = "s3cr3t-T0ken_value"
TOKEN_TARGETS = [
    f"/login/magic/{SECRET}",
    f"/email/confirm/{SECRET}",
    f"/unsubscribe/{SECRET}",
    f"/auth/callback?code={SECRET}&state={SECRET}",
    f"/login?next=%2Foauth%2Fauthorize%3Fclient_id%3Dblog%26state%3D{SECRET}",
    f"/logout?id_token_hint={SECRET}&post_logout_redirect_uri=/",
    f"/x?token={SECRET}",
    f"/x?access_token={SECRET}",
    f"/x?refresh_token={SECRET}",
]


@pytest.mark.parametrize("target", TOKEN_TARGETS)
def test_redact_tokens_leaves_no_token(target: str) -> None:
    redacted = redact_tokens(target)
    assert SECRET not in redacted
    assert REDACTED in redacted


@pytest.mark.parametrize(
    "target", ["/oauth/token", "/ap/objects/abc123", "/posts/decode?barcode=1", "/login?next=/"]
)
def test_redact_tokens_leaves_other_urls_alone(target: str) -> None:
    assert redact_tokens(target) == target


async def test_access_log_lines_of_token_urls_hold_no_token(
    client: QuartClient, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """The records (as any handler gets them) and the JSON lines written: no token."""
    with caplog.at_level(logging.INFO, logger="rose_ash.access"):
        for target in TOKEN_TARGETS:
            await client.get(target, headers={"X-Request-ID": "token-url"})
    access = [r for r in caplog.records if r.name == "rose_ash.access"]
    assert len(access) == len(TOKEN_TARGETS)
    assert {r.getMessage() for r in access} >= {
        f"GET /login/magic/{REDACTED} 404",
        f"GET /email/confirm/{REDACTED} 404",
        f"GET /unsubscribe/{REDACTED} 500",
    }
    assert all(SECRET not in r.getMessage() + getattr(r, "path", "") for r in access)
    lines = [line for line in capfd.readouterr().err.splitlines() if "token-url" in line]
    assert any('"logger": "rose_ash.errors"' in line for line in lines)  # the 500's error
    assert len(lines) > len(TOKEN_TARGETS)
    assert all(SECRET not in line for line in lines)


async def test_any_loggers_lines_are_redacted_when_written(
    client: QuartClient, capfd: pytest.CaptureFixture[str]
) -> None:
    await client.get("/healthz")  # the app's JSON handler is installed
    logging.getLogger("httpx").warning(
        "HTTP Request: GET %s", f"http://blog:8000/auth/callback?code={SECRET}"
    )
    [line] = [line for line in capfd.readouterr().err.splitlines() if "HTTP Request" in line]
    assert (
        json.loads(line)["message"]
        == f"HTTP Request: GET http://blog:8000/auth/callback?code={REDACTED}"
    )


async def test_answers_sent_before_quart_are_logged_without_tokens(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": f"/login/magic/{SECRET}", "headers": []}
    with caplog.at_level(logging.INFO, logger="rose_ash.access"):
        await send_answer(
            scope,
            send,
            app_name="federation",
            status=200,
            headers=[],
            body=b"cached",
            started=time.perf_counter(),
        )
    [record] = [r for r in caplog.records if r.name == "rose_ash.access"]
    assert record.getMessage() == f"GET /login/magic/{REDACTED} 200"
    assert getattr(record, "path", None) == f"/login/magic/{REDACTED}"
    assert sent[-1]["body"] == b"cached"


@pytest.mark.parametrize("app", ["blog", "market", "cart", "events", "federation", "account"])
def test_hypercorn_writes_no_access_log_of_its_own(app: str) -> None:
    """Hypercorn's access log would write raw request lines (tokens and all): it stays off,
    and the apps' own (redacted) access log is the one."""
    config = HypercornConfig.from_toml(
        Path(__file__).parents[2] / app / "config" / "hypercorn.toml"
    )
    assert config.accesslog is None


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
