//! The barrier: one key, held while it exists; lowering it publishes a wake-up.

use distsync_core::raw::Make;
use std::sync::Arc;

use async_trait::async_trait;
use distsync_core::raw::Look::{NotYet, Ready};
use distsync_core::{Barrier, Name, Result};

use crate::error::int;
use crate::keys::Kind;
use crate::scripts::SCRIPTS;
use crate::store::Shared;
use crate::waiting;

/// A Redis barrier: the key `{<ns><name>}:barrier` (durable, no TTL) is the hold;
/// `release` deletes it and publishes on `{<ns><name>}:barrier:ch` in one script.
pub(crate) struct RedisBarrier {
    shared: Arc<Shared>,
    name: Name,
    key: String,
}

impl RedisBarrier {
    async fn held(&self) -> Result<bool> {
        let reply = self
            .shared
            .query(redis::cmd("EXISTS").arg(&self.key))
            .await?;
        Ok(int("EXISTS", &reply)? == 1)
    }
}

#[async_trait]
impl Barrier for RedisBarrier {
    fn name(&self) -> &Name {
        &self.name
    }

    async fn hold(&self) -> Result<()> {
        self.shared
            .query(redis::cmd("SET").arg(&self.key).arg("held"))
            .await
            .map(drop)
    }

    async fn release(&self) -> Result<()> {
        let mut call = self.shared.script(&SCRIPTS.barrier_release);
        call.key(&self.key);
        self.shared.eval(&call).await.map(drop)
    }

    /// Cancel-safety: cancel-safe; waiting leaves nothing in the store.
    async fn wait(&self) -> Result<()> {
        let channel = format!("{}:ch", self.key);
        waiting::wait_until(
            &self.shared,
            &channel,
            "barrier wait",
            None,
            |message| async move {
                // A release happened after we subscribed: we may pass even if the barrier
                // was raised again since.
                if message == Some(true) || !self.held().await? {
                    Ok(Ready(()))
                } else {
                    Ok(NotYet(None))
                }
            },
        )
        .await
    }
}

impl Make<Arc<Shared>, Name> for RedisBarrier {
    fn make(shared: &Arc<Shared>, name: Name) -> Result<Self> {
        Ok(Self {
            key: shared.keys.primitive(&name, Kind::Barrier),
            shared: Arc::clone(shared),
            name,
        })
    }
}
