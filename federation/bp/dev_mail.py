"""Development only: the mail in the outbox, so a newcomer can follow their sign-in link.

Registered by federation/app.py only when ``settings.env == "development"`` (elsewhere the
path does not exist: 404). Without SMTP in development mail is never sent; it stays in the
outbox and is read here.
"""

from __future__ import annotations

from quart import Blueprint, Response, render_template

from shared.infrastructure.context import get_session, get_settings
from shared.infrastructure.mail import list_outbox_mail

dev_mail_bp = Blueprint("dev_mail", __name__)


@dev_mail_bp.get("/dev/mail")
async def outbox_mail() -> Response:
    settings = get_settings()
    mails = await list_outbox_mail(get_session(), settings)
    page = await render_template(
        "dev_mail.html", mails=mails, smtp_configured=settings.smtp is not None
    )
    return Response(page, headers={"Cache-Control": "no-store"}, mimetype="text/html")
