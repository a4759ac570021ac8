"""The fragment types account serves to the other apps' pages."""

from __future__ import annotations

from quart import Quart

from account.bp.fragments.auth_menu import render_auth_menu
from shared.infrastructure.fragments import declare_fragment

AUTH_MENU = "auth-menu"


def install_account_fragments(app: Quart) -> None:
    declare_fragment(app, AUTH_MENU, render_auth_menu, personalised=True)
