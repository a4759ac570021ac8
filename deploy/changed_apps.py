#!/usr/bin/env python3
"""Which app images must be rebuilt and redeployed: the one change detector of Rose Ash.

Used by `deploy.sh` (base: the last deployed commit) and by the CI workflow (base: the commit
before the push). Standard library only, so CI can run it before installing anything.

    python3 deploy/changed_apps.py --base REV [--head REV] [--registry HOST] [--format FMT]

Rules, applied to every path that differs between BASE and HEAD (renames count as a deletion
plus an addition, so a file moved from blog/ to market/ selects both):

- a path in ``<app>/`` selects that app;
- a path that goes into every image or shapes the whole stack (``shared/``,
  ``docker-compose.yml``, ``pyproject.toml``, ``uv.lock``, ``_config/``, ``alembic.ini``,
  ``.dockerignore``, the stack's configs ``deploy/Caddyfile`` and ``deploy/pg-backup.sh``)
  selects all six apps;
- anything else (documentation, tests, benchmarks, CI, deploy tooling) selects nothing.

With no BASE (an empty string, the all-zero id a first push reports, or a commit this
repository does not have) it is a first deploy: all six apps.

With ``--registry``, an app not selected whose image ``<registry>/rose-ash-<app>:latest`` is
missing from the registry (``docker manifest inspect`` fails) is selected too.

Output: the selected apps in the canonical order, one per line (``lines``), on one line
separated by spaces (``words``), or as JSON with the reason for each (``json``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

APPS: tuple[str, ...] = ("blog", "market", "cart", "events", "federation", "account")
# Paths (exact files, or directories ending in "/") whose change rebuilds every app.
ALL_APPS_TRIGGERS: tuple[str, ...] = (
    "shared/",
    "docker-compose.yml",
    "pyproject.toml",
    "uv.lock",
    "_config/",
    "alembic.ini",
    ".dockerignore",
    "deploy/Caddyfile",
    "deploy/pg-backup.sh",
)
IMAGE_PREFIX = "rose-ash-"


@dataclass
class Selection:
    apps: set[str] = field(default_factory=set)
    reasons: dict[str, str] = field(default_factory=dict)

    def add(self, app: str, reason: str) -> None:
        if app not in self.apps:
            self.apps.add(app)
            self.reasons[app] = reason

    def add_all(self, reason: str) -> None:
        for app in APPS:
            self.add(app, reason)

    def ordered(self) -> list[str]:
        return [app for app in APPS if app in self.apps]


def git(repo: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", repo, *args],  # noqa: S607 (git and docker come from PATH, as in CI)
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def resolve_commit(repo: str, rev: str) -> str | None:
    """The full id of ``rev`` if this repository has that commit, else None."""
    if not rev or set(rev) == {"0"}:
        return None
    result = git(repo, "rev-parse", "--quiet", "--verify", f"{rev}^{{commit}}")
    return result.stdout.strip() if result.returncode == 0 else None


def changed_paths(repo: str, base: str, head: str) -> list[str]:
    result = git(repo, "diff", "--name-only", "--no-renames", "-z", base, head, "--")
    if result.returncode != 0:
        raise SystemExit(f"changed_apps: git diff {base} {head} failed: {result.stderr.strip()}")
    return [path for path in result.stdout.split("\0") if path]


def is_trigger(path: str, trigger: str) -> bool:
    return path.startswith(trigger) if trigger.endswith("/") else path == trigger


def select_for_paths(paths: Iterable[str]) -> Selection:
    selection = Selection()
    for path in paths:
        if any(is_trigger(path, trigger) for trigger in ALL_APPS_TRIGGERS):
            selection.add_all(f"{path} changed (goes into every image or the stack)")
            continue
        top = path.split("/", 1)[0]
        if top in APPS and "/" in path:
            selection.add(top, f"{path} changed")
    return selection


def image_exists(registry: str, app: str) -> bool:
    image = f"{registry}/{IMAGE_PREFIX}{app}:latest"
    try:
        result = subprocess.run(
            ["docker", "manifest", "inspect", image],  # noqa: S607
            capture_output=True,
            check=False,
            timeout=120,
        )
    except FileNotFoundError:
        raise SystemExit("changed_apps: --registry needs the docker client on PATH") from None
    return result.returncode == 0


def select(repo: str, base: str | None, head: str, registry: str | None = None) -> Selection:
    head_commit = resolve_commit(repo, head)
    if head_commit is None:
        raise SystemExit(f"changed_apps: unknown head revision {head!r}")
    base_commit = resolve_commit(repo, base or "")
    if base_commit is None:
        selection = Selection()
        selection.add_all("first deploy (no previous deployed commit)")
    else:
        selection = select_for_paths(changed_paths(repo, base_commit, head_commit))
    if registry:
        for app in APPS:
            if app not in selection.apps and not image_exists(registry, app):
                selection.add(app, f"image {registry}/{IMAGE_PREFIX}{app}:latest is missing")
    return selection


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="", help="last deployed commit (empty: first deploy)")
    parser.add_argument("--head", default="HEAD", help="commit to deploy (default: HEAD)")
    parser.add_argument("--repo", default=".", help="the git checkout (default: .)")
    parser.add_argument("--registry", help="also select apps whose :latest image is missing")
    parser.add_argument("--format", choices=("lines", "words", "json"), default="lines")
    args = parser.parse_args(argv)

    selection = select(args.repo, args.base, args.head, args.registry)
    apps = selection.ordered()
    if args.format == "json":
        reasons = {app: selection.reasons[app] for app in apps}
        print(json.dumps({"apps": apps, "reasons": reasons}, indent=2))
    elif args.format == "words":
        print(" ".join(apps))
    else:
        for app in apps:
            print(app)
    return 0


if __name__ == "__main__":
    sys.exit(main())
