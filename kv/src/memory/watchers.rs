//! The registry of watchers the store's state holds, indexed by exact key and by
//! prefix so that a change wakes only the watchers it concerns.

use std::collections::{BTreeMap, HashMap};

use tokio::sync::mpsc;

use crate::kv::{Revision, WatchEvent, WatchResponse};
use distsync_core::error::Result;

/// How a watch started.
pub(super) enum WatchStart {
    /// Its start revision is compacted away: the compaction point.
    Compacted(Revision),
    /// Registered under this id; history already queued on the receiver.
    Registered(u64, mpsc::UnboundedReceiver<Result<WatchResponse>>),
}

/// A registered watcher.
pub(super) struct Watcher {
    key: String,
    prefix: bool,
    /// Changes before this revision are not sent.
    start: Revision,
    sender: mpsc::UnboundedSender<Result<WatchResponse>>,
}

/// The watchers, indexed by exact key and by prefix, so a change wakes only the
/// watchers it concerns.
#[derive(Default)]
pub(super) struct Watchers {
    next_id: u64,
    watchers: HashMap<u64, Watcher>,
    pub(super) by_key: HashMap<String, Vec<u64>>,
    pub(super) by_prefix: HashMap<String, Vec<u64>>,
}

impl Watchers {
    /// How many watchers are registered.
    pub(super) fn len(&self) -> usize {
        self.watchers.len()
    }

    pub(super) fn register(
        &mut self,
        key: &str,
        prefix: bool,
        start: Revision,
        sender: mpsc::UnboundedSender<Result<WatchResponse>>,
    ) -> u64 {
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        let index = if prefix {
            &mut self.by_prefix
        } else {
            &mut self.by_key
        };
        index.entry(key.to_owned()).or_default().push(id);
        self.watchers.insert(
            id,
            Watcher {
                key: key.to_owned(),
                prefix,
                start,
                sender,
            },
        );
        id
    }

    pub(super) fn remove(&mut self, id: u64) {
        let Some(watcher) = self.watchers.remove(&id) else {
            return;
        };
        let index = if watcher.prefix {
            &mut self.by_prefix
        } else {
            &mut self.by_key
        };
        if let Some(ids) = index.get_mut(&watcher.key) {
            ids.retain(|other| *other != id);
            if ids.is_empty() {
                index.remove(&watcher.key);
            }
        }
    }

    /// The ids of the watchers a change to `key` concerns.
    pub(super) fn matching<'a>(&'a self, key: &'a str) -> impl Iterator<Item = u64> + 'a {
        let exact = self.by_key.get(key).into_iter().flatten().copied();
        let prefixes = (0..=key.len())
            .filter(|end| key.is_char_boundary(*end))
            .filter_map(|end| self.by_prefix.get(&key[..end]))
            .flatten()
            .copied();
        exact.chain(prefixes)
    }

    /// Sends one transaction's events to the watchers they concern, one response per
    /// watcher, and forgets watchers whose stream is gone.
    pub(super) fn deliver(&mut self, revision: Revision, events: &[WatchEvent]) {
        if self.watchers.is_empty() {
            return;
        }
        let mut batches: BTreeMap<u64, Vec<WatchEvent>> = BTreeMap::new();
        for event in events {
            for id in self.matching(&event.kv.key) {
                batches.entry(id).or_default().push(event.clone());
            }
        }
        let mut closed = Vec::new();
        for (id, events) in batches {
            let Some(watcher) = self.watchers.get(&id) else {
                continue;
            };
            if revision < watcher.start {
                continue;
            }
            if watcher
                .sender
                .send(Ok(WatchResponse::Events(events)))
                .is_err()
            {
                closed.push(id);
            }
        }
        for id in closed {
            self.remove(id);
        }
    }
}
