//! Idempotent enqueues ([`distsync_core::Queue::enqueue_once`](distsync_core::Queue),
//! and the key every plain enqueue draws for its own retries).
//!
//! # Records
//!
//! An enqueue with a key puts, in the transaction that puts the item, the record
//! `Q/k/u/<user key>` (a caller's key, [`AppendKey::Caller`]) or `Q/k/g/<call id>`
//! (the key a plain enqueue draws, [`AppendKey::Call`]), valued with the call's id,
//! and runs only while that record is absent. A repeat after a lost reply fails on the
//! record; its failure branch reads the record, and finds its own call id if its
//! earlier attempt appended the item. Two producers with one user key race on the
//! record's absence: one appends, the other answers [`Enqueued::Duplicate`].
//!
//! [`AppendKey::Caller`]: super::AppendKey::Caller
//! [`AppendKey::Call`]: super::AppendKey::Call
//!
//! # Expiry
//!
//! A record is attached to a store lease, so the store's clock ends it with no sweep:
//! a queue handle grants one lease per kind of key and reuses it for [`Window::reuse`],
//! with a TTL of the window plus that reuse period, so that a record lives at least the
//! window ([`DEDUP_WINDOW`] for user keys, [`CALL_KEY_WINDOW`] for drawn ones) and at
//! most one reuse period longer. A lease the store no longer knows (a store restored
//! from an old snapshot) fails the transaction: the handle then grants a new one and
//! tries once more.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::kv::LeaseId;
use distsync_core::error::Result;
use distsync_core::queue::{Enqueued, CALL_KEY_WINDOW, DEDUP_WINDOW};
use distsync_core::raw::locked;
use distsync_core::raw::{call_id, Failure, Idempotence};

use super::{put_sequential, KvQueue, Put};

/// The kind of an enqueue's key: how long its record lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Window {
    /// A user's key, remembered for [`DEDUP_WINDOW`].
    User,
    /// A key drawn by a plain enqueue, remembered for [`CALL_KEY_WINDOW`].
    Call,
}

impl Window {
    /// How long a record must live at least.
    fn window(self) -> Duration {
        match self {
            Self::User => DEDUP_WINDOW,
            Self::Call => CALL_KEY_WINDOW,
        }
    }

    /// How long a handle reuses one lease: a tenth of the window, at most an hour (so
    /// one lease an hour serves every user key a handle records).
    pub(super) fn reuse(self) -> Duration {
        (self.window() / 10).min(Duration::from_secs(3600))
    }
}

/// The leases a handle reuses, one per [`Window`], with when each was granted.
#[derive(Debug, Default)]
pub(super) struct DedupLeases {
    leases: Mutex<[Option<(LeaseId, Instant)>; 2]>,
}

impl DedupLeases {
    fn cached(&self, window: Window) -> Option<LeaseId> {
        locked(&self.leases)[window as usize]
            .filter(|(_, granted)| granted.elapsed() < window.reuse())
            .map(|(lease, _)| lease)
    }

    fn store(&self, window: Window, lease: Option<LeaseId>) {
        locked(&self.leases)[window as usize] = lease.map(|lease| (lease, Instant::now()));
    }
}

impl KvQueue {
    /// The lease for a record of `window`: the handle's, or a new one.
    async fn dedup_lease(&self, window: Window) -> Result<(LeaseId, bool)> {
        if let Some(lease) = self.dedup_leases.cached(window) {
            return Ok((lease, false));
        }
        let ttl = window.window() + window.reuse();
        let lease = self.kv.lease_grant_for_records(ttl).await?;
        self.dedup_leases.store(window, Some(lease));
        Ok((lease, true))
    }

    /// Appends `item` at `priority` unless the record `record` exists; repeated
    /// through transient failures within the one-shot budget, each attempt under the
    /// same call id (see the module docs).
    pub(super) async fn enqueue_keyed(
        &self,
        record: String,
        window: Window,
        item: Bytes,
        priority: u16,
    ) -> Result<Enqueued> {
        let call = Bytes::from(call_id());
        let mut renewed = false;
        loop {
            let (put, fresh) = self
                .kv
                .retry_policy()
                .one_shot(
                    "queue enqueue",
                    Idempotence::Idempotent,
                    Failure::of,
                    || async {
                        let (lease, fresh) = self.dedup_lease(window).await?;
                        let dedup = Some((record.as_str(), lease, &call));
                        let layout = &self.layout;
                        match put_sequential(&*self.kv, layout, priority, item.clone(), None, dedup)
                            .await
                        {
                            // Repeated with the same call id (see the module docs).
                            Err(error) if error.is_transient() => Err(error),
                            put => Ok((put, fresh)),
                        }
                    },
                )
                .await?;
            match put {
                Ok(Put::Done | Put::Duplicate { mine: true }) => return Ok(Enqueued::New),
                Ok(Put::Duplicate { mine: false }) => return Ok(Enqueued::Duplicate),
                Ok(Put::Gone) => {
                    return Err(distsync_core::Error::backend(
                        self.kv.backend(),
                        "queue enqueue answered as a put-back",
                    ))
                }
                Err(error) => {
                    // Perhaps a lease the store no longer knows: one more try with a
                    // new one.
                    self.dedup_leases.store(window, None);
                    if fresh || renewed {
                        return Err(error);
                    }
                    tracing::debug!(queue = %self.layout.root, %error, "queue enqueue retries with a new record lease");
                    renewed = true;
                }
            }
        }
    }
}
