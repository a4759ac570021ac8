"""The six Dockerfiles and entrypoints: what goes into each image, how it starts.

The Dockerfiles are read as instructions (each COPY from the build context must be shared/,
the app itself or the few project files every image needs); hadolint lints them; the build
stage is replayed with uv on exactly the files those COPY lines name; the entrypoints run
under sh with a stand-in `rose-ash` that records what it was asked to do.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from pathlib import Path

import pytest

from tests.deploy.tooling import APPS, ROOT, hadolint, run, tool

# What every image may copy from the context besides shared/ and its own app.
PROJECT_FILES = {"pyproject.toml", "uv.lock", "README.md", "alembic.ini", "_config"}
SHARED_ENTRYPOINT = ROOT / "shared" / "docker" / "entrypoint.sh"
SERVE_LINE = 'exec rose-ash serve "$app" --port "${PORT:-8000}"'
APP_ENTRYPOINT_LINE = 'exec "$(dirname "$0")/../shared/docker/entrypoint.sh" {app} "$@"'


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def context_sources(dockerfile: Path) -> set[str]:
    """Every path a COPY/ADD takes from the build context (not from another stage)."""
    sources: set[str] = set()
    for word, rest in instructions(dockerfile):
        if word == "ADD":
            sources.add("ADD " + rest)  # ADD is not used at all
        if word != "COPY" or "--from=" in rest:
            continue
        parts = [p for p in rest.split() if not p.startswith("--")]
        sources.update(p.rstrip("/") for p in parts[:-1])
    return sources


def check_dockerfile(dockerfile: Path, app: str) -> list[str]:
    """What is wrong with an app's Dockerfile; empty when nothing is."""
    problems = []
    steps = instructions(dockerfile)
    extra = context_sources(dockerfile) - PROJECT_FILES - {"shared", app}
    if extra:
        problems.append(f"copies more than shared/ and {app}/: {sorted(extra)}")
    if not {"shared", app} <= context_sources(dockerfile):
        problems.append(f"does not copy shared/ and {app}/")
    if sum(1 for word, _ in steps if word == "FROM") < 2:
        problems.append("is not multi-stage")
    if not any(word == "RUN" and "uv sync --frozen --no-dev" in rest for word, rest in steps):
        problems.append("does not install the locked dependencies with uv")
    users = [rest for word, rest in steps if word == "USER"]
    if not users or users[-1].split(":")[0] in {"root", "0"}:
        problems.append("runs as root")
    if not any(word == "HEALTHCHECK" and "/readyz" in rest for word, rest in steps):
        problems.append("has no HEALTHCHECK on /readyz")
    if ("EXPOSE", "8000") not in steps:
        problems.append("does not EXPOSE 8000")
    if ("ENTRYPOINT", f'["/app/{app}/entrypoint.sh"]') not in steps:
        problems.append(f"does not start /app/{app}/entrypoint.sh")
    return problems


@pytest.mark.parametrize("app", APPS)
def test_dockerfile_copies_only_its_app_and_shared_and_starts_it(app: str) -> None:
    assert check_dockerfile(ROOT / app / "Dockerfile", app) == []
    entrypoint = (ROOT / app / "entrypoint.sh").read_text()
    assert entrypoint.rstrip().splitlines()[-1] == APP_ENTRYPOINT_LINE.format(app=app)
    assert SHARED_ENTRYPOINT.read_text().rstrip().splitlines()[-1] == SERVE_LINE


