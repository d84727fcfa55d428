//! At-least-once delivery over a [`Kv`] store ([`distsync_core::Queue::receive`]).
//!
//! # Holding an item through a session
//!
//! A received item stays where it is, under its item key `Q/i/<priority>/<sequence>`;
//! the receiver puts the hold key `Q/h/<priority>/<sequence>` (value: the call id),
//! **attached to its session's lease**, and bumps the delivery counter
//! `Q/d/<priority>/<sequence>` (no lease; absent means 0), in one transaction
//! guarded on the item being unchanged, the hold key absent and the counter as read.
//! Every reader of the queue (`dequeue`, `receive`, `len`) treats an item with a hold
//! key as absent. So:
//!
//! - `ack` deletes the item, its hold key and its counter, guarded on the hold key
//!   being this delivery's (same create revision);
//! - `nack` deletes the hold key only: the item is queued again **at its own key**,
//!   so at its place (same priority, same sequence);
//! - when the session ends (closed, revoked, expired after a crash or a partition),
//!   the store deletes the hold key with the lease: the item is queued again at its
//!   place, with no client's help, and the counter, which outlives the lease, makes
//!   its next delivery report one more redelivery.
//!
//! A returned item wakes one waiting consumer: the first in line watches the hold keys
//! (see the queue's module docs, "Waiting").
//!
//! A hold whose reply is lost is repeated: the repeat finds the hold key with this
//! call's id and this lease, and takes it as its own. The hold runs
//! [`detached`](distsync_core::raw::detached): a receive dropped meanwhile drops the
//! [`Delivery`] unreceived, which nacks it.

use distsync_core::raw::SessionStoreSide as _;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;

use crate::kv::{Compare, CompareOp, Kv, LeaseId, Range, Revision, Txn, TxnOp};
use distsync_core::delivery::{Delivery, Settle};
use distsync_core::error::{Error, Result};
use distsync_core::session::Session;

use super::super::hold::explain_lease_error;
use super::super::key::range_at;
use super::queue_sweep::claim_call_id;
use super::{Item, KvQueue, Layout, Position, CLAIM_BUDGET};
use distsync_core::raw::{detached, RetryPolicy};

impl KvQueue {
    /// `receive` (`wait`) or `try_receive`.
    pub(super) async fn receive_through(
        &self,
        session: &Session,
        wait: bool,
    ) -> Result<Option<Delivery>> {
        let lease = (self.lease_of)(session)?;
        if session.is_lost() {
            return Err(Error::SessionLost);
        }
        let lost = session.lost_token().clone();
        let call = claim_call_id();
        let call = call.as_str();
        self.first_taken(call, wait, Some(&lost), |item| {
            hold(&self.kv, &self.layout, session, lease, call, item)
        })
        .await
    }
}

/// Holds `item` through `lease` in a spawned task (see the module docs); `None` when
/// another consumer took or changed it first.
async fn hold(
    kv: &Arc<dyn Kv>,
    layout: &Layout,
    session: &Session,
    lease: LeaseId,
    call: &str,
    item: Item,
) -> Result<Option<Delivery>> {
    let (kv, layout, session) = (Arc::clone(kv), layout.clone(), session.clone());
    let call = call.to_owned();
    detached(kv.backend(), async move {
        let deadline = Instant::now() + CLAIM_BUDGET;
        let lost = session.lost_token();
        let position = item.position;
        let hold_key = layout.hold(position);
        let counter_key = layout.deliveries(position);
        let read_counter = || kv.range(Range::key(&counter_key));
        let counter = RetryPolicy::default()
            .idempotent_until(
                "queue delivery count",
                Some(deadline),
                Some(lost),
                read_counter,
            )
            .await?;
        let (delivered, counter_revision) = counter.kvs.first().map_or((0, 0), |found| {
            let count = std::str::from_utf8(&found.value).ok();
            let count = count.and_then(|text| text.parse::<u32>().ok());
            (count.unwrap_or(0), found.mod_revision)
        });
        let txn = Txn::when(vec![
            Compare::mod_revision(&item.kv.key, CompareOp::Equal, item.kv.mod_revision),
            Compare::version(&hold_key, CompareOp::Equal, 0),
            Compare::mod_revision(&counter_key, CompareOp::Equal, counter_revision),
        ])
        .and_then(vec![
            TxnOp::put(&hold_key, Bytes::from(call.clone()), lease),
            TxnOp::put(&counter_key, delivered.saturating_add(1).to_string(), 0),
        ])
        .or_else(vec![TxnOp::Range(Range::key(&hold_key))]);
        let attempt = || kv.txn(txn.clone());
        let response = match RetryPolicy::default()
            .idempotent_until("queue hold", Some(deadline), Some(lost), attempt)
            .await
        {
            Ok(response) => response,
            // A session whose lease the store ended (expired while its process was
            // starved or paused) is lost: the store refused the hold's put on that lease,
            // and the caller opens a new session, as for a loss seen any other way.
            Err(error) => match explain_lease_error(&*kv, &session, lease, error).await {
                Error::SessionLost => return Err(Error::SessionLost),
                error => {
                    tracing::warn!(
                        key = %hold_key,
                        %error,
                        "queue hold failed with its outcome unknown; a hold taken goes with the session",
                    );
                    return Err(error);
                }
            },
        };
        let created = if response.succeeded {
            response.revision
        } else {
            let found = range_at(&*kv, &response, 0)?.kvs.into_iter().next();
            match found {
                // An earlier attempt, whose reply was lost, took it.
                Some(found) if found.value == call.as_bytes() && found.lease == lease => {
                    found.create_revision
                }
                _ => return Ok(None),
            }
        };
        let settle = KvSettle {
            kv,
            layout,
            position,
            hold: hold_key,
            created,
        };
        let delivery = Delivery::new(item.kv.value, delivered, &session, Box::new(settle));
        Ok(Some(delivery))
    })
    .await
}

