"""Where our ActivityPub things live: every URL is built here, from the apps' base URLs.

Each app's actor lives on its own host (handle ``<app>@<app host>``); the instance actor, which
signs outgoing fetches, lives on federation's host. Every host also has a shared inbox.

    {base}/ap/actors/{app}            the actor ({...}#main-key its key id)
    {base}/ap/actors/{app}/inbox      its inbox (POST)
    {base}/ap/actors/{app}/outbox     its outbox, followers, following (paged collections)
    {base}/ap/inbox                   the host's shared inbox (POST)
    {base}/ap/objects/{uuid}          a published object (Note, Article, Event)
    {base}/ap/activities/{uuid}       a published activity
"""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

from shared.config import APP_NAMES, Settings

INSTANCE_ACTOR = "instance"  # preferredUsername of the instance actor, on federation's host
INSTANCE_HOST_APP = "federation"
ACTOR_NAMES: tuple[str, ...] = (*APP_NAMES, INSTANCE_ACTOR)


def host_app(actor: str) -> str:
    """The app whose host serves ``actor`` (an app's name or INSTANCE_ACTOR)."""
    return INSTANCE_HOST_APP if actor == INSTANCE_ACTOR else actor


def base_url(settings: Settings, actor: str) -> str:
    return settings.url_of(host_app(actor))


def host_of(settings: Settings, actor: str) -> str:
    """The host (with port when there is one) of ``actor``'s app: the domain of its handle."""
    return urlsplit(base_url(settings, actor)).netloc


def actor_url(settings: Settings, actor: str) -> str:
    return f"{base_url(settings, actor)}/ap/actors/{actor}"


def key_id(settings: Settings, actor: str) -> str:
    return f"{actor_url(settings, actor)}#main-key"


def inbox_url(settings: Settings, actor: str) -> str:
    return f"{actor_url(settings, actor)}/inbox"


def outbox_url(settings: Settings, actor: str) -> str:
    return f"{actor_url(settings, actor)}/outbox"


def followers_url(settings: Settings, actor: str) -> str:
    return f"{actor_url(settings, actor)}/followers"


def following_url(settings: Settings, actor: str) -> str:
    return f"{actor_url(settings, actor)}/following"


def shared_inbox_url(settings: Settings, actor: str) -> str:
    return f"{base_url(settings, actor)}/ap/inbox"


def handle(settings: Settings, actor: str) -> str:
    """``<name>@<host>``: what WebFinger answers for (``acct:`` + this)."""
    return f"{actor}@{host_of(settings, actor)}"


def new_object_url(settings: Settings, app: str) -> str:
    return f"{settings.url_of(app)}/ap/objects/{uuid.uuid4()}"


def new_activity_url(settings: Settings, app: str) -> str:
    return f"{settings.url_of(app)}/ap/activities/{uuid.uuid4()}"


def local_actor_of(settings: Settings, uri: str) -> str | None:
    """The local actor whose id (or key id) ``uri`` is, or None for anything else."""
    plain = uri.split("#", 1)[0]
    for actor in ACTOR_NAMES:
        if plain == actor_url(settings, actor):
            return actor
    return None


def is_local(settings: Settings, uri: str) -> bool:
    """Whether ``uri`` is on one of our apps' hosts."""
    netloc = urlsplit(uri).netloc
    return any(urlsplit(settings.url_of(app)).netloc == netloc for app in APP_NAMES)
