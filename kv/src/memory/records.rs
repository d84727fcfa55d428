//! What the store's state records: each version of a key and each live lease.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use crate::kv::{KeyValue, Revision};

/// A live lease.
#[derive(Debug)]
pub(super) struct LeaseEntry {
    pub(super) ttl: Duration,
    pub(super) deadline: Instant,
    pub(super) frozen: bool,
    pub(super) keys: BTreeSet<String>,
}

/// One version of a key: a put (`kv`) or a deletion tombstone (`None`).
#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub(super) revision: Revision,
    /// Position of the change within its revision's transaction.
    pub(super) sub: usize,
    pub(super) kv: Option<KeyValue>,
}
