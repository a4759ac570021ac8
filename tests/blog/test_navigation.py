"""The site navigation: the service, blog's editor (editors only, POST forms, purge after
commit) and the ``nav-tree`` fragment every app's layout composes.

Pages that compose fragments reach the serving apps in process (httpx.ASGITransport), one
request at a time: all apps share the test's one database connection.
"""

from __future__ import annotations

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as QuartClient
from sqlalchemy.ext.asyncio import AsyncSession

from blog.app import create_app as create_blog_app
from shared.config import Settings
from shared.contracts.errors import ConflictError, InvalidInputError, NotFoundError
from shared.contracts.navigation import NavigationService
from shared.seed import DEMO_MENU, do_seed_demo_data
from shared.services.navigation import SqlNavigationService
from shared.services.registry import ServiceRegistry
from tests.conftest import ClientMaker
from tests.fragment_support import (
    HTML,
    Stack,
    csrf_in,
    do_verify_email,
    open_signed_in_blog,
    signed_fragment_get,
)
from tests.sso_support import (
    FakeFederation,
    Member,
    add_grant,
    make_member,
    sign_in,
    with_federation,
)


async def top_labels(session: AsyncSession) -> list[str]:
    """The top level as the database has it now (the apps changed it in their sessions)."""
    session.expire_all()
    return [node.label for node in await SqlNavigationService(session).list_tree()]


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
    """The blog, signed in as Ada (an editor), composing blog's and account's fragments."""
    return await open_signed_in_blog(make_client, stack, fake, member, session)


# --- the service ------------------------------------------------------------------------------


async def test_nodes_form_an_ordered_tree(session: AsyncSession) -> None:
    navigation = SqlNavigationService(session)
    about = await navigation.create_node("About", "/about")
    await navigation.create_node("Shop", "https://market.example.org/")
    story = await navigation.create_node("  Our   story ", "/about/story", parent_id=about.id)
    await navigation.create_node("Team", "/about/team", parent_id=about.id)
    tree = await navigation.list_tree()
    assert [n.label for n in tree] == ["About", "Shop"]
    assert [n.label for n in tree[0].children] == ["Our story", "Team"]  # spaces collapsed
    assert story.parent_id == about.id
    assert [n.label for n in (await navigation.get_node(about.id)).children] == [
        "Our story",
        "Team",
    ]


async def test_nodes_move_among_their_siblings_only(session: AsyncSession) -> None:
    navigation = SqlNavigationService(session)
    a = await navigation.create_node("A", "/a")
    b = await navigation.create_node("B", "/b")
    c = await navigation.create_node("C", "/c")
    child = await navigation.create_node("A1", "/a/1", parent_id=a.id)
    await navigation.do_move_node(c.id, "up")
    assert [n.label for n in await navigation.list_tree()] == ["A", "C", "B"]
    await navigation.do_move_node(a.id, "up")  # already first: nothing happens
    await navigation.do_move_node(b.id, "down")  # already last
    await navigation.do_move_node(a.id, "down")
    assert [n.label for n in await navigation.list_tree()] == ["C", "A", "B"]
    await navigation.do_move_node(child.id, "up")  # an only child stays put
    assert (await navigation.get_node(a.id)).children[0].label == "A1"
    with pytest.raises(NotFoundError):
        await navigation.do_move_node(9_999_999, "up")


async def test_rename_and_delete_with_or_without_children(session: AsyncSession) -> None:
    navigation = SqlNavigationService(session)
    parent = await navigation.create_node("About", "/about")
    child = await navigation.create_node("Story", "/about/story", parent_id=parent.id)
    await navigation.create_node("Deep", "/about/story/deep", parent_id=child.id)
    renamed = await navigation.do_update_node(parent.id, label="Who we are", url="/who")
    assert (renamed.label, renamed.url, len(renamed.children)) == ("Who we are", "/who", 1)
    with pytest.raises(ConflictError):
        await navigation.do_delete_node(parent.id)
    assert await navigation.do_delete_node(parent.id, with_children=True) == 3
    assert await navigation.list_tree() == []
    with pytest.raises(NotFoundError):
        await navigation.do_delete_node(parent.id)


@pytest.mark.parametrize(
    ("label", "url"),
    [
        ("", "/about"),
        ("x" * 101, "/about"),
        ("About", ""),
        ("About", "javascript:alert(1)"),
        ("About", "//evil.example/"),
        ("About", "about"),
        ("About", "/a b"),
        ("About", "ftp://example.org/"),
        ("About", "https:///no-host"),
    ],
)
async def test_bad_labels_and_urls_are_refused(session: AsyncSession, label: str, url: str) -> None:
    with pytest.raises(InvalidInputError):
        await SqlNavigationService(session).create_node(label, url)


