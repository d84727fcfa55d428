//! Peer lock implementations on the same stores, timed with the same cycle:
//!
//! - etcd: the server-side Lock RPC through `etcd-client` (`Client::lock`/`unlock`), and
//!   etcd's own Go `concurrency.Mutex` in a process of its own (the interop peer, timed
//!   inside it), in the cycle and in the hand-off;
//! - Redis: `rslock` (Redlock on one server) and `distributed-lock`;
//! - PostgreSQL: `distributed-lock`;
//! - ZooKeeper: Apache Curator's `InterProcessMutex`, in a JVM of its own (the interop
//!   peer, timed inside the JVM after a warm-up), in the cycle and in the hand-off.

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
use crate::contender::Started;
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
        crate::target::BackendKind::Postgres => {
            let name = format!("{name}/distributed-lock");
            peers.push(distributed_lock::postgres(url, &name).await);
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
        peer: Some(label.to_owned()),
        waiters,
        samples,
        error: outcome.err().map(|error| error.to_string()),
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
