#!/bin/sh
# One-shot schema setup for Temporal on PostgreSQL (temporal-schema service).
#
# Runs in temporalio/admin-tools; temporal-sql-tool takes its connection from
# SQL_PLUGIN, SQL_HOST, SQL_PORT, SQL_USER and SQL_PASSWORD. Every step is
# idempotent, so this runs on every `docker compose up`: `create` ignores an
# existing database, `setup-schema -v 0.0` only adds the version tables if they
# are missing, and `update-schema` migrates to the schema embedded in this
# admin-tools version (which is how a server upgrade migrates its databases).
set -eu

: "${SQL_HOST:?}" "${SQL_USER:?}" "${SQL_PASSWORD:?}"
ATTEMPTS="${SETUP_ATTEMPTS:-30}"

# postgres is healthy before this starts; retry the first connection anyway,
# for a slow first boot.
attempt=1
until temporal-sql-tool --db temporal create; do
    if [ "$attempt" -ge "$ATTEMPTS" ]; then
        echo "PostgreSQL at $SQL_HOST is not reachable; giving up" >&2
        exit 1
    fi
    attempt=$((attempt + 1))
    sleep 2
done

setup() {
    db="$1" schema="$2"
    echo "Setting up database $db ($schema)"
    temporal-sql-tool --db "$db" create
    temporal-sql-tool --db "$db" setup-schema -v 0.0
    temporal-sql-tool --db "$db" update-schema --schema-name "$schema"
}

setup temporal postgresql/v12/temporal
setup temporal_visibility postgresql/v12/visibility

# hitl's store. The postgres init script creates it on a fresh volume; this
# covers a volume initialised before hitl's database existed. hitl creates its
# own tables.
temporal-sql-tool --db hitl create

echo "Schema setup complete"