/// One held item's acknowledgement and return.
struct KvSettle {
    kv: Arc<dyn Kv>,
    layout: Layout,
    position: Position,
    hold: String,
    created: Revision,
}

impl KvSettle {
    fn mine(&self) -> Compare {
        Compare::create_revision(&self.hold, CompareOp::Equal, self.created)
    }

    /// The acknowledgement: the item, its hold key, its counter and its time deleted
    /// while the hold is this delivery's; the item read otherwise.
    fn ack_txn(&self) -> Txn {
        let item = self.layout.item(self.position);
        Txn::when(vec![self.mine()])
            .and_then(vec![
                TxnOp::delete(&item),
                TxnOp::delete(&self.hold),
                TxnOp::delete(self.layout.deliveries(self.position)),
                TxnOp::delete(self.layout.enqueued(self.position)),
            ])
            .or_else(vec![TxnOp::Range(Range::key(&item))])
    }
}

/// The settle side of a delivery of a [`KvBackend`](crate::recipes::KvBackend) queue.
fn kv_settle(delivery: &Delivery) -> Option<&KvSettle> {
    delivery
        .settle_side()
        .and_then(|side| (side as &dyn std::any::Any).downcast_ref::<KvSettle>())
}

/// The backend whose store holds the item of `delivery` ([`Kv::backend`]), for a
/// delivery from a [`KvBackend`](crate::recipes::KvBackend) queue; `None` for another.
pub fn delivery_backend(delivery: &Delivery) -> Option<&'static str> {
    kv_settle(delivery).map(|settle| settle.kv.backend())
}

/// Acknowledges `delivery` (from a [`KvBackend`](crate::recipes::KvBackend) queue) in
/// one transaction of its store, sent once: for a store that runs it inside a
/// transaction of the caller's, where a repeat cannot be told from another consumer's
/// acknowledgement. `Ok` only when this transaction removed the item while its hold
/// was this delivery's.
///
/// # Errors
/// [`Error::SessionLost`] when the hold is no longer this delivery's (its session
/// ended; the item is back in the queue, or another consumer's);
/// [`Error::InvalidArgument`] for a delivery of another kind of queue; the store's
/// error.
///
/// # Cancel safety
/// Dropping the future part-way leaves the acknowledgement sent or not.
pub async fn ack_once(delivery: &Delivery) -> Result<()> {
    let Some(settle) = kv_settle(delivery) else {
        return Err(Error::InvalidArgument(
            "a delivery of a queue over a revisioned key-value store is needed".into(),
        ));
    };
    if settle.kv.txn(settle.ack_txn()).await?.succeeded {
        Ok(())
    } else {
        Err(Error::SessionLost)
    }
}

#[async_trait]
impl Settle for KvSettle {
    async fn ack_step(&self) -> Result<bool> {
        let response = self.kv.txn(self.ack_txn()).await?;
        // The hold gone and the item too: an earlier attempt whose reply was lost
        // deleted it; the item still there: the session ended first and it is back.
        Ok(response.succeeded || range_at(&*self.kv, &response, 0)?.kvs.is_empty())
    }

    async fn nack_step(&self) -> Result<()> {
        let txn = Txn::when(vec![self.mine()]).and_then(vec![TxnOp::delete(&self.hold)]);
        // Not succeeding means the hold is gone already: the item is back either way.
        self.kv.txn(txn).await.map(|_| ())
    }

    fn policy(&self) -> RetryPolicy {
        self.kv.retry_policy()
    }
}
