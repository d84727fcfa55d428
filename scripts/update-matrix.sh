#!/usr/bin/env bash
# Regenerates the guarantee matrix in README.md: runs the conformance runner (markdown)
# and puts its output between the `<!-- matrix:begin -->` and `<!-- matrix:end -->`
# markers.
#
#   scripts/update-readme-matrix.sh             every backend (starts the test servers):
#                                               the runner's --all, as
#                                               scripts/check-readme-matrix.sh runs it
#                                               (memory, etcd, redis, postgres, and the
#                                               redis-sentinel column: a subset of cases)
#   scripts/update-readme-matrix.sh URL...      only these backends, e.g. memory://
#
# A matrix with violated guarantees is still written (it is the measurement), but the
# script then exits non-zero; a runner that cannot reach a backend changes nothing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

readme=README.md
begin='<!-- matrix:begin -->'
end='<!-- matrix:end -->'
[[ $(grep -cxF "$begin" "$readme") == 1 && $(grep -cxF "$end" "$readme") == 1 ]] ||
    { echo "update-readme-matrix: $readme needs exactly one '$begin' and one '$end' line" >&2; exit 1; }

args=()
if (($#)); then
    urls=("$@")
    for url in "${urls[@]}"; do args+=(--backend "$url"); done
else
    scripts/servers.sh up >/dev/null
    eval "$(scripts/servers.sh env)"
    # The same backends, columns and case subsets as check-readme-matrix.sh.
    urls=(--all)
    args=(--all)
fi

matrix=$(mktemp)
trap 'rm -f "$matrix" "$readme.new"' EXIT
status=0
scripts/runner.sh --format markdown "${args[@]}" >"$matrix" || status=$?
if ((status > 1)) || [[ ! -s $matrix ]]; then
    echo "update-readme-matrix: the runner failed (exit $status); $readme unchanged" >&2
    exit "$((status ? status : 1))"
fi

awk -v begin="$begin" -v end="$end" -v matrix="$matrix" '
    $0 == begin { print; while ((getline line < matrix) > 0) print line; skip = 1; next }
    $0 == end { skip = 0 }
    !skip
' "$readme" >"$readme.new"
mv "$readme.new" "$readme"
echo "update-readme-matrix: $readme updated (${urls[*]})" >&2
((status == 0)) || echo "update-readme-matrix: some cases failed; see the matrix" >&2
exit "$status"
