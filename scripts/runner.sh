#!/usr/bin/env bash
# The conformance runner (distsync-conformance, every backend) built exactly as
# `cargo test --workspace --all-features` builds it, then run with this script's
# arguments. Same features and profile as the test step, so CI compiles the workspace
# and its dependencies once instead of once more per feature set (a fresh CI target
# once grew past the machine's free disk that way).
#   scripts/runner.sh --backend memory:// --case lock_mutual_exclusion
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# --no-run builds every test target and, for the conformance crate's tests, its binary.
# DISTSYNC_RUNNER_BUILT=1 skips that for a caller that has just run this script (cargo's
# check that nothing changed reads every target's fingerprint: a second or two).
if [[ -z ${DISTSYNC_RUNNER_BUILT:-} ]]; then
    cargo test -q --workspace --all-features --no-run 2>/dev/null ||
        cargo test -q --workspace --all-features --no-run # again, to show why it failed
fi
target_dir=$(cargo metadata -q --no-deps --format-version 1 |
    sed -E 's/.*"target_directory":"([^"]*)".*/\1/')
exec "$target_dir/debug/distsync-conformance" "$@"
