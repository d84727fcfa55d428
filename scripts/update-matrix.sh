#!/usr/bin/env bash
# Regenerates the guarantee matrix: runs the conformance runner (markdown) and puts its
# output between the `<!-- matrix:begin -->` and `<!-- matrix:end -->` markers of
# docs/GUARANTEES.md, and the matrix's ten-row summary (the runner's --summary) between
# the `<!-- summary:begin -->` and `<!-- summary:end -->` markers of README.md, and what
# each store does not offer, from the run's store facts (the runner's --gaps), between
# the `gaps` markers of README.md, docs/GUARANTEES.md and each backend crate's header.
#
#   scripts/update-matrix.sh             every backend (starts the test servers): the
#                                        runner's --all, as scripts/check-matrix.sh runs it
#                                        (memory, etcd, redis, postgres, zookeeper
#                                        (DISTSYNC_ZOOKEEPER_URL), the redis-sentinel
#                                        column: a subset of cases, and redis-cluster)
#   scripts/update-matrix.sh URL...      only these backends, e.g. memory://
#
# A matrix with violated guarantees is still written (it is the measurement), but the
# script then exits non-zero; a runner that cannot reach a backend changes nothing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/matrix-files.sh

args=()
if (($#)); then
    urls=("$@")
    for url in "${urls[@]}"; do args+=(--backend "$url"); done
else
    scripts/servers.sh up >/dev/null
    eval "$(scripts/servers.sh env)"
    # The same backends, columns and case subsets as check-matrix.sh.
    urls=(--all)
    args=(--all --columns "${DISTSYNC_COLUMNS:-3}")
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
scripts/runner.sh --format markdown "${args[@]}" >"$tmp/matrix.md" || status=$?
if ((status > 1)) || [[ ! -s $tmp/matrix.md ]]; then
    echo "update-matrix: the runner failed (exit $status); nothing changed" >&2
    exit "$((status ? status : 1))"
fi
scripts/runner.sh --summary <"$tmp/matrix.md" >"$tmp/summary.md"
replace_section "$GUARANTEES" matrix "$tmp/matrix.md"
replace_section "$README" summary "$tmp/summary.md"
write_gaps "$tmp/matrix.md"
echo "update-matrix: $GUARANTEES, $README's summary and every gap list updated (${urls[*]})" >&2
((status == 0)) || echo "update-matrix: some cases failed; see the matrix" >&2
exit "$status"
