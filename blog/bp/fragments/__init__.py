"""The fragment types blog serves to the other apps' pages."""

from __future__ import annotations

from quart import Quart

from blog.bp.fragments.nav_tree import render_nav_tree
from shared.infrastructure.fragments import declare_fragment

NAV_TREE = "nav-tree"


def install_blog_fragments(app: Quart) -> None:
    declare_fragment(app, NAV_TREE, render_nav_tree)
