#!/usr/bin/env bash
# What protects a release rather than a change: run it before a release, and before
# resolving a change that touches performance, packaging or a fault case (its closing
# summary goes into the note). The per-change tier, every test and every matrix column,
# is scripts/test-all.sh (README's test command, CI), which this script does not repeat.
# Starts the test servers it needs (scripts/servers.sh up) and runs, timing each step:
#   package     the publish dry run with verification: every published crate packaged
#               and built from its package alone, in dependency order, then the
#               conformance runner installed with `cargo install` and run
#               (scripts/check-package.sh);
#   bench-guard the bench's regression guard in release mode against
#               bench/baseline.json (scripts/bench-guard.sh);
#   bench-docs  the bench's rustdoc with -D warnings (CI's documents every other crate);
#   mixed-long  the mixed-fault cases over every column (two at once) for
#               DISTSYNC_MIXED_SECS (default 120) seconds each instead of the matrix's
#               20, a seed each, printed so that a failure replays;
#   matrix-1..3 the whole conformance step three times in a row, each compared with
#               docs/GUARANTEES.md and README's summary (scripts/check-matrix.sh): a cell
#               that holds only now and then fails one of them.
# Then it prints the ten matrix cells and the ten tests with the least slack against
# their bounds (scripts/slack.py): the next flakes, before they fail.
# Every step runs even when an earlier one failed; the exit status is non-zero if any
# step failed. Stops the servers it started when done.
#
#   scripts/release-check.sh
#   DISTSYNC_MIXED_SECS=600 scripts/release-check.sh    longer mixed-fault runs
set -uo pipefail # no -e: step() handles each command's failure
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

results=()
failed=0
start_all=$SECONDS

# step NAME COMMAND...: run COMMAND, print its duration, remember the outcome.
step() {
    local name=$1 start=$SECONDS status=0 outcome=ok
    shift
    printf '\n==> %s: %s\n' "$name" "$*" >&2
    "$@" || status=$?
    ((status == 0)) || { outcome="FAILED (exit $status)" failed=1; }
    results+=("$(printf '%-12s %6ss  %s' "$name" $((SECONDS - start)) "$outcome")")
    printf '<== %s: %s in %ss\n' "$name" "$outcome" $((SECONDS - start)) >&2
}

# The mixed-fault cases, longer: the runner's matrix of those rows only, on standard
# output; fails when a claimed cell does not hold.
mixed_long() {
    DISTSYNC_MIXED_SECS=${DISTSYNC_MIXED_SECS:-120} scripts/runner.sh --all --columns 2 --case mixed_faults
}

if ! scripts/servers.sh status >/dev/null 2>&1; then
    trap 'scripts/servers.sh down || true' EXIT
fi
step servers scripts/servers.sh up || {
    echo "release-check: the servers did not come up" >&2
    exit 1
}
eval "$(scripts/servers.sh env)" || exit 1

step package scripts/check-package.sh
step bench-guard scripts/bench-guard.sh
step bench-docs env RUSTDOCFLAGS="-D warnings" \
    cargo doc -p distsync-bench --no-deps --all-features --lib
step mixed-long mixed_long
junits=()
for round in 1 2 3; do
    junits+=("${CARGO_TARGET_DIR:-target}/conformance/junit-$round.xml")
    step "matrix-$round" env DISTSYNC_MATRIX_JUNIT="${junits[-1]}" scripts/check-matrix.sh
done
# The ten cells of the three matrices, and the ten tests of the last nextest run (CI's,
# or this machine's), with the least slack against their bounds.
scripts/slack.py --top 10 "${junits[@]}" "${CARGO_TARGET_DIR:-target}/nextest/default/junit.xml" >&2

printf '\n%s\n' "release-check summary ($((SECONDS - start_all))s in all):" >&2
printf '  %s\n' "${results[@]}" >&2
exit "$failed"
