//! The durable queue, as etcd's Go `recipes.PriorityQueue` (a plain `enqueue` is
//! priority 0, so a queue used only with `enqueue` is FIFO).
//!
//! Layout: an item is the key `<ns><name>/<priority as %05d>/<sequence as %016d>`
//! holding the item (no lease). The sequence is one more than the last key of that
//! priority, allocated by Go's `newSequentialKV`: a transaction that also touches the
//! guard key `__<ns><name>/<priority as %05d>` and only succeeds if that guard was not
//! touched since the read, so two producers never take one number. A consumer claims
//! the first item in key order (lowest priority number, then oldest) by deleting it
//! guarded on its mod revision, and retries on contention. A consumer with nothing to
//! take watches the prefix for puts.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::kv::{Compare, CompareOp, EventKind, KeyValue, Kv, Range, Txn, TxnOp};
use crate::name::Name;
use crate::queue::Queue;

use super::wait::next_event;

/// A [`Queue`] over a [`Kv`] store.
pub(crate) struct KvQueue {
    kv: Arc<dyn Kv>,
    name: Name,
    prefix: String,
}

impl KvQueue {
    /// The queue `name` under `namespace`.
    pub(crate) fn new(kv: Arc<dyn Kv>, namespace: &str, name: Name) -> Self {
        Self {
            kv,
            prefix: format!("{namespace}{name}/"),
            name,
        }
    }

    /// The range of this queue's item keys, `[<ns><name>/00000/, <ns><name>/65536)`:
    /// every priority, but not the keys of a queue nested under this name (`a/b`
    /// beside `a`) unless the nested name's first segment starts with five digits.
    fn items(&self) -> Range {
        Range::between(
            format!("{}{:05}/", self.prefix, u16::MIN),
            format!("{}{}", self.prefix, u32::from(u16::MAX) + 1),
        )
    }

    /// Go's `PriorityQueue.Dequeue` (`wait`), or its non-waiting form.
    async fn take(&self, wait: bool) -> Result<Option<Bytes>> {
        loop {
            let response = self.kv.range(self.items().first_key()).await?;
            if let Some(first) = response.kvs.into_iter().next() {
                if let Some(item) = claim(&self.kv, first).await? {
                    return Ok(Some(item));
                }
                // Another consumer took it first: read the new first item.
                continue;
            }
            if !wait {
                return Ok(None);
            }
            // Whatever arrives (or a watch that ended), read the first item again, so
            // that a higher-priority item put in the same batch goes first.
            next_event(
                &*self.kv,
                &self.prefix,
                true,
                response.revision + 1,
                EventKind::Put,
                None,
            )
            .await?;
        }
    }
}

/// Go's `newSequentialKV`: puts `value` at `<seq_prefix>/<next sequence>`.
async fn put_sequential(kv: &dyn Kv, seq_prefix: &str, value: Bytes) -> Result<()> {
    let guard_key = format!("__{seq_prefix}");
    loop {
        let last = kv.range(Range::prefix(seq_prefix).last_key()).await?;
        let next = match last.kvs.first() {
            None => 0,
            Some(last) => sequence_of(kv, &last.key)?.saturating_add(1),
        };
        let key = format!("{seq_prefix}/{next:016}");
        // The guard key must not have changed since the read (see the module docs).
        let txn = Txn::when(vec![Compare::mod_revision(
            &guard_key,
            CompareOp::Less,
            last.revision + 1,
        )])
        .and_then(vec![
            TxnOp::put(&guard_key, Bytes::new(), 0),
            TxnOp::put(key, value.clone(), 0),
        ]);
        if kv.txn(txn).await?.succeeded {
            return Ok(());
        }
    }
}

/// The sequence number in the last segment of an item key (Go's `Sscanf("%d")`).
fn sequence_of(kv: &dyn Kv, key: &str) -> Result<u64> {
    key.rsplit('/')
        .next()
        .and_then(|segment| segment.parse::<u64>().ok())
        .ok_or_else(|| {
            Error::backend(
                kv.backend(),
                format!("queue key {key:?} does not end with a sequence number"),
            )
        })
}

/// Claims `item` by deleting it guarded on its mod revision: `Some(value)` if this
/// call took it, `None` if another consumer did.
///
/// The delete runs in a spawned task and its outcome comes back through a channel
/// inside a [`Claimed`], which puts the item back if nobody receives it: a caller that
/// drops the dequeue future while the delete is in flight loses no item.
async fn claim(kv: &Arc<dyn Kv>, item: KeyValue) -> Result<Option<Bytes>> {
    let (answer, outcome) = oneshot::channel::<Result<Option<Claimed>>>();
    let store = Arc::clone(kv);
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|error| Error::backend(kv.backend(), error))?;
    runtime.spawn(async move {
        let txn = Txn::when(vec![Compare::mod_revision(
            &item.key,
            CompareOp::Equal,
            item.mod_revision,
        )])
        .and_then(vec![TxnOp::delete(&item.key)]);
        let result = match store.txn(txn).await {
            Ok(response) if response.succeeded => Ok(Some(Claimed {
                kv: Some(store),
                item: Some(item),
            })),
            Ok(_) => Ok(None),
            Err(error) => Err(error),
        };
        // A send to a dropped receiver hands the value back, which drops it here and
        // puts the item back.
        drop(answer.send(result));
    });
    match outcome.await {
        Ok(result) => Ok(result?.map(Claimed::deliver)),
        Err(_) => Err(Error::backend(
            kv.backend(),
            "queue claim task ended without an answer",
        )),
    }
}