async def test_a_missing_parent_is_not_found(session: AsyncSession) -> None:
    with pytest.raises(NotFoundError):
        await SqlNavigationService(session).create_node("A", "/a", parent_id=9_999_999)


async def test_the_seed_adds_the_demo_menu_once(
    session: AsyncSession, registry: ServiceRegistry
) -> None:
    first = await do_seed_demo_data(session, registry)
    expected = sum(1 + len(children) for _, _, children in DEMO_MENU)
    assert first.menu_nodes_added == expected
    assert (await do_seed_demo_data(session, registry)).menu_nodes_added == 0
    tree = await registry.get(NavigationService, session).list_tree()
    assert [n.label for n in tree] == [label for label, _, _ in DEMO_MENU]


# --- the nav-tree fragment --------------------------------------------------------------------


async def test_nav_tree_fragment_links_blog_paths_absolutely(
    make_client: ClientMaker, settings: Settings, session: AsyncSession
) -> None:
    navigation = SqlNavigationService(session)
    about = await navigation.create_node("About <us>", "/about")
    await navigation.create_node("Story", "/about/story", parent_id=about.id)
    await navigation.create_node("Shop", "https://shop.example.org/x?a=1&b=2")
    await session.commit()
    client = await make_client(create_blog_app)

    full = await client.get(
        "/internal/fragments/nav-tree?variant=full",
        headers=signed_fragment_get(settings, "nav-tree", variant="full"),
    )
    assert full.status_code == 200
    html = await full.get_data(as_text=True)
    assert '<a href="http://blog.localhost/about">About &lt;us&gt;</a>' in html
    assert '<a href="http://blog.localhost/about/story">Story</a>' in html
    assert '<a href="https://shop.example.org/x?a=1&amp;b=2">Shop</a>' in html
    assert 'aria-label="Site"' in html

    compact = await client.get(
        "/internal/fragments/nav-tree?variant=compact",
        headers=signed_fragment_get(settings, "nav-tree", variant="compact"),
    )
    compact_html = await compact.get_data(as_text=True)
    assert "About &lt;us&gt;" in compact_html
    assert "Story" not in compact_html  # the top level only
    unsigned = await client.get("/internal/fragments/nav-tree?variant=full")
    assert unsigned.status_code == 404


async def test_an_empty_navigation_renders_nothing(
    make_client: ClientMaker, settings: Settings
) -> None:
    client = await make_client(create_blog_app)
    response = await client.get(
        "/internal/fragments/nav-tree?variant=full",
        headers=signed_fragment_get(settings, "nav-tree", variant="full"),
    )
    assert response.status_code == 200
    assert (await response.get_data(as_text=True)) == ""


# --- the editor -------------------------------------------------------------------------------


async def test_visitors_are_sent_to_sign_in_and_members_who_do_not_edit_get_403(
    make_client: ClientMaker, fake: FakeFederation, session: AsyncSession, settings: Settings
) -> None:
    visitor = await make_client(with_federation(create_blog_app, fake))
    response = await visitor.get("/navigation/", headers=HTML)
    assert response.status_code == 302
    assert response.headers["Location"] == "/auth/login?next=%2Fnavigation%2F"

    ben = await make_member(session, settings, "ben@example.org", username="ben")
    await sign_in(visitor, fake, ben, await add_grant(session, ben, "blog"))
    assert (await visitor.get("/navigation/", headers=HTML)).status_code == 403
    page = await visitor.get("/", headers=HTML)
    token = csrf_in(await page.get_data(as_text=True))
    refused = await visitor.post(
        "/navigation/nodes", form={"csrf_token": token, "label": "X", "url": "/x"}
    )
    assert refused.status_code == 403
    assert await top_labels(session) == []


async def test_editors_are_named_by_member_id_or_verified_email(settings: Settings) -> None:
    editors = settings.model_copy(update={"editors": ("42", "Ada@Example.org")})
    assert editors.is_editor(42, None)
    assert editors.is_editor(7, "ada@example.org")
    assert not editors.is_editor(7, None)  # Ada's address counts only once she verified it
    assert not editors.is_editor(8, "cleo@example.org")
    assert not settings.is_editor(42, "ada@example.org")  # nobody by default


