//! Peer lock implementations on the same stores, timed with the same cycle:
//!
//! - etcd: the server-side Lock RPC through `etcd-client` (`Client::lock`/`unlock`), and
//!   etcd's own Go `concurrency.Mutex` in a process of its own (the interop peer, timed
//!   inside it), in the cycle and in the hand-off;
//! - Redis: `rslock` (Redlock on one server) and `distributed-lock`;
//! - PostgreSQL: `distributed-lock`;
//! - MySQL/MariaDB: `distributed-lock` (its MySQL provider);
//! - NATS: none (no Rust lock library on JetStream KV to compare with);
//! - ZooKeeper: Apache Curator's `InterProcessMutex`, in a JVM of its own (the interop
//!   peer, timed inside the JVM after a warm-up), in the cycle and in the hand-off.
//!
//! In the contended case ([`crate::contended`], [`contended`]) every client is a peer
//! of its own: a client, lease and connection in-process, or a process of its own for
//! Go's mutex and a JVM of its own for Curator's (so Curator runs with a few clients
//! only). `distributed-lock` on Redis does not wait for a taken lock (one try, then a
//! timeout), so it has no contended row.

#[cfg(feature = "zookeeper")]
pub mod curator;
#[cfg(feature = "distributed-lock")]
pub mod distributed_lock;
#[cfg(feature = "etcd")]
pub mod etcd_lock_rpc;
#[cfg(feature = "etcd")]
pub mod go_mutex;
#[cfg(any(feature = "etcd", feature = "zookeeper"))]
mod process;
#[cfg(feature = "redis")]
pub mod rslock;

use crate::args::Plan;
use crate::contender::{Role, Started};
use crate::handoff::HandoffResult;
use crate::target::Target;

/// The peers this build has for `target`'s store, on names derived from `name`.
#[allow(unused_variables)]
pub async fn contenders(target: &Target, name: &str) -> Vec<Started> {
    #[allow(unused_mut)]
    let mut peers = Vec::new();
    let url = target.url.as_str();
    match target.kind {
        #[cfg(feature = "etcd")]
        crate::target::BackendKind::Etcd => {
            peers.push(etcd_lock_rpc::start(url, &format!("{name}/rpc")).await);
            peers.push(go_mutex::start(url, &format!("{name}/go")).await);
        }
        #[cfg(feature = "redis")]
        crate::target::BackendKind::Redis => {
            peers.push(rslock::start(url, &format!("{name}/rslock")).await);
            #[cfg(feature = "distributed-lock")]
            peers.push(distributed_lock::redis(url, &format!("{name}/distributed-lock")).await);
        }
        #[cfg(feature = "distributed-lock")]
        crate::target::BackendKind::Postgres | crate::target::BackendKind::PostgresUnflushed => {
            let name = format!("{name}/distributed-lock");
            peers.push(distributed_lock::postgres(url, &name).await);
        }
        #[cfg(feature = "distributed-lock")]
        crate::target::BackendKind::Mysql => {
            let name = format!("{name}/distributed-lock");
            peers.push(distributed_lock::mysql(url, &name).await);
        }
        #[cfg(feature = "zookeeper")]
        crate::target::BackendKind::Zookeeper => {
            peers.push(curator::start(url, &format!("{name}/curator")).await);
        }
        _ => {}
    }
    peers
}

/// The hand-off row `label` of a peer that timed `waiters` waiters' hand-offs itself:
/// the `samples` it measured, and the error that stopped it, if one did.
#[cfg(any(feature = "etcd", feature = "zookeeper"))]
fn handoff_result(
    label: &str,
    waiters: usize,
    samples: crate::stats::Samples,
    outcome: crate::Result<()>,
) -> HandoffResult {
    HandoffResult {
        samples,
        error: outcome.err().map(|error| error.to_string()),
        ..HandoffResult::new(Some(label.to_owned()), waiters)
    }
}

