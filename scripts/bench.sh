#!/usr/bin/env bash
# The benchmarks in one command: starts a set of test servers of its own
# (scripts/servers.sh up, which installs what is missing), exports their URLs, and
# runs the bench binary on every backend, which fills the tables of docs/BENCHMARKS.md
# between their markers (every other line of it is hand-written and kept) and draws
# the plots beside them into docs/bench/*.svg (OUT/bench/ with --out OUT).
#
#   scripts/bench.sh                          full run (about 12 minutes on 2 cores)
#   scripts/bench.sh --quick --out /tmp/bench smoke run, written elsewhere
#   scripts/bench.sh --cases cycle --no-peers any distsync-bench option (see --help)
#
# Without --out, the report goes to docs/. All traffic goes to servers on loopback.
#
# The servers are a set of their own, on DISTSYNC_PORT_BASE (default 24100: etcd 24100,
# Redis 24120, PostgreSQL 24121, MariaDB 24129, ZooKeeper 24140, NATS 24151; state
# under .servers/base-24100), so that test suites running at the same time do not
# load the servers being measured,
# and the servers' configuration is the one scripts/servers.sh writes (e.g. PostgreSQL
# max_connections 300, which 100 waiters need). Servers this script starts are stopped when it ends
# (DISTSYNC_BENCH_KEEP_SERVERS=1 keeps them). DISTSYNC_BENCH_SHARED=1 measures the
# default test servers (ports 23790, 26379, 25432, 22181, 23306, 24222) instead.
#
# PostgreSQL is measured at its production settings: the test servers run with
# fsync = off and synchronous_commit = off, so this script starts a private PostgreSQL
# of its own (initdb in .servers/bench-durable-postgres, port DISTSYNC_BENCH_PG_PORT,
# default 24170, above every port of the set: its ZooKeeper is at 24140, the ensemble
# at 24141-24149, ZooKeeper with TLS at 24150) with fsync = on, synchronous_commit = on,
# full_page_writes = on and max_connections = 300 (the default 100 cannot fit the
# 64-client case's raw, distributed-lock, diagnostic and distsync connections side by
# side; many production servers raise it the same way). Every side has a connection per
# client, about 200 in all: the distributed-lock peer's pool is capped at one per client
# (bench/src/peers/distributed_lock.rs), as the raw pair's and distsync's are, rather
# than this limit raised to fit sqlx's default pool of 10 per client, which gives that
# peer connections it never uses at once and the server 640 more backends to carry
# while the other sides run. It points DISTSYNC_POSTGRES_URL at it, and
# DISTSYNC_POSTGRES_UNFLUSHED_URL at the same server with unflushed grants (a schema of
# its own; the backend `postgres-unflushed`, lock cases only), and stops and removes it
# at the end. It uses the PostgreSQL that scripts/servers.sh
# installs, so it works on a fresh machine. DISTSYNC_BENCH_PG=test measures the test
# server set's PostgreSQL (fsync off) instead.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"

if [[ ${DISTSYNC_BENCH_SHARED:-0} != 1 ]]; then
    export DISTSYNC_PORT_BASE=${DISTSYNC_PORT_BASE:-24100}
    # ZooKeeper at its production setting: the log fsynced before a write is answered.
    export DISTSYNC_ZOOKEEPER_FORCE_SYNC=yes
    # MariaDB at its production setting: the redo log flushed at each commit; and
    # room for the 64-client case's connections (see below).
    export DISTSYNC_MYSQL_FLUSH_AT_COMMIT=1 DISTSYNC_MYSQL_MAX_CONNECTIONS=2000
fi

if ! scripts/servers.sh status >/dev/null 2>&1 && [[ ${DISTSYNC_BENCH_KEEP_SERVERS:-0} != 1 ]]; then
    BENCH_STARTED_SERVERS=1
    trap 'scripts/servers.sh down || true' EXIT
fi
scripts/servers.sh up >&2
eval "$(scripts/servers.sh env)"