def test_the_check_fails_on_a_dockerfile_that_copies_another_app(tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    text = (ROOT / "blog" / "Dockerfile").read_text()
    broken.write_text(text.replace("COPY blog ./blog", "COPY blog ./blog\nCOPY market ./market"))
    assert check_dockerfile(broken, "blog") == ["copies more than shared/ and blog/: ['market']"]
    broken.write_text(text.replace("USER 10001:10001", "USER root"))
    assert check_dockerfile(broken, "blog") == ["runs as root"]


def test_the_six_dockerfiles_and_entrypoints_differ_only_in_the_app_name() -> None:
    for name in ("Dockerfile", "entrypoint.sh"):
        blog = (ROOT / "blog" / name).read_text()
        for app in APPS:
            assert (ROOT / app / name).read_text().replace(app, "blog") == blog, (app, name)


@pytest.mark.parametrize("app", APPS)
def test_entrypoint_is_executable(app: str) -> None:
    for script in (ROOT / app / "entrypoint.sh", SHARED_ENTRYPOINT):
        assert script.stat().st_mode & stat.S_IXUSR
        assert script.read_text().startswith("#!/bin/sh\n")


@pytest.mark.parametrize("app", APPS)
def test_hadolint_passes(app: str) -> None:
    result = hadolint(ROOT / app / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_on_a_broken_dockerfile(tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    text = (ROOT / "blog" / "Dockerfile").read_text()
    broken.write_text(text.replace("pip install --no-cache-dir uv==0.13.9", "pip install uv"))
    result = hadolint(broken)
    assert result.returncode != 0
    assert "DL3013" in result.stdout  # pin versions in pip install


def test_dockerignore_keeps_secrets_and_clutter_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for pattern in (".env", ".git", ".venv", ".devdata", "tests"):
        assert pattern in ignored


def test_the_build_stage_works_with_only_what_the_dockerfile_copies(tmp_path: Path) -> None:
    """Replay the blog image's build stage offline: the files its COPY lines name, then the
    same `uv sync --frozen --no-dev`, from the locked wheels `make test` has already cached."""
    app = "blog"
    context = tmp_path / "app"
    context.mkdir()
    for source in context_sources(ROOT / app / "Dockerfile"):
        src = ROOT / source
        if src.is_dir():
            shutil.copytree(src, context / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, context / source)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("VIRTUAL_ENV", "UV_PROJECT"))
    }
    env.update(UV_LINK_MODE="copy", UV_PYTHON_DOWNLOADS="never", UV_COMPILE_BYTECODE="0")
    uv = tool("uv")
    run(
        [uv, "sync", "--frozen", "--no-dev", "--offline", "--no-install-project"],
        context,
        env,
        True,
    )
    run([uv, "sync", "--frozen", "--no-dev", "--offline"], context, env, True)
    python = str(context / ".venv" / "bin" / "python")
    run([python, "-c", "import blog.app, shared.cli, hypercorn"], context, env, True)
    others = run([python, "-c", "import market"], context, env)
    assert "No module named 'market'" in others.stderr
    dev_only = run([python, "-c", "import pytest"], context, env)
    assert dev_only.returncode != 0  # the dev group stays out of images
    help_text = run([str(context / ".venv" / "bin" / "rose-ash"), "--help"], context, env, True)
    assert "serve" in help_text.stdout


@pytest.fixture
def fake_rose_ash(tmp_path: Path) -> tuple[Path, Path]:
    """A directory with a `rose-ash` that logs its arguments and the environment it got."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    script = bin_dir / "rose-ash"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$* | DATABASE_URL=${{DATABASE_URL:-}} SECRET_KEY=${{SECRET_KEY:-}}'
        f' SUMUP_API_KEY=${{SUMUP_API_KEY:-}} POSTGRES_PASSWORD=${{POSTGRES_PASSWORD:-unset}}"'
        f' >> "{log}"\n'
    )
    script.chmod(0o755)
    return bin_dir, log


def run_entrypoint(app: str, bin_dir: Path, secrets: Path, *args: str, **env: str) -> list[str]:
    environment = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SECRETS_DIR": str(secrets),
        **env,
    }
    run(["sh", str(ROOT / app / "entrypoint.sh"), *args], ROOT, environment, True)
    return (bin_dir.parent / "calls.log").read_text().splitlines()


@pytest.fixture
def secrets(tmp_path: Path) -> Path:
    directory = tmp_path / "secrets"
    directory.mkdir()
    (directory / "postgres_password").write_text("p@ss/w:rd")
    (directory / "secret_key").write_text("k" * 40)
    (directory / "sumup_api_key").write_text("sumup-key")
    (directory / "not-a-name").write_text("ignored")
    return directory


@pytest.mark.parametrize("app", APPS)
def test_entrypoint_waits_then_serves_without_migrating(
    app: str, fake_rose_ash: tuple[Path, Path], secrets: Path
) -> None:
    bin_dir, _ = fake_rose_ash
    calls = run_entrypoint(app, bin_dir, secrets)
    url = "postgresql://rose_ash:p%40ss%2Fw%3Ard@postgres:5432/rose_ash"
    env = f"DATABASE_URL={url} SECRET_KEY={'k' * 40} SUMUP_API_KEY=sumup-key"
    assert calls == [
        f"db wait --timeout 60 | {env} POSTGRES_PASSWORD=unset",
        f"serve {app} --port 8000 | {env} POSTGRES_PASSWORD=unset",
    ]


def test_entrypoint_migrates_only_when_asked(
    fake_rose_ash: tuple[Path, Path], secrets: Path
) -> None:
    bin_dir, _ = fake_rose_ash
    calls = run_entrypoint("blog", bin_dir, secrets, RUN_MIGRATIONS="true", PORT="9000")
    assert [call.split(" | ")[0] for call in calls] == [
        "db wait --timeout 60",
        "db upgrade",
        "serve blog --port 9000",
    ]


def test_entrypoint_runs_a_given_command_and_keeps_given_variables(
    fake_rose_ash: tuple[Path, Path], secrets: Path
) -> None:
    bin_dir, _ = fake_rose_ash
    calls = run_entrypoint(
        "federation",
        bin_dir,
        secrets,
        "rose-ash",
        "worker",
        SECRET_KEY="from-the-environment-" + "x" * 20,
        DATABASE_URL="postgresql://u@db/x",
    )
    assert [call.split(" | ")[0] for call in calls] == ["db wait --timeout 60", "worker"]
    assert "SECRET_KEY=from-the-environment-" in calls[-1]
    assert "DATABASE_URL=postgresql://u@db/x " in calls[-1]
