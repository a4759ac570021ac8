"""Typed settings: environment variables over `_config/app-config.yaml`.

Settings are built by :func:`load_settings` inside ``create_app`` (never at import time) and
validated there: every missing or invalid value is reported on its own line, named by the
environment variable that sets it, in one :class:`ConfigError`.

Precedence, highest first: keyword overrides passed to ``load_settings`` (tests and the CLI),
environment variables, the YAML file's section for the chosen environment, its ``defaults``.
pydantic-settings does the typing, parsing and env-var mapping; the YAML layer is ours because
it is keyed by environment.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import ssl
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    HttpUrl,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

APP_NAMES: tuple[str, ...] = ("blog", "market", "cart", "events", "federation", "account")
# How each app is named in the shared header and to members.
APP_LABELS: dict[str, str] = {
    "blog": "Blog",
    "market": "Market",
    "cart": "Cart",
    "events": "Events",
    "federation": "Social",
    "account": "Account",
}
Environment = Literal["development", "test", "production"]
DEFAULT_CONFIG_FILE = Path(__file__).resolve().parent.parent / "_config" / "app-config.yaml"
ENV_PREFIX = "ROSE_ASH_"
MIN_SECRET_KEY_LENGTH = 32


class ConfigError(Exception):
    """The configuration is missing values or has invalid ones; the message lists each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"Rose Ash configuration is invalid:\n{lines}")


class AppUrls(BaseModel):
    """The public base URL of each app (scheme, host and optional port, no trailing path)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    blog: HttpUrl
    market: HttpUrl
    cart: HttpUrl
    events: HttpUrl
    federation: HttpUrl
    account: HttpUrl

    def url_of(self, app_name: str) -> str:
        """The base URL of ``app_name`` without a trailing slash."""
        url: HttpUrl = getattr(self, app_name)
        return str(url).rstrip("/")


# The cookie name prefix browsers accept only on Secure, host-only cookies with Path=/.
HOST_PREFIX = "__Host-"


class CookieSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    secure: bool = True
    samesite: Literal["Lax", "Strict"] = "Lax"

    def name_of(self, base: str) -> str:
        """The name of a cookie set without Domain and with Path=/: ``__Host-<base>`` when
        cookies are Secure (https), so no sibling subdomain and no plain-http page can plant
        or overwrite it. Over plain http (development, tests) browsers refuse a ``__Host-``
        cookie, which must be Secure, so the plain name is used there."""
        return f"{HOST_PREFIX}{base}" if self.secure else base


class SessionSettings(BaseModel):
    """How long a sign-in lasts, checked on the server for federation's SSO session (one per
    device) and for each app's own session. Co-op members sign in by magic link, which costs
    a trip to their mailbox, and come back weekly or monthly, so sessions are long
    ("remember me"): a device unused for ``idle_lifetime_seconds`` (30 days) is signed out,
    which ends forgotten devices such as a shared computer; every sign-in ends after
    ``absolute_lifetime_seconds`` (90 days) however active, which bounds a stolen cookie."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    idle_lifetime_seconds: int = Field(default=30 * 24 * 3600, gt=0)
    absolute_lifetime_seconds: int = Field(default=90 * 24 * 3600, gt=0)

    @model_validator(mode="after")
    def check_idle_within_absolute(self) -> SessionSettings:
        if self.idle_lifetime_seconds > self.absolute_lifetime_seconds:
            raise ValueError(
                "ROSE_ASH_SESSIONS__IDLE_LIFETIME_SECONDS: must not exceed "
                "ROSE_ASH_SESSIONS__ABSOLUTE_LIFETIME_SECONDS"
            )
        return self


class FeatureSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    registration_open: bool = True
    # Off: the inboxes answer 404 and store nothing, and the worker delivers nothing (the
    # deliveries stay pending until federation is switched on again).
    federation_enabled: bool = True


