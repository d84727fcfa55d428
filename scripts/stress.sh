#!/usr/bin/env bash
# The stress gate: every test and conformance case a change adds or modifies since BASE,
# run N times beside two CPU hogs and a disk hog, before the change reaches CI. A test
# written on a quiet machine meets load here first, not in CI.
#
#   scripts/stress.sh [BASE]          BASE: default origin/main's merge base, else HEAD
#   STRESS_COUNT=50 scripts/stress.sh  runs per test and case (default 20)
#   STRESS_COPIES=6 scripts/stress.sh  how many copies of the tests run at once (default:
#                                     nextest's test-threads, 6), each STRESS_COUNT times
#   STRESS_COLUMNS="etcd redis" scripts/stress.sh   the columns a case runs on (default:
#                                     every server the environment names, and memory)
#   STRESS_PARTS="columns" scripts/stress.sh   only some of `tests cases columns` (default:
#                                     all three), to run a part again after a fix
#
# What it selects is scripts/changed-tests.py's (the working tree against BASE, so
# uncommitted work counts): the changed tests, each `STRESS_COUNT` times with nextest's
# own repetition (`--stress-count`) in `STRESS_COPIES` nextest processes at once; the
# changed conformance cases, `STRESS_COUNT` runs
# of the runner with `--case`; and, once under the hogs, the whole column of a backend
# whose shared code changed (its store, session, waiter line: any of its `src/`), or
# every column when core, kv, store or the conformance harness changed.
#
# Prints a table: name, runs, failures, the slowest run and the bound it ran under
# (nextest's terminate-after for a test; for a case, the whole runner run's --timeout,
# the runner having no bound per case); exits 1 if
# anything failed. Starts the test servers (scripts/servers.sh up) and the hogs, and
# stops the hogs when done. CONTRIBUTING.md asks for it before every merge, and for its
# table in the closing note.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