/// An item deleted from the store on behalf of a consumer. Dropped undelivered (the
/// consumer went away), it is put back under its own key (or, if that key was reused
/// meanwhile, at the back of its priority).
struct Claimed {
    kv: Option<Arc<dyn Kv>>,
    item: Option<KeyValue>,
}

impl Claimed {
    fn deliver(mut self) -> Bytes {
        self.kv = None;
        self.item.take().map(|item| item.value).unwrap_or_default()
    }
}

impl Drop for Claimed {
    fn drop(&mut self) {
        let (Some(kv), Some(item)) = (self.kv.take(), self.item.take()) else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(error) = put_back(&*kv, &item).await {
                        tracing::error!(key = %item.key, %error, "putting back an undelivered queue item failed; the item is lost");
                    }
                });
            }
            Err(_) => {
                tracing::error!(key = %item.key, "undelivered queue item dropped outside a runtime; the item is lost");
            }
        }
    }
}

/// Restores an undelivered item: under its own key if still free (also touching the
/// priority's guard key, so that no producer allocates that key concurrently), else
/// as a new item of the same priority.
async fn put_back(kv: &dyn Kv, item: &KeyValue) -> Result<()> {
    let Some((seq_prefix, _)) = item.key.rsplit_once('/') else {
        return Err(Error::backend(kv.backend(), "queue key without a sequence"));
    };
    let txn = Txn::when(vec![Compare::create_revision(
        &item.key,
        CompareOp::Equal,
        0,
    )])
    .and_then(vec![
        TxnOp::put(format!("__{seq_prefix}"), Bytes::new(), 0),
        TxnOp::put(&item.key, item.value.clone(), 0),
    ]);
    if kv.txn(txn).await?.succeeded {
        tracing::debug!(key = %item.key, "undelivered queue item put back");
        return Ok(());
    }
    put_sequential(kv, seq_prefix, item.value.clone()).await
}

#[async_trait]
impl Queue for KvQueue {
    fn name(&self) -> &Name {
        &self.name
    }

    /// Go's `PriorityQueue.Enqueue`.
    ///
    /// Cancel-safety: dropping the future leaves the item either queued once or not
    /// at all.
    async fn enqueue_with_priority(&self, item: Bytes, priority: u16) -> Result<()> {
        put_sequential(&*self.kv, &format!("{}{priority:05}", self.prefix), item).await
    }

    /// Takes the first item, waiting for puts under the prefix while there is none.
    ///
    /// Cancel-safety: cancel-safe. The claiming delete runs in a spawned task; if this
    /// future is dropped before the item is handed over, the item is put back.
    async fn dequeue(&self) -> Result<Bytes> {
        match self.take(true).await? {
            Some(item) => Ok(item),
            None => Err(Error::backend(
                self.kv.backend(),
                "dequeue returned without an item",
            )),
        }
    }

    /// Takes the first item if there is one.
    ///
    /// Cancel-safety: as [`KvQueue::dequeue`].
    async fn try_dequeue(&self) -> Result<Option<Bytes>> {
        self.take(false).await
    }

