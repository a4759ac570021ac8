#!/bin/sh
# Entrypoint of the cart image: wait for PostgreSQL, migrate only when RUN_MIGRATIONS=true
# (one service per stack does), then replace this shell with Hypercorn serving cart.
set -eu

rose-ash db wait --timeout "${DB_WAIT_TIMEOUT:-60}"
if [ "${RUN_MIGRATIONS:-false}" = "true" ]; then
    rose-ash db upgrade
fi
exec rose-ash serve cart --port "${PORT:-8000}"
