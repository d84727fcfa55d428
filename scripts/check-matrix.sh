#!/usr/bin/env bash
# Fails if the guarantee matrix in README.md (between `<!-- matrix:begin -->` and
# `<!-- matrix:end -->`) differs from a fresh run of the conformance runner in
# anything but figures: both are reduced to their figure-free outline (the runner's
# `--outline`: every cell's outcome and ⚠ flag, every note's backend, case, claim and
# outcome) and compared. Fix a difference with scripts/update-readme-matrix.sh.
#
#   scripts/check-readme-matrix.sh            every backend: memory:// and the servers of
#                                             `scripts/servers.sh env` (already running),
#                                             the Redis Sentinel group included (its
#                                             `redis-sentinel` column: the failover cases
#                                             and the lock, election and queue basics)
#                                             and the Redis Cluster (its `redis-cluster`
#                                             column: the whole suite); under CI=true every
#                                             one's URL must be set, the cluster's
#                                             DISTSYNC_REDIS_CLUSTER_URL included
#   scripts/check-readme-matrix.sh URL...     only these backends, e.g. memory://
#
# The fresh matrix is printed on standard output, so this one run of the runner is
# also CI's conformance step.
#
# Exit status: 0 when every case passed and the outlines match, 1 when a case failed
# or the outlines differ, 2 when the runner could not produce a matrix.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

readme=README.md
begin='<!-- matrix:begin -->'
end='<!-- matrix:end -->'
[[ $(grep -cxF "$begin" "$readme") == 1 && $(grep -cxF "$end" "$readme") == 1 ]] ||
    { echo "check-readme-matrix: $readme needs exactly one '$begin' and one '$end' line" >&2; exit 2; }

if (($#)); then
    args=()
    for url in "$@"; do args+=(--backend "$url"); done
else
    eval "$(scripts/servers.sh env)"
    args=(--all)
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
runner=(scripts/runner.sh)

status=0
"${runner[@]}" --format markdown "${args[@]}" >"$tmp/fresh.md" || status=$?
if ((status > 1)) || [[ ! -s $tmp/fresh.md ]]; then
    echo "check-readme-matrix: the runner failed (exit $status); nothing to compare" >&2
    exit 2
fi
cat "$tmp/fresh.md"
awk -v begin="$begin" -v end="$end" '
    $0 == end { inside = 0 }
    inside { print }
    $0 == begin { inside = 1 }
' "$readme" >"$tmp/readme.md"

"${runner[@]}" --outline <"$tmp/readme.md" >"$tmp/readme.outline"
"${runner[@]}" --outline <"$tmp/fresh.md" >"$tmp/fresh.outline"
if ! diff -u --label "$readme (committed matrix)" --label "fresh run" \
    "$tmp/readme.outline" "$tmp/fresh.outline" >&2; then
    echo "check-readme-matrix: the matrix in $readme is stale (see the diff above, figures ignored);" \
        "regenerate it with scripts/update-readme-matrix.sh" >&2
    exit 1
fi
echo "check-readme-matrix: $readme matches a fresh run (figures aside)" >&2
if ((status != 0)); then
    echo "check-readme-matrix: but some cases failed (see the matrix and its notes)" >&2
    exit 1
fi
