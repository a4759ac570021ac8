#!/bin/sh
# The stack's `backup` service: a pg_dump of the Rose Ash database every
# BACKUP_INTERVAL_SECONDS (default: daily) into /backups (the pgbackups volume), keeping
# BACKUP_KEEP_DAYS days of dumps. Runs in the postgres:16 image, so pg_dump matches the server.
# Restore: see README "Deployment" (pg_restore --clean --if-exists from one of these files).
set -eu

: "${PGHOST:=postgres}"
: "${PGUSER:=rose_ash}"
: "${PGDATABASE:=rose_ash}"
: "${BACKUP_DIR:=/backups}"
: "${BACKUP_INTERVAL_SECONDS:=86400}"
: "${BACKUP_KEEP_DAYS:=14}"
export PGHOST PGUSER PGDATABASE
if [ -z "${PGPASSWORD:-}" ] && [ -r /run/secrets/postgres_password ]; then
    PGPASSWORD="$(cat /run/secrets/postgres_password)"
    export PGPASSWORD
fi

backup_once() {
    stamp="$(date -u +%Y%m%dT%H%M%SZ)"
    partial="$BACKUP_DIR/.$PGDATABASE-$stamp.dump.partial"
    final="$BACKUP_DIR/$PGDATABASE-$stamp.dump"
    # Custom format: compressed, and pg_restore can restore all of it or single tables.
    if pg_dump --format=custom --no-owner --file="$partial"; then
        mv "$partial" "$final"
        echo "backup: wrote $final ($(wc -c <"$final") bytes)"
        find "$BACKUP_DIR" -name "$PGDATABASE-*.dump" -type f -mtime +"$BACKUP_KEEP_DAYS" \
            -exec rm -f {} \; -exec echo "backup: removed old dump" {} \;
    else
        rm -f "$partial"
        echo "backup: pg_dump failed" >&2
        return 1
    fi
}

mkdir -p "$BACKUP_DIR"
if [ "${1:-}" = "--once" ]; then
    backup_once
    exit 0
fi
# Wait for the server, then dump at once and every interval. `sleep & wait` lets SIGTERM
# (a stack update) stop the loop straight away.
until pg_isready --quiet; do sleep 2; done
trap 'exit 0' TERM INT
while :; do
    backup_once || echo "backup: next try in $BACKUP_INTERVAL_SECONDS s" >&2
    sleep "$BACKUP_INTERVAL_SECONDS" &
    wait $!
done
