//! `rslock` (Redlock) on the one Redis server.

use std::time::Duration;

use async_trait::async_trait;
use rslock::LockManager;

use crate::contender::{Cycler, Role, Unavailable};
use crate::Result;

/// The lock TTL, as a distsync session's default.
const TTL: Duration = Duration::from_secs(60);

/// The label of this row.
pub const LABEL: &str = "rslock 0.10 (lock + unlock)";

/// `LockManager::lock(resource, ttl)` then `LockManager::unlock(&lock)`.
pub struct Rslock {
    manager: LockManager,
    resource: Vec<u8>,
}

impl std::fmt::Debug for Rslock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rslock").finish_non_exhaustive()
    }
}

impl Rslock {
    /// A lock manager for the server of the distsync URL `url`.
    pub async fn start(url: &str, name: &str) -> std::result::Result<Box<dyn Cycler>, Unavailable> {
        match crate::raw::redis::server_url(url) {
            Ok(server) => Ok(Box::new(Self {
                manager: LockManager::new(vec![server]),
                resource: name.as_bytes().to_vec(),
            })),
            Err(error) => Err((LABEL.to_owned(), Role::Peer, error)),
        }
    }
}

#[async_trait]
impl Cycler for Rslock {
    fn label(&self) -> String {
        LABEL.into()
    }

    fn role(&self) -> Role {
        Role::Peer
    }

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
