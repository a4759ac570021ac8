"""Mail: rendering the ``mail.send`` outbox events and sending them over SMTP (aiosmtplib).

An event's payload is ``{"to": address, "template": name, "data": {...}}`` (see
shared.services.identity.accounts.do_enqueue_mail); the mail is rendered when it is sent,
with the app URLs of the process sending it, so a link in it is always absolute and current.

With ``settings.smtp`` unset (development), no handler is registered: the events stay
pending in the outbox, and federation's development-only page /dev/mail shows them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import Any

import aiosmtplib
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import Settings, SmtpSettings
from shared.models.outbox import OutboxEvent
from shared.services.identity.accounts import (
    MAGIC_LINK_TTL,
    MAIL_CHANGE_EMAIL_LINK,
    MAIL_EMAIL_CHANGED,
    MAIL_EMAIL_TAKEN,
    MAIL_EVENT,
    MAIL_REGISTRATION_CLOSED,
    MAIL_SIGN_IN_LINK,
)
from shared.services.outbox import OutboxHandler, PermanentOutboxError

logger = logging.getLogger("rose_ash.mail")
MAIL_PLAIN = "plain"  # data: {"subject": ..., "text": ...}, for mails without a template
SIGN_IN_PATH = "/login/magic/"
CONFIRM_EMAIL_PATH = "/email/confirm/"
SIGNATURE = "\n-- \nRose Ash, the platform of the co-op\n"


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    text: str
    # The link the mail is about, if any (the development page makes it clickable).
    link: str | None = None


class UnknownMailTemplateError(ValueError):
    pass


def _minutes() -> int:
    return int(MAGIC_LINK_TTL.total_seconds() // 60)


def _sign_in_link(settings: Settings, data: dict[str, Any]) -> tuple[str, str, str | None]:
    link = settings.url_of("federation") + SIGN_IN_PATH + str(data["token"])
    if data.get("new_account"):
        subject = "Welcome to Rose Ash: confirm your email to sign in"
        opening = "Someone, hopefully you, asked to join Rose Ash with this email address."
    else:
        subject = "Your Rose Ash sign-in link"
        opening = "Someone, hopefully you, asked to sign in to Rose Ash with this address."
    text = (
        f"{opening}\n\nTo continue, open this link within {_minutes()} minutes:\n\n{link}\n\n"
        "It works once. If you did not ask for it, ignore this mail: nothing happens "
        "without the link.\n"
    )
    return subject, text, link


def _registration_closed(settings: Settings, data: dict[str, Any]) -> tuple[str, str, str | None]:
    text = (
        "Someone, hopefully you, asked to sign in to Rose Ash with this email address, which "
        "has no account. Rose Ash is not taking new members at the moment, so no account was "
        f"made.\n\nThe co-op: {settings.url_of('blog')}/\n"
    )
    return "Rose Ash is not open to new members yet", text, None


def _change_email_link(settings: Settings, data: dict[str, Any]) -> tuple[str, str, str | None]:
    link = settings.url_of("federation") + CONFIRM_EMAIL_PATH + str(data["token"])
    text = (
        "A Rose Ash member asked to use this email address for their account from now on.\n\n"
        f"To confirm it, open this link within {_minutes()} minutes, on a device where you "
        f"are signed in to that account, and press Confirm:\n\n{link}\n\n"
        "If that was not you, ignore this mail: the address is not changed without the link.\n"
    )
    return "Confirm your new Rose Ash email address", text, link


def _email_taken(settings: Settings, data: dict[str, Any]) -> tuple[str, str, str | None]:
    text = (
        "A Rose Ash member asked to move their account to this email address, but it already "
        "belongs to an account (perhaps yours), so nothing was changed.\n\n"
        f"Sign in: {settings.url_of('federation')}/login\n"
    )
    return "Your Rose Ash email address", text, None


def _email_changed(settings: Settings, data: dict[str, Any]) -> tuple[str, str, str | None]:
    text = (
        f"The email address of your Rose Ash account is now {data.get('new', '')}; this one is "
        "no longer used for it. Its password was removed and its other devices signed "
        "out.\n\nIf you did not make this change, write to the co-op at "
        "once.\n"
    )
    return "Your Rose Ash email address was changed", text, None


def _plain(settings: Settings, data: dict[str, Any]) -> tuple[str, str, str | None]:
    return str(data["subject"]), str(data["text"]), None


TEMPLATES: dict[str, Callable[[Settings, dict[str, Any]], tuple[str, str, str | None]]] = {
    MAIL_SIGN_IN_LINK: _sign_in_link,
    MAIL_REGISTRATION_CLOSED: _registration_closed,
    MAIL_CHANGE_EMAIL_LINK: _change_email_link,
    MAIL_EMAIL_TAKEN: _email_taken,
    MAIL_EMAIL_CHANGED: _email_changed,
    MAIL_PLAIN: _plain,
}


def render_mail(settings: Settings, payload: dict[str, Any]) -> Mail:
    """The mail a ``mail.send`` payload stands for; UnknownMailTemplateError if malformed."""
    template = TEMPLATES.get(str(payload.get("template")))
    to = payload.get("to")
    if template is None or not isinstance(to, str) or "@" not in to:
        raise UnknownMailTemplateError(f"not a mail payload: {payload.get('template')!r}")
    try:
        subject, text, link = template(settings, dict(payload.get("data") or {}))
    except KeyError as exc:
        raise UnknownMailTemplateError(f"mail data lacks {exc}") from None
    return Mail(to=to, subject=subject, text=text + SIGNATURE, link=link)


def build_message(smtp: SmtpSettings, mail: Mail) -> EmailMessage:
    message = EmailMessage()
    message["From"] = smtp.from_address
    message["To"] = mail.to
    message["Subject"] = mail.subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    sender_domain = parseaddr(smtp.from_address)[1].rpartition("@")[2] or None
    message["Message-ID"] = make_msgid(domain=sender_domain)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(mail.text)
    return message


async def send_mail(smtp: SmtpSettings, mail: Mail) -> None:
    """Send one mail; PermanentOutboxError when the server refuses it for good (5xx)."""
    message = build_message(smtp, mail)
    password = smtp.password.get_secret_value() if smtp.password is not None else None
    try:
        await aiosmtplib.send(
            message,
            hostname=smtp.host,
            port=smtp.port,
            username=smtp.username,
            password=password,
            use_tls=smtp.security == "tls",
            start_tls=smtp.security == "starttls",
            timeout=smtp.timeout_seconds,
        )
    except aiosmtplib.SMTPRecipientsRefused as exc:
        # Every recipient refused: permanent when the server says so (5xx), else retried.
        if all(error.code >= 500 for error in exc.recipients):
            raise PermanentOutboxError(f"recipient refused: {exc}") from exc
        raise
    except aiosmtplib.SMTPResponseException as exc:
        if exc.code >= 500 and not isinstance(exc, aiosmtplib.SMTPAuthenticationError):
            raise PermanentOutboxError(f"SMTP server refused the mail: {exc}") from exc
        raise


def build_mail_handler(settings: Settings) -> OutboxHandler | None:
    """The ``mail.send`` handler, or None without SMTP (the mail then stays in the outbox)."""
    smtp = settings.smtp
    if smtp is None:
        return None

    async def handle_mail(payload: dict[str, Any]) -> None:
        try:
            mail = render_mail(settings, payload)
        except UnknownMailTemplateError as exc:
            raise PermanentOutboxError(str(exc)) from exc
        await send_mail(smtp, mail)
        logger.info("mail %r sent to %s", mail.subject, _domain_of(mail.to))

    return handle_mail


def _domain_of(address: str) -> str:
    """Only the domain in logs: the address itself is personal data."""
    return "…@" + address.rpartition("@")[2]


@dataclass(frozen=True)
class OutboxMail:
    """A mail in the outbox, as the development page shows it."""

    id: int
    created_at: datetime
    status: str  # "sent", "failed" or "not sent"
    mail: Mail | None  # None when the payload cannot be rendered
    last_error: str | None


async def list_outbox_mail(
    session: AsyncSession, settings: Settings, *, limit: int = 50
) -> list[OutboxMail]:
    """The newest ``mail.send`` events, sent or not, rendered."""
    rows = await session.scalars(
        select(OutboxEvent)
        .where(OutboxEvent.kind == MAIL_EVENT)
        .order_by(OutboxEvent.created_at.desc(), OutboxEvent.id.desc())
        .limit(limit)
    )
    listed = []
    for row in rows:
        try:
            mail: Mail | None = render_mail(settings, row.payload)
        except UnknownMailTemplateError:
            mail = None
        if row.completed_at is not None:
            status = "sent"
        elif row.failed_at is not None:
            status = "failed"
        else:
            status = "not sent"
        listed.append(OutboxMail(row.id, row.created_at, status, mail, row.last_error))
    return listed