count=${STRESS_COUNT:-20}
parts=" ${STRESS_PARTS:-tests cases columns} "
if [[ $# -ge 1 ]]; then
    base=$1
elif git rev-parse -q --verify origin/main >/dev/null; then
    base=$(git merge-base HEAD origin/main)
else
    base=HEAD
fi
# A test's bound: nextest ends a test after `period` × `terminate-after`.
test_bound=300
# The runner's --timeout is one run's: a run of the changed cases, and a whole column.
cases_bound=900
column_bound=3600

selection=$(python3 scripts/changed-tests.py "$base") || exit 2
printf 'stress: since %s, %s runs each beside two CPU hogs and a disk hog\n' \
    "$(git rev-parse --short "$base")" "$count" >&2
if [[ -z $selection ]]; then
    echo "stress: the change adds or modifies no test or case" >&2
    exit 0
fi
printf '%s\n' "$selection" | sed 's/^/  /' >&2

export CARGO_PROFILE_DEV_DEBUG=${CARGO_PROFILE_DEV_DEBUG:-0}
scripts/servers.sh up >/dev/null || {
    echo "stress: the servers did not come up" >&2
    exit 1
}
eval "$(scripts/servers.sh env)" || exit 1
# Built before the hogs start: the gate measures the tests, not the compiler.
cargo nextest run --workspace --all-features --no-run >/dev/null 2>&1 ||
    cargo nextest run --workspace --all-features --no-run || exit 1
DISTSYNC_RUNNER_BUILT=1
scripts/runner.sh --list >/dev/null || exit 1

hogs=()
for _ in 1 2; do
    sh -c 'while :; do :; done' &
    hogs+=($!)
done
# And one that keeps the disk busy with synchronous writes, on the disk the servers
# write to: in CI the servers and the compilers write while the tests run, and a store
# that commits synchronously (PostgreSQL's grants) waits on an fsync queued behind them.
# Two CPU hogs alone leave the disk idle, and a bound that only an fsync can break
# passes under them.
disk_hog=$(mktemp -p "${CARGO_TARGET_DIR:-$PWD/target}" stress-disk-hog.XXXXXX)
sh -c 'while :; do dd if=/dev/zero of="$1" bs=64k count=64 oflag=dsync 2>/dev/null; done' sh "$disk_hog" &
hogs+=($!)
trap 'kill "${hogs[@]}" 2>/dev/null; rm -f "$disk_hog"' EXIT

rows=$(mktemp)
failed=0
work=$(mktemp -d)

# Tests: nextest runs of them all, `--stress-count` times each. In CI a test runs beside
# five others (test-threads 6) and the compilers, a load two hogs alone do not make: a
# race between a test and the task it waits for (a consumer's last look at an empty
# queue against the test's enqueue) failed 3 times in 120 runs as six copies at once,
# and never in 100 runs as one or four. So `STRESS_COPIES` nextest processes run the
# changed tests at once; the tests that `.config/nextest.toml` runs alone or in a group
# (they act on a server others share) run in one process, after the copies. Each PASS
# or FAIL line gives a test's duration in one iteration.
copies=${STRESS_COPIES:-6}
filter=$(printf '%s\n' "$selection" | awk '$1 == "test" {
    printf "%s(package(%s) & test(/(^|::)%s$/))", sep, $2, $3; sep = " | " }')
# The filters of the overrides that serialize tests (`threads-required`, `test-group`).
serialized=$(python3 -c '
import tomllib
with open(".config/nextest.toml", "rb") as config:
    profiles = tomllib.load(config).get("profile", {})
overrides = profiles.get("default", {}).get("overrides", [])
print(" | ".join("(" + o["filter"] + ")" for o in overrides
                 if "filter" in o and ("threads-required" in o or "test-group" in o)))
')
# stress_tests FILTER COPIES: COPIES nextest processes of the tests FILTER selects, each
# `--stress-count` times, their outputs appended to $work/tests.
stress_tests() {
    local copy pids=()
    for ((copy = 1; copy <= $2; copy++)); do
        DISTSYNC_CASES_IN_RUNNER=1 cargo nextest run --workspace --all-features -E "$1" \
            --stress-count "$count" --no-fail-fast --status-level pass --final-status-level none \
            --no-tests pass >"$work/tests.$copy" 2>&1 &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    for ((copy = 1; copy <= $2; copy++)); do
        cat "$work/tests.$copy" >>"$work/tests"
        # A process lists its failures again at its end: each line once.
        grep -E '^ +(PASS|FAIL|TIMEOUT|SIG[A-Z]+|LEAK-FAIL) \[' "$work/tests.$copy" |
            awk '!seen[$0]++' >>"$work/status"
        rm -f "$work/tests.$copy"
    done
    # A failed iteration fails the gate whatever nextest's exit status says of a
    # stress run.
    if grep -qE '^ +(FAIL|TIMEOUT|SIG[A-Z]+|LEAK-FAIL) \[' "$work/status"; then
        failed=1
    fi
}
if [[ -n $filter && $parts == *" tests "* ]]; then
    : >"$work/tests"
    : >"$work/status"
    if [[ -n $serialized ]]; then
        stress_tests "($filter) & not ($serialized)" "$copies"
        stress_tests "($filter) & ($serialized)" 1
    else
        stress_tests "$filter" "$copies"
    fi
    sed -E 's/^ +([A-Z-]+) \[ *([0-9.]+)s\] \[ *[0-9]+\/[0-9]+\] \([^)]*\) [^ ]+ (.*)$/\3 \1 \2/' "$work/status" |
        awk -v bound="$test_bound" '{ name = $1; runs[name]++; if ($2 != "PASS") fails[name]++
            if ($3 > slow[name]) slow[name] = $3 }
            END { for (n in runs) printf "test %s %d %d %.1f %d\n", n, runs[n], fails[n], slow[n], bound }' >>"$rows"
    grep -E '^ +(FAIL|TIMEOUT|SIG[A-Z]+) \[' "$work/status" | head -n 20 >&2
fi

# The runner's columns for the cases: memory, then every server whose URL is set.
columns=(--backend memory://)
for var in DISTSYNC_ETCD_URL DISTSYNC_REDIS_URL DISTSYNC_POSTGRES_URL DISTSYNC_ZOOKEEPER_URL \
    DISTSYNC_MYSQL_URL DISTSYNC_NATS_URL DISTSYNC_NATS_CLUSTER_URL; do
    label=${var#DISTSYNC_}
    label=${label%_URL}
    label=${label,,}
    label=${label//_/-}
    if [[ -n ${STRESS_COLUMNS:-} && " $STRESS_COLUMNS " != *" $label "* ]]; then
        continue
    fi
    [[ -n ${!var:-} ]] && columns+=(--backend-env "$var")
done

# runner_rows NAME RUNS BOUND ARGS...: runs the runner RUNS times with ARGS, each run
# within BOUND seconds, and adds a row per (column, case) to the table from its JSON
# matrix.
runner_rows() {
    local name=$1 runs=$2 bound=$3 run
    shift 3
    for ((run = 1; run <= runs; run++)); do
        DISTSYNC_RUNNER_BUILT=1 scripts/runner.sh --format json --timeout "${bound}s" \
            --columns 3 "$@" >"$work/$name.$run.json" 2>"$work/$name.$run.log" || failed=1
    done
    python3 - "$name" "$bound" "$work/$name".*.json >>"$rows" <<'EOF'
import json, sys
name, bound, files = sys.argv[1], sys.argv[2], sys.argv[3:]
runs, fails, slow = {}, {}, {}
for file in files:
    try:
        matrix = json.load(open(file))
    except (OSError, ValueError):
        runs[(name, "(no matrix)")] = runs.get((name, "(no matrix)"), 0) + 1
        fails[(name, "(no matrix)")] = fails.get((name, "(no matrix)"), 0) + 1
        continue
    for row in matrix:
        if row["outcome"] in ("unsupported", "not_run"):
            continue
        key = (row["case"], row["backend"])
        runs[key] = runs.get(key, 0) + 1
        fails[key] = fails.get(key, 0) + (1 if row["failure"] else 0)
        slow[key] = max(slow.get(key, 0.0), row["elapsed_ms"] / 1000)
for (case, column), n in sorted(runs.items()):
    print(f"case {case}@{column} {n} {fails[(case, column)]} {slow.get((case, column), 0):.1f} {bound}")
EOF
}

mapfile -t cases < <(printf '%s\n' "$selection" | awk '$1 == "case" { print $2 }')
if ((${#cases[@]})) && [[ $parts == *" cases "* ]]; then
    case_args=()
    for case in "${cases[@]}"; do case_args+=(--case "$case"); done
    runner_rows cases "$count" "$cases_bound" "${columns[@]}" "${case_args[@]}"
fi
if [[ $parts != *" columns "* ]]; then
    :
elif grep -q '^every-column' <<<"$selection"; then
    runner_rows every-column 1 "$column_bound" "${columns[@]}"
else
    for label in $(printf '%s\n' "$selection" | awk '$1 == "column" { print $2 }'); do
        var=DISTSYNC_${label^^}_URL
        if [[ $label == memory ]]; then
            runner_rows "column-$label" 1 "$column_bound" --backend memory://
        elif [[ -n ${!var:-} ]]; then
            runner_rows "column-$label" 1 "$column_bound" --backend-env "$var"
        else
            echo "stress: $var is not set: the $label column did not run" >&2
            failed=1
        fi
    done
fi

printf '\n%-90s %5s %8s %9s %6s\n' name runs failures slowest/s bound/s
sort "$rows" | awk '{ printf "%-90s %5d %8d %9.1f %6d\n", $1 " " $2, $3, $4, $5, $6 }'
if ((failed)); then
    echo "stress: FAILED; the outputs are in $work" >&2
    exit 1
fi
rm -rf "$work" "$rows"
