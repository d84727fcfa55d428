//! `rslock` (Redlock) on the one Redis server.

use std::time::Duration;

use async_trait::async_trait;
use rslock::LockManager;

use crate::contender::{started, Cycler, Role, Started};
use crate::Result;

/// The lock TTL, etcd's `concurrency` default: far longer than a hold, which lasts one
/// cycle.
const TTL: Duration = Duration::from_secs(60);

/// The label of this row.
pub const LABEL: &str = "rslock 0.10 (lock + unlock)";

/// `LockManager::lock(resource, ttl)` then `LockManager::unlock(&lock)`.
struct Rslock {
    manager: LockManager,
    resource: Vec<u8>,
}

/// A lock manager for the server of the distsync URL `url`.
pub async fn start(url: &str, name: &str) -> Started {
    let made = crate::raw::redis::server_url(url).map(|server| Rslock {
        manager: LockManager::new(vec![server]),
        resource: name.as_bytes().to_vec(),
    });
    started(LABEL, Role::Peer, made)
}

#[async_trait]
impl Cycler for Rslock {
    async fn cycle(&mut self) -> Result<()> {
        let lock = self
            .manager
            .lock(self.resource.as_slice(), TTL)
            .await
            .map_err(|error| format!("rslock: {error:?}"))?;
        self.manager.unlock(&lock).await;
        Ok(())
    }
}
