#!/bin/sh
# Entrypoint of the federation image: the start-up every image shares (secrets, DATABASE_URL,
# waiting for PostgreSQL, migrations when RUN_MIGRATIONS=true), then Hypercorn serving federation
# or the command given. See shared/docker/entrypoint.sh.
exec "$(dirname "$0")/../shared/docker/entrypoint.sh" federation "$@"
