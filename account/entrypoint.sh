#!/bin/sh
# Entrypoint of the account image: the start-up every image shares (secrets, DATABASE_URL,
# waiting for PostgreSQL, migrations when RUN_MIGRATIONS=true), then Hypercorn serving account
# or the command given. See shared/docker/entrypoint.sh.
exec "$(dirname "$0")/../shared/docker/entrypoint.sh" account "$@"
