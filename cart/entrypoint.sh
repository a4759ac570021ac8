#!/bin/sh
# Entrypoint of the cart image: the start-up every image shares (secrets, DATABASE_URL,
# waiting for PostgreSQL, migrations when RUN_MIGRATIONS=true), then Hypercorn serving cart
# or the command given. See shared/docker/entrypoint.sh.
exec "$(dirname "$0")/../shared/docker/entrypoint.sh" cart "$@"