/// The hand-off case run by the peers this build has for `target`'s store (those that
/// time a hand-off themselves), with `waiters` waiters, one result each.
#[allow(unused_variables)]
pub async fn handoffs(
    target: &Target,
    run_id: &str,
    waiters: usize,
    plan: &Plan,
) -> Vec<HandoffResult> {
    #[allow(unused_mut)]
    let mut results = Vec::new();
    #[cfg(feature = "etcd")]
    if target.kind == crate::target::BackendKind::Etcd {
        let name = format!("{run_id}/handoff-go/{waiters}");
        results.push(go_mutex::handoff(&target.url, &name, waiters, plan).await);
    }
    #[cfg(feature = "zookeeper")]
    if target.kind == crate::target::BackendKind::Zookeeper {
        let name = format!("{run_id}/handoff-curator/{waiters}");
        results.push(curator::handoff(&target.url, &name, waiters, plan).await);
    }
    results
}

/// A peer of the contended case ([`crate::contended`]): how one of its clients starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ContendedPeer {
    /// etcd's Lock RPC ([`etcd_lock_rpc`]), a client and lease per client.
    #[cfg(feature = "etcd")]
    LockRpc,
    /// etcd's Go `concurrency.Mutex` ([`go_mutex`]), a process per client.
    #[cfg(feature = "etcd")]
    GoMutex,
    /// `rslock`'s `acquire` ([`rslock`]): with its default retry delay, or (`short`)
    /// with [`rslock::SHORT_RETRY_DELAY`].
    #[cfg(feature = "redis")]
    Rslock {
        /// Whether the retry delay is the short one.
        short: bool,
    },
    /// `distributed-lock` on PostgreSQL ([`distributed_lock`]), a pool per client.
    #[cfg(feature = "distributed-lock")]
    DistributedLockPostgres,
    /// The raw `pg_advisory_lock` + `pg_advisory_unlock` pair ([`crate::raw::postgres`]),
    /// a connection per client: it waits for the key too.
    #[cfg(feature = "postgres")]
    RawPostgres,
    /// PostgreSQL's durable floor ([`crate::raw::durable_floor`]): one row update and a
    /// synchronous commit per grant, a connection per client, all on one row.
    #[cfg(feature = "postgres")]
    DurableFloorPostgres,
    /// `distributed-lock` on MySQL ([`distributed_lock`]), a pool per client.
    #[cfg(feature = "distributed-lock")]
    DistributedLockMysql,
    /// The raw `GET_LOCK` + `RELEASE_LOCK` pair ([`crate::raw::mysql`]), a connection
    /// per client: it waits for the name too.
    #[cfg(feature = "mysql")]
    RawMysql,
    /// MySQL's durable floor ([`crate::raw::durable_floor`]), as PostgreSQL's.
    #[cfg(feature = "mysql")]
    DurableFloorMysql,
    /// Curator's `InterProcessMutex` ([`curator`]), a JVM per client.
    #[cfg(feature = "zookeeper")]
    Curator,
}

