#!/bin/sh
# Start PostgreSQL with hf_fdw. On first start: initdb, listen on all of the
# container's addresses, trust or password authentication as the environment
# says, and CREATE EXTENSION hf_fdw in the database POSTGRES_DB (postgres).
set -eu

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -n "${POSTGRES_PASSWORD:-}" ]; then
        printf '%s\n' "$POSTGRES_PASSWORD" > /tmp/pwfile
        initdb -D "$PGDATA" -U postgres --pwfile=/tmp/pwfile --auth=scram-sha-256
        rm -f /tmp/pwfile
    elif [ "${POSTGRES_HOST_AUTH_METHOD:-}" = trust ]; then
        initdb -D "$PGDATA" -U postgres --auth=trust
    else
        echo "set POSTGRES_PASSWORD (or POSTGRES_HOST_AUTH_METHOD=trust)" >&2
        exit 1
    fi
    method=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
    echo "host all all all $method" >> "$PGDATA/pg_hba.conf"
    echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"

    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
    psql -v ON_ERROR_STOP=1 -U postgres -d "${POSTGRES_DB:-postgres}" \
        -c "CREATE EXTENSION IF NOT EXISTS hf_fdw CASCADE"
    pg_ctl -D "$PGDATA" -m fast -w stop
fi

exec postgres -D "$PGDATA"
