//! Watches: replay of retained history from a start revision, then live changes,
//! delivered only to the watchers a change concerns (indexed by key and by prefix).

use std::sync::{Arc, Weak};

use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::store::{Inner, MemoryKv, State};
use super::watchers::WatchStart;
use crate::kv::{EventKind, KeyValue, Revision, WatchEvent, WatchResponse};
use distsync_core::error::{Error, Result};

impl MemoryKv {
    /// Starts a watch ([`Kv::watch`]): the stream holds a registration that removes
    /// the watcher when dropped.
    pub(super) fn open_watch(
        &self,
        key: &str,
        prefix: bool,
        start_revision: Revision,
    ) -> Result<BoxStream<'static, Result<WatchResponse>>> {
        if key.is_empty() && !prefix {
            return Err(Error::InvalidArgument(
                "watch: key is not provided".to_owned(),
            ));
        }
        let mut state = self.inner.current(Instant::now());
        match state.watch(key, prefix, start_revision) {
            WatchStart::Compacted(revision) => {
                Ok(stream::once(async move { Ok(WatchResponse::Compacted(revision)) }).boxed())
            }
            WatchStart::Registered(id, receiver) => {
                let registration = Registration {
                    id,
                    inner: Arc::downgrade(&self.inner),
                };
                Ok(stream::unfold(
                    (receiver, registration),
                    |(mut receiver, registration)| async move {
                        let item = receiver.recv().await?;
                        Some((item, (receiver, registration)))
                    },
                )
                .boxed())
            }
        }
    }
}

impl State {
    /// Starts a watch: replays retained history from `start` and registers for live
    /// changes, or reports that `start` is compacted.
    pub(super) fn watch(&mut self, key: &str, prefix: bool, start: Revision) -> WatchStart {
        let start = if start > 0 {
            start
        } else {
            self.revision.saturating_add(1)
        };
        if start < self.compacted {
            return WatchStart::Compacted(self.compacted);
        }
        let (sender, receiver) = mpsc::unbounded_channel();
        let mut history: Vec<(Revision, usize, WatchEvent)> = Vec::new();
        for (name, entries) in self.matching(key, prefix) {
            let first = entries.partition_point(|entry| entry.revision < start);
            for entry in &entries[first..] {
                let event = match &entry.kv {
                    Some(kv) => WatchEvent {
                        kind: EventKind::Put,
                        kv: kv.clone(),
                    },
                    None => WatchEvent {
                        kind: EventKind::Delete,
                        kv: KeyValue {
                            key: name.clone(),
                            mod_revision: entry.revision,
                            ..KeyValue::default()
                        },
                    },
                };
                history.push((entry.revision, entry.sub, event));
            }
        }
        history.sort_by_key(|(revision, sub, _)| (*revision, *sub));
        // One response per revision, as live delivery sends them.
        let mut history = history.into_iter().peekable();
        while let Some((revision, _, event)) = history.next() {
            let mut events = vec![event];
            while let Some((_, _, event)) = history.next_if(|(next, _, _)| *next == revision) {
                events.push(event);
            }
            // The receiver is alive: it is still in our hands.
            let _ = sender.send(Ok(WatchResponse::Events(events)));
        }
        let id = self.watchers.register(key, prefix, start, sender);
        WatchStart::Registered(id, receiver)
    }
}

/// Removes a watcher from the registry when its stream is dropped.
pub(super) struct Registration {
    id: u64,
    inner: Weak<Inner>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            inner.lock().watchers.remove(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use futures::{FutureExt, StreamExt};

    use super::super::test_support::*;
    use super::super::MemoryKv;
    use super::*;
    use crate::kv::{Kv, Txn, TxnOp};
    use distsync_core::error::Error;

    #[tokio::test]
    async fn watch_replays_history_then_delivers_live_events() {
        let kv = MemoryKv::new();
        put_one(&kv, "w/a", "1").await; // 2
        put_one(&kv, "x", "1").await; // 3
        kv.txn(Txn::default().and_then(vec![put("w/b", "1"), TxnOp::delete("w/a")]))
            .await
            .unwrap(); // 4

        let mut watch = kv.watch("w/", true, 2).await.unwrap();
        assert_eq!(
            events(watch.next().await.unwrap().unwrap()),
            [(EventKind::Put, "w/a".to_owned(), 2)]
        );
        // One transaction, one response, in the transaction's order.
        assert_eq!(
            events(watch.next().await.unwrap().unwrap()),
            [
                (EventKind::Put, "w/b".to_owned(), 4),
                (EventKind::Delete, "w/a".to_owned(), 4)
            ]
        );
        assert!(watch.next().now_or_never().is_none(), "history is done");

        put_one(&kv, "w/c", "1").await; // 5
        let live = watch.next().await.unwrap().unwrap();
        let WatchResponse::Events(live) = live else {
            panic!("expected events");
        };
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].kv.key, "w/c");
        assert_eq!((live[0].kv.create_revision, live[0].kv.version), (5, 1));
        assert_eq!(live[0].kv.value, Bytes::from("1"));

