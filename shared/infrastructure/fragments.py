"""HTML fragments between the apps: declared by the app that owns them, composed by others.

Serving (the owner). An app declares its fragment types at start-up::

    declare_fragment(app, "cart-mini", render_cart_mini, personalised=True)

    async def render_cart_mini(context: FragmentContext) -> str:  # HTML
        ...  # context.container, context.variant, context.member_id; get_service() works

They are served at ``GET /internal/fragments/<type>?variant=...&container=...&member=...``.
The route is internal: a request must carry the HMAC signature of
shared.infrastructure.internal_auth (method, path, query and a timestamp, 30-second window),
else it gets 404, as does an unknown type. The edge (Caddy) never publishes ``/internal/``.

Composing (a page). All fragments of a page are fetched at once, before rendering::

    page = await fetch_fragments({
        "cart": FragmentSpec("cart", "cart-mini", personalised=True, fallback="<a ...>Cart</a>"),
        "calendar": FragmentSpec("events", "container-calendar", container="page:7"),
    })
    return await render_template("page.html", fragments=page)    # {{ fragments.cart }}

or ``await render_composed("page.html", {...}, post=post)``, which also fetches the app's
layout fragments (``add_layout_fragments``) in the same round. Templates may also call
``{{ fragment("cart", "cart-mini", personalised=True) }}``: the prefetched result when the view
fetched that spec, else a fetch on the spot (one more round trip, logged).

A required fragment that fails raises RequiredFragmentError, answered with a 503 page; an
optional one renders its fallback. ``do_purge_fragment`` drops cached copies at once after a
domain change. Caching, timeouts and single-flight: shared.infrastructure.fragment_fetch.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from quart import Blueprint, Quart, Response, abort, current_app, g, render_template, request
from redis.exceptions import RedisError

from shared.config import APP_NAMES
from shared.infrastructure.context import get_state
from shared.infrastructure.errors import render_error
from shared.infrastructure.fragment_cache import do_purge_fragments
from shared.infrastructure.fragment_fetch import (
    VARIANTS,
    FragmentFetcher,
    FragmentResult,
    FragmentSpec,
    RequiredFragmentError,
    Variant,
)
from shared.infrastructure.internal_auth import check_internal_request, get_internal_secret
from shared.infrastructure.oauth import get_app_sign_in

logger = logging.getLogger("rose_ash.fragments")

CATALOGUE_KEY = "rose_ash_fragment_catalogue"
FETCHER_KEY = "rose_ash_fragment_fetcher"
LAYOUT_KEY = "rose_ash_layout_fragments"
TYPE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
CURRENT: Literal["current"] = "current"

__all__ = [
    "FragmentContext",
    "FragmentResult",
    "FragmentSpec",
    "FragmentType",
    "RequiredFragmentError",
    "add_layout_fragments",
    "declare_fragment",
    "do_purge_fragment",
    "fetch_fragments",
    "get_fetcher",
    "install_fragments",
    "render_composed",
]


@dataclass(frozen=True)
class FragmentContext:
    """What a fragment is rendered for, from the (signed) query of its request."""

    type: str
    variant: Variant
    container: str | None
    member_id: int | None


FragmentRenderer = Callable[[FragmentContext], Awaitable[str]]


@dataclass(frozen=True)
class FragmentType:
    name: str
    render: FragmentRenderer
    personalised: bool = False


@dataclass
class FragmentCatalogue:
    """The fragment types an app serves."""

    types: dict[str, FragmentType] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Serving


def get_catalogue(app: Quart | None = None) -> FragmentCatalogue:
    catalogue: FragmentCatalogue = (app or current_app).extensions[CATALOGUE_KEY]
    return catalogue


def declare_fragment(
    app: Quart, name: str, render: FragmentRenderer, *, personalised: bool = False
) -> None:
    """Serve ``render`` as the fragment type ``name`` of ``app`` (a personalised type gets
    the member it is rendered for in ``context.member_id``; others never see a member)."""
    if not TYPE_NAME.match(name):
        raise ValueError(f"fragment type {name!r}: lowercase letters, digits and '-' only")
    types = get_catalogue(app).types
    if name in types:
        raise ValueError(f"fragment type {name!r} is declared twice")
    types[name] = FragmentType(name=name, render=render, personalised=personalised)


def read_fragment_context(kind: FragmentType) -> FragmentContext:
    variant = request.args.get("variant", "full")
    if variant not in VARIANTS:
        abort(400)
    member_id: int | None = None
    member = request.args.get("member")
    if kind.personalised and member is not None:
        if not member.isdigit():
            abort(400)
        member_id = int(member)
    return FragmentContext(
        type=kind.name,
        variant=VARIANTS[VARIANTS.index(variant)],  # narrowed to the Variant literal
        container=request.args.get("container") or None,
        member_id=member_id,
    )


fragments_bp = Blueprint("fragments", __name__)


@fragments_bp.get("/internal/fragments/<name>")
async def serve_fragment(name: str) -> Response:
    check_internal_request()
    kind = get_catalogue().types.get(name)
    if kind is None:
        abort(404)
    html = await kind.render(read_fragment_context(kind))
    response = Response(html, content_type="text/html; charset=utf-8")
    response.headers["Cache-Control"] = "no-store"  # the composing app caches, per its rules
    return response


# ---------------------------------------------------------------------------------------------
# Composing


def get_fetcher(app: Quart | None = None) -> FragmentFetcher:
    """The app's fetcher; tests set ``get_fetcher(app).transports[<app>]`` before serving."""
    fetcher: FragmentFetcher = (app or current_app).extensions[FETCHER_KEY]
    return fetcher


