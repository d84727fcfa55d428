//! Peer lock implementations on the same stores, timed with the same cycle:
//!
//! - etcd: the server-side Lock RPC through `etcd-client` (`Client::lock`/`unlock`),
//!   and Go's `etcdctl lock` (Debian's etcd-client package), one process per cycle;
//! - Redis: `rslock` (Redlock on one server) and `distributed-lock`;
//! - PostgreSQL: `distributed-lock`.

#[cfg(feature = "distributed-lock")]
pub mod distributed_lock;
#[cfg(feature = "etcd")]
pub mod etcd_lock_rpc;
#[cfg(feature = "etcd")]
pub mod etcdctl;
#[cfg(feature = "redis")]
pub mod rslock;

use crate::contender::{Cycler, Unavailable};
use crate::target::Target;

/// The peers this build has for `target`'s store, on names derived from `name`.
#[allow(unused_variables)]
pub async fn contenders(
    target: &Target,
    name: &str,
) -> Vec<std::result::Result<Box<dyn Cycler>, Unavailable>> {
    use crate::target::BackendKind;
    #[allow(unused_mut)]
    let mut peers = Vec::new();
    match target.kind {
        BackendKind::Memory => {}
        #[cfg(feature = "etcd")]
        BackendKind::Etcd => {
            peers.push(etcd_lock_rpc::LockRpc::start(&target.url, &format!("{name}/rpc")).await);
            peers.extend(etcdctl::contenders(&target.url, name).await);
        }
        #[cfg(feature = "redis")]
        BackendKind::Redis => {
            peers.push(rslock::Rslock::start(&target.url, &format!("{name}/rslock")).await);
            #[cfg(feature = "distributed-lock")]
            peers.push(
                distributed_lock::DistributedLockRedis::start(
                    &target.url,
                    &format!("{name}/distributed-lock"),
                )
                .await,
            );
        }
        #[cfg(feature = "postgres")]
        BackendKind::Postgres => {
            #[cfg(feature = "distributed-lock")]
            peers.push(
                distributed_lock::DistributedLockPostgres::start(
                    &target.url,
                    &format!("{name}/distributed-lock"),
                )
                .await,
            );
        }
        #[allow(unreachable_patterns)]
        _ => {}
    }
    peers
}
