//! etcd's server-side Lock RPC (the `v3lock` service) through `etcd-client`.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use etcd_client::{Client, LockOptions};

use crate::contender::{started, Cycler, Role, Started};
use crate::Result;

/// The lease TTL: etcd's `concurrency` default, and longer than a measurement
/// (`--case-secs`), since the lease is granted once and never renewed.
pub(crate) const LEASE_TTL_SECS: i64 = 60;

/// The label of this row.
pub const LABEL: &str = "etcd Lock RPC (etcd-client lock/unlock)";

/// `Client::lock(name, lease)` then `Client::unlock(key)`, on one lease.
struct LockRpc {
    client: Client,
    lease: i64,
    name: String,
    /// How long the last `lock` took (the server blocks it while the lock is held).
    wait: Option<Duration>,
}

/// Connects to the endpoints of the distsync URL `url` and grants a lease.
pub async fn start(url: &str, name: &str) -> Started {
    let made = async {
        let mut client = crate::raw::etcd::client(url).await?;
        let lease = client.lease_grant(LEASE_TTL_SECS, None).await?.id();
        let name = name.to_owned();
        Ok(LockRpc {
            client,
            lease,
            name,
            wait: None,
        })
    };
    started(LABEL, Role::Peer, made.await)
}

#[async_trait]
impl Cycler for LockRpc {
    async fn cycle(&mut self) -> Result<()> {
        let options = LockOptions::new().with_lease(self.lease);
        self.wait = None;
        let asked = Instant::now();
        let locked = self.client.lock(self.name.as_str(), Some(options)).await?;
        self.wait = Some(asked.elapsed());
        self.client.unlock(locked.key()).await?;
        Ok(())
    }

    fn last_wait(&self) -> Option<Duration> {
        self.wait
    }

    async fn close(mut self: Box<Self>) -> Result<()> {
        self.client.lease_revoke(self.lease).await?;
        Ok(())
    }
}
