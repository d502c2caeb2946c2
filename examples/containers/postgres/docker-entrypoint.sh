#!/bin/sh
# Entrypoint of gatekeeper/postgres (built by examples/containers/prepare.sh without a registry).
# It honours what policies written for the official postgres image rely on: POSTGRES_USER,
# POSTGRES_PASSWORD, POSTGRES_DB, POSTGRES_HOST_AUTH_METHOD, PGDATA, PGPORT, arguments such as
# `postgres -c name=value` (or just `-c name=value`), and /docker-entrypoint-initdb.d/*.sql|*.sh.
# initdb and postgres refuse to run as root, so as root it hands over to the postgres account.
set -eu

: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
export PGDATA

if [ "${1#-}" != "$1" ]; then
    set -- postgres "$@"
fi
if [ "$1" != postgres ]; then
    exec "$@"
fi

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
    if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$auth" != trust ]; then
        echo "error: the database is uninitialized and POSTGRES_PASSWORD is not set" \
            "(set it, or POSTGRES_HOST_AUTH_METHOD=trust)" >&2
        exit 1
    fi
    pwfile="$(mktemp)"
    printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$pwfile"
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --encoding=UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host="$auth" --no-sync ${POSTGRES_INITDB_ARGS:-} >/dev/null
    rm -f "$pwfile"
    printf 'host all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"
    printf "listen_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
    if [ -n "$(ls -A /docker-entrypoint-initdb.d 2>/dev/null)" ]; then
        # Like the official image: a temporary server on the socket only, then the scripts.
        pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -p 5432" start >/dev/null
        export PGHOST=/var/run/postgresql PGPORT=5432 PGUSER="$POSTGRES_USER"
        if [ "$POSTGRES_DB" != postgres ]; then
            psql -v ON_ERROR_STOP=1 -d postgres -qc "CREATE DATABASE \"$POSTGRES_DB\""
        fi
        for f in /docker-entrypoint-initdb.d/*; do
            case "$f" in
                *.sh) . "$f" ;;
                *.sql) psql -v ON_ERROR_STOP=1 -d "$POSTGRES_DB" -qf "$f" ;;
            esac
        done
        pg_ctl -D "$PGDATA" -w -m fast stop >/dev/null
        unset PGHOST PGPORT PGUSER
    elif [ "$POSTGRES_DB" != postgres ]; then
        # Single-user mode: no server to start and stop, a few hundred milliseconds faster.
        printf 'CREATE DATABASE "%s";\n' "$POSTGRES_DB" |
            postgres --single -D "$PGDATA" -j postgres >/dev/null
    fi
    echo "gatekeeper/postgres: initialised $PGDATA for $POSTGRES_USER, database $POSTGRES_DB"
fi

exec "$@"
