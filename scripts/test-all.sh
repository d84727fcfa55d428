#!/usr/bin/env bash
# Every test against every backend, the per-change tier (README's test command, CI):
# installs what the build needs (scripts/build-tools.sh), installs and starts the test
# servers and builds the Go and Curator peers (scripts/servers.sh up, in the background
# while the tests build), then runs, timing each step:
#   cargo fmt --check; the docs checks (scripts/check-docs.sh); the MSRV check of
#   Cargo.lock (scripts/check-msrv.sh); the tests' build, through clippy's driver, and
#   clippy's verdict on it (no warning); every test of the workspace with cargo-nextest
#   (one integration-test binary per crate, `.config/nextest.toml` says which tests run
#   alone or in turns; the Sentinel tests that kill the group's primary among them),
#   and beside them, once they run: at idle priority rustdoc -D warnings and the
#   facade's surface read from it (scripts/check-surface.sh), in a target directory of
#   their own; the doctests
#   (README's and docs/' code blocks included, as the facade's), the package listing of
#   every published crate (scripts/check-package.sh --no-verify) and the out-of-tree
#   crate's build, and the runner over the TLS and authenticated servers (a subset of
#   cases); examples/orders.rs against the PostgreSQL server (the outbox and `ack_in`;
#   the example checks its ledger and queue); examples/shards.rs on memory, etcd and
#   NATS (a work table's shards across three workers, one killed; each item done once); the
#   example backend crate outside the workspace (examples/file-backend) running the
#   suite from its own tests; the conformance runner over memory, etcd (with etcd's own
#   Go recipes as peers), Redis, PostgreSQL, ZooKeeper, MySQL and NATS, a subset of
#   cases on the Redis Sentinel group and the whole suite on the Redis Cluster, two
#   columns at once (under CI=true the runner fails when a server's URL is not set),
#   compared with docs/GUARANTEES.md and README's summary.
# What protects a release rather than a change (the publish dry run that builds every
# package, the bench guard, long mixed-fault runs, the matrix three times) is
# scripts/release-check.sh.
# Every step runs even when an earlier one failed (so one run reports everything),
# except the tests when the servers did not come up; the exit status is non-zero if
# any step failed. Works on a fresh Debian 12 machine with a Rust toolchain (run as
# root or with sudo). Under CI=true a backend test that finds no server fails instead
# of skipping.
set -uo pipefail # no -e: step() handles each command's failure
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

results=()
failed=0
# What scripts/check-matrix.sh found failing (the notes of the failing cells), printed by
# summary() at the end of the log, where CI keeps it.
DISTSYNC_FAILED_CELLS=$(mktemp)
export DISTSYNC_FAILED_CELLS
# What the test steps found failing (the failing tests' panics, nextest's FAIL lines,
# cargo's command to run a failing binary again), printed by summary() too.
failed_tests=$(mktemp)
# What the tests' build reported, as cargo's JSON messages: the `clippy` step reads them.
build_messages=$(mktemp)
trap 'rm -f "$DISTSYNC_FAILED_CELLS" "$failed_tests" "$build_messages"' EXIT

# step NAME COMMAND...: run COMMAND, print its duration, remember the outcome; returns
# COMMAND's status.
step() {
    local name=$1 start=$SECONDS status=0 outcome=ok
    shift
    printf '\n==> %s: %s\n' "$name" "$*" >&2
    "$@" || status=$?
    ((status == 0)) || { outcome="FAILED (exit $status)" failed=1; }
    results+=("$(printf '%-12s %6ss  %s' "$name" $((SECONDS - start)) "$outcome")")
    printf '<== %s: %s in %ss\n' "$name" "$outcome" $((SECONDS - start)) >&2
    return "$status"
}

