#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the test suite, on loopback, in a temporary folder.
#
#   eval "$(.ci/postgres.sh start)"   # prints export lines: BASTION_TEST_POSTGRES_URL (with a
#                                     # random password), _DIR (the cluster's folder)
#   .ci/postgres.sh restart           # pg_ctl restart of the cluster in $BASTION_TEST_POSTGRES_DIR
#   .ci/postgres.sh stop              # stop it and remove the folder
#
# Installs PostgreSQL with apt-get when initdb is missing (as root). initdb and the server run
# as a non-root user (postgres, else nobody) when started by root, as the caller otherwise.
# The server listens on 127.0.0.1 on a free port and on a unix socket in its own folder;
# password (SCRAM) authentication over TCP. fsync is off: the cluster is thrown away.
set -euo pipefail

find_bin() {
    local name=$1 found
    if command -v "$name" >/dev/null 2>&1; then
        command -v "$name"
        return 0
    fi
    found=$(ls -d /usr/lib/postgresql/*/bin/"$name" 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$found" ]; then
        echo "$found"
        return 0
    fi
    return 1
}

as_owner() {
    # run "$@" as the cluster's owner (a non-root user when we are root)
    if [ "$(id -u)" = 0 ]; then
        local user=postgres
        id -u postgres >/dev/null 2>&1 || user=nobody
        if command -v runuser >/dev/null 2>&1; then
            runuser -u "$user" -- "$@"
        else
            su -s /bin/sh "$user" -c "$(printf '%q ' "$@")"
        fi
    else
        "$@"
    fi
}

start() {
    if ! find_bin initdb >/dev/null; then
        if [ "$(id -u)" = 0 ]; then
            echo "postgres.sh: installing postgresql with apt-get" >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql >&2 ||
                { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql >&2; }
        else
            echo "postgres.sh: initdb not found and not root: cannot install PostgreSQL" >&2
            return 1
        fi
    fi
    local initdb pg_ctl dir port password owner
    initdb=$(find_bin initdb)
    pg_ctl=$(find_bin pg_ctl)
    dir=$(mktemp -d /tmp/bastion-pg.XXXXXX)
    chmod 755 "$dir"
    password=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    printf '%s\n' "$password" >"$dir/pwfile"
    if [ "$(id -u)" = 0 ]; then
        owner=postgres
        id -u postgres >/dev/null 2>&1 || owner=nobody
        chown -R "$owner" "$dir"
    fi
    chmod 600 "$dir/pwfile"
    as_owner "$initdb" -D "$dir/data" -U bastion --pwfile="$dir/pwfile" -A scram-sha-256 \
        --no-sync -E UTF8 --locale=C >"$dir/initdb.log" 2>&1 ||
        { cat "$dir/initdb.log" >&2; return 1; }
    rm -f "$dir/pwfile"
    as_owner "$pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=200" \
        start >&2 || { cat "$dir/server.log" >&2; return 1; }
    echo "$pg_ctl" >"$dir/pg_ctl"
    echo "export BASTION_TEST_POSTGRES_URL='postgresql://bastion:${password}@127.0.0.1:${port}/postgres'"
    echo "export BASTION_TEST_POSTGRES_DIR='$dir'"
}

need_dir() {
    if [ -z "${BASTION_TEST_POSTGRES_DIR:-}" ] || [ ! -d "$BASTION_TEST_POSTGRES_DIR/data" ]; then
        echo "postgres.sh: BASTION_TEST_POSTGRES_DIR does not name a cluster" >&2
        return 1
    fi
}

restart() {
    need_dir
    local dir=$BASTION_TEST_POSTGRES_DIR
    as_owner "$(cat "$dir/pg_ctl")" -D "$dir/data" -l "$dir/server.log" -w -t 60 -m fast \
        restart >&2
}

stop() {
    need_dir || return 0
    local dir=$BASTION_TEST_POSTGRES_DIR
    as_owner "$(cat "$dir/pg_ctl")" -D "$dir/data" -w -t 60 -m fast stop >&2 || true
    case "$dir" in
        /tmp/bastion-pg.*) rm -rf "$dir" ;;
    esac
}

case "${1:-}" in
    start) start ;;
    restart) restart ;;
    stop) stop ;;
    *)
        echo "usage: $0 start|restart|stop" >&2
        exit 2
        ;;
esac
