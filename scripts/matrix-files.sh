# Sourced by scripts/update-matrix.sh and scripts/check-matrix.sh: where the generated
# tables live, and reading or replacing a marked section of a file.

readonly GUARANTEES=docs/GUARANTEES.md
readonly README=README.md

# markers FILE NAME: fails unless FILE has exactly one `<!-- NAME:begin -->` line and
# one `<!-- NAME:end -->` line.
markers() {
    local file=$1 name=$2
    if [[ $(grep -cxF "<!-- $name:begin -->" "$file") != 1 || $(grep -cxF "<!-- $name:end -->" "$file") != 1 ]]; then
        echo "$file needs exactly one '<!-- $name:begin -->' and one '<!-- $name:end -->' line" >&2
        return 2
    fi
}

# section FILE NAME: prints what lies between the markers.
section() {
    markers "$1" "$2" || return
    awk -v begin="<!-- $2:begin -->" -v end="<!-- $2:end -->" '
        $0 == end { inside = 0 }
        inside { print }
        $0 == begin { inside = 1 }
    ' "$1"
}

# replace_section FILE NAME CONTENT_FILE: puts CONTENT_FILE between the markers.
replace_section() {
    markers "$1" "$2" || return
    awk -v begin="<!-- $2:begin -->" -v end="<!-- $2:end -->" -v content="$3" '
        $0 == begin { print; while ((getline line < content) > 0) print line; skip = 1; next }
        $0 == end { skip = 0 }
        !skip
    ' "$1" >"$1.new"
    mv "$1.new" "$1"
}