# step_start NAME COMMAND...: starts COMMAND in the background, its output kept aside;
# step_finish NAME waits for it, prints that output and records its outcome and its
# duration (from its start to its end) as step does; returns COMMAND's status.
declare -A background_pid=() background_log=()
step_start() {
    local name=$1 start=$SECONDS
    shift
    background_log[$name]=$(mktemp)
    printf '\n==> %s: %s (in the background)\n' "$name" "$*" >&2
    (
        status=0
        ("$@") >"${background_log[$name]}" 2>&1 || status=$?
        echo "$status $((SECONDS - start))" >"${background_log[$name]}.status"
        exit "$status"
    ) &
    background_pid[$name]=$!
}
step_finish() {
    local name=$1 status=0 took=? outcome=ok log=${background_log[$1]}
    wait "${background_pid[$name]}" || status=$?
    [[ -s $log.status ]] && read -r status took <"$log.status"
    printf '\n==> %s: its output (it ran in the background)\n' "$name" >&2
    cat "$log" >&2
    rm -f "$log" "$log.status"
    ((status == 0)) || { outcome="FAILED (exit $status)" failed=1; }
    results+=("$(printf '%-12s %6ss  %s' "$name" "$took" "$outcome")")
    printf '<== %s: %s in %ss\n' "$name" "$outcome" "$took" >&2
    return "$status"
}

# Masks the password of every `scheme://user:password@` in its input (the TLS servers'
# URLs carry one, and the runner prints the URLs it connects to).
mask_passwords() { sed -E 's#(://[^:/@[:space:]]*:)[^@/[:space:]]*@#\1***@#g'; }

# The conformance runner over the TLS+auth servers: one lock, election and queue case
# each; its output with the passwords masked.
tls_conformance() {
    : "${DISTSYNC_REDIS_TLS_URL:?not set: scripts/servers.sh env prints it}"
    : "${DISTSYNC_ETCD_TLS_URL:?not set: scripts/servers.sh env prints it}"
    : "${DISTSYNC_POSTGRES_TLS_URL:?not set: scripts/servers.sh env prints it}"
    : "${DISTSYNC_ZOOKEEPER_TLS_URL:?not set: scripts/servers.sh env prints it}"
    : "${DISTSYNC_MYSQL_TLS_URL:?not set: scripts/servers.sh env prints it}"
    # By variable name: the URLs carry passwords, which stay out of the command line.
    # The runner is the `build` step's.
    DISTSYNC_RUNNER_BUILT=1 scripts/runner.sh --backend-env DISTSYNC_REDIS_TLS_URL \
        --backend-env DISTSYNC_ETCD_TLS_URL --backend-env DISTSYNC_POSTGRES_TLS_URL \
        --backend-env DISTSYNC_ZOOKEEPER_TLS_URL --backend-env DISTSYNC_MYSQL_TLS_URL \
        --case lock_mutual_exclusion --case election_one_leader --case queue_fifo 2>&1 | mask_passwords
}

# examples/orders.rs against the PostgreSQL server, its output with the passwords
# masked; the example fails unless its ledger and queue end as they must. The `build`
# step built it, with the tests' flags (the whole workspace, every feature): `cargo run`
# would resolve the facade's dependencies alone, to other features, and compile them a
# second time, and even cargo's check that nothing changed would wait for the
# build-directory lock that the package step's idle build holds.
orders_example() {
    # Not `${...:?}`: its failure would end this script, not the step.
    if [[ -z ${DISTSYNC_POSTGRES_URL:-} ]]; then
        echo "DISTSYNC_POSTGRES_URL: not set: scripts/servers.sh env prints it" >&2
        return 1
    fi
    "${CARGO_TARGET_DIR:-$PWD/target}/debug/examples/orders" "$DISTSYNC_POSTGRES_URL" 2>&1 | mask_passwords
}

# examples/shards.rs on the memory store, the etcd server and the NATS server: three
# workers share a work table's shards, one is killed half-way; the example fails unless
# every item is done exactly once. Built by the `build` step, as `orders_example`'s.
shards_example() {
    local url
    for url in DISTSYNC_ETCD_URL DISTSYNC_NATS_URL; do
        if [[ -z ${!url:-} ]]; then
            echo "$url: not set: scripts/servers.sh env prints it" >&2
            return 1
        fi
    done
    local example=${CARGO_TARGET_DIR:-$PWD/target}/debug/examples/shards
    "$example" memory:// &&
        "$example" "$DISTSYNC_ETCD_URL" 2>&1 | mask_passwords &&
        "$example" "$DISTSYNC_NATS_URL" 2>&1 | mask_passwords
}

# The disk the build writes to: free space, and what the target directory holds. A
# build that runs out of disk fails every later step at once, so the summary says how
# close this run came.
disk_report() {
    local target=${CARGO_TARGET_DIR:-$PWD/target} held="no target directory yet"
    [ -d "$target" ] && held="target holds $(du -sh "$target" 2>/dev/null | cut -f1)"
    printf '  disk: %s free where the build writes; %s\n' \
        "$(df -Ph "$(dirname "$target")" | awk 'NR == 2 { print $4 }')" "$held" >&2
}

