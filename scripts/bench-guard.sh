#!/usr/bin/env bash
# The bench's regression guard, for the release check: a short run of the lock
# cycle on etcd, Redis, PostgreSQL and NATS (about 45 s for all four after the release
# build; each implementation capped at 6 s) that measures, within one run, distsync's
# cycle p50 over the raw store commands' and over each peer library's (etcd Lock RPC
# and etcd's Go concurrency.Mutex, rslock, distributed-lock on Redis and PostgreSQL),
# in 16
# rounds of 200 cycles taken in turns of 10, and compares each ratio (the median of the
# rounds' ratios) with the committed baseline bench/baseline.json. It prints a table
# (ratio, baseline, noise, the ratio it fails above, verdict) and exits 1 when a ratio
# is worse than its baseline by more than max(3 x noise, 20 % of the baseline), noise
# being the robust spread of the rounds' ratios (the larger of this run's and the
# baseline's, whose noise also covers the spread between the runs that wrote it), and
# again when the
# backends with a regressed ratio are measured a second time (noise seldom shows
# twice, a regression does); a ratio in the baseline that could not be measured also
# fails. Exit 2: the baseline is missing or
# unreadable, or no backend was selected.
#
#   scripts/bench-guard.sh                          compare with bench/baseline.json
#   scripts/bench-guard.sh --write-baseline         measure 5 times (--repeat N), write
#                                                   the median ratios and their noise
#   scripts/bench-guard.sh --baseline /tmp/b.json   another baseline file
#   scripts/bench-guard.sh --backends redis         one store (any distsync-bench option)
#
# It measures the servers of `scripts/servers.sh env` (the URLs already exported win:
# scripts/test-all.sh runs it as its `bench-guard` step on the servers it started) and
# starts none. Those are the test servers: PostgreSQL runs there with fsync and
# synchronous_commit off, which is fine for a guard of ratios (it catches a change in
# distsync's statements or client work; one that adds a durable commit weighs less
# there than at production settings, which scripts/bench.sh measures).
# Rewrite the baseline (on this machine, servers up, the machine otherwise quiet)
# when a change makes distsync faster on purpose or a peer changes, and commit it.
#
# Built as scripts/bench.sh builds it: `cargo run --release -p distsync-bench
# --features full`.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"

if [[ -z ${DISTSYNC_ETCD_URL:-} || -z ${DISTSYNC_REDIS_URL:-} || -z ${DISTSYNC_POSTGRES_URL:-} ||
      -z ${DISTSYNC_NATS_URL:-} ]]; then
    eval "$(scripts/servers.sh env)"
fi
# Warnings only: the table goes to standard output.
export RUST_LOG=${RUST_LOG:-warn}
mode=(--guard)
for arg in "$@"; do
    [[ $arg == --write-baseline ]] && mode=()
done
exec cargo run -q --release -p distsync-bench --features full -- "${mode[@]}" "$@"
