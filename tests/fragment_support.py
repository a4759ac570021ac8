"""Support for tests of pages that compose fragments: apps wired to each other in process.

Pages that compose fragments reach the serving apps in process (httpx.ASGITransport), one
request at a time: all apps share the test's one database connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode

import httpx
from quart import Quart
from quart.typing import TestClientProtocol as QuartClient
from sqlalchemy import func, update
from sqlalchemy.ext.asyncio import AsyncSession

from account.app import create_app as create_account_app
from blog.app import create_app as create_blog_app
from shared.config import FragmentSettings, Settings
from shared.infrastructure.fragments import get_fetcher
from shared.infrastructure.internal_auth import build_signed_headers, get_internal_secret
from shared.models.identity import User
from tests.conftest import ClientMaker
from tests.sso_support import FakeFederation, Member, add_grant, sign_in, with_federation

HTML = {"Accept": "text/html"}


@dataclass
class Stack:
    """Apps that compose each other's fragments in process, by name."""

    apps: dict[str, Quart] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    down: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)

    def transport(self, name: str) -> httpx.AsyncBaseTransport:
        return StackTransport(self, name)

    def factory(
        self, name: str, create: Callable[[Settings], Quart], fake: FakeFederation
    ) -> Callable[[Settings], Quart]:
        def build(settings: Settings) -> Quart:
            app = with_federation(create, fake)(configure(settings))
            for target in ("blog", "account"):
                get_fetcher(app).transports[target] = self.transport(target)
            self.apps[name] = app
            return app

        return build


class StackTransport(httpx.AsyncBaseTransport):
    def __init__(self, stack: Stack, name: str) -> None:
        self.stack, self.name = stack, name

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.stack.calls.append(f"{self.name}{request.url.path}")
        if self.name in self.stack.down or self.name not in self.stack.apps:
            raise httpx.ConnectError("down", request=request)
        async with self.stack.lock:
            inner = httpx.ASGITransport(app=self.stack.apps[self.name])
            return await inner.handle_async_request(request)


def configure(settings: Settings) -> Settings:
    """Ada (the member of make_member) edits the navigation, named by her email address (which
    counts once she has verified it: open_signed_in_blog); fetches may take their time."""
    return settings.model_copy(
        update={
            "editors": ("ada@example.org",),
            "fragments": FragmentSettings(default_timeout_ms=5000),
        }
    )


def signed_fragment_get(settings: Settings, fragment_type: str, **params: str) -> dict[str, str]:
    query = urlencode(sorted(params.items()))
    return build_signed_headers(
        get_internal_secret(settings), "GET", f"/internal/fragments/{fragment_type}", query
    )


def csrf_in(page: str) -> str:
    return page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]


async def open_signed_in_blog(
    make_client: ClientMaker,
    stack: Stack,
    fake: FakeFederation,
    member: Member,
    session: AsyncSession,
) -> QuartClient:
    """The blog, signed in as ``member`` (whose address is verified, as a member who signed in
    with a link has it), with account serving its fragments in process."""
    await do_verify_email(session, member.user.id)
    await make_client(stack.factory("account", create_account_app, fake))
    client = await make_client(stack.factory("blog", create_blog_app, fake))
    await sign_in(client, fake, member, await add_grant(session, member, "blog"))
    return client


async def do_verify_email(session: AsyncSession, user_id: int) -> None:
    await session.execute(
        update(User).where(User.id == user_id).values(email_verified_at=func.now())
    )
    await session.commit()
