"""Which handler performs each kind of outbox event, for the apps' after-commit kick and the
worker. Each domain contributes its handlers here."""

from __future__ import annotations

from redis.asyncio import Redis

from shared.config import Settings
from shared.services.outbox import OutboxHandler


def build_outbox_handlers(settings: Settings, redis: Redis) -> dict[str, OutboxHandler]:
    handlers: dict[str, OutboxHandler] = {}
    return handlers
