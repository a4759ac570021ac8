"""A real temporary git repository shaped like Rose Ash, for the change-detection tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.deploy.tooling import APPS, ROOT, TIMEOUT, tool

# The real deployment files, copied in so that deploy.sh runs as it does in the monorepo.
DEPLOY_FILES = (
    "deploy.sh",
    "docker-compose.yml",
    "deploy/changed_apps.py",
    "deploy/Caddyfile",
    "deploy/pg-backup.sh",
)


class Repo:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", "main")
        self.git("config", "user.email", "ci@example.coop")
        self.git("config", "user.name", "CI")
        self.git("config", "commit.gpgsign", "false")
        for relative in DEPLOY_FILES:
            target = path / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / relative, target)
        for app in APPS:
            self.write(f"{app}/app.py", f"# {app}\n")
            self.write(f"{app}/Dockerfile", f"FROM scratch  # {app}\n")
        self.write("shared/config.py", "# shared\n")
        self.write("README.md", "# Rose Ash\n")
        self.write("docs/operating.md", "notes\n")
        self.write("tests/blog/test_home.py", "# tests\n")
        self.first = self.commit("foundation")

    def git(self, *args: str) -> str:
        result = subprocess.run(
            [tool("git"), "-C", str(self.path), *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
        return result.stdout.strip()

    def write(self, relative: str, text: str) -> None:
        target = self.path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def append(self, relative: str, text: str) -> None:
        with (self.path / relative).open("a") as handle:
            handle.write(text)

    def commit(self, message: str) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD")
