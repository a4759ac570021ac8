"""docker-compose.yml as a Swarm stack, checked by `docker stack config` (the docker client
interpolates and validates it offline) and by reading what it prints."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tooling import APPS, ROOT, docker_stack_config

COMPOSE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    result = docker_stack_config(COMPOSE)
    assert result.returncode == 0, f"docker stack config failed:\n{result.stderr}"
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def test_stack_has_the_six_apps_the_worker_postgres_and_redis(stack: dict[str, Any]) -> None:
    services = set(stack["services"])
    assert {*APPS, "worker", "postgres", "redis", "redis-state"} <= services
    # Beside them only the edge proxy and the backups.
    assert services - {*APPS, "worker", "postgres", "redis", "redis-state"} == {"edge", "backup"}


@pytest.mark.parametrize("app", APPS)
def test_app_images_come_from_the_registry(stack: dict[str, Any], app: str) -> None:
    image = stack["services"][app]["image"]
    assert image == f"registry.rose-ash.com:5000/rose-ash-{app}:latest"


def test_registry_and_tags_come_from_the_environment() -> None:
    result = docker_stack_config(
        COMPOSE, {"REGISTRY": "registry.example.coop", "BLOG_TAG": "abc123", "STACK_NAME": "t"}
    )
    assert result.returncode == 0, result.stderr
    stack = yaml.safe_load(result.stdout)
    services = stack["services"]
    assert services["blog"]["image"] == "registry.example.coop/rose-ash-blog:abc123"
    assert services["market"]["image"] == "registry.example.coop/rose-ash-market:latest"
    assert stack["configs"]["caddyfile"]["name"] == "t_caddyfile_initial"


@pytest.mark.parametrize("app", APPS)
def test_apps_deploy_with_rolling_updates_rollback_limits(stack: dict[str, Any], app: str) -> None:
    deploy = stack["services"][app]["deploy"]
    assert deploy["replicas"] >= 2
    assert deploy["update_config"]["order"] == "start-first"
    assert deploy["update_config"]["failure_action"] == "rollback"
    assert deploy["restart_policy"]["condition"] == "any"
    assert deploy["resources"]["limits"]["cpus"]
    assert deploy["resources"]["limits"]["memory"]


@pytest.mark.parametrize("app", APPS)
def test_apps_are_healthchecked_on_readyz(stack: dict[str, Any], app: str) -> None:
    test = stack["services"][app]["healthcheck"]["test"]
    assert test[0] == "CMD"
    assert "http://127.0.0.1:8000/readyz" in test[-1]
    ast.parse(test[-1])  # the python -c program is valid Python


def test_every_service_has_limits_restart_policy_and_a_healthcheck(stack: dict[str, Any]) -> None:
    for name, service in stack["services"].items():
        assert service["deploy"]["resources"]["limits"]["memory"], name
        assert service["deploy"]["restart_policy"]["condition"], name
        if name != "backup":
            assert service["healthcheck"]["test"], name


def test_only_blog_runs_migrations(stack: dict[str, Any]) -> None:
    migrating = {
        name
        for name, service in stack["services"].items()
        if service.get("environment", {}).get("RUN_MIGRATIONS") == "true"
    }
    assert migrating == {"blog"}


def test_worker_runs_rose_ash_worker_with_a_heartbeat_healthcheck(stack: dict[str, Any]) -> None:
    worker = stack["services"]["worker"]
    assert worker["command"] == ["rose-ash", "worker"]
    assert worker["image"] == stack["services"]["federation"]["image"]
    check = worker["healthcheck"]["test"][-1]
    ast.parse(check)
    assert "rose_ash:worker:heartbeat:" in check


def test_postgres_16_on_a_named_volume_and_redis_7(stack: dict[str, Any]) -> None:
    postgres = stack["services"]["postgres"]
    assert postgres["image"] == "postgres:16"
    mount = next(v for v in postgres["volumes"] if v["target"] == "/var/lib/postgresql/data")
    assert mount["type"] == "volume"
    assert mount["source"] in stack["volumes"]
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert stack["services"]["redis"]["image"] == "redis:7"


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_the_cache_evicts_and_the_state_store_never_does(stack: dict[str, Any]) -> None:
    """Visitors fill the cache at will (every page they ask for): rate limits, pending
    sign-ins and the grant cache live in a Redis of their own that never evicts a key."""
    cache = stack["services"]["redis"]["command"]
    state = stack["services"]["redis-state"]
    assert option(cache, "--maxmemory-policy") == "volatile-lru"
    assert option(state["command"], "--maxmemory-policy") == "noeviction"
    assert option(state["command"], "--maxmemory") != "0"
    assert state["image"] == "redis:7"
    assert set(state["networks"]) == {"backend"}
    for name in (*APPS, "worker"):
        environment = stack["services"][name]["environment"]
        assert environment["REDIS_URL"] == "redis://redis:6379/0"
        assert environment["REDIS_STATE_URL"] == "redis://redis-state:6379/0"
    worker_check = " ".join(stack["services"]["worker"]["healthcheck"]["test"])
    assert "REDIS_STATE_URL" in worker_check  # where the heartbeats are


def test_redis_persistence_choice_is_stated() -> None:
    text = COMPOSE.read_text()
    assert "WITHOUT persistence" in text


def test_backups_are_scheduled_pg_dumps_to_a_volume(stack: dict[str, Any]) -> None:
    backup = stack["services"]["backup"]
    assert backup["image"] == "postgres:16"
    assert any(v["target"] == "/backups" and v["type"] == "volume" for v in backup["volumes"])
    assert "pg_dump" in (ROOT / "deploy" / "pg-backup.sh").read_text()


def test_networks_backend_is_an_internal_overlay(stack: dict[str, Any]) -> None:
    assert stack["networks"]["backend"] == {"driver": "overlay", "internal": True}
    for name in ("postgres", "redis", "redis-state"):
        assert set(stack["services"][name]["networks"]) == {"backend"}


def test_only_the_edge_publishes_ports(stack: dict[str, Any]) -> None:
    publishing = {name for name, service in stack["services"].items() if service.get("ports")}
    assert publishing == {"edge"}
    edge = stack["services"]["edge"]
    assert edge["configs"][0]["target"] == "/etc/caddy/Caddyfile"
    assert {p["published"] for p in edge["ports"]} == {80, 443}


def test_secrets_are_swarm_secrets_never_plain_values(stack: dict[str, Any]) -> None:
    declared = stack["secrets"]
    for name in ("secret_key", "postgres_password", "sumup_api_key"):
        assert declared[name]["external"] is True
    assert {f"oauth_client_secret_{app}" for app in APPS if app != "federation"} <= set(declared)
    for name, service in stack["services"].items():
        for key, value in service.get("environment", {}).items():
            if any(word in key for word in ("SECRET", "PASSWORD", "API_KEY")):
                assert key.endswith("_FILE"), f"{name}: {key}={value!r} is a plain secret"
    for app in APPS:
        sources = {s["source"] for s in stack["services"][app]["secrets"]}
        assert {"secret_key", "postgres_password"} <= sources
    assert "sumup_api_key" in {s["source"] for s in stack["services"]["cart"]["secrets"]}
    # Mail goes out from every app and the worker (magic links, outbox retries).
    for service in (*APPS, "worker"):
        sources = {s["source"] for s in stack["services"][service]["secrets"]}
        assert "rose_ash_smtp__password" in sources, service
        assert stack["services"][service]["environment"]["ROSE_ASH_SMTP__HOST"] is not None
    # The OIDC signing keys' secret only where tokens are signed; the AP key's where actors sign.
    for name in ("oidc_key_secret", "ap_key_secret"):
        assert declared[name]["external"] is True
    holders = {
        name: {s["source"] for s in service.get("secrets", [])}
        for name, service in stack["services"].items()
    }
    assert {n for n, sources in holders.items() if "oidc_key_secret" in sources} == {
        "federation",
        "worker",
    }
    assert {n for n, sources in holders.items() if "ap_key_secret" in sources} == {
        *APPS,
        "worker",
    }
    internal = json.loads(
        stack["services"]["blog"]["environment"]["ROSE_ASH_FRAGMENTS__INTERNAL_URLS"]
    )
    assert internal == {app: f"http://{app}:8000" for app in APPS}


def test_a_broken_compose_file_fails_docker_stack_config(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("order: start-first", "order: sideways-first", 1))
    result = docker_stack_config(broken)
    assert result.returncode != 0
    assert "order" in result.stderr
