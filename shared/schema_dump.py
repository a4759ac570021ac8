"""schema.sql: `pg_dump --schema-only` of the database that the migrations build at head.

The dump is always made the same way, so that it can be compared byte for byte: a throwaway
embedded PostgreSQL (the version pinned by uv.lock), `alembic upgrade head`, and that server's
own pg_dump. Only the random `\\restrict` keys that newer pg_dump versions write are removed.
"""

from __future__ import annotations

import difflib
import subprocess
import tempfile
from pathlib import Path

from shared.embedded import EmbeddedPostgres
from shared.migrations import do_upgrade

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schema.sql"
DUMP_DATABASE = "rose_ash_schema"


def dump_schema_of(server: EmbeddedPostgres, database: str) -> str:
    output = subprocess.run(
        [
            str(server.bin_dir / "pg_dump"),
            "--schema-only",
            "--no-owner",
            "--no-privileges",
            server.url(database),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return normalise_dump(output)


def normalise_dump(dump: str) -> str:
    lines = [
        line for line in dump.splitlines() if not line.startswith(("\\restrict ", "\\unrestrict "))
    ]
    return "\n".join(lines).strip() + "\n"


def build_schema(server: EmbeddedPostgres) -> str:
    """Migrate a fresh database on ``server`` to head and dump its schema."""
    server.create_database(DUMP_DATABASE, replace=True)
    do_upgrade(server.url(DUMP_DATABASE))
    return dump_schema_of(server, DUMP_DATABASE)


def build_schema_in_scratch_server() -> str:
    with tempfile.TemporaryDirectory(prefix="rose-ash-schema-") as scratch:
        server = EmbeddedPostgres(Path(scratch) / "pg")
        server.start()
        try:
            return build_schema(server)
        finally:
            server.stop()


def diff_schema(expected: str, actual: str) -> str:
    return "".join(
        difflib.unified_diff(
            expected.splitlines(keepends=True),
            actual.splitlines(keepends=True),
            fromfile="schema.sql (committed)",
            tofile="schema.sql (from migrations)",
        )
    )