async def test_a_claimed_username_or_an_unverified_address_makes_no_editor(
    make_client: ClientMaker, fake: FakeFederation, session: AsyncSession, settings: Settings
) -> None:
    """Ben was an editor named "ben" and gave the username up; Cleo claimed it. Cleo is no
    editor by it, nor by a listed address she has not verified; Dan, listed by id, is."""
    cleo = await make_member(session, settings, "cleo@example.org", username="ben")
    dan = await make_member(session, settings, "dan@example.org", username="dan")
    listed = ("ben", "cleo@example.org", str(dan.user.id))

    def create(app_settings: Settings) -> Quart:
        configured = app_settings.model_copy(update={"editors": listed})
        return with_federation(create_blog_app, fake)(configured)

    as_cleo = await make_client(create)
    await sign_in(as_cleo, fake, cleo, await add_grant(session, cleo, "blog"))
    assert (await as_cleo.get("/navigation/", headers=HTML)).status_code == 403
    await do_verify_email(session, cleo.user.id)
    assert (await as_cleo.get("/navigation/", headers=HTML)).status_code == 200

    as_dan = await make_client(create)
    await sign_in(as_dan, fake, dan, await add_grant(session, dan, "blog"))
    assert (await as_dan.get("/navigation/", headers=HTML)).status_code == 200


async def test_an_editor_manages_the_menu_with_forms(
    blog: QuartClient, session: AsyncSession
) -> None:
    page = await blog.get("/navigation/", headers=HTML)
    assert page.status_code == 200
    token = csrf_in(await page.get_data(as_text=True))

    assert (await blog.post("/navigation/nodes", form={"label": "A", "url": "/a"})).status_code == (
        403  # no CSRF token
    )
    added = await blog.post(
        "/navigation/nodes", form={"csrf_token": token, "label": "About", "url": "/about"}
    )
    assert added.status_code == 302
    assert added.headers["Location"] == "/navigation/?done=added"
    about = (await SqlNavigationService(session).list_tree())[0]
    await blog.post(
        "/navigation/nodes",
        form={"csrf_token": token, "label": "Story", "url": "/story", "parent": str(about.id)},
    )
    await blog.post(
        "/navigation/nodes", form={"csrf_token": token, "label": "Join", "url": "/join"}
    )
    bad = await blog.post(
        "/navigation/nodes", form={"csrf_token": token, "label": "Evil", "url": "javascript:x"}
    )
    assert bad.status_code == 422
    assert "http(s) address or a path" in await bad.get_data(as_text=True)

    listing = await (await blog.get("/navigation/?done=added", headers=HTML)).get_data(as_text=True)
    assert "The entry was added." in listing
    assert "also delete the 1 entry below it" in listing  # the delete form asks

    renamed = await blog.post(
        f"/navigation/nodes/{about.id}",
        form={"csrf_token": token, "label": "Who we are", "url": "/who"},
    )
    assert renamed.headers["Location"] == "/navigation/?done=saved"
    moved = await blog.post(
        f"/navigation/nodes/{about.id}/move", form={"csrf_token": token, "direction": "down"}
    )
    assert moved.headers["Location"] == "/navigation/?done=moved"
    assert await top_labels(session) == ["Join", "Who we are"]
    odd = await blog.post(
        f"/navigation/nodes/{about.id}/move", form={"csrf_token": token, "direction": "left"}
    )
    assert odd.status_code == 400

    kept = await blog.post(f"/navigation/nodes/{about.id}/delete", form={"csrf_token": token})
    assert kept.status_code == 409  # has children and the box was not ticked
    gone = await blog.post(
        f"/navigation/nodes/{about.id}/delete",
        form={"csrf_token": token, "with_children": "yes"},
    )
    assert gone.headers["Location"] == "/navigation/?done=deleted"
    assert await top_labels(session) == ["Join"]
    missing = await blog.post(f"/navigation/nodes/{about.id}/delete", form={"csrf_token": token})
    assert missing.status_code == 404


async def test_every_page_shows_the_navigation_and_an_edit_shows_at_once(
    blog: QuartClient, session: AsyncSession, stack: Stack
) -> None:
    await SqlNavigationService(session).create_node("About", "/about")
    await session.commit()
    first = await (await blog.get("/", headers=HTML)).get_data(as_text=True)
    assert '<a href="http://blog.localhost/about">About</a>' in first
    assert first.index('class="site-header"') < first.index('class="site-nav"')
    # Cached now: the next page does not ask blog again ...
    calls = len(stack.calls)
    await blog.get("/", headers=HTML)
    assert "blog/internal/fragments/nav-tree" not in stack.calls[calls:]
    # ... until an editor's change purges it after the commit.
    token = csrf_in(first)
    await blog.post(
        "/navigation/nodes", form={"csrf_token": token, "label": "Events", "url": "/events"}
    )
    after = await (await blog.get("/", headers=HTML)).get_data(as_text=True)
    assert '<a href="http://blog.localhost/events">Events</a>' in after


async def test_pages_stay_up_without_the_navigation(
    blog: QuartClient, session: AsyncSession, stack: Stack
) -> None:
    await SqlNavigationService(session).create_node("About", "/about")
    await session.commit()
    stack.down.add("blog")
    response = await blog.get("/", headers=HTML)
    assert response.status_code == 200
    assert 'class="site-nav"' not in await response.get_data(as_text=True)
