#!/bin/sh
# A private PostgreSQL cluster for tests (see interop/postgresql.md).
#
#   scripts/pg-harness.sh start DIR   start a cluster in DIR (created), Unix socket
#                                     only, database proxkey_test; prints the URI
#   scripts/pg-harness.sh stop DIR    stop it and remove DIR
#   scripts/pg-harness.sh run CMD...  start one in a temporary directory, run CMD
#                                     with PK_TEST_PG set to its URI, stop it (also
#                                     when CMD fails or is interrupted); exits with
#                                     CMD's status, or 1 when the server cannot start
#
# The server refuses to run as root, so as root the cluster belongs to the
# postgres user (DIR must then be reachable by it; run uses a directory under
# /tmp). PG_BIN overrides where initdb and pg_ctl are looked up.
set -eu

die() {
    echo "pg-harness: $*" >&2
    exit 1
}

find_bin() {
    if [ -n "${PG_BIN:-}" ]; then
        [ -x "$PG_BIN/initdb" ] || die "PG_BIN=$PG_BIN has no initdb"
        echo "$PG_BIN"
        return
    fi
    for d in /usr/lib/postgresql/15/bin /usr/lib/postgresql/*/bin; do
        if [ -x "$d/initdb" ]; then
            echo "$d"
            return
        fi
    done
    d=$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")
    [ -x "$d/initdb" ] || die "no PostgreSQL server found (install: apt-get install -y postgresql)"
    echo "$d"
}

# Runs a shell command line as the cluster's owner.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        su postgres -s /bin/sh -c "$1"
    else
        sh -c "$1"
    fi
}

check_dir() {
    case "$1" in
    /*) ;;
    *) die "DIR must be an absolute path: $1" ;;
    esac
    case "$1" in
    *[!A-Za-z0-9_./-]*) die "DIR may contain only [A-Za-z0-9_./-]: $1" ;;
    esac
    # a Unix socket path is at most 107 bytes: DIR/.s.PGSQL.5432
    [ "${#1}" -le 90 ] || die "DIR is too long for a socket path: $1"
}

uri_of() {
    echo "postgresql:///proxkey_test?host=$1&user=proxkey"
}

start() {
    dir=$1
    check_dir "$dir"
    bin=$(find_bin)
    [ ! -e "$dir/data" ] || die "$dir/data exists already"
    mkdir -p "$dir" || die "cannot create $dir"
    : >"$dir/.pg-harness" || die "cannot write in $dir"
    if [ "$(id -u)" -eq 0 ]; then
        id postgres >/dev/null 2>&1 || die "no postgres user to run the server as"
        chown postgres "$dir" || die "cannot chown $dir to postgres"
    fi
    if ! as_owner "$bin/initdb --no-sync -D $dir/data -A trust -U proxkey >$dir/initdb.log 2>&1"; then
        cat "$dir/initdb.log" >&2 2>/dev/null || true
        die "initdb failed in $dir"
    fi
    if ! as_owner "$bin/pg_ctl -D $dir/data -l $dir/log -t 60 \
            -o \"-k $dir -c listen_addresses=''\" -w start >/dev/null"; then
        tail -n 20 "$dir/log" >&2 2>/dev/null || true
        die "the server did not start (log: $dir/log)"
    fi
    if ! "$bin/createdb" -h "$dir" -U proxkey proxkey_test; then
        die "cannot create database proxkey_test"
    fi
    uri_of "$dir"
}

stop() {
    dir=$1
    check_dir "$dir"
    [ -e "$dir" ] || return 0
    # Only ever remove a directory this script made.
    [ -f "$dir/.pg-harness" ] || die "$dir was not made by pg-harness.sh; not removing it"
    if [ -f "$dir/data/postmaster.pid" ]; then
        bin=$(find_bin)
        as_owner "$bin/pg_ctl -D $dir/data -t 60 -m fast -w stop >/dev/null" ||
            echo "pg-harness: pg_ctl stop failed in $dir" >&2
    fi
    rm -rf "$dir"
}

run() {
    [ $# -ge 1 ] || die "usage: $0 run CMD..."
    base=${TMPDIR:-/tmp}
    [ "${#base}" -le 60 ] || base=/tmp
    dir=$(mktemp -d "$base/pgh.XXXXXX")
    chmod 755 "$dir"
    trap 'stop "$dir"' EXIT
    trap 'exit 130' INT TERM
    if ! uri=$(start "$dir"); then
        echo "pg-harness: FAILED to start PostgreSQL" >&2
        exit 1
    fi
    st=0
    PK_TEST_PG=$uri "$@" || st=$?
    exit "$st"
}

[ $# -ge 1 ] || die "usage: $0 start DIR | stop DIR | run CMD..."
cmd=$1
shift
case "$cmd" in
start)
    [ $# -eq 1 ] || die "usage: $0 start DIR"
    start "$1"
    ;;
stop)
    [ $# -eq 1 ] || die "usage: $0 stop DIR"
    stop "$1"
    ;;
run) run "$@" ;;
*) die "unknown command: $cmd (start DIR | stop DIR | run CMD...)" ;;
esac
