"""Mail from the outbox over real SMTP: an aiosmtpd server in this process receives it."""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from shared.config import Settings, SmtpSettings
from shared.db import create_session_factory
from shared.infrastructure.mail import (
    UnknownMailTemplateError,
    build_mail_handler,
    render_mail,
)
from shared.infrastructure.outbox_handlers import build_outbox_handlers
from shared.models.outbox import OutboxEvent
from shared.services.identity.accounts import MAIL_EVENT, SqlAccountService, do_enqueue_mail
from shared.services.identity.users import SqlUserService
from shared.services.outbox import process_due_events


@dataclass
class Inbox:
    """What the SMTP server received; addresses it refuses with 550."""

    refuse: set[str] = field(default_factory=set)
    received: list[tuple[str, list[str], EmailMessage]] = field(default_factory=list)

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook names)
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        content = envelope.original_content or b""
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append((str(envelope.mail_from), list(envelope.rcpt_tos), message))
        return "250 Message accepted"


@dataclass
class SmtpServer:
    port: int
    inbox: Inbox


@pytest.fixture
async def smtp_server() -> AsyncIterator[SmtpServer]:
    inbox = Inbox()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(inbox, hostname="mail.test", loop=loop), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    yield SmtpServer(port, inbox)
    server.close()
    await server.wait_closed()


@pytest.fixture
def mail_settings(settings: Settings, smtp_server: SmtpServer) -> Settings:
    smtp = SmtpSettings(
        host="127.0.0.1",
        port=smtp_server.port,
        security="none",
        from_address="Rose Ash <no-reply@rose-ash.test>",
        timeout_seconds=5,
    )
    return settings.model_copy(update={"smtp": smtp})


async def run_outbox(connection: AsyncConnection, settings: Settings, redis: aioredis.Redis) -> Any:
    factory = create_session_factory(connection)
    return await process_due_events(factory, build_outbox_handlers(settings, redis, factory))


async def test_a_sign_in_link_is_sent_over_smtp_after_commit(
    session: AsyncSession,
    connection: AsyncConnection,
    mail_settings: Settings,
    smtp_server: SmtpServer,
    redis: aioredis.Redis,
) -> None:
    await SqlAccountService(session).do_request_sign_in_link("Ann@Example.org")
    await session.commit()
    report = await run_outbox(connection, mail_settings, redis)
    assert len(report.completed) == 1
    [(sender, recipients, message)] = smtp_server.inbox.received
    assert sender == "no-reply@rose-ash.test"
    assert recipients == ["Ann@Example.org"]
    assert message["To"] == "Ann@Example.org"
    assert message["From"] == "Rose Ash <no-reply@rose-ash.test>"
    assert message["Subject"] == "Welcome to Rose Ash: confirm your email to sign in"
    assert message["Message-ID"].endswith("@rose-ash.test>")
    assert message["Date"]
    body = message.get_content()
    event = await session.scalar(select(OutboxEvent).where(OutboxEvent.kind == MAIL_EVENT))
    assert event is not None
    token = event.payload["data"]["token"]
    assert f"http://federation.localhost/login/magic/{token}" in body
    assert "15 minutes" in body
    # Done: the processor does not send it twice.
    assert (await run_outbox(connection, mail_settings, redis)).completed == []
    assert len(smtp_server.inbox.received) == 1


async def test_a_refused_recipient_fails_for_good(
    session: AsyncSession,
    connection: AsyncConnection,
    mail_settings: Settings,
    smtp_server: SmtpServer,
    redis: aioredis.Redis,
) -> None:
    smtp_server.inbox.refuse.add("gone@example.org")
    await do_enqueue_mail(session, "gone@example.org", "plain", {"subject": "Hi", "text": "x"})
    await session.commit()
    report = await run_outbox(connection, mail_settings, redis)
    assert len(report.failed) == 1
    event = await session.scalar(select(OutboxEvent))
    assert event is not None
    await session.refresh(event)
    assert event.failed_at is not None
    assert "550" in (event.last_error or "")


async def test_an_unreachable_server_is_retried_later(
    session: AsyncSession, connection: AsyncConnection, settings: Settings, redis: aioredis.Redis
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = settings.model_copy(
        update={"smtp": SmtpSettings(host="127.0.0.1", port=port, security="none")}
    )
    await do_enqueue_mail(session, "ann@example.org", "plain", {"subject": "Hi", "text": "x"})
    await session.commit()
    report = await run_outbox(connection, down, redis)
    assert len(report.retried) == 1
    event = await session.scalar(select(OutboxEvent))
    assert event is not None
    await session.refresh(event)
    assert event.completed_at is None
    assert event.failed_at is None
    assert event.next_attempt_at > event.created_at


async def test_without_smtp_mail_stays_in_the_outbox(
    session: AsyncSession, connection: AsyncConnection, settings: Settings, redis: aioredis.Redis
) -> None:
    assert settings.smtp is None
    assert build_mail_handler(settings) is None
    factory = create_session_factory(connection)
    assert "mail.send" not in build_outbox_handlers(settings, redis, factory)
    await do_enqueue_mail(session, "ann@example.org", "plain", {"subject": "Hi", "text": "x"})
    await session.commit()
    report = await run_outbox(connection, settings, redis)
    assert report.completed == report.retried == report.failed == []
    event = await session.scalar(select(OutboxEvent))
    assert event is not None
    assert event.completed_at is None


async def test_every_account_mail_renders(session: AsyncSession, settings: Settings) -> None:
    accounts = SqlAccountService(session)
    users = SqlUserService(session)
    ann = await users.create_user("ann@example.org")
    await users.create_user("bob@example.org")
    await accounts.do_request_sign_in_link("ann@example.org")
    await accounts.do_request_sign_in_link("new@example.org", registration_open=False)
    await accounts.do_request_email_change(ann.id, "bob@example.org")
    await accounts.do_request_email_change(ann.id, "ann@new.example")
    events = list(await session.scalars(select(OutboxEvent).order_by(OutboxEvent.id)))
    token = events[-1].payload["data"]["token"]
    await accounts.do_confirm_email_change(token, ann.id)
    events = list(await session.scalars(select(OutboxEvent).order_by(OutboxEvent.id)))
    mails = [render_mail(settings, event.payload) for event in events]
    assert [mail.subject for mail in mails] == [
        "Your Rose Ash sign-in link",
        "Rose Ash is not open to new members yet",
        "Your Rose Ash email address",
        "Confirm your new Rose Ash email address",
        "Your Rose Ash email address was changed",
    ]
    assert mails[0].link is not None
    assert mails[0].link.startswith("http://federation.localhost/login/magic/")
    assert mails[3].link == f"http://federation.localhost/email/confirm/{token}"
    assert mails[1].link is None
    assert "ann@new.example" in mails[4].text
    assert mails[4].to == "ann@example.org"


def test_malformed_payloads_are_refused(settings: Settings) -> None:
    for payload in [{}, {"to": "x@y.z", "template": "nope"}, {"to": "x@y.z", "template": "plain"}]:
        with pytest.raises(UnknownMailTemplateError):
            render_mail(settings, payload)