# Production settings for the stores measured (the test servers run with their fast
# settings): etcd as servers.sh starts it is etcd's defaults (fsync on every commit);
# ZooKeeper as servers.sh starts it (DISTSYNC_ZOOKEEPER_URL, the standalone server of
# the set) keeps ZooKeeper's default forceSync=yes (the transaction log is fsynced
# before a write is acknowledged), its data on disk under the state directory; its
# tickTime of 500 ms only bounds the session timeouts it grants. The Curator peer
# (DISTSYNC_CURATOR_PEER, built by servers.sh up) is measured beside distsync on it;
# Redis gets back its default persistence (RDB snapshots, `save 3600 1 300 100 60
# 10000`; appendonly stays no, Redis's default), which servers.sh turns off. MariaDB
# (DISTSYNC_MYSQL_URL) runs with innodb_flush_log_at_trx_commit = 1, its default (the
# redo log written and flushed at each commit; servers.sh starts it so through
# DISTSYNC_MYSQL_FLUSH_AT_COMMIT, which the test servers leave at 2), the doublewrite
# buffer on, and no binary log (MariaDB's default; with one, sync_binlog = 1 would
# belong here too), and max_connections = 2000 (DISTSYNC_MYSQL_MAX_CONNECTIONS; the
# test servers' 500 does not fit the 64-client case: each distsync client there is a
# backend of its own, with a pool of up to 8 connections and two of its own, and the
# fair and the unfair lock's 64 clients are open at once beside 64 raw and 64
# distributed-lock connections, up to about 1,400; many production servers raise the
# default 151 the same way). NATS (DISTSYNC_NATS_URL) runs as
# servers.sh starts it: JetStream's file store with its default sync (a write is
# acknowledged once in the file, which is fsynced every 2 minutes, sync_interval's
# default, and at shutdown; JetStream relies on replication, not fsync, for a
# write's durability), a bucket of one replica. The report states the settings each
# server runs with. The shared test servers are left as they are.
if [[ ${DISTSYNC_BENCH_SHARED:-0} != 1 && ${DISTSYNC_REDIS_URL:-} =~ ^redis://([^:/]+):([0-9]+) ]]; then
    redis-cli -h "${BASH_REMATCH[1]}" -p "${BASH_REMATCH[2]}" CONFIG SET save "3600 1 300 100 60 10000" >/dev/null ||
        echo "bench.sh: could not restore Redis's default persistence; the report shows what it runs with" >&2
fi

# as_pg CMD...: runs CMD as the postgres user when root (initdb refuses root).
as_pg() {
    if ((EUID == 0)); then
        (cd / && exec runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

durable_postgres_start() {
    local bin port home data
    bin=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
    if [[ -z $bin || ! -x $bin/initdb ]]; then
        echo "bench.sh: no PostgreSQL found (scripts/servers.sh up installs it)" >&2
        exit 1
    fi
    port=${DISTSYNC_BENCH_PG_PORT:-24170}
    home=$ROOT/.servers/bench-durable-postgres
    # Not under /tmp, which may be a tmpfs (where fsync costs nothing).
    mkdir -p "$home"
    if ((EUID == 0)); then
        chown postgres: "$home"
        if ! runuser -u postgres -- test -w "$home"; then
            home=$(mktemp -d /var/tmp/distsync-bench-postgres.XXXXXX)
            chown postgres: "$home"
        fi
    fi
    data=$home/data
    as_pg rm -rf "$data"
    as_pg "$bin/initdb" -D "$data" -U postgres -A trust --no-locale -E UTF8 >"$home/initdb.log" 2>&1 ||
        { tail -n 20 "$home/initdb.log" >&2; exit 1; }
    printf '%s\n' "port = $port" "listen_addresses = '127.0.0.1'" "unix_socket_directories = ''" \
        "fsync = on" "synchronous_commit = on" "full_page_writes = on" "max_connections = 300" |
        as_pg tee -a "$data/postgresql.conf" >/dev/null
    DURABLE_PG=("$bin" "$data" "$home")
    trap durable_postgres_stop EXIT
    as_pg "$bin/pg_ctl" -D "$data" -l "$home/server.log" -w start >/dev/null ||
        { tail -n 20 "$home/server.log" >&2; exit 1; }
    "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -qAt -v ON_ERROR_STOP=1 \
        -c 'CREATE ROLE distsync LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB' \
        -c 'CREATE DATABASE distsync OWNER distsync' >/dev/null
    export DISTSYNC_POSTGRES_URL="postgres://distsync@127.0.0.1:$port/distsync"
    # The declared mode with unflushed grants, on the same server in a schema of its
    # own, measured as the backend `postgres-unflushed` (the lock cases).
    local unflushed="schema=bench_unflushed&grants=unflushed&max_session_ttl=15s"
    export DISTSYNC_POSTGRES_UNFLUSHED_URL="$DISTSYNC_POSTGRES_URL?$unflushed"
    echo "bench.sh: private PostgreSQL (fsync on, synchronous_commit on, max_connections 300)" \
        "at $DISTSYNC_POSTGRES_URL" >&2
}

durable_postgres_stop() {
    local bin=${DURABLE_PG[0]} data=${DURABLE_PG[1]} home=${DURABLE_PG[2]}
    as_pg "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
    as_pg rm -rf "$data"
    if [[ $home == /var/tmp/distsync-bench-postgres.* ]]; then rm -rf "$home"; fi
    if [[ ${BENCH_STARTED_SERVERS:-0} == 1 ]]; then
        scripts/servers.sh down || true
    fi
}

if [[ ${DISTSYNC_BENCH_PG:-durable} == durable ]]; then
    durable_postgres_start
fi

args=("$@")
has_out=0
for arg in "${args[@]}"; do
    case $arg in
        --out | --out=*) has_out=1 ;;
    esac
done
((has_out)) || args=(--out docs "${args[@]}")

cargo run --release -p distsync-bench --features full -- "${args[@]}"