class SmtpSettings(BaseModel):
    """Where mail goes. Unset in development: mail stays in the outbox and federation shows
    it on a development-only page. Required in production."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field(min_length=1)
    port: int = Field(default=587, gt=0, lt=65536)
    username: str | None = None
    password: SecretStr | None = None
    # "starttls" upgrades a plain connection (port 587), "tls" is implicit TLS (465).
    security: Literal["starttls", "tls", "none"] = "starttls"
    from_address: str = "Rose Ash <no-reply@rose-ash.com>"
    timeout_seconds: float = Field(default=10.0, gt=0)


# What each fragment type is cached for unless configured otherwise (shared.infrastructure
# .fragments). A key ending in "*" matches every type with that prefix.
DEFAULT_FRAGMENT_TTLS: dict[str, int] = {
    "nav-tree": 60,
    "auth-menu": 60,
    "cart-mini": 10,
    "container-*": 30,
}


def lookup_by_type(table: dict[str, int], fragment_type: str) -> int | None:
    """The value for ``fragment_type``: its own entry, else the longest matching "prefix*"."""
    if fragment_type in table:
        return table[fragment_type]
    matches = [key for key in table if key.endswith("*") and fragment_type.startswith(key[:-1])]
    return table[max(matches, key=len)] if matches else None


class FragmentSettings(BaseModel):
    """How pages fetch other apps' HTML fragments. Per-type tables are merged over the
    defaults (a configured entry wins); keys ending in "*" match a prefix of the type."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    default_timeout_ms: int = Field(default=300, gt=0)
    timeouts_ms: dict[str, int] = Field(default_factory=dict)
    default_ttl_seconds: int = Field(default=30, ge=0)
    ttls_seconds: dict[str, int] = Field(default_factory=dict)
    # How long after its TTL a copy may still be served while it is refreshed in the background.
    stale_seconds: int = Field(default=300, ge=0)
    # After a fetch of a fragment fails, pages show its fallback at once for this long
    # instead of each waiting out the timeout again (one request retries after it).
    failure_memo_seconds: float = Field(default=2.0, ge=0)
    # Where the fetcher reaches each app's /internal/ (e.g. http://blog:8000 in the swarm,
    # where the edge never publishes /internal/); an app not listed is reached at its public URL.
    internal_urls: dict[str, HttpUrl] = Field(default_factory=dict)
    max_connections_per_app: int = Field(default=50, ge=1)

    def timeout_for(self, fragment_type: str) -> float:
        """Seconds a fetch of ``fragment_type`` may take before its fallback is rendered."""
        found = lookup_by_type(self.timeouts_ms, fragment_type)
        return (found if found is not None else self.default_timeout_ms) / 1000

    def ttl_for(self, fragment_type: str) -> int:
        """Seconds a fetched ``fragment_type`` is served from the cache as fresh."""
        for table in (self.ttls_seconds, DEFAULT_FRAGMENT_TTLS):
            found = lookup_by_type(table, fragment_type)
            if found is not None:
                return found
        return self.default_ttl_seconds

    def internal_url_of(self, app_name: str, public_url: str) -> str:
        configured = self.internal_urls.get(app_name)
        return str(configured).rstrip("/") if configured is not None else public_url


