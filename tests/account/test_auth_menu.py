"""account's ``auth-menu`` fragment and the header of every app that composes it: avatar,
name and account links from account; the sign-out form from the composing app itself (its
logout route and CSRF token); the app's own rendering when account cannot answer."""

from __future__ import annotations

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as QuartClient
from sqlalchemy.ext.asyncio import AsyncSession

from account.app import create_app as create_account_app
from account.bp.fragments.auth_menu import get_initials
from blog.app import create_app as create_blog_app
from federation.app import create_app as create_federation_app
from federation.services.member_session import SSO_COOKIE
from shared.config import Settings
from shared.infrastructure.fragments import get_fetcher
from shared.services.identity.sso import SqlSsoService
from tests.conftest import ClientMaker
from tests.fragment_support import (
    HTML,
    Stack,
    configure,
    csrf_in,
    open_signed_in_blog,
    signed_fragment_get,
)
from tests.sso_support import (
    FakeFederation,
    Member,
    make_member,
    signed_in_as,
)


@pytest.fixture
def stack() -> Stack:
    return Stack()


@pytest.fixture
async def blog(
    make_client: ClientMaker,
    fake: FakeFederation,
    member: Member,
    session: AsyncSession,
    stack: Stack,
) -> QuartClient:
    """The blog, signed in as Ada, with account serving its fragments in process."""
    return await open_signed_in_blog(make_client, stack, fake, member, session)


@pytest.mark.parametrize(
    ("name", "initials"),
    [("Ada Hartley", "AH"), ("ada", "A"), ("jean-luc o'neil x", "JO"), ("  ", "?")],
)
def test_initials(name: str, initials: str) -> None:
    assert get_initials(name) == initials


async def test_auth_menu_is_rendered_for_the_member_it_is_asked_for(
    make_client: ClientMaker, settings: Settings, member: Member
) -> None:
    account = await make_client(create_account_app)
    params = {"member": str(member.user.id), "variant": "full"}
    response = await account.get(
        "/internal/fragments/auth-menu",
        query_string=params,
        headers=signed_fragment_get(settings, "auth-menu", **params),
    )
    assert response.status_code == 200
    html = await response.get_data(as_text=True)
    assert 'class="avatar avatar-' in html
    assert ">AH</a>" in html
    assert 'class="member" href="http://account.localhost/" title="Your account">Ada Hartley<' in (
        html
    )
    assert 'href="http://account.localhost/#devices"' in html
    assert "<form" not in html  # the sign-out form belongs to the composing app


@pytest.mark.parametrize("member_param", [None, "999999999"])
async def test_auth_menu_is_empty_without_a_known_member(
    make_client: ClientMaker, settings: Settings, member_param: str | None
) -> None:
    account = await make_client(create_account_app)
    params = {"variant": "full"} | ({"member": member_param} if member_param else {})
    response = await account.get(
        "/internal/fragments/auth-menu",
        query_string=params,
        headers=signed_fragment_get(settings, "auth-menu", **params),
    )
    assert response.status_code == 200
    assert await response.get_data(as_text=True) == ""
    unsigned = await account.get("/internal/fragments/auth-menu", query_string=params)
    assert unsigned.status_code == 404


async def test_the_header_composes_the_auth_menu_and_signing_out_still_works(
    blog: QuartClient, stack: Stack
) -> None:
    page = await (await blog.get("/", headers=HTML)).get_data(as_text=True)
    header = page.split("</header>", 1)[0]
    assert 'class="auth-menu"' in header
    assert ">AH</a>" in header
    assert '<form class="sign-out" method="post" action="/auth/logout">' in header
    assert await signed_in_as(blog) == "Ada Hartley"
    assert "account/internal/fragments/auth-menu" in stack.calls

    out = await blog.post("/auth/logout", form={"csrf_token": csrf_in(header)})
    assert out.status_code == 302
    assert await signed_in_as(blog) is None


async def test_the_header_falls_back_to_the_apps_own_rendering_when_account_is_down(
    blog: QuartClient, stack: Stack
) -> None:
    stack.down.add("account")
    response = await blog.get("/", headers=HTML)
    assert response.status_code == 200
    header = (await response.get_data(as_text=True)).split("</header>", 1)[0]
    assert 'class="auth-menu"' not in header
    assert 'class="member" href="http://account.localhost/" title="Your account">Ada Hartley<' in (
        header
    )
    out = await blog.post("/auth/logout", form={"csrf_token": csrf_in(header)})
    assert out.status_code == 302
    assert await signed_in_as(blog) is None


async def test_visitors_get_a_sign_in_link_and_no_auth_menu_fetch(
    make_client: ClientMaker, fake: FakeFederation, stack: Stack
) -> None:
    await make_client(stack.factory("account", create_account_app, fake))
    visitor = await make_client(stack.factory("blog", create_blog_app, fake))
    page = await (await visitor.get("/", headers=HTML)).get_data(as_text=True)
    assert 'class="sign-in"' in page
    assert not any(call.endswith("/auth-menu") for call in stack.calls)
    assert "blog/internal/fragments/nav-tree" in stack.calls  # fetched for everyone


async def test_federation_composes_the_auth_menu_for_the_member_of_its_own_sso_cookie(
    make_client: ClientMaker,
    fake: FakeFederation,
    stack: Stack,
    session: AsyncSession,
    settings: Settings,
) -> None:
    """Federation signs members in with its own cookie, not through the SSO client: its
    header asks account's auth-menu for that member all the same."""

    def build_federation(settings: Settings) -> Quart:
        app = create_federation_app(configure(settings))  # not an SSO client: no fake needed
        for target in ("blog", "account"):
            get_fetcher(app).transports[target] = stack.transport(target)
        return app

    # Federation first: its start-up seeds the OAuth clients outside the test's transaction.
    federation = await make_client(build_federation)
    await make_client(stack.factory("account", create_account_app, fake))
    visitor_page = await (await federation.get("/", headers=HTML)).get_data(as_text=True)
    assert 'class="auth-menu"' not in visitor_page
    assert not any(call.endswith("/auth-menu") for call in stack.calls)

    member = await make_member(session, settings)
    started = await SqlSsoService(session).do_start_session(member.user.id, user_agent="test")
    federation.set_cookie("localhost", SSO_COOKIE, started.token)
    page = await (await federation.get("/", headers=HTML)).get_data(as_text=True)
    header = page.split("</header>", 1)[0]
    assert 'class="auth-menu"' in header
    assert ">AH</a>" in header
    assert "account/internal/fragments/auth-menu" in stack.calls