        // A delete event carries the key and the deletion revision, nothing else.
        kv.txn(Txn::default().and_then(vec![TxnOp::Delete {
            key: "w/".to_owned(),
            prefix: true,
        }]))
        .await
        .unwrap(); // 6
        let WatchResponse::Events(deleted) = watch.next().await.unwrap().unwrap() else {
            panic!("expected events");
        };
        assert_eq!(deleted.len(), 2);
        assert_eq!(
            deleted[0],
            WatchEvent {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key: "w/b".to_owned(),
                    mod_revision: 6,
                    ..KeyValue::default()
                }
            }
        );
        assert_eq!(deleted[1].kv.key, "w/c");
    }

    #[tokio::test]
    async fn watch_of_one_key_from_now_and_from_the_future() {
        let kv = MemoryKv::new();
        put_one(&kv, "k", "1").await; // 2
                                      // 0 means "from the next revision".
        let mut from_now = kv.watch("k", false, 0).await.unwrap();
        let mut from_future = kv.watch("k", false, 4).await.unwrap();
        put_one(&kv, "k2", "1").await; // 3: another key, even with a common prefix
        put_one(&kv, "k", "2").await; // 4
        assert_eq!(
            events(from_now.next().await.unwrap().unwrap()),
            [(EventKind::Put, "k".to_owned(), 4)]
        );
        assert_eq!(
            events(from_future.next().await.unwrap().unwrap()),
            [(EventKind::Put, "k".to_owned(), 4)]
        );
        let mut late = kv.watch("k", false, 5).await.unwrap();
        put_one(&kv, "k", "3").await; // 5
        assert_eq!(
            events(late.next().await.unwrap().unwrap()),
            [(EventKind::Put, "k".to_owned(), 5)]
        );
        assert!(matches!(
            kv.watch("", false, 0).await,
            Err(Error::InvalidArgument(_))
        ));
    }

    #[tokio::test]
    async fn watch_from_a_compacted_revision_reports_it_and_ends() {
        let kv = MemoryKv::new();
        for value in ["1", "2", "3"] {
            put_one(&kv, "k", value).await;
        }
        kv.compact(3).unwrap();
        let mut watch = kv.watch("k", false, 2).await.unwrap();
        assert_eq!(
            watch.next().await.unwrap().unwrap(),
            WatchResponse::Compacted(3)
        );
        assert!(watch.next().await.is_none());
        // From the compaction point itself, history replays.
        let mut watch = kv.watch("k", false, 3).await.unwrap();
        assert_eq!(
            events(watch.next().await.unwrap().unwrap()),
            [(EventKind::Put, "k".to_owned(), 3)]
        );
    }

    #[tokio::test]
    async fn only_matching_watchers_are_woken_and_dropped_ones_are_forgotten() {
        let kv = MemoryKv::new();
        let mut exact = kv.watch("a/1", false, 0).await.unwrap();
        let mut prefix = kv.watch("a/", true, 0).await.unwrap();
        let mut other = kv.watch("b/", true, 0).await.unwrap();
        let mut everything = kv.watch("", true, 0).await.unwrap();
        assert_eq!(watcher_count(&kv), 4);

        put_one(&kv, "a/2", "1").await;
        assert_eq!(events(prefix.next().await.unwrap().unwrap())[0].1, "a/2");
        assert_eq!(
            events(everything.next().await.unwrap().unwrap())[0].1,
            "a/2"
        );
        assert!(exact.next().now_or_never().is_none());
        assert!(other.next().now_or_never().is_none());

        put_one(&kv, "a/1", "1").await;
        assert_eq!(events(exact.next().await.unwrap().unwrap())[0].1, "a/1");
        assert_eq!(events(prefix.next().await.unwrap().unwrap())[0].1, "a/1");
        assert!(other.next().now_or_never().is_none());

        // Nothing is queued for watchers a change does not concern.
        assert_eq!(kv.inner.lock().watchers.matching("a/1").count(), 3);
        assert_eq!(kv.inner.lock().watchers.matching("c").count(), 1);

        drop(exact);
        drop(other);
        assert_eq!(watcher_count(&kv), 2);
        assert!(!kv.inner.lock().watchers.by_key.contains_key("a/1"));
        assert!(!kv.inner.lock().watchers.by_prefix.contains_key("b/"));
    }
}
