"""Which handler performs each kind of outbox event, for the apps' after-commit kick and the
worker. Each domain contributes its handlers here."""

from __future__ import annotations

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.config import Settings
from shared.infrastructure.mail import build_mail_handler
from shared.services.identity.backchannel import build_logout_handler
from shared.services.identity.sso import LOGOUT_EVENT
from shared.services.outbox import OutboxHandler


def build_outbox_handlers(
    settings: Settings, redis: Redis, session_factory: async_sessionmaker[AsyncSession]
) -> dict[str, OutboxHandler]:
    handlers: dict[str, OutboxHandler] = {
        LOGOUT_EVENT: build_logout_handler(settings, redis, session_factory),
    }
    # Without SMTP (development) mail stays in the outbox, shown on federation's /dev/mail.
    if (mail_handler := build_mail_handler(settings)) is not None:
        handlers["mail.send"] = mail_handler
    return handlers