class PageCacheSettings(BaseModel):
    """Whole pages cached for anonymous visitors (shared.infrastructure.page_cache). A view
    opts in with ``@cache_page(ttl=...)``; ``ttls_seconds`` overrides it by endpoint
    ("home.home") or app and endpoint ("blog:home.home"); 0 turns a route's cache off."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    default_ttl_seconds: int = Field(default=30, ge=0, le=3600)
    # The query parameters a cached page may vary by (each value, its own entry). A request
    # with any other parameter is rendered and not stored, so that `?r=<random>` cannot fill
    # the cache. None of the cached pages reads one yet.
    query_parameters: tuple[str, ...] = ()
    ttls_seconds: dict[str, Annotated[int, Field(ge=0, le=3600)]] = Field(default_factory=dict)

    def ttl_for(self, app_name: str, endpoint: str, declared: int | None = None) -> int:
        """Seconds the page of ``endpoint`` in ``app_name`` is served from the cache."""
        for key in (f"{app_name}:{endpoint}", endpoint):
            if key in self.ttls_seconds:
                return self.ttls_seconds[key]
        return declared if declared is not None else self.default_ttl_seconds


class ActivityPubSettings(BaseModel):
    """Federation with other servers (shared.infrastructure.activitypub)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Remote fetches and deliveries refuse private, loopback and link-local addresses (SSRF)
    # unless the host or network is listed here ("127.0.0.1", "10.0.0.0/8", "peer.localhost").
    allowed_private_hosts: tuple[str, ...] = ()
    # Development and tests talk to peers on loopback.
    allow_loopback: bool = False
    fetch_timeout_seconds: float = Field(default=10.0, gt=0)
    max_response_bytes: int = Field(default=1_048_576, gt=0)
    max_redirects: int = Field(default=3, ge=0, le=10)
    inbox_max_bytes: int = Field(default=262_144, gt=0)
    # Verified inbox POSTs accepted per remote host (the keyId's) per minute (more get 429).
    inbox_rate_limit_per_minute: int = Field(default=600, ge=1)
    # Inbox POSTs refused as unverified (unsigned, malformed, a bad signature, an unknown key)
    # per client address (IPv6 by /64) per minute; past it, that address makes us fetch no
    # more keys (429) until the minute is over.
    inbox_unverified_rate_limit_per_minute: int = Field(default=60, ge=1)
    # A signer's key fetched by an inbox POST: the time it may take, how many are fetched at
    # once per process (more get 503 with Retry-After), and how long a keyId that could not
    # be fetched is refused without fetching it again.
    key_fetch_timeout_seconds: float = Field(default=5.0, gt=0)
    key_fetch_concurrency: int = Field(default=8, ge=1)
    key_failure_cache_seconds: float = Field(default=60.0, ge=0)
    # Accepted clock skew of a signed request's Date / created (draft-cavage, RFC 9421).
    signature_window_seconds: int = Field(default=12 * 3600, gt=0)
    delivery_timeout_seconds: float = Field(default=10.0, gt=0)
    delivery_concurrency: int = Field(default=64, ge=1)
    max_delivery_attempts: int = Field(default=16, ge=1)
    # Items per page of the outbox, followers and following collections.
    collection_page_size: int = Field(default=20, ge=1, le=200)
    # A PEM file of CA certificates trusted for outgoing TLS besides the public ones (certifi's
    # bundle and the system store, with SSL_CERT_FILE / SSL_CERT_DIR): a private CA in front
    # of peers, or a test's own CA.
    extra_ca_file: FilePath | None = None

    @field_validator("extra_ca_file")
    @classmethod
    def check_ca_file(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                ssl.create_default_context(cafile=value)
            except (ssl.SSLError, ValueError) as exc:
                raise ValueError(f"{value} holds no usable PEM CA certificate ({exc})") from None
        return value


class Settings(BaseSettings):
    """Every setting the platform reads. Nested values use ``__``: ROSE_ASH_APPS__BLOG=..."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        populate_by_name=True,
    )

    env: Environment = Field(
        default="development", validation_alias=AliasChoices("env", "ROSE_ASH_ENV")
    )
    config_file: Path = Field(
        default=DEFAULT_CONFIG_FILE,
        validation_alias=AliasChoices("config_file", "ROSE_ASH_CONFIG_FILE"),
    )
    database_url: str = Field(
        validation_alias=AliasChoices("database_url", "DATABASE_URL", "ROSE_ASH_DATABASE_URL")
    )
    # The cache (pages, fragments: evictable) and the state (rate limits, pending sign-ins,
    # grant cache, heartbeats: never evicted); the state lives in the cache's server unless
    # REDIS_STATE_URL names another (shared.infrastructure.redis_client says why).
    redis_url: str = Field(
        validation_alias=AliasChoices("redis_url", "REDIS_URL", "ROSE_ASH_REDIS_URL")
    )
    redis_state_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "redis_state_url", "REDIS_STATE_URL", "ROSE_ASH_REDIS_STATE_URL"
        ),
    )
    # After a Redis failure, commands fail at once (no attempt) for this long, then one probes.
    redis_failure_memo_seconds: float = Field(default=2.0, ge=0)
    secret_key: SecretStr = Field(
        validation_alias=AliasChoices("secret_key", "SECRET_KEY", "ROSE_ASH_SECRET_KEY"),
    )
    apps: AppUrls
    cookies: CookieSettings = CookieSettings()
    # Idle and absolute lifetimes of sign-ins (federation's SSO sessions, the apps' sessions).
    sessions: SessionSettings = SessionSettings()
    features: FeatureSettings = FeatureSettings()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    max_body_bytes: int = Field(default=1_048_576, gt=0)
    db_pool_size: int = Field(default=5, ge=1, le=100)
    # How long a request may wait for PostgreSQL, step by step (shared.db): a new connection,
    # a free connection of the pool, a statement (enforced by the server, and by the client
    # half a second later in case the server cannot answer at all). With PostgreSQL hung, a
    # page that needs it answers 503 within about their sum instead of hanging.
    db_connect_timeout_seconds: float = Field(default=2.0, gt=0)
    db_pool_timeout_seconds: float = Field(default=1.0, gt=0)
    db_statement_timeout_ms: int = Field(default=2_000, gt=0)
    # The worker's statements (a fan-out to every follower, a batch of inbox items) are not a
    # visitor waiting for a page: they get longer, still bounded, so a hung server is noticed.
    db_worker_statement_timeout_ms: int = Field(default=60_000, gt=0)
    readiness_timeout_seconds: float = Field(default=2.0, gt=0)
    smtp: SmtpSettings | None = None
    # Each app's OAuth client secret. Production gives them as Swarm secrets (the entrypoint
    # exports OAUTH_CLIENT_SECRET_<APP>; federation gets all of them); unset, a secret is
    # derived from SECRET_KEY (shared.services.identity.oauth_clients.first_party_client_secret).
    oauth_client_secret_blog: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("oauth_client_secret_blog", "OAUTH_CLIENT_SECRET_BLOG"),
    )
    oauth_client_secret_market: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("oauth_client_secret_market", "OAUTH_CLIENT_SECRET_MARKET"),
    )
    oauth_client_secret_cart: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("oauth_client_secret_cart", "OAUTH_CLIENT_SECRET_CART"),
    )
    oauth_client_secret_events: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("oauth_client_secret_events", "OAUTH_CLIENT_SECRET_EVENTS"),
    )
    oauth_client_secret_account: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("oauth_client_secret_account", "OAUTH_CLIENT_SECRET_ACCOUNT"),
    )
    # Run outbox events (mail, logout notices) right after the request commits; the worker
    # retries whatever fails. Tests switch it off and run the processor themselves.
    outbox_after_commit: bool = True
    # Fragments between the apps (shared.infrastructure.fragments).
    fragments: FragmentSettings = FragmentSettings()
    # Whole pages for anonymous visitors (shared.infrastructure.page_cache).
    page_cache: PageCacheSettings = PageCacheSettings()
    # ActivityPub federation (shared.infrastructure.activitypub).
    activitypub: ActivityPubSettings = ActivityPubSettings()
    # Who may edit the site navigation in blog (ROSE_ASH_EDITORS, a JSON list): member ids
    # and/or email addresses, see check_editors. There is no roles system yet; empty (the
    # default) means nobody.
    editors: tuple[str, ...] = ()
    # Signs internal requests (/internal/..., /metrics) between the apps; unset, it is derived
    # from SECRET_KEY with HMAC (shared.infrastructure.internal_auth.get_internal_secret).
    internal_secret: SecretStr | None = None
    # Encrypt the stored private keys (shared.infrastructure.key_encryption): the OIDC signing keys
    # (only federation and the worker are given OIDC_KEY_SECRET) and the ActivityPub keypair
    # (every app and the worker). Unset, each is derived from SECRET_KEY, in development and
    # tests only: production needs AP_KEY_SECRET everywhere, OIDC_KEY_SECRET where it is used.
    oidc_key_secret: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("oidc_key_secret", "OIDC_KEY_SECRET")
    )
    ap_key_secret: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("ap_key_secret", "AP_KEY_SECRET")
    )

    @field_validator("database_url")
    @classmethod
    def check_database_url(cls, value: str) -> str:
        """Accept postgresql:// (any driver suffix) and normalise to the asyncpg driver."""
        scheme, sep, rest = value.partition("://")
        if not sep or not scheme.startswith(("postgresql", "postgres")):
            raise ValueError("must be a postgresql:// URL")
        return f"postgresql+asyncpg://{rest}"

    @field_validator("secret_key", "oidc_key_secret", "ap_key_secret")
    @classmethod
    def check_secret_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_SECRET_KEY_LENGTH:
            raise ValueError(f"must be at least {MIN_SECRET_KEY_LENGTH} characters long")
        return value

    @field_validator("redis_url", "redis_state_url")
    @classmethod
    def check_redis_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("editors", mode="before")
    @classmethod
    def check_editors(cls, value: Any) -> Any:
        """Editors are named by member id (``42``) or by email address (``ada@example.org``,
        which counts only while it is the member's verified address), e.g.
        ``ROSE_ASH_EDITORS='[42, "ada@example.org"]'``. Ids are kept as digit strings and
        addresses lower-cased. Usernames are refused: a username that is given up can be
        claimed by someone else, who would become an editor with it."""
        if isinstance(value, str | int):
            value = [value]
        if not isinstance(value, list | tuple):
            return value  # pydantic reports the wrong type
        editors = []
        for entry in value:
            text = str(entry).strip().lower()
            if not (re.fullmatch(r"[0-9]+", text) or re.fullmatch(r"[^@\s]+@[^@\s]+", text)):
                raise ValueError(
                    f"{text!r} is neither a member id nor an email address "
                    "(editors are not named by username)"
                )
            editors.append(text)
        return tuple(editors)

    @model_validator(mode="after")
    def check_production_needs(self) -> Settings:
        if self.env == "production" and self.smtp is None:
            raise ValueError("ROSE_ASH_SMTP__HOST: production needs an SMTP server for mail")
        if self.env == "production" and self.ap_key_secret is None:
            raise ValueError("AP_KEY_SECRET: production needs it (the ActivityPub key's secret)")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, file_secret_settings, YamlSectionSource(settings_cls))

    @property
    def sync_database_url(self) -> str:
        """The database URL for tools that speak libpq themselves (pg_dump, psql)."""
        return self.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)

    @property
    def state_redis_url(self) -> str:
        """Where rate limits, pending sign-ins and the grant cache live (never evicted)."""
        return self.redis_state_url or self.redis_url

    def url_of(self, app_name: str) -> str:
        return self.apps.url_of(app_name)

    def derive_from_secret_key(self, label: bytes) -> bytes:
        """A secret of its own for ``label``, derived from SECRET_KEY (HMAC-SHA256): what a
        secret that is not configured defaults to (internal requests, first-party client
        secrets, the key secrets outside production)."""
        key = self.secret_key.get_secret_value().encode()
        return hmac.new(key, label, hashlib.sha256).digest()

    def is_editor(self, member_id: int, verified_email: str | None) -> bool:
        """Whether the member may edit the navigation: listed by id, or by their email address
        when they have verified it (``verified_email`` None when they have not)."""
        editors = {editor.strip().lower() for editor in self.editors}
        if str(member_id) in editors:
            return True
        return verified_email is not None and verified_email.strip().lower() in editors

    def configured_client_secret(self, app_name: str) -> str | None:
        secret: SecretStr | None = getattr(self, f"oauth_client_secret_{app_name}", None)
        return secret.get_secret_value() if secret is not None else None


