"""deploy.sh, run for real in a temporary git repository: --dry-run for the change-detection
cases and explicit app lists, and full runs against a stand-in `docker` that records calls
(no engine, no registry, no SSH)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.deploy.repo import Repo
from tests.deploy.tooling import APPS, TIMEOUT

REGISTRY = "registry.rose-ash.com:5000"


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path / "repo")


def deploy(
    repo: Repo, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in {"REGISTRY", "STACK_NAME"}}
    environment.update(env or {})
    return subprocess.run(
        ["bash", str(repo.path / "deploy.sh"), *args],
        cwd=repo.path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=environment,
        check=False,
    )


def dry_run(repo: Repo, *args: str) -> list[str]:
    result = deploy(repo, "--dry-run", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def builds(lines: list[str]) -> list[str]:
    """The apps whose image the output builds, in order."""
    return [
        m.group(1)
        for line in lines
        if (m := re.match(r"\+ docker build .*-f (\w+)/Dockerfile", line))
    ]


def mark_deployed(repo: Repo) -> None:
    repo.git("update-ref", "refs/deploy/coop", "HEAD")


def test_dry_run_only_blog_changed(repo: Repo) -> None:
    mark_deployed(repo)
    repo.append("blog/app.py", "x = 1\n")
    head = repo.commit("blog")
    lines = dry_run(repo)
    assert builds(lines) == ["blog"]
    tag = head[:12]
    assert lines[1:] == [
        f"+ docker build --pull -f blog/Dockerfile -t {REGISTRY}/rose-ash-blog:{tag}"
        f" -t {REGISTRY}/rose-ash-blog:latest .",
        f"+ docker push {REGISTRY}/rose-ash-blog:{tag}",
        f"+ docker push {REGISTRY}/rose-ash-blog:latest",
        "+ docker service update --with-registry-auth --detach=false"
        f" --image {REGISTRY}/rose-ash-blog:{tag} coop_blog",
        f"+ git update-ref -m deploy.sh:\\ blog refs/deploy/coop {head}",
        f"deploy.sh: deployed blog at {tag}",
    ]


def test_dry_run_shared_changed_deploys_the_whole_stack(repo: Repo) -> None:
    mark_deployed(repo)
    repo.append("shared/config.py", "x = 1\n")
    repo.commit("shared")
    lines = dry_run(repo)
    assert builds(lines) == list(APPS)
    stack_deploys = [line for line in lines if " stack deploy " in line]
    assert len(stack_deploys) == 1
    assert stack_deploys[0].endswith(
        " docker stack deploy --with-registry-auth --detach=false -c docker-compose.yml coop"
    )
    assert "BLOG_TAG=" in stack_deploys[0]
    assert "CADDYFILE_DIGEST=" in stack_deploys[0]
    # blog (which migrates) is updated before the rest of the stack
    assert lines.index(next(line for line in lines if "coop_blog" in line)) < lines.index(
        stack_deploys[0]
    )


def test_dry_run_compose_changed_deploys_all(repo: Repo) -> None:
    mark_deployed(repo)
    repo.append("docker-compose.yml", "# tuned\n")
    repo.commit("compose")
    assert builds(dry_run(repo)) == list(APPS)


def test_dry_run_docs_only_builds_nothing(repo: Repo) -> None:
    mark_deployed(repo)
    repo.append("README.md", "more words\n")
    repo.commit("docs")
    lines = dry_run(repo)
    assert builds(lines) == []
    assert "deploy.sh: nothing to deploy" in lines
    assert not any(line.startswith("+ docker") for line in lines)


def test_dry_run_first_deploy_with_no_recorded_commit_builds_all(repo: Repo) -> None:
    lines = dry_run(repo)
    assert lines[0] == (
        "deploy.sh: no deployed commit recorded (refs/deploy/coop): first deploy, all apps"
    )
    assert builds(lines) == list(APPS)
    assert any(" stack deploy " in line for line in lines)


def test_dry_run_rename_across_apps_builds_both(repo: Repo) -> None:
    repo.write("blog/services/widgets.py", "# widgets\n" * 10)
    repo.commit("widgets")
    mark_deployed(repo)
    repo.path.joinpath("events/services").mkdir(parents=True)
    repo.git("mv", "blog/services/widgets.py", "events/services/widgets.py")
    repo.commit("move")
    assert builds(dry_run(repo)) == ["blog", "events"]


def test_dry_run_since_overrides_the_recorded_commit(repo: Repo) -> None:
    repo.append("cart/app.py", "x = 1\n")
    repo.commit("cart")
    mark_deployed(repo)
    assert builds(dry_run(repo, "--since", repo.first)) == ["cart"]


def test_dry_run_with_app_names_builds_exactly_those(repo: Repo) -> None:
    mark_deployed(repo)
    repo.append("shared/config.py", "x = 1\n")  # ignored: names were given
    repo.commit("shared")
    lines = dry_run(repo, "market", "blog")
    assert builds(lines) == ["blog", "market"]  # blog first: it migrates
    assert not any(" stack deploy " in line for line in lines)
    assert builds(dry_run(repo, "blog")) == ["blog"]


def test_dry_run_federation_also_updates_the_worker(repo: Repo) -> None:
    lines = dry_run(repo, "federation")
    updates = [line.split()[-1] for line in lines if " service update " in line]
    assert updates == ["coop_federation", "coop_worker"]


def test_dry_run_all(repo: Repo) -> None:
    lines = dry_run(repo, "--all")
    assert builds(lines) == list(APPS)
    assert any(" stack deploy " in line for line in lines)


def test_dry_run_reads_registry_and_stack_from_dotenv(repo: Repo) -> None:
    repo.write(".env", "REGISTRY=registry.example.coop\nSTACK_NAME=staging\n")
    lines = dry_run(repo, "blog")
    assert "-t registry.example.coop/rose-ash-blog:latest" in lines[1]
    assert lines[4].endswith(" staging_blog")


@pytest.mark.parametrize("args", [["nonsense"], ["blog", "--bogus"], ["--all", "blog"]])
def test_usage_error_exits_non_zero_with_usage(repo: Repo, args: list[str]) -> None:
    result = deploy(repo, "--dry-run", *args)
    assert result.returncode == 2
    assert "Usage: ./deploy.sh" in result.stderr
    assert result.stdout == ""


def test_unknown_app_names_it(repo: Repo) -> None:
    result = deploy(repo, "--dry-run", "nonsense")
    assert "unknown app: nonsense" in result.stderr


def test_help(repo: Repo) -> None:
    result = deploy(repo, "--help")
    assert result.returncode == 0
    assert "--dry-run" in result.stdout


@pytest.fixture
def fake_docker(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A stand-in docker on PATH that records every call and succeeds."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    log = tmp_path / "docker.log"
    script = bin_dir / "docker"
    script.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\n')
    script.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}, log


def test_real_run_records_the_deployed_commit_for_the_next_run(
    repo: Repo, fake_docker: tuple[dict[str, str], Path]
) -> None:
    env, log = fake_docker
    first = deploy(repo, env=env)  # first deploy: everything
    assert first.returncode == 0, first.stderr
    assert repo.git("rev-parse", "refs/deploy/coop") == repo.first
    calls = log.read_text().splitlines()
    assert len([c for c in calls if c.startswith("build ")]) == 6
    assert any(c.startswith("stack deploy ") for c in calls)

    again = deploy(repo, env=env)  # nothing changed since
    assert "deploy.sh: nothing to deploy" in again.stdout

    log.write_text("")
    repo.append("events/app.py", "x = 1\n")
    head = repo.commit("events")
    third = deploy(repo, env=env)
    assert third.returncode == 0, third.stderr
    calls = log.read_text().splitlines()
    assert [c for c in calls if c.startswith(("build", "push", "service update"))] == [
        f"build --pull -f events/Dockerfile -t {REGISTRY}/rose-ash-events:{head[:12]}"
        f" -t {REGISTRY}/rose-ash-events:latest .",
        f"push {REGISTRY}/rose-ash-events:{head[:12]}",
        f"push {REGISTRY}/rose-ash-events:latest",
        "service update --with-registry-auth --detach=false"
        f" --image {REGISTRY}/rose-ash-events:{head[:12]} coop_events",
    ]
    assert repo.git("rev-parse", "refs/deploy/coop") == head


def test_real_run_refuses_uncommitted_changes(
    repo: Repo, fake_docker: tuple[dict[str, str], Path]
) -> None:
    env, log = fake_docker
    repo.append("blog/app.py", "uncommitted = True\n")
    result = deploy(repo, "blog", env=env)
    assert result.returncode == 1
    assert "uncommitted changes" in result.stderr
    assert not log.exists()


def test_swarm_host_sends_service_commands_to_the_manager(
    repo: Repo, fake_docker: tuple[dict[str, str], Path]
) -> None:
    env, log = fake_docker
    result = deploy(repo, "cart", env={**env, "SWARM_HOST": "ssh://deploy@swarm.example"})
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert calls[0].startswith("build ")  # built and pushed from here
    assert calls[-1].startswith("--host ssh://deploy@swarm.example service update ")
