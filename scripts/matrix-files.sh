# Sourced by scripts/update-matrix.sh and scripts/check-matrix.sh: where the generated
# tables live, and reading or replacing a marked section of a file.

readonly GUARANTEES=docs/GUARANTEES.md
readonly README=README.md

# The backend crates whose header lists what their columns do not offer, each as the
# backend name of the matrix's store facts and the file (`//! <!-- gaps:begin -->`).
readonly GAP_HEADERS=(
    etcd:backend-etcd/src/lib.rs
    redis:backend-redis/src/lib.rs
    postgres:backend-postgres/src/lib.rs
    zookeeper:backend-zookeeper/src/lib.rs
    mysql:backend-mysql/src/lib.rs
    nats:backend-nats/src/lib.rs
)

# markers FILE NAME [PREFIX]: fails unless FILE has exactly one `PREFIX<!-- NAME:begin -->`
# line and one `PREFIX<!-- NAME:end -->` line (PREFIX: `//! ` in a crate's header).
markers() {
    local file=$1 name=$2 prefix=${3:-}
    if [[ $(grep -cxF "$prefix<!-- $name:begin -->" "$file") != 1 ||
        $(grep -cxF "$prefix<!-- $name:end -->" "$file") != 1 ]]; then
        echo "$file needs exactly one '$prefix<!-- $name:begin -->' and one '$prefix<!-- $name:end -->' line" >&2
        return 2
    fi
}

# section FILE NAME [PREFIX]: prints what lies between the markers, PREFIX taken off
# each line (a bare `//!` is an empty line).
section() {
    markers "$1" "$2" "${3:-}" || return
    awk -v begin="${3:-}<!-- $2:begin -->" -v end="${3:-}<!-- $2:end -->" -v prefix="${3:-}" '
        $0 == end { inside = 0 }
        inside {
            if (prefix != "" && index($0, prefix) == 1) $0 = substr($0, length(prefix) + 1)
            else if (prefix != "" && $0 == substr(prefix, 1, length(prefix) - 1)) $0 = ""
            print
        }
        $0 == begin { inside = 1 }
    ' "$1"
}

# replace_section FILE NAME CONTENT_FILE [PREFIX]: puts CONTENT_FILE between the
# markers, each line with PREFIX before it (an empty line as PREFIX without its space).
replace_section() {
    markers "$1" "$2" "${4:-}" || return
    awk -v begin="${4:-}<!-- $2:begin -->" -v end="${4:-}<!-- $2:end -->" -v content="$3" \
        -v prefix="${4:-}" '
        $0 == begin {
            print
            while ((getline line < content) > 0) {
                if (line == "" && prefix != "") print substr(prefix, 1, length(prefix) - 1)
                else print prefix line
            }
            skip = 1
            next
        }
        $0 == end { skip = 0 }
        !skip
    ' "$1" >"$1.new"
    mv "$1.new" "$1"
}

# gaps_of MATRIX BACKEND: what the columns of BACKEND (`all`: every column) do not
# offer, from the store facts of the markdown matrix in the file MATRIX.
gaps_of() {
    env DISTSYNC_RUNNER_BUILT=1 scripts/runner.sh --gaps "$2" <"$1"
}

# write_gaps MATRIX: puts every gap list (README's, this page's, each backend crate's
# header) as the markdown matrix in the file MATRIX gives them.
write_gaps() {
    local matrix=$1 list entry
    list=$(mktemp)
    gaps_of "$matrix" all >"$list" || return
    replace_section "$README" gaps "$list" || return
    replace_section "$GUARANTEES" gaps "$list" || return
    for entry in "${GAP_HEADERS[@]}"; do
        gaps_of "$matrix" "${entry%%:*}" >"$list" || return
        replace_section "${entry#*:}" gaps "$list" '//! ' || return
    done
    rm -f "$list"
}

# check_gaps MATRIX: fails, printing the difference, where a committed gap list differs
# from what the markdown matrix in the file MATRIX gives.
check_gaps() {
    local matrix=$1 status=0 expected entry
    expected=$(mktemp)
    gaps_of "$matrix" all >"$expected" || return
    for file in "$README" "$GUARANTEES"; do
        diff -u --label "$file (committed gaps)" --label "fresh run" \
            <(section "$file" gaps) "$expected" >&2 || status=1
    done
    for entry in "${GAP_HEADERS[@]}"; do
        gaps_of "$matrix" "${entry%%:*}" >"$expected" || return
        diff -u --label "${entry#*:} (committed gaps)" --label "fresh run" \
            <(section "${entry#*:}" gaps '//! ') "$expected" >&2 || status=1
    done
    rm -f "$expected"
    return "$status"
}
