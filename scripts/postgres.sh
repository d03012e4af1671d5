#!/usr/bin/env bash
# A throwaway PostgreSQL server for the key broker's replica tests and
# benchmark: Debian's `postgresql`, a fresh cluster in DIR, listening on a
# free loopback port only, password authentication (SCRAM) for user ciel.
#
#   scripts/postgres.sh start DIR   prints: the connection URL, then the password file
#   scripts/postgres.sh stop DIR    stops it (DIR can then be removed)
#
# Idempotent installs; as root, the server runs as the `postgres` user
# (PostgreSQL refuses to run as root).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

cmd=${1:-} dir=${2:-}
if [ -z "$cmd" ] || [ -z "$dir" ]; then
    echo "usage: $0 start|stop DIR" >&2
    exit 2
fi

bindir() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    [ -n "$d" ] || { echo "postgres.sh: no /usr/lib/postgresql/*/bin" >&2; exit 2; }
    echo "$d"
}

# Runs a server binary as the postgres user when we are root.
as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
start)
    if [ ! -d /usr/lib/postgresql ]; then
        banner "Installing PostgreSQL (once)" >&2
        as_root apt-get update -q >&2
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql >&2
    fi
    bin=$(bindir)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    data="$dir/data"
    password="$dir/password"
    if [ ! -f "$password" ]; then
        python3 -c 'import secrets; print(secrets.token_urlsafe(24))' >"$password"
    fi
    chmod 0644 "$password"
    [ "$(id -u)" = 0 ] && chown -R postgres "$dir"
    if [ ! -f "$data/PG_VERSION" ]; then
        as_pg "$bin/initdb" -D "$data" -U ciel --pwfile="$password" --auth=scram-sha-256 \
            --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
            { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_pg "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1" start >&2 ||
        { cat "$dir/server.log" >&2; exit 1; }
    echo "postgresql://ciel@127.0.0.1:$port/postgres"
    echo "$password"
    ;;
stop)
    bin=$(bindir)
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >&2
    fi
    ;;
*)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