impl ContendedPeer {
    /// The row label.
    pub fn label(self) -> &'static str {
        match self {
            #[cfg(feature = "etcd")]
            Self::LockRpc => etcd_lock_rpc::LABEL,
            #[cfg(feature = "etcd")]
            Self::GoMutex => go_mutex::LABEL,
            #[cfg(feature = "redis")]
            Self::Rslock { short: false } => rslock::ACQUIRE_LABEL,
            #[cfg(feature = "redis")]
            Self::Rslock { short: true } => rslock::ACQUIRE_SHORT_LABEL,
            #[cfg(feature = "distributed-lock")]
            Self::DistributedLockPostgres | Self::DistributedLockMysql => distributed_lock::LABEL,
            #[cfg(feature = "postgres")]
            Self::RawPostgres => crate::raw::postgres::LABEL,
            #[cfg(feature = "mysql")]
            Self::RawMysql => crate::raw::mysql::LABEL,
            #[cfg(feature = "postgres")]
            Self::DurableFloorPostgres => crate::raw::durable_floor::LABEL,
            #[cfg(feature = "mysql")]
            Self::DurableFloorMysql => crate::raw::durable_floor::LABEL,
            #[cfg(feature = "zookeeper")]
            Self::Curator => curator::LABEL,
        }
    }

    /// What it is in the report.
    pub fn role(self) -> Role {
        match self {
            #[cfg(feature = "postgres")]
            Self::RawPostgres => Role::Raw,
            #[cfg(feature = "mysql")]
            Self::RawMysql => Role::Raw,
            #[cfg(feature = "postgres")]
            Self::DurableFloorPostgres => Role::Raw,
            #[cfg(feature = "mysql")]
            Self::DurableFloorMysql => Role::Raw,
            #[allow(unreachable_patterns)]
            _ => Role::Peer,
        }
    }

    /// Whether each client is a process of its own that starts with a warm-up (a JVM),
    /// so that the contended case runs it with a few clients only (see
    /// [`Plan::contended_jvm_clients`]) and starts its clients one at a time.
    pub fn is_jvm(self) -> bool {
        match self {
            #[cfg(feature = "zookeeper")]
            Self::Curator => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Starts one client on the lock `name` of the store at the distsync URL `url`.
    #[allow(unused_variables)]
    pub async fn start(self, url: &str, name: &str) -> Started {
        match self {
            #[cfg(feature = "etcd")]
            Self::LockRpc => etcd_lock_rpc::start(url, name).await,
            #[cfg(feature = "etcd")]
            Self::GoMutex => go_mutex::start(url, name).await,
            #[cfg(feature = "redis")]
            Self::Rslock { short } => rslock::start_waiting(url, name, short).await,
            #[cfg(feature = "distributed-lock")]
            Self::DistributedLockPostgres => distributed_lock::postgres(url, name).await,
            #[cfg(feature = "postgres")]
            Self::RawPostgres => crate::raw::postgres::start(url, name).await,
            #[cfg(feature = "distributed-lock")]
            Self::DistributedLockMysql => distributed_lock::mysql(url, name).await,
            #[cfg(feature = "mysql")]
            Self::RawMysql => crate::raw::mysql::start(url, name).await,
            #[cfg(feature = "postgres")]
            Self::DurableFloorPostgres => {
                crate::raw::durable_floor::start_postgres(url, name).await
            }
            #[cfg(feature = "mysql")]
            Self::DurableFloorMysql => crate::raw::durable_floor::start_mysql(url, name).await,
            #[cfg(feature = "zookeeper")]
            Self::Curator => curator::start(url, name).await,
        }
    }
}

/// The peers (and raw pairs that wait) of the contended case this build has for
/// `target`'s store.
#[allow(unused_variables)]
pub fn contended(target: &Target) -> Vec<ContendedPeer> {
    #[allow(unused_mut)]
    let mut peers = Vec::new();
    match target.kind {
        #[cfg(feature = "etcd")]
        crate::target::BackendKind::Etcd => {
            peers.extend([ContendedPeer::LockRpc, ContendedPeer::GoMutex]);
        }
        #[cfg(feature = "redis")]
        crate::target::BackendKind::Redis => {
            peers.extend([
                ContendedPeer::Rslock { short: false },
                ContendedPeer::Rslock { short: true },
            ]);
        }
        #[cfg(feature = "postgres")]
        crate::target::BackendKind::Postgres | crate::target::BackendKind::PostgresUnflushed => {
            #[cfg(feature = "distributed-lock")]
            peers.push(ContendedPeer::DistributedLockPostgres);
            peers.push(ContendedPeer::RawPostgres);
            // The floor of durable grants: the unflushed backend's are not durable.
            if target.kind == crate::target::BackendKind::Postgres {
                peers.push(ContendedPeer::DurableFloorPostgres);
            }
        }
        #[cfg(feature = "zookeeper")]
        crate::target::BackendKind::Zookeeper => peers.push(ContendedPeer::Curator),
        #[cfg(feature = "mysql")]
        crate::target::BackendKind::Mysql => {
            #[cfg(feature = "distributed-lock")]
            peers.push(ContendedPeer::DistributedLockMysql);
            peers.push(ContendedPeer::RawMysql);
            peers.push(ContendedPeer::DurableFloorMysql);
        }
        _ => {}
    }
    peers
}
