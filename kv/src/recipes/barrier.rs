//! The barrier, as etcd's Go `recipes.Barrier`.
//!
//! Layout: the barrier is held while the key `<ns>/barrier/<escaped name>` exists (empty
//! value, no lease; see [`Kind::prefix`]; Go's recipe uses `<name>` itself). `hold`
//! creates it if absent, `release` deletes it, and `wait` reads it and, if present,
//! watches it for its deletion.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::kv::{Kv, Range, Txn, TxnOp};
use distsync_core::barrier::Barrier;
use distsync_core::error::Result;
use distsync_core::name::Name;

use super::key::{put_new_key, KeySpace, Kind};
use super::wait::{read, wait_delete};

/// A [`Barrier`] over a [`Kv`] store.
pub(crate) struct KvBarrier {
    kv: Arc<dyn Kv>,
    name: Name,
    key: String,
}

impl KvBarrier {
    /// The barrier `name` under `namespace`.
    pub(crate) fn new(kv: Arc<dyn Kv>, space: &KeySpace, name: Name) -> Self {
        Self {
            kv,
            key: space.root(Kind::Barrier, &name),
            name,
        }
    }
}

#[async_trait]
impl Barrier for KvBarrier {
    fn name(&self) -> &Name {
        &self.name
    }

    /// Go's `Hold`: creates the key if absent (an existing hold is kept as is).
    async fn hold(&self) -> Result<()> {
        put_new_key(&*self.kv, &self.key, Bytes::new(), 0).await?;
        Ok(())
    }

    /// Go's `Release`: deletes the key.
    async fn release(&self) -> Result<()> {
        let txn = Txn::default().and_then(vec![TxnOp::delete(&self.key)]);
        self.kv.txn(txn).await?;
        Ok(())
    }

    /// Go's `Wait`: returns at once if the key is absent, else when it is deleted.
    ///
    /// Cancel-safety: cancel-safe; waiting writes nothing.
    async fn wait(&self) -> Result<()> {
        let current = read(&*self.kv, Range::key(&self.key), None).await?;
        match current.kvs.first() {
            None => Ok(()),
            Some(held) => wait_delete(&*self.kv, &self.key, held.create_revision, None).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::recipes::testing::{backend, name, settle, within};
    use distsync_core::Primitives;

    #[tokio::test]
    async fn wait_passes_an_open_barrier_and_blocks_on_a_held_one() {
        let backend = backend();
        let barrier = backend.barrier(name("b")).unwrap();
        within(barrier.wait()).await.unwrap();
        barrier.hold().await.unwrap();
        barrier.hold().await.unwrap();
        let waiter = backend.barrier(name("b")).unwrap();
        let waiting = tokio::spawn(async move { waiter.wait().await });
        settle().await;
        assert!(!waiting.is_finished());
        barrier.release().await.unwrap();
        within(waiting).await.unwrap().unwrap();
    }
}
