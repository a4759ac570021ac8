"""Settings: validated at start, one clear message per missing or invalid value."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from shared.config import DEFAULT_CONFIG_FILE, ConfigError, load_settings
from shared.services.identity.oauth_clients import first_party_client_secret

VALID = {
    "database_url": "postgresql://rose@db.internal:5432/rose_ash",
    "redis_url": "redis://cache.internal:6379/0",
    "secret_key": "s" * 40,
    "smtp": {"host": "mail.internal"},
    "ap_key_secret": "a" * 40,
}
KEY_SECRETS = ("OIDC_KEY_SECRET", "AP_KEY_SECRET")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ROSE_ASH_ENV", *KEY_SECRETS):
        monkeypatch.delenv(name, raising=False)


def test_every_missing_value_is_named_on_its_own_line() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env="production")
    assert caught.value.problems == [
        "DATABASE_URL: is required but not set",
        "REDIS_URL: is required but not set",
        "SECRET_KEY: is required but not set",
    ]
    assert str(caught.value).splitlines()[1:] == [
        "  - DATABASE_URL: is required but not set",
        "  - REDIS_URL: is required but not set",
        "  - SECRET_KEY: is required but not set",
    ]


def test_invalid_values_are_named_by_their_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://root@localhost/shop")
    monkeypatch.setenv("ROSE_ASH_APPS__MARKET", "not a url")
    monkeypatch.setenv("ROSE_ASH_MAX_BODY_BYTES", "0")
    with pytest.raises(ConfigError) as caught:
        load_settings(env="production", redis_url="memcached://x", secret_key="short")
    problems = caught.value.problems
    assert "DATABASE_URL: must be a postgresql:// URL" in problems
    assert "REDIS_URL: must be a redis://, rediss:// or unix:// URL" in problems
    assert "SECRET_KEY: must be at least 32 characters long" in problems
    assert any(p.startswith("ROSE_ASH_APPS__MARKET: Input should be a valid URL") for p in problems)
    assert any(
        p.startswith("ROSE_ASH_MAX_BODY_BYTES: Input should be greater than 0") for p in problems
    )
    assert len(problems) == 5


def test_production_needs_an_smtp_server() -> None:
    without_smtp = {key: value for key, value in VALID.items() if key != "smtp"}
    with pytest.raises(ConfigError) as caught:
        load_settings(env="production", **without_smtp)
    assert caught.value.problems == [
        "ROSE_ASH_SMTP__HOST: production needs an SMTP server for mail"
    ]
    assert load_settings(env="development", **without_smtp).smtp is None
    configured = load_settings(env="production", **VALID).smtp
    assert configured is not None
    assert (configured.host, configured.port, configured.security) == (
        "mail.internal",
        587,
        "starttls",
    )


def test_production_needs_the_activitypub_key_secret_and_key_secrets_are_long(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    without = {key: value for key, value in VALID.items() if key != "ap_key_secret"}
    with pytest.raises(ConfigError) as caught:
        load_settings(env="production", **without)
    assert caught.value.problems == [
        "AP_KEY_SECRET: production needs it (the ActivityPub key's secret)"
    ]
    assert load_settings(env="development", **without).ap_key_secret is None
    monkeypatch.setenv("OIDC_KEY_SECRET", "short")
    monkeypatch.setenv("AP_KEY_SECRET", "short")
    with pytest.raises(ConfigError) as short:
        load_settings(env="production", **without)
    assert short.value.problems == [
        "OIDC_KEY_SECRET: must be at least 32 characters long",
        "AP_KEY_SECRET: must be at least 32 characters long",
    ]


def test_yaml_gives_each_environment_its_urls_and_cookies() -> None:
    production = load_settings(env="production", **VALID)
    development = load_settings(env="development", **VALID)
    assert production.url_of("blog") == "https://blog.rose-ash.com"
    assert production.cookies.secure is True
    assert development.url_of("account") == "http://account.localhost:8006"
    assert development.cookies.secure is False


def test_environment_variables_override_the_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROSE_ASH_APPS__BLOG", "https://news.example.coop")
    monkeypatch.setenv("ROSE_ASH_COOKIES__SECURE", "false")
    monkeypatch.setenv("DATABASE_URL", "postgres://env@db/env")
    settings = load_settings(
        env="production",
        redis_url=VALID["redis_url"],
        secret_key="k" * 32,
        smtp={"host": "m"},
        ap_key_secret="a" * 32,
    )
    assert settings.url_of("blog") == "https://news.example.coop"
    assert settings.url_of("market") == "https://market.rose-ash.com"
    assert settings.cookies.secure is False
    # any postgresql URL is accepted and normalised to the asyncpg driver
    assert settings.database_url == "postgresql+asyncpg://env@db/env"
    assert settings.sync_database_url == "postgresql://env@db/env"


def test_unknown_environment_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env="staging", **VALID)
    assert caught.value.problems == [
        f"ROSE_ASH_ENV: {DEFAULT_CONFIG_FILE} has no section for environment 'staging'"
    ]


def test_config_file_problems_are_reported(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"ROSE_ASH_CONFIG_FILE: .*nope.yaml does not exist"):
        load_settings(config_file=missing, **VALID)
    broken = tmp_path / "broken.yaml"
    broken.write_text("environments: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_settings(config_file=broken, **VALID)
    no_section = tmp_path / "partial.yaml"
    no_section.write_text("environments:\n  production: {}\n")
    with pytest.raises(ConfigError, match="has no section for environment 'development'"):
        load_settings(config_file=no_section, env="development", **VALID)


def test_unknown_keys_in_the_yaml_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(
        "environments:\n  production:\n    cookie:\n      secure: true\n"
        "    apps: {blog: 'https://a.b', market: 'https://a.b', cart: 'https://a.b',"
        " events: 'https://a.b', federation: 'https://a.b', account: 'https://a.b'}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(config_file=path, env="production", **VALID)
    assert caught.value.problems == ["ROSE_ASH_COOKIE: Extra inputs are not permitted"]


def test_settings_are_not_read_at_import_time() -> None:
    """Importing every app module must not need any configuration (anti-example)."""
    for name in ("blog", "market", "cart", "events", "federation", "account"):
        module = importlib.import_module(f"{name}.app")
        assert callable(module.create_app)
        assert not hasattr(module, "app")


def test_oauth_client_secrets_come_from_the_environment_or_secret_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    derived = load_settings(env="production", **VALID)
    assert derived.configured_client_secret("blog") is None
    blog_default = first_party_client_secret(derived, "blog")
    assert len(blog_default) == 64
    assert blog_default != first_party_client_secret(derived, "market")
    monkeypatch.setenv("OAUTH_CLIENT_SECRET_BLOG", "from-a-swarm-secret")
    configured = load_settings(env="production", **VALID)
    assert first_party_client_secret(configured, "blog") == "from-a-swarm-secret"
    assert first_party_client_secret(configured, "market") == first_party_client_secret(
        derived, "market"
    )


def test_an_empty_smtp_host_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env="production", **{**VALID, "smtp": {"host": ""}})
    assert caught.value.problems == ["ROSE_ASH_SMTP__HOST: String should have at least 1 character"]


def test_editors_are_member_ids_or_email_addresses_never_usernames(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A username can be given up and claimed by someone else: it must not name an editor."""
    monkeypatch.setenv("ROSE_ASH_EDITORS", '[42, " Ada@Example.org "]')
    settings = load_settings(env="production", **VALID)
    assert settings.editors == ("42", "ada@example.org")
    monkeypatch.setenv("ROSE_ASH_EDITORS", '["ben"]')
    with pytest.raises(ConfigError) as caught:
        load_settings(env="production", **VALID)
    assert caught.value.problems == [
        "ROSE_ASH_EDITORS: 'ben' is neither a member id nor an email address "
        "(editors are not named by username)"
    ]


def test_the_development_editor_is_named_by_the_demo_address() -> None:
    development = load_settings(env="development", **VALID)
    assert development.editors == ("ada@rose-ash.localhost",)
