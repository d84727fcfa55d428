//! What a backend's durable state looks like when read out for a migration.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::name::Name;

/// One queued item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueItem {
    /// Its priority (lower first).
    pub priority: u16,
    /// The item.
    pub item: Bytes,
}

/// The durable state of a backend (under its namespace), as
/// [`Backend::export`](crate::backend::Backend::export) reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Every non-empty queue, with its items in dequeue order.
    pub queues: BTreeMap<Name, Vec<QueueItem>>,
    /// Every STM key and its value.
    pub stm: BTreeMap<Name, Bytes>,
    /// Every held barrier.
    pub barriers: Vec<Name>,
    /// The store keys of live session-bound holds (locks, leadership, read/write
    /// holds, double-barrier entries, waiters), which are not copied.
    pub active_holds: Vec<String>,
}

impl Snapshot {
    /// How many queue items the snapshot holds.
    pub fn queue_items(&self) -> usize {
        self.queues.values().map(Vec::len).sum()
    }
}
