#!/usr/bin/env bash
# The benchmarks in one command: starts a set of test servers of its own
# (scripts/servers.sh up, which installs what is missing), exports their URLs, and
# runs the bench binary on every backend, which rewrites docs/BENCHMARKS.md and
# docs/bench/*.svg (keeping the hand-written Analysis section of BENCHMARKS.md).
#
#   scripts/bench.sh                          full run (about 5 minutes on 2 cores)
#   scripts/bench.sh --quick --out /tmp/bench smoke run, written elsewhere
#   scripts/bench.sh --cases cycle --no-peers any distsync-bench option (see --help)
#
# Without --out, the report goes to docs/. All traffic goes to servers on loopback.
#
# The servers are a set of their own, on DISTSYNC_PORT_BASE (default 24100: etcd 24100,
# Redis 24120, PostgreSQL 24121; state under .servers/base-24100), so that test suites
# running at the same time do not load the servers being measured, and the servers'
# configuration is the one scripts/servers.sh writes (e.g. PostgreSQL max_connections
# 300, which 100 waiters need). Servers this script starts are stopped when it ends
# (DISTSYNC_BENCH_KEEP_SERVERS=1 keeps them). DISTSYNC_BENCH_SHARED=1 measures the
# default test servers (ports 23790, 26379, 25432) instead.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"

if [[ ${DISTSYNC_BENCH_SHARED:-0} != 1 ]]; then
    export DISTSYNC_PORT_BASE=${DISTSYNC_PORT_BASE:-24100}
fi

if ! scripts/servers.sh status >/dev/null 2>&1 && [[ ${DISTSYNC_BENCH_KEEP_SERVERS:-0} != 1 ]]; then
    trap 'scripts/servers.sh down || true' EXIT
fi
scripts/servers.sh up >&2
eval "$(scripts/servers.sh env)"

# Production settings for the stores measured (the test servers run with their fast
# settings): etcd as servers.sh starts it is etcd's defaults (fsync on every commit);
# Redis gets back its default persistence (RDB snapshots, `save 3600 1 300 100 60
# 10000`; appendonly stays no, Redis's default), which servers.sh turns off. The
# report states the settings each server runs with. The shared test servers are left
# as they are.
if [[ ${DISTSYNC_BENCH_SHARED:-0} != 1 && ${DISTSYNC_REDIS_URL:-} =~ ^redis://([^:/]+):([0-9]+) ]]; then
    redis-cli -h "${BASH_REMATCH[1]}" -p "${BASH_REMATCH[2]}" CONFIG SET save "3600 1 300 100 60 10000" >/dev/null ||
        echo "bench.sh: could not restore Redis's default persistence; the report shows what it runs with" >&2
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
