//! The count-down latch over a [`Kv`] store.
//!
//! Layout: one key `<ns>/latch/<escaped name>` (no lease), its value
//! `<initial count> <remaining count>` in decimal. The first `count_down` creates it
//! with a transaction guarded by `version == 0`, so of two processes racing to create
//! it one creates and the other's compare fails, re-reads and joins (or is told the
//! counts disagree). Each decrement compares the mod revision it read, as the
//! counter's adds do. `wait` reads and watches the key from the read's revision, so
//! the put that opens the latch is never missed.

use std::sync::Arc;

use async_trait::async_trait;

use crate::kv::{Compare, CompareOp, EventKind, KeyValue, Kv, Range, Txn, TxnOp};
use distsync_core::error::{Error, Result};
use distsync_core::latch::{check_initial_count, CountDownLatch};
use distsync_core::name::Name;

use super::key::{escape, KeySpace};
use super::wait::{next_event, read};

/// The key of the latch `name`, in its own kind segment after `<ns>/`.
pub(crate) fn latch_key(space: &KeySpace, name: &Name) -> String {
    format!("{}/latch/{}", space.namespace(), escape(name.as_str()))
}

/// A [`CountDownLatch`] over a [`Kv`] store.
pub(crate) struct KvLatch {
    kv: Arc<dyn Kv>,
    name: Name,
    key: String,
    initial: u64,
}

/// A stored latch: `(initial, remaining)`.
pub(super) fn parse(backend: &'static str, name: &Name, value: &[u8]) -> Result<(u64, u64)> {
    let parsed = std::str::from_utf8(value).ok().and_then(|text| {
        let (initial, remaining) = text.split_once(' ')?;
        let initial: u64 = initial.parse().ok()?;
        let remaining: u64 = remaining.parse().ok()?;
        (remaining <= initial).then_some((initial, remaining))
    });
    parsed.ok_or_else(|| {
        Error::backend(
            backend,
            format!(
                "latch {:?} holds a value that is not a latch",
                name.as_str()
            ),
        )
    })
}

fn encode(initial: u64, remaining: u64) -> String {
    format!("{initial} {remaining}")
}

impl KvLatch {
    pub(crate) fn new(kv: Arc<dyn Kv>, space: &KeySpace, name: Name, initial: u64) -> Self {
        Self {
            kv,
            key: latch_key(space, &name),
            name,
            initial,
        }
    }

    /// The remaining count of the stored latch `found` (the initial count while it is
    /// absent), after checking its initial count.
    fn remaining(&self, found: Option<&KeyValue>) -> Result<u64> {
        let Some(found) = found else {
            return Ok(self.initial);
        };
        let (initial, remaining) = parse(self.kv.backend(), &self.name, &found.value)?;
        check_initial_count(&self.name, self.initial, initial)?;
        Ok(remaining)
    }
}

#[async_trait]
impl CountDownLatch for KvLatch {
    fn name(&self) -> &Name {
        &self.name
    }

    fn initial_count(&self) -> u64 {
        self.initial
    }

    async fn count(&self) -> Result<u64> {
        let response = self.kv.range(Range::key(&self.key)).await?;
        self.remaining(response.kvs.first())
    }

    async fn count_down(&self) -> Result<u64> {
        loop {
            let response = self.kv.range(Range::key(&self.key)).await?;
            let found = response.kvs.first();
            let remaining = self.remaining(found)?;
            let guard = match found {
                None => Compare::version(&self.key, CompareOp::Equal, 0),
                Some(found) => {
                    Compare::mod_revision(&self.key, CompareOp::Equal, found.mod_revision)
                }
            };
            if remaining == 0 && found.is_some() {
                return Ok(0);
            }
            let left = remaining.saturating_sub(1);
            let txn = Txn::when(vec![guard]).and_then(vec![TxnOp::put(
                &self.key,
                encode(self.initial, left),
                0,
            )]);
            if self.kv.txn(txn).await?.succeeded {
                return Ok(left);
            }
            tracing::trace!(key = %self.key, "latch changed under us; re-reading");
        }
    }

    async fn wait(&self) -> Result<()> {
        loop {
            let current = read(&*self.kv, Range::key(&self.key), None).await?;
            let remaining = self.remaining(current.kvs.first())?;
            if remaining == 0 {
                return Ok(());
            }
            // Any put (a decrement, the creation) or the watch ending: read again.
            let from = current.revision + 1;
            next_event(&*self.kv, &self.key, false, from, EventKind::Put, None).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use distsync_core::{Coordinator, Error};

    use crate::memory::MemoryBackend;

    #[tokio::test]
    async fn waiters_are_released_at_zero_only() {
        let coordinator = Coordinator::new(MemoryBackend::new());
        let latch = coordinator.latch("l", 2).unwrap();
        let waiter = {
            let latch = coordinator.latch("l", 2).unwrap();
            tokio::spawn(async move { latch.wait().await })
        };
        assert_eq!(latch.count_down().await.unwrap(), 1);
        assert!(
            distsync_core::timeout(Duration::from_millis(100), latch.wait())
                .await
                .unwrap_err()
                .is_timeout()
        );
        assert!(!waiter.is_finished());
        assert_eq!(latch.count_down().await.unwrap(), 0);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("released")
            .unwrap()
            .unwrap();
        assert_eq!(latch.count_down().await.unwrap(), 0);
        assert_eq!(latch.count().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn another_count_is_refused() {
        let coordinator = Coordinator::new(MemoryBackend::new());
        assert_eq!(coordinator.latch("l", 3).unwrap().count().await.unwrap(), 3);
        coordinator
            .latch("l", 3)
            .unwrap()
            .count_down()
            .await
            .unwrap();
        let other = coordinator.latch("l", 4).unwrap();
        assert!(matches!(
            other.count().await,
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            other.count_down().await,
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(coordinator.latch("l", 3).unwrap().count().await.unwrap(), 2);
    }

    #[tokio::test]
    async fn a_latch_of_zero_is_open() {
        let coordinator = Coordinator::new(MemoryBackend::new());
        let latch = coordinator.latch("l", 0).unwrap();
        latch.wait().await.unwrap();
        assert_eq!(latch.count_down().await.unwrap(), 0);
    }
}
