"""The blog, with its layout fragments' HTML inlined: the baseline of bench/fragments.py (a).

The nav-tree HTML is rendered once at start (by blog's own fragment renderer, from the same
database) and set for every request before the layout asks for it, so no page fetches a
fragment: exactly the page the composed blog serves, minus composition.
"""

from __future__ import annotations

from markupsafe import Markup
from quart import Quart, g

from blog.app import create_app as create_blog
from blog.bp.fragments.nav_tree import render_nav_tree
from shared.config import Settings
from shared.infrastructure.factory import LAYOUT_FRAGMENTS
from shared.infrastructure.fragment_fetch import FragmentResult
from shared.infrastructure.fragments import FragmentContext


def create_app(settings: Settings | None = None) -> Quart:
    app = create_blog(settings)
    inlined: dict[str, FragmentResult] = {}

    @app.before_serving
    async def render_once() -> None:
        async with app.test_request_context("/"):
            html = await render_nav_tree(FragmentContext("nav-tree", "full", None, None))
            await g.pop("db_session").close()
        # The HTML comes from our own renderer (it escapes what it renders).
        markup = Markup(html)  # noqa: S704
        inlined["nav_tree"] = FragmentResult(LAYOUT_FRAGMENTS["nav_tree"], markup, "hit")

    @app.before_request
    async def inline_layout_fragments() -> None:
        g.layout_fragments = dict(inlined)

    return app