def add_layout_fragments(app: Quart, specs: Mapping[str, FragmentSpec]) -> None:
    """Fragments every page of ``app`` rendered with ``render_composed`` gets (nav, menus)."""
    layout: dict[str, FragmentSpec] = app.extensions[LAYOUT_KEY]
    layout.update(specs)


MEMBER_PROVIDER_KEY = "rose_ash.fragment_member"
MemberIdProvider = Callable[[], Awaitable[int | None]]


def set_member_provider(app: Quart, provider: MemberIdProvider) -> None:
    """Tell the fetcher who the signed-in member is in an app that does not sign in through
    the SSO client (federation, the authority, reads its own SSO cookie)."""
    app.extensions[MEMBER_PROVIDER_KEY] = provider


async def get_member_id() -> int | None:
    """The member personalised fragments are fetched for on this request, or None."""
    provider: MemberIdProvider | None = current_app.extensions.get(MEMBER_PROVIDER_KEY)
    if provider is not None:
        return await provider()
    sign_in = get_app_sign_in()
    return sign_in.user_id if sign_in is not None else None


def remember_results(results: Mapping[str, FragmentResult]) -> None:
    known: dict[FragmentSpec, FragmentResult] = g.setdefault("fragment_results", {})
    for result in results.values():
        known[result.spec] = result


async def fetch_fragments(
    specs: Mapping[str, FragmentSpec], *, member_id: int | Literal["current"] | None = CURRENT
) -> dict[str, FragmentResult]:
    """Fetch every fragment of ``specs`` concurrently, by name. Personalised ones are for the
    signed-in member unless ``member_id`` is given. Raises RequiredFragmentError (503)."""
    member = await get_member_id() if member_id == CURRENT else member_id
    names = list(specs)
    results = await get_fetcher().fetch_all([specs[name] for name in names], member)
    by_name = dict(zip(names, results, strict=True))
    remember_results(by_name)
    return by_name


async def render_composed(
    template: str, fragments: Mapping[str, FragmentSpec] | None = None, **context: Any
) -> str:
    """Render ``template`` with the app's layout fragments and ``fragments``, all fetched in
    one concurrent round first, given to the template as ``fragments``."""
    layout: dict[str, FragmentSpec] = current_app.extensions[LAYOUT_KEY]
    results = await fetch_fragments({**layout, **(fragments or {})})
    return await render_template(template, fragments=results, **context)


async def fragment_in_template(
    app: str,
    fragment_type: str,
    container: str | None = None,
    variant: Variant = "full",
    personalised: bool = False,
    required: bool = False,
    fallback: str = "",
) -> FragmentResult:
    """``{{ fragment(...) }}``: the view's prefetched result, else fetched now."""
    spec = FragmentSpec(app, fragment_type, container, variant, personalised, required, fallback)
    known: dict[FragmentSpec, FragmentResult] = g.get("fragment_results") or {}
    if spec in known:
        return known[spec]
    logger.info("fragment %s/%s not prefetched: fetched while rendering", app, fragment_type)
    results = await fetch_fragments({"fragment": spec})
    return results["fragment"]


async def do_purge_fragment(
    app: str,
    fragment_type: str,
    *,
    container: str | None = None,
    member_id: int | None = None,
) -> int:
    """Drop cached copies of a fragment (all, one container's, one member's) after the domain
    change that altered it is committed. A Redis failure is logged: the TTL ends it anyway."""
    redis = get_state().redis
    if redis is None:
        return 0
    try:
        return await do_purge_fragments(
            redis, app, fragment_type, container=container, member_id=member_id
        )
    except RedisError as exc:
        logger.warning("could not purge fragment %s/%s: %s", app, fragment_type, exc)
        return 0


def install_fragments(app: Quart) -> None:
    """The fragment catalogue and route of ``app``, its fetcher (pooled clients opened in the
    serving lifecycle), the ``fragment()`` template global and the 503 of required ones."""
    state = get_state(app)
    settings = state.settings
    app.extensions[CATALOGUE_KEY] = FragmentCatalogue()
    app.extensions[LAYOUT_KEY] = {}
    fetcher = FragmentFetcher(
        app_name=state.name,
        settings=settings.fragments,
        secret=get_internal_secret(settings),
        base_urls={
            name: settings.fragments.internal_url_of(name, settings.url_of(name))
            for name in APP_NAMES
        },
        get_redis=lambda: state.redis,
    )
    app.extensions[FETCHER_KEY] = fetcher
    app.register_blueprint(fragments_bp)
    app.jinja_env.globals["fragment"] = fragment_in_template

    @app.before_serving
    async def open_fragment_clients() -> None:
        fetcher.open_clients()

    @app.after_serving
    async def close_fragment_clients() -> None:
        await fetcher.close_clients()

    @app.errorhandler(RequiredFragmentError)
    async def handle_required_fragment(error: RequiredFragmentError) -> tuple[Response | str, int]:
        logger.error("page %s not rendered: %s", request.path, error)
        return await render_error(503, "Part of this page is unavailable. Try again shortly.")