# cargo_tests COMMAND...: runs COMMAND (cargo nextest or cargo test), its output shown as
# it comes, and keeps what says which tests failed (each panic with its message,
# nextest's FAIL and TIMEOUT lines, cargo's command to run a failing binary again) for
# the summary; returns COMMAND's status.
cargo_tests() {
    local output status
    output=$(mktemp)
    "$@" 2>&1 | tee "$output"
    status=${PIPESTATUS[0]}
    # nextest indents a test's captured output; cargo test does not.
    grep -E -A3 "^ *thread '.*panicked at " "$output" | grep -v '^--$' | cut -c1-300 >>"$failed_tests"
    grep -E '^error: test failed, to rerun pass ' "$output" >>"$failed_tests"
    grep -E '^ +(FAIL|TIMEOUT|SIG[A-Z]+|LEAK-FAIL) \[' "$output" | sort -u | cut -c1-300 >>"$failed_tests"
    rm -f "$output"
    return "$status"
}

# idle COMMAND...: runs COMMAND at idle priority (SCHED_IDLE: only on CPU time nothing
# else wants; `nice -n 19` where that policy cannot be set), so that a build beside the
# tests does not starve their sessions.
idle() {
    chrt --idle -p 0 "$BASHPID" >/dev/null 2>&1 || renice -n 19 -p "$BASHPID" >/dev/null 2>&1 || true
    "$@"
}

# tests_started: waits (at most 20 minutes) until the `test` step has built the tests
# and nextest runs them (its "Starting N tests" line), so that nothing started after it
# takes cargo's build-directory lock from nextest's build or a core from its compiling.
tests_started() {
    local log=${background_log[test]} deadline=$((SECONDS + 1200))
    until grep -q -E '^ *Starting [0-9]+ tests' "$log" 2>/dev/null || [[ -s $log.status ]] ||
        ((SECONDS > deadline)); do
        sleep 1
    done
}

# The package listing, then the out-of-tree step's build (`--no-run`, output dropped):
# that step builds again, and reports a failure, whatever happened here.
package_then_out_of_tree_build() {
    local status=0
    scripts/check-package.sh --no-verify || status=$?
    env CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}" \
        cargo test -q --no-run --manifest-path examples/file-backend/Cargo.toml >/dev/null 2>&1 || true
    return "$status"
}

summary() {
    printf '\n%s\n' "test-all summary:" >&2
    printf '  %s\n' "${results[@]}" >&2
    if [[ -s $failed_tests ]]; then
        printf '  tests, what failed:\n' >&2
        head -n 40 "$failed_tests" | mask_passwords | sed 's/^/    /' >&2
    fi
    if [[ -s $DISTSYNC_FAILED_CELLS ]]; then
        printf '  conformance, what failed:\n' >&2
        # What failed the run as a whole first (the runner's exit, a stale matrix), then
        # the first cells (check-matrix.sh puts those that fail it by themselves first).
        local cells more
        { grep -v '^- \*\*' "$DISTSYNC_FAILED_CELLS" || true; } | mask_passwords | sed 's/^/    /' >&2
        cells=$(grep -c '^- \*\*' "$DISTSYNC_FAILED_CELLS" || true)
        { grep '^- \*\*' "$DISTSYNC_FAILED_CELLS" || true; } | head -n 20 | mask_passwords |
            sed 's/^/    /' >&2
        more=$((cells - 20))
        ((more <= 0)) || printf '    (%d more cells in the log)\n' "$more" >&2
    fi
    disk_report
}

# rustfmt and clippy ship in rustup's default profile; add them if a minimal one lacks them.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    step components rustup component add rustfmt clippy
fi
# cargo-nextest comes with the machine; a machine without it builds it from crates.io.
if ! cargo nextest --version >/dev/null 2>&1; then
    step nextest cargo install cargo-nextest --locked
fi

