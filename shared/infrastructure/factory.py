"""create_base_app: what every Rose Ash app is made of before it adds its own blueprints.

Settings are loaded here (or passed in by tests); the database engine and the Redis client
are created in the serving lifecycle and kept on the app, never at import time.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from quart import Quart, Response, current_app, g, has_request_context, request

from shared.config import Settings, load_settings
from shared.db import Database, create_engine, create_session_factory
from shared.infrastructure.activitypub.inbox_fast import install_inbox_fast_path
from shared.infrastructure.activitypub.install import install_activitypub
from shared.infrastructure.activitypub.routes import install_activitypub_fast_path
from shared.infrastructure.asgi import choose_request_id
from shared.infrastructure.context import EXTENSION_KEY, AppState, get_state
from shared.infrastructure.errors import install_error_handlers
from shared.infrastructure.fragments import (
    LAYOUT_KEY,
    FragmentResult,
    FragmentSpec,
    add_layout_fragments,
    fetch_fragments,
    get_member_id,
    install_fragments,
)
from shared.infrastructure.health import health_bp
from shared.infrastructure.jinja import install_templates
from shared.infrastructure.logging import (
    app_name_var,
    configure_logging,
    redact_tokens,
    request_id_var,
)
from shared.infrastructure.metrics import metrics_bp
from shared.infrastructure.oauth import CLIENT_APPS, install_oauth_client
from shared.infrastructure.outbox_handlers import build_outbox_handlers
from shared.infrastructure.page_cache import install_page_cache
from shared.infrastructure.page_cache_fast import install_page_cache_fast_path
from shared.infrastructure.redis_client import open_redis
from shared.infrastructure.security import install_security
from shared.services.outbox import has_pending_events, process_due_events
from shared.services.registry import ServiceRegistry, build_registry

SHARED_STATIC = Path(__file__).resolve().parent.parent / "static"
access_logger = logging.getLogger("rose_ash.access")
# What every page's layout composes (shared/templates/_header.html; README "Fragment catalogue").
LAYOUT_FRAGMENTS = {
    "nav_tree": FragmentSpec("blog", "nav-tree"),
    "auth_menu": FragmentSpec("account", "auth-menu", personalised=True),
}


def create_base_app(
    name: str,
    *,
    settings: Settings | None = None,
    registry: ServiceRegistry | None = None,
) -> Quart:
    """A Quart app for ``name`` (the app's package) with the platform's common parts."""
    settings = settings or load_settings()
    configure_logging(settings.log_level)
    app = Quart(name, static_folder=str(SHARED_STATIC), static_url_path="/static")
    app.config.update(
        SECRET_KEY=settings.secret_key.get_secret_value(),
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        SESSION_COOKIE_NAME=settings.cookies.name_of(f"{name}_session"),
        SESSION_COOKIE_SECURE=settings.cookies.secure,
        SESSION_COOKIE_SAMESITE=settings.cookies.samesite,
        SESSION_COOKIE_HTTPONLY=True,
        PROPAGATE_EXCEPTIONS=False,
    )
    app.extensions[EXTENSION_KEY] = AppState(
        name=name, settings=settings, registry=registry or build_registry(settings)
    )
    install_lifecycle(app)
    install_request_context(app)
    install_templates(app, name, settings)
    install_security(app)
    install_error_handlers(app)
    install_page_cache(app)  # before install_oauth_client: its after_request runs after theirs
    if name in CLIENT_APPS:  # every app but federation, the authorization server itself
        install_oauth_client(app)
    app.register_blueprint(health_bp)
    install_fragments(app)  # /internal/fragments/<type> and the fetcher of other apps' ones
    add_layout_fragments(app, LAYOUT_FRAGMENTS)
    app.context_processor(prefetch_layout_fragments)  # every page: both at once
    app.register_blueprint(metrics_bp)  # /metrics, signed like /internal/
    install_activitypub(app)  # the app's actor, discovery, collections and inboxes
    install_page_cache_fast_path(app)  # cache hits answered before the request stack
    install_activitypub_fast_path(app)  # held actor documents and WebFinger
    install_inbox_fast_path(app)  # POSTs from senders whose key is held, outermost
    return app


async def prefetch_layout_fragments() -> dict[str, Any]:
    """``layout_fragments`` for every template: the header's fragments (LAYOUT_FRAGMENTS),
    fetched together once per request (reusing what ``render_composed`` fetched). Not for
    fragment renders themselves (``/internal/``); ``auth_menu`` only for a signed-in member."""
    if not has_request_context() or request.path.startswith("/internal/"):
        return {"layout_fragments": {}}
    if "layout_fragments" not in g:
        layout: dict[str, FragmentSpec] = current_app.extensions[LAYOUT_KEY]
        specs = {name: layout[name] for name in LAYOUT_FRAGMENTS if name in layout}
        if await get_member_id() is None:
            specs = {name: spec for name, spec in specs.items() if not spec.personalised}
        known: dict[FragmentSpec, FragmentResult] = g.get("fragment_results") or {}
        missing = {name: spec for name, spec in specs.items() if spec not in known}
        fetched = await fetch_fragments(missing) if missing else {}
        g.layout_fragments = {
            name: known.get(spec) or fetched[name] for name, spec in specs.items()
        }
    return {"layout_fragments": g.layout_fragments}


def install_lifecycle(app: Quart) -> None:
    @app.before_serving
    async def connect() -> None:
        state = get_state(app)
        engine = create_engine(state.settings, state.name)
        state.database = Database(engine=engine, session_factory=create_session_factory(engine))
        settings = state.settings
        memo_seconds = settings.redis_failure_memo_seconds
        state.redis = open_redis(settings.redis_url, failure_memo_seconds=memo_seconds)
        state.state_redis = (
            state.redis
            if settings.state_redis_url == settings.redis_url
            else open_redis(settings.state_redis_url, failure_memo_seconds=memo_seconds)
        )

    @app.after_serving
    async def disconnect() -> None:
        state = get_state(app)
        if state.state_redis is not None and state.state_redis is not state.redis:
            await state.state_redis.aclose()
        if state.redis is not None:
            await state.redis.aclose()
        state.redis = state.state_redis = None
        if state.database is not None:
            await state.database.engine.dispose()
            state.database = None


async def run_outbox(app: Quart) -> None:
    """Perform the side effects a request committed (the worker retries what fails)."""
    state = get_state(app)
    if state.database is None or state.state_redis is None:
        return
    handlers = build_outbox_handlers(
        state.settings, state.state_redis, state.database.session_factory
    )
    await process_due_events(state.database.session_factory, handlers)


def install_request_context(app: Quart) -> None:
    """Request id, access log, and the per-request session's commit or rollback."""
    name = get_state(app).name

    @app.before_request
    async def start_request() -> None:
        request_id = choose_request_id(request.headers.get("X-Request-ID", ""))
        g.request_id = request_id
        g.started_at = time.perf_counter()
        request_id_var.set(request_id)
        app_name_var.set(name)

    @app.after_request
    async def finish_request(response: Response) -> Response:
        session = g.pop("db_session", None)
        if session is not None:
            try:
                if response.status_code < 400:
                    await session.commit()
                    if has_pending_events(session) and get_state(app).settings.outbox_after_commit:
                        app.add_background_task(run_outbox, app)
                else:
                    await session.rollback()
            finally:
                await session.close()
        request_id = g.get("request_id")
        if request_id:
            response.headers["X-Request-ID"] = request_id
        if not access_logger.isEnabledFor(logging.INFO):
            return response  # no line to write, so nothing to redact or format
        started = g.get("started_at")
        path = redact_tokens(request.path)
        access_logger.info(
            "%s %s %s",
            request.method,
            path,
            response.status_code,
            extra={
                "method": request.method,
                "path": path,
                "status": response.status_code,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2)
                if started
                else None,
            },
        )
        return response

    @app.teardown_request
    async def close_session(_error: BaseException | None) -> None:
        # A request that failed before after_request ran still gives its connection back.
        session = g.pop("db_session", None)
        if session is not None:
            await session.rollback()
            await session.close()
