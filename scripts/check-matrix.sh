#!/usr/bin/env bash
# Fails if the guarantee matrix in docs/GUARANTEES.md (between `<!-- matrix:begin -->`
# and `<!-- matrix:end -->`) differs from a fresh run of the conformance runner in
# anything but figures, or README.md's summary table (between `<!-- summary:begin -->`
# and `<!-- summary:end -->`) differs from the fresh run's summary, or a list of what a
# store does not offer (the `gaps` markers of README.md, docs/GUARANTEES.md and each
# backend crate's header) differs from the fresh run's store facts. The matrices are
# reduced to their figure-free outline (the runner's `--outline`: every cell's outcome
# and ⚠ flag, every note's backend, case, claim and outcome) and compared. Fix a
# difference with scripts/update-matrix.sh.
#
#   scripts/check-matrix.sh            every backend: memory:// and the servers of
#                                      `scripts/servers.sh env` (already running), the
#                                      Redis Sentinel group included (its
#                                      `redis-sentinel` column: the failover cases and the
#                                      lock, election and queue basics) and the Redis
#                                      Cluster (its `redis-cluster` column: the whole
#                                      suite); under CI=true every one's URL must be set,
#                                      the cluster's DISTSYNC_REDIS_CLUSTER_URL included
#   scripts/check-matrix.sh URL...     only these backends, e.g. memory://
#
# The fresh matrix is printed on standard output, so this one run of the runner is
# also CI's conformance step.
#
# Exit status: 0 when every case passed and both tables match, 1 when a case failed,
# a table differs or the runner starved (its exit 5: more than a tenth of the fault
# cells inconclusive, the runner itself stalled past their slack; a starved matrix is
# complete and still compared, its inconclusive cells as their claims), 2 when the
# runner produced no matrix to compare or ended with a store unreachable (3) or its
# --timeout (4): a partial matrix is not compared.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/matrix-files.sh

if (($#)); then
    args=()
    for url in "$@"; do args+=(--backend "$url"); done
else
    eval "$(scripts/servers.sh env)"
    # Two columns at once (DISTSYNC_COLUMNS to change it): each store's servers are
    # its own, and most cases wait on leases and servers, so the run takes far less
    # time than one at a time (on a fast two-core machine 707 s one at a time, 414 s
    # two at a time, 335 s three). A runner starved by the sharing reads as
    # inconclusive (and fails past a tenth of the fault cells), never as a store's
    # violation, but the servers and the child processes starve where the runner's own
    # stall meter cannot see it: four at once missed the PostgreSQL shards' liveness
    # bound under mixed faults by 0.04 s there, and on a two-core machine at 2.0 GHz,
    # three at once (1,216-1,715 s, beside CI's documentation builds) lost holders'
    # sessions in set-ups that lapsed in every try.
    args=(--all --columns "${DISTSYNC_COLUMNS:-2}")
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
runner=(scripts/runner.sh)

# The notes of the cells that fail the run (`- **backend / case** (...): VIOLATED — ...`),
# appended to the file $DISTSYNC_FAILED_CELLS names when it is set: test-all.sh prints
# the first of them in its closing summary, the part of a long CI log that is kept. The
# cells that fail the run by themselves (violated, error, unreachable) come first, then
# the inconclusive ones, which fail it only in number: a summary cut short keeps the cause.
keep_failed_cells() {
    [[ -n ${DISTSYNC_FAILED_CELLS:-} && -s $tmp/fresh.md ]] || return 0
    local outcome
    for outcome in VIOLATED ERROR UNREACHABLE inconclusive; do
        { grep -E "^- \*\*.*\): $outcome — " "$tmp/fresh.md" || true; } |
            cut -c1-400 >>"$DISTSYNC_FAILED_CELLS"
    done
}

# The matrix as JUnit too, each cell with its tightest wait and slack, which
# scripts/slack.py reads.
junit=${DISTSYNC_MATRIX_JUNIT:-${CARGO_TARGET_DIR:-target}/conformance/junit.xml}
mkdir -p "$(dirname "$junit")"
status=0
"${runner[@]}" --format markdown --junit "$junit" "${args[@]}" >"$tmp/fresh.md" || status=$?
keep_failed_cells
if ((status > 1 && status != 5)) || [[ ! -s $tmp/fresh.md ]]; then
    echo "check-matrix: the runner failed (exit $status); nothing to compare" >&2
    [[ -z ${DISTSYNC_FAILED_CELLS:-} ]] ||
        echo "the runner failed with exit $status (3 unreachable, 4 an error or --timeout); nothing compared" \
            >>"$DISTSYNC_FAILED_CELLS"
    exit 2
fi
cat "$tmp/fresh.md"
# The run above built the runner; the outlines and the summary use it as it is.
runner=(env DISTSYNC_RUNNER_BUILT=1 scripts/runner.sh)
section "$GUARANTEES" matrix >"$tmp/committed.md"
section "$README" summary >"$tmp/committed-summary.md"
# A cell whose guarantee the backend does not declare may measure either way on a racy
# fault (a wiped store without max_session_ttl): its claim is compared, its outcome is
# not. Claimed cells are compared outcome and all.
unclaimed() {
    sed -E -e 's/holds ⚠ not declared|violated \(not declared\)/not claimed/g' \
        -e 's/(= false\)): (holds|violated \(not declared\))$/\1: not claimed/'
}
"${runner[@]}" --outline <"$tmp/committed.md" | unclaimed >"$tmp/committed.outline"
"${runner[@]}" --outline <"$tmp/fresh.md" | unclaimed >"$tmp/fresh.outline"
"${runner[@]}" --summary <"$tmp/fresh.md" >"$tmp/fresh-summary.md"
stale=0
if ! diff -u --label "$GUARANTEES (committed matrix)" --label "fresh run" \
    "$tmp/committed.outline" "$tmp/fresh.outline" >&2; then
    echo "check-matrix: the matrix in $GUARANTEES is stale (see the diff above, figures ignored)" >&2
    stale=1
fi
if ! diff -u --label "$README (committed summary)" --label "fresh run" \
    "$tmp/committed-summary.md" "$tmp/fresh-summary.md" >&2; then
    echo "check-matrix: the summary table in $README is stale (see the diff above)" >&2
    stale=1
fi
if ! check_gaps "$tmp/fresh.md"; then
    echo "check-matrix: a list of what a store does not offer differs from its capabilities" \
        "(see the diff above)" >&2
    stale=1
fi
if ((stale)); then
    [[ -z ${DISTSYNC_FAILED_CELLS:-} ]] ||
        echo "the matrix, README's summary or a gap list differs from a fresh run (figures aside)" \
            >>"$DISTSYNC_FAILED_CELLS"
    echo "check-matrix: regenerate them with scripts/update-matrix.sh" >&2
    exit 1
fi
echo "check-matrix: $GUARANTEES, $README's summary and the gap lists match a fresh run (figures aside)" >&2
if ((status == 5)); then
    echo "check-matrix: the runner starved: more than a tenth of the fault cells are inconclusive" \
        "(the runner stalled past their slack; its stderr lists them)" >&2
    [[ -z ${DISTSYNC_FAILED_CELLS:-} ]] ||
        echo "the runner starved: more than a tenth of the fault cells inconclusive" >>"$DISTSYNC_FAILED_CELLS"
    exit 1
fi
if ((status != 0)); then
    echo "check-matrix: but some cases failed (see the matrix and its notes)" >&2
    exit 1
fi
