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

/// A count-down latch as the store keeps it: enough to recreate it elsewhere.
///
/// Handles carry the initial count and are refused by a latch made with another
/// ([`crate::latch`]), so a copy keeps it, and is brought down to `remaining`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatchState {
    /// The count the latch was made with.
    pub initial: u64,
    /// The count left (0: open); never above `initial`.
    pub remaining: u64,
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
    /// Every counter the store holds a value for (one never written reads 0 and may
    /// be absent).
    pub counters: BTreeMap<Name, i64>,
    /// Every count-down latch created in the store (by its first count-down).
    pub latches: BTreeMap<Name, LatchState>,
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
