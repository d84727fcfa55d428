#!/usr/bin/env bash
# The Curator peer of the ZooKeeper interop tests: interop/curator-peer, a small Java
# program that runs Apache Curator's own recipes (InterProcessMutex,
# InterProcessReadWriteLock, InterProcessSemaphoreV2, DistributedBarrier,
# DistributedDoubleBarrier, LeaderLatch, LeaderSelector, DistributedQueue, DistributedPriorityQueue) line by
# line for backend-zookeeper/tests/curator_interop*.rs.
# It compiles with `javac` against the jars Debian ships (libcurator-*-java, zookeeper), with no network access.
#
#   scripts/curator-peer.sh build   install what is missing, compile unless the classes
#                                   are newer than the source; print the launcher's
#                                   absolute path as the last line of stdout (all else
#                                   goes to stderr)
#   scripts/curator-peer.sh path    print the launcher's absolute path (without building)
#
# Everything built lives under target/curator-peer/: the classes (classes/) and the
# launcher curator-peer, a shell script that runs the program with its class path.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
readonly ROOT
readonly SRC=$ROOT/interop/curator-peer/CuratorPeer.java
readonly OUT=$ROOT/target/curator-peer
readonly BIN=$OUT/curator-peer
readonly JARS=/usr/share/java

source "$ROOT/scripts/apt-install.sh"

log() { printf 'curator-peer: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# What the program needs at compile and run time: Curator's three jars, ZooKeeper's
# client (and its jute records), Guava (Curator's utilities), SLF4J with its no-op
# binding (ZooKeeper and Curator log through SLF4J; the peer's output is its lines).
classpath() {
    local jars=(curator-recipes curator-framework curator-client zookeeper zookeeper-jute
        guava slf4j-api slf4j-nop) path='' jar
    for jar in "${jars[@]}"; do path+=${path:+:}$JARS/$jar.jar; done
    printf '%s' "$path"
}

ensure_installed() {
    local missing=() jar
    for jar in recipes framework client; do
        [[ -f $JARS/curator-$jar.jar ]] || missing+=("libcurator-$jar-java")
    done
    [[ -f $JARS/zookeeper.jar ]] || missing+=(zookeeper)
    [[ -f $JARS/slf4j-nop.jar ]] || missing+=(libslf4j-java)
    command -v javac >/dev/null || missing+=(default-jdk-headless)
    ((${#missing[@]})) || return 0
    apt_install "${missing[@]}" || die "could not install ${missing[*]}"
    command -v javac >/dev/null || die "a JDK was installed but no javac is on PATH"
}

build() {
    ensure_installed
    if [[ -x $BIN && $OUT/classes/CuratorPeer.class -nt $SRC ]]; then
        log "up to date: $BIN"
    else
        log "compiling $SRC"
        # Compiled into a fresh directory and renamed, so a failed build never leaves
        # classes that look up to date.
        rm -rf "$OUT/classes.tmp"
        mkdir -p "$OUT/classes.tmp"
        javac -encoding UTF-8 -d "$OUT/classes.tmp" -cp "$(classpath)" "$SRC" >&2 ||
            die "javac failed"
        rm -rf "$OUT/classes"
        mv "$OUT/classes.tmp" "$OUT/classes"
        printf '#!/bin/sh\nexec java -Xmx128m -cp %q:%q CuratorPeer "$@"\n' \
            "$OUT/classes" "$(classpath)" >"$BIN.tmp"
        chmod +x "$BIN.tmp"
        mv -f "$BIN.tmp" "$BIN"
        log "built $BIN"
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
