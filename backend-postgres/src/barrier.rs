//! The barrier: a row in `barriers` while held; its deletion fires a `NOTIFY`.

use std::sync::Arc;

use async_trait::async_trait;
use distsync_core::raw::Look::{NotYet, Ready};
use distsync_core::{Barrier, Name, Result};

use crate::error::map;
use crate::notify::Wake;
use crate::store::Shared;

pub(crate) struct PgBarrier {
    pub(crate) shared: Arc<Shared>,
    pub(crate) name: Name,
}

impl PgBarrier {
    async fn is_held(&self) -> Result<bool> {
        sqlx::query_scalar(
            &self
                .shared
                .sql("SELECT EXISTS (SELECT 1 FROM {s}.barriers WHERE name = $1)"),
        )
        .bind(self.name.as_str())
        .fetch_one(self.shared.bounded())
        .await
        .map_err(map)
    }
}

#[async_trait]
impl Barrier for PgBarrier {
    fn name(&self) -> &Name {
        &self.name
    }

    async fn hold(&self) -> Result<()> {
        sqlx::query(
            &self
                .shared
                .sql("INSERT INTO {s}.barriers (name) VALUES ($1) ON CONFLICT (name) DO NOTHING"),
        )
        .bind(self.name.as_str())
        .execute(self.shared.bounded())
        .await
        .map_err(map)?;
        Ok(())
    }

    async fn release(&self) -> Result<()> {
        sqlx::query(&self.shared.sql("DELETE FROM {s}.barriers WHERE name = $1"))
            .bind(self.name.as_str())
            .execute(self.shared.bounded())
            .await
            .map_err(map)?;
        Ok(())
    }

    /// Returns at the first release after the call (even if the barrier is held again
    /// right away, as etcd's recipe, which waits for the key's deletion).
    ///
    /// Waits out connection trouble (see [`distsync_core::raw::retry`]).
    ///
    /// Cancel-safety: cancel-safe; waiting leaves nothing in the store.
    async fn wait(&self) -> Result<()> {
        let payload = format!("b:{}", self.name);
        self.shared
            .hub
            .wait_until(payload, "a barrier release", None, |woke| async move {
                // Only a deletion notifies; after a resync, look again.
                if woke == Some(Wake::Notified) || !self.is_held().await? {
                    Ok(Ready(()))
                } else {
                    Ok(NotYet(None))
                }
            })
            .await
    }
}
