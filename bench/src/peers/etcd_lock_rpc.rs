//! etcd's server-side Lock RPC (the `v3lock` service) through `etcd-client`.

use async_trait::async_trait;
use etcd_client::{Client, LockOptions};

use crate::contender::{Cycler, Role, Unavailable};
use crate::Result;

/// The lease TTL, as a distsync session's default.
const LEASE_TTL_SECS: i64 = 60;

/// The label of this row.
pub const LABEL: &str = "etcd Lock RPC (etcd-client lock/unlock)";

/// `Client::lock(name, lease)` then `Client::unlock(key)`, on one lease.
pub struct LockRpc {
    client: Client,
    lease: i64,
    name: String,
}

impl std::fmt::Debug for LockRpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockRpc")
            .field("lease", &self.lease)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl LockRpc {
    /// Connects to the endpoints of the distsync URL `url` and grants a lease.
    pub async fn start(url: &str, name: &str) -> std::result::Result<Box<dyn Cycler>, Unavailable> {
        let started: Result<Self> = async {
            let mut client = crate::raw::etcd::client(url).await?;
            let lease = client.lease_grant(LEASE_TTL_SECS, None).await?.id();
            Ok(Self {
                client,
                lease,
                name: name.to_owned(),
            })
        }
        .await;
        started
            .map(|peer| Box::new(peer) as Box<dyn Cycler>)
            .map_err(|error| (LABEL.to_owned(), Role::Peer, error))
    }
}

#[async_trait]
impl Cycler for LockRpc {
    fn label(&self) -> String {
        LABEL.into()
    }

    fn role(&self) -> Role {
        Role::Peer
    }

    async fn cycle(&mut self) -> Result<()> {
        let locked = self
            .client
            .lock(
                self.name.as_str(),
                Some(LockOptions::new().with_lease(self.lease)),
            )
            .await?;
        self.client.unlock(locked.key()).await?;
        Ok(())
    }

    async fn close(mut self: Box<Self>) -> Result<()> {
        self.client.lease_revoke(self.lease).await?;
        Ok(())
    }
}