def read_config_file(path: Path, env: str) -> dict[str, Any]:
    """The YAML file's ``defaults`` merged with its section for ``env``."""
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError([f"ROSE_ASH_CONFIG_FILE: {path} does not exist"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"ROSE_ASH_CONFIG_FILE: {path} is not valid YAML: {exc}"]) from None
    if not isinstance(document, dict):
        raise ConfigError([f"ROSE_ASH_CONFIG_FILE: {path} must hold a mapping"])
    environments = document.get("environments") or {}
    if env not in environments:
        raise ConfigError([f"ROSE_ASH_ENV: {path} has no section for environment {env!r}"])
    return merge_dicts(document.get("defaults") or {}, environments[env] or {})


def merge_dicts(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_dicts(merged[key], value)
        else:
            merged[key] = value
    return merged


class YamlSectionSource(PydanticBaseSettingsSource):
    """Values from the YAML file, for the environment chosen by the sources before it."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ below reads the whole section at once

    def __call__(self) -> dict[str, Any]:
        env = self.current_state.get("env", "development")
        path = Path(self.current_state.get("config_file", DEFAULT_CONFIG_FILE))
        return read_config_file(path, str(env))


def env_var_name(loc: tuple[int | str, ...]) -> str:
    """The environment variable that sets the field at ``loc`` (as pydantic reports it)."""
    top = str(loc[0])
    if top in ("database_url", "DATABASE_URL", "ROSE_ASH_DATABASE_URL"):
        return "DATABASE_URL"
    if top in ("redis_url", "REDIS_URL", "ROSE_ASH_REDIS_URL"):
        return "REDIS_URL"
    if top in ("redis_state_url", "REDIS_STATE_URL", "ROSE_ASH_REDIS_STATE_URL"):
        return "REDIS_STATE_URL"
    if top in ("secret_key", "SECRET_KEY", "ROSE_ASH_SECRET_KEY"):
        return "SECRET_KEY"
    if top in ("oidc_key_secret", "OIDC_KEY_SECRET", "ap_key_secret", "AP_KEY_SECRET"):
        return top.upper()
    if top.startswith(ENV_PREFIX):
        top = top.removeprefix(ENV_PREFIX)
    return ENV_PREFIX + "__".join([top, *(str(part) for part in loc[1:])]).upper()


def load_settings(**overrides: Any) -> Settings:
    """Build and validate the settings; raise ConfigError naming every bad value."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "missing":
                message = "is required but not set"
            # Errors of the whole model (no location) already name their variable.
            loc = error["loc"]
            problems.append(f"{env_var_name(loc)}: {message}" if loc else message)
        raise ConfigError(problems) from None
