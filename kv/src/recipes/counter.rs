//! The shared counter over a [`Kv`] store.
//!
//! Layout: one key `<ns>/counter/<escaped name>` (no lease), its value the decimal
//! value; absent reads 0. Every change is a transaction comparing the key's mod
//! revision (version 0 while absent) with the one just read, so a change applies
//! only to the value it was computed from; a failed compare writes nothing and is
//! retried from a fresh read. A transaction whose reply is lost is never repeated
//! (the store client sends a mutation once), so an `add` is applied at most once.
//!
//! Waiting for a change ([`Counter::changed`]) reads the key, then watches it from the
//! revision after that read, so a write made between the read and the watch is still
//! an event: nothing is missed, and a waiter costs the store one watch (multiplexed on
//! etcd's watch stream) and one read per change. A watch that ends (cancelled by the
//! store, compacted, or its connection lost) is followed by a fresh read and a new
//! watch, and so is every [`CHANGED_SAFETY_NET`] without an event, in case a watch on a
//! member cut off from the cluster stays silent.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use super::wait;
use crate::kv::{Compare, CompareOp, Kv, Range, RangeResponse, Txn, TxnOp};
use distsync_core::counter::{checked_add, Counter, CHANGED_SAFETY_NET};
use distsync_core::error::{Error, Result};
use distsync_core::name::Name;
use distsync_core::raw::{Look, RetryPolicy};

use super::key::{escape, KeySpace};

/// The key of the counter `name`: after `<ns>/`, where no lock or election key
/// reaches, with its own kind segment, so no other primitive shares it.
pub(crate) fn counter_key(space: &KeySpace, name: &Name) -> String {
    format!("{}/counter/{}", space.namespace(), escape(name.as_str()))
}

/// A [`Counter`] over a [`Kv`] store.
pub(crate) struct KvCounter {
    kv: Arc<dyn Kv>,
    name: Name,
    key: String,
}

/// The value read and the compare that a write computed from it must pass.
struct Read {
    value: i64,
    guard: Compare,
}

impl KvCounter {
    pub(crate) fn new(kv: Arc<dyn Kv>, space: &KeySpace, name: Name) -> Self {
        Self {
            kv,
            key: counter_key(space, &name),
            name,
        }
    }

    async fn read(&self) -> Result<Read> {
        let response = self.kv.range(Range::key(&self.key)).await?;
        self.read_from(&response)
    }

    /// The value and the write guard in a range answer for the key.
    fn read_from(&self, response: &RangeResponse) -> Result<Read> {
        Ok(match response.kvs.first() {
            None => Read {
                value: 0,
                guard: Compare::version(&self.key, CompareOp::Equal, 0),
            },
            Some(found) => Read {
                value: parse(self.kv.backend(), &self.name, &found.value)?,
                guard: Compare::mod_revision(&self.key, CompareOp::Equal, found.mod_revision),
            },
        })
    }

    /// Applies `change` to the current value until one compare-guarded write
    /// succeeds, and returns what `change` returned for it (`None`: write nothing).
    async fn update<T>(
        &self,
        mut change: impl FnMut(i64) -> Result<(Option<i64>, T)>,
    ) -> Result<T> {
        loop {
            let read = self.read().await?;
            let (new, answer) = change(read.value)?;
            let Some(new) = new else {
                return Ok(answer);
            };
            let write = TxnOp::put(&self.key, new.to_string(), 0);
            let txn = Txn::when(vec![read.guard]).and_then(vec![write]);
            if self.kv.txn(txn).await?.succeeded {
                return Ok(answer);
            }
            tracing::trace!(key = %self.key, "counter changed under us; re-reading");
        }
    }
}

/// A stored counter value; anything but a decimal `i64` is a typed error.
pub(super) fn parse(backend: &'static str, name: &Name, value: &Bytes) -> Result<i64> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| {
            Error::backend(
                backend,
                format!(
                    "counter {:?} holds a value that is not an integer",
                    name.as_str()
                ),
            )
        })
}

#[async_trait]
impl Counter for KvCounter {
    fn name(&self) -> &Name {
        &self.name
    }

    async fn get(&self) -> Result<i64> {
        Ok(self.read().await?.value)
    }

    async fn add(&self, delta: i64) -> Result<i64> {
        let name = self.name.clone();
        self.update(|current| {
            let new = checked_add(&name, current, delta)?;
            Ok((Some(new), new))
        })
        .await
    }

