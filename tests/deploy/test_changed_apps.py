"""deploy/changed_apps.py over a real temporary git repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.repo import Repo
from tests.deploy.tooling import APPS, ROOT, TIMEOUT

PROGRAM = ROOT / "deploy" / "changed_apps.py"


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path / "repo")


def changed(repo: Repo, *args: str, env: dict[str, str] | None = None) -> list[str]:
    result = subprocess.run(
        [sys.executable, str(PROGRAM), "--repo", str(repo.path), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_only_blog_changed(repo: Repo) -> None:
    repo.append("blog/app.py", "x = 1\n")
    repo.commit("blog")
    assert changed(repo, "--base", repo.first) == ["blog"]


def test_two_apps_changed_in_two_commits(repo: Repo) -> None:
    repo.append("market/app.py", "x = 1\n")
    repo.commit("market")
    repo.append("account/app.py", "x = 1\n")
    repo.commit("account")
    assert changed(repo, "--base", repo.first) == ["market", "account"]


def test_shared_changed_selects_all(repo: Repo) -> None:
    repo.append("shared/config.py", "x = 1\n")
    repo.commit("shared")
    assert changed(repo, "--base", repo.first) == list(APPS)


def test_compose_changed_selects_all(repo: Repo) -> None:
    repo.append("docker-compose.yml", "# a comment\n")
    repo.commit("compose")
    assert changed(repo, "--base", repo.first) == list(APPS)


def test_docs_tests_and_tooling_only_select_nothing(repo: Repo) -> None:
    repo.append("README.md", "more\n")
    repo.append("docs/operating.md", "more\n")
    repo.append("tests/blog/test_home.py", "# more\n")
    repo.append("deploy.sh", "# more\n")
    repo.commit("docs")
    assert changed(repo, "--base", repo.first) == []


@pytest.mark.parametrize("base", ["", "0" * 40, "1234567890abcdef1234567890abcdef12345678"])
def test_first_deploy_with_no_previous_commit_selects_all(repo: Repo, base: str) -> None:
    assert changed(repo, "--base", base) == list(APPS)


def test_rename_across_apps_selects_both(repo: Repo) -> None:
    repo.write("blog/services/widgets.py", "# a module big enough to be seen as renamed\n" * 5)
    base = repo.commit("widgets in blog")
    repo.path.joinpath("events/services").mkdir(parents=True)
    repo.git("mv", "blog/services/widgets.py", "events/services/widgets.py")
    repo.commit("move widgets to events")
    assert "R100" in repo.git("diff", "--name-status", "-M", base, "HEAD")  # git sees a rename
    assert changed(repo, "--base", base) == ["blog", "events"]


def test_missing_images_are_selected_with_registry(repo: Repo, tmp_path: Path) -> None:
    """A stand-in docker: `docker manifest inspect` fails for market's image only."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "docker"
    fake.write_text(
        '#!/bin/sh\necho "$*" >> "$(dirname "$0")/calls"\n'
        'case "$3" in *rose-ash-market:latest) exit 1 ;; esac\nexit 0\n'
    )
    fake.chmod(0o755)
    repo.append("blog/app.py", "x = 1\n")
    repo.commit("blog")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    apps = changed(repo, "--base", repo.first, "--registry", "reg.example:5000", env=env)
    assert apps == ["blog", "market"]
    calls = (bin_dir / "calls").read_text().splitlines()
    assert "manifest inspect reg.example:5000/rose-ash-cart:latest" in calls
    assert not any("rose-ash-blog" in call for call in calls)  # selected already


def test_json_output_gives_reasons(repo: Repo) -> None:
    repo.append("cart/app.py", "x = 1\n")
    repo.commit("cart")
    result = subprocess.run(
        [
            sys.executable,
            str(PROGRAM),
            "--repo",
            str(repo.path),
            "--base",
            repo.first,
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    assert json.loads(result.stdout) == {
        "apps": ["cart"],
        "reasons": {"cart": "cart/app.py changed"},
    }


def test_unknown_head_is_an_error(repo: Repo) -> None:
    result = subprocess.run(
        [sys.executable, str(PROGRAM), "--repo", str(repo.path), "--head", "no-such-rev"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode != 0
    assert "unknown head revision" in result.stderr
