"""How an app is served: Hypercorn with the app's own config (`<app>/config/hypercorn.toml`).

`rose-ash serve`, `rose-ash dev` and the images' entrypoints all build the command here, so
development runs the apps exactly as production does.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def hypercorn_command(app_name: str, binds: list[str], *, reload: bool = False) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "hypercorn",
        f"{app_name}.app:create_app()",
        "--config",
        str(PROJECT_ROOT / app_name / "config" / "hypercorn.toml"),
    ]
    for bind in binds:
        command += ["--bind", bind]
    if reload:
        command.append("--reload")
    return command
