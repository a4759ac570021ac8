"""shellcheck on every shell script of the repository; check-jsonschema and a reading of the
CI workflow."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tooling import APPS, ROOT, check_workflow, run, shellcheck, tool

WORKFLOW = ROOT / ".gitea" / "workflows" / "ci.yml"
SKIP_DIRS = {
    ".git",
    ".venv",
    ".tools",
    ".devdata",
    "node_modules",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".import_linter_cache",
    "__pycache__",
}


def shell_scripts() -> list[Path]:
    """Every *.sh file and every file with a sh/bash shebang, outside caches and venvs."""
    found = []
    for directory, subdirs, files in os.walk(ROOT):
        subdirs[:] = [d for d in subdirs if d not in SKIP_DIRS]
        found += [
            Path(directory) / name for name in files if is_shell_script(Path(directory) / name)
        ]
    return sorted(found)


def is_shell_script(path: Path) -> bool:
    if path.is_symlink() or not path.is_file():
        return False
    if path.suffix == ".sh":
        return True
    if path.suffix:
        return False
    with path.open("rb") as handle:
        first = handle.readline()
    return first.startswith(b"#!") and any(s in first for s in (b"/sh\n", b"bash"))


def test_the_scripts_are_found() -> None:
    names = {str(p.relative_to(ROOT)) for p in shell_scripts()}
    assert {"deploy.sh", ".ci/run", "deploy/pg-backup.sh"} <= names
    assert {f"{app}/entrypoint.sh" for app in APPS} | {"shared/docker/entrypoint.sh"} <= names


@pytest.mark.parametrize("script", shell_scripts(), ids=lambda p: str(p.relative_to(ROOT)))
def test_shellcheck_passes(script: Path) -> None:
    result = shellcheck(script)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_fails_on_a_broken_script(tmp_path: Path) -> None:
    broken = tmp_path / "deploy.sh"
    broken.write_text(
        (ROOT / "deploy.sh").read_text().replace('cd "$(dirname "$0")"', "cd $(dirname $0)")
    )
    result = shellcheck(broken)
    assert result.returncode != 0
    assert "SC2046" in result.stdout  # quote this to prevent word splitting


def test_deploy_script_is_strict_bash() -> None:
    lines = (ROOT / "deploy.sh").read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    assert "set -euo pipefail" in lines


def test_pg_backup_script_runs_pg_dump_once(tmp_path: Path) -> None:
    """deploy/pg-backup.sh --once, with a stand-in pg_dump: a dump file appears, old ones go."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "pg_dump"
    fake.write_text(
        '#!/bin/sh\nfor a; do case "$a" in --file=*) echo dump > "${a#--file=}";; esac; done\n'
    )
    fake.chmod(0o755)
    backups = tmp_path / "backups"
    backups.mkdir()
    old = backups / "rose_ash-20000101T000000Z.dump"
    old.write_text("old")
    os.utime(old, (946684800, 946684800))
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "BACKUP_DIR": str(backups)}
    result = run(["sh", str(ROOT / "deploy" / "pg-backup.sh"), "--once"], env=env, check=True)
    assert "backup: wrote" in result.stdout
    dumps = sorted(p.name for p in backups.iterdir())
    assert len(dumps) == 1
    assert dumps[0] != old.name
    assert dumps[0].endswith(".dump")


@pytest.fixture(scope="module")
def workflow() -> dict[Any, Any]:
    loaded: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text())
    return loaded


def test_workflow_passes_the_github_workflows_schema() -> None:
    result = check_workflow(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_jsonschema_fails_on_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "ci.yml"
    broken.write_text(
        WORKFLOW.read_text().replace("runs-on: ubuntu-latest", "runs_on: ubuntu-latest", 1)
    )
    result = check_workflow(broken)
    assert result.returncode != 0
    assert "runs-on" in result.stdout + result.stderr


def test_test_job_runs_make_test_against_postgres_and_redis_services(
    workflow: dict[Any, Any],
) -> None:
    job = workflow["jobs"]["test"]
    assert job["services"]["postgres"]["image"] == "postgres:16"
    assert job["services"]["redis"]["image"] == "redis:7"
    assert job["env"]["TEST_DATABASE_URL"].startswith(
        "postgresql://postgres:postgres@postgres:5432/"
    )
    assert job["env"]["TEST_REDIS_URL"].startswith("redis://redis:6379/")
    assert any(step.get("run") == "make test" for step in job["steps"])


def test_deploy_job_is_gated_by_tests_and_uses_the_change_detector(
    workflow: dict[Any, Any],
) -> None:
    job = workflow["jobs"]["build-and-deploy"]
    assert job["needs"] == "test"
    assert "refs/heads/main" in job["if"]
    text = "\n".join(str(step.get("run", "")) for step in job["steps"])
    assert 'deploy/changed_apps.py --base "$BEFORE"' in text
    assert '--registry "$REGISTRY"' in text  # missing images are rebuilt too
    assert "docker login" in text
    assert "./deploy.sh $APPS" in text
    envs = {k: v for step in job["steps"] for k, v in step.get("env", {}).items()}
    assert envs["DEPLOY_SSH_KEY"] == "${{ secrets.DEPLOY_SSH_KEY }}"
    assert envs["DEPLOY_HOST"] == "${{ secrets.DEPLOY_HOST }}"
    assert envs["SWARM_HOST"] == "ssh://${{ secrets.DEPLOY_HOST }}"


def test_git_is_available_for_the_change_detector() -> None:
    assert tool("git")
