#!/bin/sh
# Entrypoint of the federation image: wait for PostgreSQL, migrate only when RUN_MIGRATIONS=true
# (one service per stack does), then replace this shell with Hypercorn serving federation.
set -eu

rose-ash db wait --timeout "${DB_WAIT_TIMEOUT:-60}"
if [ "${RUN_MIGRATIONS:-false}" = "true" ]; then
    rose-ash db upgrade
fi
exec rose-ash serve federation --port "${PORT:-8000}"
