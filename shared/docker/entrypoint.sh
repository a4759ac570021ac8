#!/bin/sh
# The start-up of every Rose Ash image (POSIX sh), called by <app>/entrypoint.sh as
#   entrypoint.sh APP [COMMAND...]
#
# 1. Swarm secrets: every file in /run/secrets (SECRETS_DIR) becomes an environment variable
#    named after it in upper case (secret_key -> SECRET_KEY), unless that variable is set.
# 2. DATABASE_URL, when not given, is built from POSTGRES_USER / POSTGRES_PASSWORD (the
#    postgres_password secret) / POSTGRES_HOST / POSTGRES_PORT / POSTGRES_DB.
# 3. Wait for PostgreSQL; migrate only when RUN_MIGRATIONS=true (the blog service does).
# 4. Replace this shell with the command given (the stack's worker runs `rose-ash worker`),
#    by default Hypercorn serving APP on $PORT (8000).
set -eu

if [ "$#" -lt 1 ]; then
    echo "usage: $0 APP [COMMAND...]" >&2
    exit 2
fi
app="$1"
shift


secrets_dir="${SECRETS_DIR:-/run/secrets}"
if [ -d "$secrets_dir" ]; then
    for secret_file in "$secrets_dir"/*; do
        [ -f "$secret_file" ] || continue
        name="$(basename "$secret_file" | tr '[:lower:]' '[:upper:]')"
        case "$name" in
            [A-Z_]*) ;;
            *) continue ;;
        esac
        case "$name" in
            *[!A-Z0-9_]*) continue ;;
        esac
        eval "already=\${$name+set}"
        if [ -z "$already" ]; then
            value="$(cat "$secret_file")"
            export "$name=$value"
        fi
    done
fi

if [ -z "${DATABASE_URL:-}" ] && [ -n "${POSTGRES_PASSWORD:-}" ]; then
    password="$(printf '%s' "$POSTGRES_PASSWORD" |
        python -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.stdin.read(), safe=""))')"
    DATABASE_URL="postgresql://${POSTGRES_USER:-rose_ash}:${password}@${POSTGRES_HOST:-postgres}:${POSTGRES_PORT:-5432}/${POSTGRES_DB:-rose_ash}"
    export DATABASE_URL
    unset password
fi
unset POSTGRES_PASSWORD

rose-ash db wait --timeout "${DB_WAIT_TIMEOUT:-60}"
if [ "${RUN_MIGRATIONS:-false}" = "true" ]; then
    rose-ash db upgrade
fi
if [ "$#" -gt 0 ]; then
    exec "$@"
fi
exec rose-ash serve "$app" --port "${PORT:-8000}"