    /// The number of item keys (see [`KvQueue::items`]).
    async fn len(&self) -> Result<usize> {
        let mut range = self.items();
        range.limit = Some(1);
        Ok(self.kv.range(range).await?.count)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use bytes::Bytes;

    use crate::backend::Backend;
    use crate::kv::{Kv, Range};
    use crate::recipes::testing::{backend, name, settle, within};

    #[tokio::test]
    async fn a_nested_queue_keeps_its_items() {
        let backend = backend();
        let outer = backend.queue(name("jobs")).unwrap();
        let nested = backend.queue(name("jobs/urgent")).unwrap();
        nested.enqueue(Bytes::from("nested")).await.unwrap();
        outer
            .enqueue_with_priority(Bytes::from("outer"), 7)
            .await
            .unwrap();
        assert_eq!(outer.len().await.unwrap(), 1);
        assert_eq!(nested.len().await.unwrap(), 1);
        assert_eq!(outer.try_dequeue().await.unwrap().unwrap(), "outer");
        assert_eq!(outer.try_dequeue().await.unwrap(), None);
        assert_eq!(nested.try_dequeue().await.unwrap().unwrap(), "nested");
    }

    #[tokio::test]
    async fn priority_then_fifo_in_gos_layout() {
        let backend = backend();
        let q = backend.queue(name("jobs")).unwrap();
        q.enqueue_with_priority("low-1".into(), 7).await.unwrap();
        q.enqueue("high-1".into()).await.unwrap();
        q.enqueue_with_priority("low-2".into(), 7).await.unwrap();
        q.enqueue("high-2".into()).await.unwrap();
        assert_eq!(q.len().await.unwrap(), 4);
        let keys: Vec<String> = backend
            .kv()
            .range(Range::prefix("jobs/"))
            .await
            .unwrap()
            .kvs
            .into_iter()
            .map(|kv| kv.key)
            .collect();
        assert_eq!(
            keys,
            [
                "jobs/00000/0000000000000000",
                "jobs/00000/0000000000000001",
                "jobs/00007/0000000000000000",
                "jobs/00007/0000000000000001",
            ]
        );
        for expected in ["high-1", "high-2", "low-1", "low-2"] {
            assert_eq!(q.try_dequeue().await.unwrap().unwrap(), expected);
        }
        assert!(q.try_dequeue().await.unwrap().is_none());
        assert!(q.is_empty().await.unwrap());
    }

    #[tokio::test]
    async fn dequeue_waits_for_an_item() {
        let backend = backend();
        let consumer = backend.queue(name("q")).unwrap();
        let waiting = tokio::spawn(async move { consumer.dequeue().await });
        settle().await;
        assert!(!waiting.is_finished());
        backend
            .queue(name("q"))
            .unwrap()
            .enqueue("x".into())
            .await
            .unwrap();
        assert_eq!(within(waiting).await.unwrap().unwrap(), "x");
    }

    #[tokio::test]
    async fn a_dequeue_dropped_mid_claim_puts_the_item_back_in_front() {
        let backend = backend();
        let q = backend.queue(name("q")).unwrap();
        q.enqueue("x".into()).await.unwrap();
        q.enqueue("y".into()).await.unwrap();
        let key = "q/00000/0000000000000000";
        let created = |kv: &crate::memory::MemoryKv| {
            let kv = kv.clone();
            async move { kv.range(Range::key(key)).await.unwrap().kvs[0].create_revision }
        };
        let before = created(backend.kv()).await;
        {
            // Polled without letting the spawned claim run, then dropped: the claim
            // completes afterwards with nobody to hand the item to.
            let dequeue = q.dequeue();
            futures::pin_mut!(dequeue);
            for _ in 0..8 {
                assert!(futures::poll!(dequeue.as_mut()).is_pending());
            }
        }
        settle().await;
        assert_eq!(q.len().await.unwrap(), 2);
        assert!(
            created(backend.kv()).await > before,
            "the item was claimed and put back"
        );
        assert_eq!(q.try_dequeue().await.unwrap().unwrap(), "x");
        assert_eq!(q.try_dequeue().await.unwrap().unwrap(), "y");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_consumers_take_each_item_once() {
        let backend = std::sync::Arc::new(backend());
        const PRODUCERS: usize = 3;
        const ITEMS: usize = 30;
        let mut producers = Vec::new();
        for p in 0..PRODUCERS {
            let q = backend.queue(name("q")).unwrap();
            producers.push(tokio::spawn(async move {
                for i in 0..ITEMS {
                    q.enqueue(Bytes::from(format!("{p}-{i}"))).await.unwrap();
                }
            }));
        }
        let mut consumers = Vec::new();
        for c in 0..3 {
            let q = backend.queue(name("q")).unwrap();
            consumers.push(tokio::spawn(async move {
                let mut taken = Vec::new();
                for attempt in 0..PRODUCERS * ITEMS {
                    if attempt % 3 == c {
                        // Abandon a dequeue part-way now and then.
                        let dequeue = q.dequeue();
                        futures::pin_mut!(dequeue);
                        if let std::task::Poll::Ready(item) = futures::poll!(dequeue.as_mut()) {
                            taken.push(item.unwrap());
                        }
                        continue;
                    }
                    match q.try_dequeue().await.unwrap() {
                        Some(item) => taken.push(item),
                        None => tokio::task::yield_now().await,
                    }
                }
                taken
            }));
        }
        for producer in producers {
            within(producer).await.unwrap();
        }
        let mut taken = Vec::new();
        for consumer in consumers {
            taken.extend(within(consumer).await.unwrap());
        }
        let q = backend.queue(name("q")).unwrap();
        // Put-backs of abandoned claims run in the background: drain until all arrive.
        within(async {
            while taken.len() < PRODUCERS * ITEMS {
                match q.try_dequeue().await.unwrap() {
                    Some(item) => taken.push(item),
                    None => tokio::task::yield_now().await,
                }
            }
        })
        .await;
        let distinct: BTreeSet<_> = taken.iter().cloned().collect();
        assert_eq!(distinct.len(), taken.len(), "an item was delivered twice");
        assert_eq!(taken.len(), PRODUCERS * ITEMS);
        assert!(q.try_dequeue().await.unwrap().is_none());
    }
}