printf 'test-all: at the start\n' >&2
disk_report
step fmt cargo fmt --all -- --check
# Docs and comments: every Capabilities flag in ARCHITECTURE, no issue numbers, lines
# of at most 120 characters (scripts/check-docs.sh says which).
step docs scripts/check-docs.sh
# Cargo.lock needs no newer Rust than the `rust-version` the crates declare.
step msrv scripts/check-msrv.sh
# What the build needs (protoc, a C compiler, OpenSSL's headers) first; the servers
# then come up in the background while clippy and rustdoc build (installing, starting
# and the peers' builds mostly wait on the disk and the network), and the `servers`
# step waits for them and shows what they printed.
step build-tools scripts/build-tools.sh
servers_log=$(mktemp)
scripts/servers.sh up >"$servers_log" 2>&1 &
servers_pid=$!
servers_started() {
    local status=0
    wait "$servers_pid" || status=$?
    cat "$servers_log" >&2
    rm -f "$servers_log"
    return "$status"
}

# Clippy lints the workspace inside the tests' build, which compiles every target
# clippy's `--all-targets` would check (the workspace has no benches): cargo runs each
# workspace crate's compiler through clippy's driver (RUSTC_WORKSPACE_WRAPPER, as
# `cargo clippy` does), which adds clippy's lints to rustc's and compiles as rustc does,
# so the workspace is compiled once for both. The lints stay warnings there, so that a
# lint does not keep the tests from running; the `clippy` step then fails on any warning
# the build reported (`diagnostics`), as `cargo clippy -- -D warnings` would. Exported:
# every later cargo command of this script then finds the workspace as the build left it
# (the wrapper is part of cargo's fingerprint).
RUSTC_WORKSPACE_WRAPPER="$(rustc --print sysroot)/bin/clippy-driver"
export RUSTC_WORKSPACE_WRAPPER

# diagnostics LEVEL...: prints, as the compiler rendered them, the diagnostics of those
# levels (warning, error) that the tests' build reported for the workspace's crates
# (cargo's JSON messages, which repeat a fresh unit's cached diagnostics too); fails if
# there is any.
diagnostics() {
    python3 - "$build_messages" "$@" <<'PYTHON'
import json, sys
messages, levels = sys.argv[1], set(sys.argv[2:])
found = 0
for line in open(messages, encoding="utf-8"):
    try:
        message = json.loads(line)
    except ValueError:
        continue
    if message.get("reason") != "compiler-message":
        continue
    diagnostic = message["message"]
    if diagnostic.get("level") in levels:
        found += 1
        sys.stderr.write(diagnostic.get("rendered") or diagnostic.get("message", "") + "\n")
print(f"{found} {'/'.join(sorted(levels))} diagnostic(s) in the workspace's crates", file=sys.stderr)
sys.exit(1 if found else 0)
PYTHON
}

# The tests' build, its compiler messages kept as JSON for the `clippy` step; the errors
# shown here when it fails.
build_tests() {
    local status=0
    cargo nextest run --workspace --all-features --no-run --cargo-message-format json \
        >"$build_messages" || status=$?
    ((status == 0)) || diagnostics error || true
    return "$status"
}

# The documentation, in a target directory of their own (`target/api-docs`), so that it never
# holds the build directory's lock the test builds and the runner wait for: rustdoc with
# -D warnings (every public item documented, every intra-doc link resolved), then the
# facade's surface read from it (a small root, one path per item). Without the clippy
# driver: rustdoc needs only the libraries' metadata. The bench (unpublished) is left
# to scripts/release-check.sh: its peers' crates (fred, openssl, plotters, sqlx's macros
# with a host build of sqlx) are a tenth of the graph and a larger share of this step's
# time, and what the tests' build checks of its docs (missing_docs) stays in CI.
api_docs_target=${CARGO_TARGET_DIR:-$PWD/target}/api-docs
api_docs() {
    local status=0 docs=(env -u RUSTC_WORKSPACE_WRAPPER CARGO_TARGET_DIR="$api_docs_target")
    results=() # this runs in a background shell: only its own steps go back
    step rustdoc "${docs[@]}" RUSTDOCFLAGS="-D warnings" \
        cargo doc --workspace --exclude distsync-bench --no-deps --all-features --lib ||
        status=1
    step surface "${docs[@]}" scripts/check-surface.sh || status=1
    printf '%s\n' "${results[@]}" >"$api_docs_results"
    return "$status"
}
api_docs_results=$(mktemp)

# The tests' build comes first, at full priority, while the servers come up: it is what
# every later step waits for. Clippy's verdict is read from it; rustdoc runs beside the
# tests at idle priority (`api_docs` above).
step build build_tests
step clippy diagnostics warning error
if ! step servers servers_started; then
    summary
    echo "test-all: the servers did not come up; not running the tests" >&2
    exit 1