    async fn compare_and_set(&self, expected: i64, new: i64) -> Result<bool> {
        self.update(|current| {
            Ok(if current == expected {
                (Some(new), true)
            } else {
                (None, false)
            })
        })
        .await
    }

    async fn set(&self, value: i64) -> Result<()> {
        self.kv
            .txn(Txn::default().and_then(vec![TxnOp::put(&self.key, value.to_string(), 0)]))
            .await?;
        Ok(())
    }

    /// Reads, and while the value is `seen`, watches the key from the revision after
    /// the read until an event, the watch's end or [`CHANGED_SAFETY_NET`], then reads
    /// again (see the module docs). Transient errors are waited out.
    ///
    /// Cancel safety: cancel safe; it only reads and watches.
    async fn changed(&self, seen: i64) -> Result<i64> {
        RetryPolicy::default()
            .wait_until("a counter change", None, || async {
                let response = wait::read(&*self.kv, Range::key(&self.key), None).await?;
                let value = self.read_from(&response)?.value;
                if value != seen {
                    return Ok(Look::Ready(value));
                }
                let from = response.revision + 1;
                Ok(Look::NotYet(async move {
                    let mut watch = wait::watch(&*self.kv, &self.key, false, from, None).await?;
                    tokio::select! {
                        event = watch.next() => match event {
                            Some(event) => event.map(drop),
                            None => {
                                tracing::debug!(key = %self.key, "counter watch ended; re-reading");
                                Ok(())
                            }
                        },
                        () = tokio::time::sleep(CHANGED_SAFETY_NET) => {
                            tracing::trace!(key = %self.key, "no event within the safety net");
                            Ok(())
                        }
                    }
                }))
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use distsync_core::Coordinator;

    use crate::memory::MemoryBackend;

    #[tokio::test]
    async fn concurrent_adds_are_never_lost() {
        let coordinator = Coordinator::new(MemoryBackend::new());
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let counter = coordinator.counter("c").unwrap();
            tasks.push(tokio::spawn(async move {
                for _ in 0..25 {
                    counter.add(2).await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(coordinator.counter("c").unwrap().get().await.unwrap(), 400);
    }

    #[tokio::test]
    async fn overflow_changes_nothing() {
        let coordinator = Coordinator::new(MemoryBackend::new());
        let counter = coordinator.counter("c").unwrap();
        counter.set(i64::MAX - 1).await.unwrap();
        assert!(counter.add(2).await.is_err());
        assert_eq!(counter.get().await.unwrap(), i64::MAX - 1);
        assert_eq!(counter.add(1).await.unwrap(), i64::MAX);
    }

    #[tokio::test]
    async fn a_waiter_sees_each_change_through_the_watch() {
        let coordinator = Coordinator::new(MemoryBackend::new());
        let writer = coordinator.counter("c").unwrap();
        let waiter = coordinator.counter("c").unwrap();
        let bound = std::time::Duration::from_secs(2);
        let mut seen = 0;
        for round in 1..=3 {
            let watching = {
                let waiter = waiter.clone();
                tokio::spawn(async move { waiter.changed(seen).await })
            };
            // A write of the same value is no change: only the add's value is returned.
            writer.set(seen).await.unwrap();
            writer.add(round).await.unwrap();
            // Far below the safety net: the watch woke the waiter.
            let value = tokio::time::timeout(bound, watching).await.unwrap();
            seen += round;
            assert_eq!(value.unwrap().unwrap(), seen);
        }
        assert_eq!(
            tokio::time::timeout(bound, waiter.changed(0))
                .await
                .unwrap()
                .unwrap(),
            seen
        );
    }

    #[tokio::test]
    async fn one_of_racing_swaps_wins() {
        let coordinator = Coordinator::new(MemoryBackend::new());
        let mut tasks = Vec::new();
        for i in 1..=6 {
            let counter = coordinator.counter("c").unwrap();
            tasks.push(tokio::spawn(
                async move { counter.compare_and_set(0, i).await },
            ));
        }
        let mut wins = 0;
        for task in tasks {
            wins += usize::from(task.await.unwrap().unwrap());
        }
        assert_eq!(wins, 1);
        assert_ne!(coordinator.counter("c").unwrap().get().await.unwrap(), 0);
    }
}
