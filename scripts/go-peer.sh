#!/usr/bin/env bash
# The Go peer of the etcd interop tests: interop/etcd-go-peer, a small program that
# runs etcd's own Go recipes (clientv3/concurrency, contrib/recipes) line by line for
# the conformance suite. It builds in GOPATH mode against the etcd 3.4 source Debian
# ships (golang-etcd-server-dev, under /usr/share/gocode), with no network access.
#
#   scripts/go-peer.sh build   install what is missing, build the binary unless it is
#                              newer than every .go source; print its absolute path as
#                              the last line of stdout (all else goes to stderr)
#   scripts/go-peer.sh path    print the binary's absolute path (without building)
#
# Everything built lives under target/go-peer/: the binary distsync-go-peer, the Go
# build cache (cache/) and an empty first GOPATH entry (gopath/).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
readonly ROOT
readonly SRC=interop/etcd-go-peer
readonly OUT=$ROOT/target/go-peer
readonly BIN=$OUT/distsync-go-peer
readonly GOCODE=/usr/share/gocode

source "$ROOT/scripts/apt-install.sh"

log() { printf 'go-peer: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

ensure_installed() {
    local missing=()
    command -v go >/dev/null || missing+=(golang-go)
    [[ -d $GOCODE/src/go.etcd.io/etcd/clientv3/concurrency ]] || missing+=(golang-etcd-server-dev)
    ((${#missing[@]})) || return 0
    apt_install "${missing[@]}" || die "could not install ${missing[*]}"
    command -v go >/dev/null || die "golang-go installed but no go on PATH"
}

# True when the binary exists and is newer than every .go source of the program.
up_to_date() {
    [[ -x $BIN ]] || return 1
    local newer
    newer=$(find "$ROOT/$SRC" -name '*.go' -newer "$BIN" -print -quit)
    [[ -z $newer ]]
}

build() {
    ensure_installed
    if up_to_date; then
        log "up to date: $BIN"
    else
        mkdir -p "$OUT/gopath" "$OUT/cache"
        log "building $SRC"
        local start=$SECONDS
        # The binary is written under a temporary name and renamed, so a failed or
        # interrupted build never leaves a half-written one that looks up to date.
        (cd "$ROOT" && GO111MODULE=off GOFLAGS= GOPATH="$OUT/gopath:$GOCODE" GOCACHE="$OUT/cache" \
            go build -o "$BIN.tmp" "./$SRC") >&2 || die "go build failed"
        mv -f "$BIN.tmp" "$BIN"
        log "built $BIN in $((SECONDS - start)) s"
    fi
    echo "$BIN"
}

case ${1:-} in
build) build ;;
path) echo "$BIN" ;;
*)
    echo "usage: $0 build|path" >&2
    exit 2
    ;;
esac