fi
eval "$(scripts/servers.sh env)" || exit 1
# Every test but the doctests, each in a process of its own (cargo-nextest, no retries;
# `.config/nextest.toml` runs alone the tests that act on a server others share, such as
# the Sentinel tests that kill the group's primary). The backends' conformance binaries
# leave the suite's cases to the `conformance` step, which runs them against the same
# servers through the runner (DISTSYNC_CASES_IN_RUNNER), so each case runs once; their
# extra tests run here. Its output is shown when it ends.
step_start test cargo_tests env DISTSYNC_CASES_IN_RUNNER=1 cargo nextest run --workspace --all-features \
    --no-tests fail
tests_started
# Once the tests run (they mostly wait on leases, processes and servers), what is left
# to compile runs beside them at idle priority (`idle`), on the CPU time they leave:
# the documentation, the doctests, the package listing and the out-of-tree crate's build.
step_start api-docs idle api_docs
# The code blocks of the rustdoc, README and docs/ (nextest does not run doctests).
step_start doctests idle cargo_tests cargo test -q --workspace --all-features --doc
# Every published crate packages as crates.io would receive it (metadata, readme,
# licenses, no file from outside the crate); building each package on its own is
# scripts/release-check.sh's. Then the out-of-tree step's build, after the listing (it
# may rewrite examples/file-backend/Cargo.lock, which the facade's package holds).
step_start package idle package_then_out_of_tree_build
# TLS, client certificates and authentication (etcd RBAC limited to the namespace,
# Redis ACL, PostgreSQL SCRAM with a required client certificate, ZooKeeper SASL
# DIGEST-MD5 with a required client certificate, MariaDB with a password and a required
# client certificate): the runner over those servers (their
# typed errors are the `tls_auth` and `tls_logs` tests of the `test` step); three cases
# a store, which wait on the servers more than they compute.
step_start tls-conform tls_conformance
step_finish test
step_finish tls-conform
# The transactional outbox and `ack_in` end to end: orders, their items, a ledger
# applied exactly once. Without a PostgreSQL server it is skipped, but not under CI=true.
if [[ -n ${DISTSYNC_POSTGRES_URL:-} || ${CI:-} == true ]]; then
    step orders orders_example
else
    echo "test-all: DISTSYNC_POSTGRES_URL not set; not running examples/orders.rs" >&2
fi
if [[ (-n ${DISTSYNC_ETCD_URL:-} && -n ${DISTSYNC_NATS_URL:-}) || ${CI:-} == true ]]; then
    step shards shards_example
else
    echo "test-all: DISTSYNC_ETCD_URL or DISTSYNC_NATS_URL not set; not running examples/shards.rs" >&2
fi
# The conformance runner over every backend (memory and the servers above), whose
# matrix must also match docs/GUARANTEES.md's (and README's summary) in everything but
# figures. It is the longest step, so it starts as soon as the tests end: the rustdoc,
# the doctests and the package listing, if still running, go on beside it at idle
# priority. The runner is the one the `build` step built (DISTSYNC_RUNNER_BUILT): cargo's
# check of that would wait for the build-directory lock the package step's build holds.
step conformance env DISTSYNC_RUNNER_BUILT=1 scripts/check-matrix.sh
step_finish doctests
step_finish package
# The example backend crate outside the workspace (examples/file-backend) runs the
# conformance suite from its own `cargo test`, pinned by its own Cargo.lock, built in
# the workspace's target directory so that what it shares with the workspace is built
# once (the `package` step built it at idle priority). Not `--locked`: a dependency
# added to distsync-core is then added to that lock (its other pins kept) instead of
# failing the step.
step out-of-tree cargo_tests env CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}" \
    cargo test -q --manifest-path examples/file-backend/Cargo.toml
# The documentation's own steps (rustdoc, surface) are in their results, which the
# background shell wrote; `api-docs` is their total.
step_finish api-docs
[[ -s $api_docs_results ]] && mapfile -t -O "${#results[@]}" results <"$api_docs_results"
rm -f "$api_docs_results"

summary
# The runs closest to their bounds, from this run's JUnit files (scripts/slack.py).
scripts/slack.py --top 5 "${CARGO_TARGET_DIR:-target}/conformance/junit.xml" \
    "${CARGO_TARGET_DIR:-target}/nextest/default/junit.xml" >&2 || true
exit "$failed"
