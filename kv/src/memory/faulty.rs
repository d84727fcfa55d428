//! [`FaultyKv`]: the memory store behind a fault injector.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use distsync_core::error::{Error, Result};
use distsync_core::raw::locked;
use distsync_core::raw::RetryPolicy;
use distsync_core::session::KeepAlive;
use futures::stream::{BoxStream, StreamExt};
use tokio::sync::watch;

use super::store::MemoryKv;
use crate::kv::{Kv, LeaseId, Range, RangeResponse, Revision, Txn, TxnResponse, WatchResponse};

/// Whether a [`FaultyKv`] reaches its store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Partition {
    /// Requests and watch events pass.
    #[default]
    Open,
    /// Requests and watch events wait until the partition heals (a request fails once
    /// its request timeout passes, if one is set): packets dropped on the way.
    Silent,
    /// Requests fail at once and watches end: connections reset.
    Reset,
}

/// How a [`FaultyKv`] fails a planned transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnFault {
    /// The transaction is not applied; the call fails with a transient error.
    NotApplied,
    /// The transaction is applied, but its reply is lost: the call fails with a
    /// transient error all the same.
    ReplyLost,
    /// As [`TxnFault::ReplyLost`], and the client is then partitioned
    /// ([`Partition::Reset`]) until healed: a partition that starts between a request
    /// being applied and its reply.
    ReplyLostThenReset,
}

/// Which transactions fail next.
#[derive(Clone, Copy, Debug)]
struct TxnPlan {
    /// Transactions still to let through before failing.
    skip: usize,
    /// Transactions to fail after those (`usize::MAX`: all).
    fail: usize,
    how: TxnFault,
}

/// The faults shared by every clone of one [`FaultyKv`].
#[derive(Debug)]
struct Faults {
    partition: watch::Sender<Partition>,
    txn_plan: Mutex<TxnPlan>,
    failing_reads: AtomicUsize,
    txns: AtomicUsize,
    watches: AtomicUsize,
}

/// A [`MemoryKv`] behind a fault injector: partitions, failed transactions and reads,
/// for tests of code built on distsync (and of distsync itself) that must see how it
/// behaves when the store is unreachable or fails a request. Cloning gives another
/// handle on the same store and the same faults (keep one to switch faults while a
/// backend owns the other).
///
/// Two kinds of fault, both switched at run time from any clone of the handle:
///
/// - **a partition** ([`Partition`]): every request (and every watch event) of this
///   client waits at a gate while the partition is [`Partition::Silent`] (failing
///   once the request timeout given to [`FaultyKv::with_request_timeout`] passes), or
///   fails at once while it is [`Partition::Reset`]. The store itself goes on,
///   expiring the leases this client no longer renews, exactly as a server behind a
///   partition does; other clients of the same [`MemoryKv`] are not affected.
/// - **failed transactions** ([`TxnFault`]): the next transactions fail with a
///   transient error ([`Error::Connection`]), either not applied (a request refused
///   during an etcd leader change) or applied with the reply lost; and the next reads
///   and watch creations fail as a member without a leader refuses them.
///
/// A wrapped store counts the transactions and watches it was asked for, so a test can
/// wait for a waiter to be parked on its watch instead of sleeping.
///
/// ```
/// use distsync::store::raw::kv::{Kv, Range};
/// use distsync::store::memory::{FaultyKv, MemoryKv, Partition};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let kv = FaultyKv::new(MemoryKv::new());
/// kv.partition(Partition::Reset);
/// let refused = kv.range(Range::key("k")).await.unwrap_err();
/// assert!(refused.is_transient());
/// kv.partition(Partition::Open);
/// assert_eq!(kv.range(Range::key("k")).await.unwrap().count, 0);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct FaultyKv {
    store: MemoryKv,
    faults: Arc<Faults>,
    request_timeout: Option<Duration>,
}

impl FaultyKv {
    /// `store` with no fault yet, its requests unbounded in time.
    pub fn new(store: MemoryKv) -> Self {
        let (partition, _) = watch::channel(Partition::Open);
        Self {
            store,
            faults: Arc::new(Faults {
                partition,
                txn_plan: Mutex::new(TxnPlan {
                    skip: 0,
                    fail: 0,
                    how: TxnFault::NotApplied,
                }),
                failing_reads: AtomicUsize::new(0),
                txns: AtomicUsize::new(0),
                watches: AtomicUsize::new(0),
            }),
            request_timeout: None,
        }
    }

    /// Bounds each request held at a [`Partition::Silent`] gate by `timeout`, as a
    /// server client's `timeout=` bounds it; `None`: it waits for the heal.
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The store behind the injector.
    pub fn store(&self) -> &MemoryKv {
        &self.store
    }

    /// Partitions this client from the store ([`Partition::Open`] heals it).
    pub fn partition(&self, partition: Partition) {
        self.faults.partition.send_replace(partition);
    }

    /// Fails the next `count` transactions (`usize::MAX`: every one) as `how`.
    pub fn fail_txns(&self, count: usize, how: TxnFault) {
        self.fail_txns_after(0, count, how);
    }

    /// Lets the next `skip` transactions through, then fails `count` as `how`.
    pub fn fail_txns_after(&self, skip: usize, count: usize, how: TxnFault) {
        *self.plan() = TxnPlan {
            skip,
            fail: count,
            how,
        };
    }

    /// Fails the next `count` reads and watch creations (as a member without a leader
    /// refuses them).
    pub fn fail_reads(&self, count: usize) {
        self.faults.failing_reads.store(count, Ordering::SeqCst);
    }

    /// How many of the reads and watch creations planned by [`FaultyKv::fail_reads`]
    /// have not failed yet.
    pub fn reads_still_to_fail(&self) -> usize {
        self.faults.failing_reads.load(Ordering::SeqCst)
    }

    /// How many transactions were attempted so far (failed ones included).
    pub fn txns(&self) -> usize {
        self.faults.txns.load(Ordering::SeqCst)
    }

    /// How many watches were opened so far (failed creations included).
    pub fn watches(&self) -> usize {
        self.faults.watches.load(Ordering::SeqCst)
    }

    fn plan(&self) -> std::sync::MutexGuard<'_, TxnPlan> {
        // The plan is plain data, valid whatever a panicking holder left.
        locked(&self.faults.txn_plan)
    }

    /// The fault planned for this transaction, if any.
    fn next_txn_fault(&self) -> Option<TxnFault> {
        self.faults.txns.fetch_add(1, Ordering::SeqCst);
        let mut plan = self.plan();
        if plan.skip > 0 {
            plan.skip -= 1;
            return None;
        }
        match plan.fail {
            0 => None,
            usize::MAX => Some(plan.how),
            _ => {
                plan.fail -= 1;
                Some(plan.how)
            }
        }
    }

    /// Whether this read or watch creation is to fail.
    fn read_fails(&self) -> bool {
        self.faults
            .failing_reads
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok()
    }

    /// Passes the partition gate for one request, bounded by the request timeout.
    async fn request(&self) -> Result<()> {
        let Some(limit) = self.request_timeout else {
            return pass(&self.faults.partition).await;
        };
        tokio::time::timeout(limit, pass(&self.faults.partition))
            .await
            .unwrap_or_else(|_| {
                Err(Error::connection(
                    super::BACKEND,
                    format!("partitioned from the store: no reply within {limit:?} (timeout=)"),
                ))
            })
    }
}

/// Waits until `partition` lets a request through; the connection error on a reset.
async fn pass(partition: &watch::Sender<Partition>) -> Result<()> {
    let mut partition = partition.subscribe();
    loop {
        let current = *partition.borrow_and_update();
        match current {
            Partition::Open => return Ok(()),
            Partition::Reset => {
                return Err(Error::connection(
                    super::BACKEND,
                    "partitioned from the store (connection reset)",
                ))
            }
            Partition::Silent => {
                if partition.changed().await.is_err() {
                    return Err(Error::connection(super::BACKEND, "partition gate dropped"));
                }
            }
        }
    }
}

fn leader_changed() -> Error {
    Error::connection(super::BACKEND, "etcdserver: leader changed")
}

fn no_leader() -> Error {
    Error::connection(super::BACKEND, "etcdserver: no leader")
}

#[async_trait]
impl Kv for FaultyKv {
    fn backend(&self) -> &'static str {
        self.store.backend()
    }

    /// The memory store's clock, without faults: it lives in this process.
    async fn clock(&self) -> Result<Option<std::time::Duration>> {
        self.store.clock().await
    }

    /// As a server client's: the one-shot budget cut to the request timeout.
    fn retry_policy(&self) -> RetryPolicy {
        self.request_timeout
            .map_or_else(RetryPolicy::default, RetryPolicy::within)
    }

    async fn range(&self, range: Range) -> Result<RangeResponse> {
        self.request().await?;
        if self.read_fails() {
            return Err(no_leader());
        }
        self.store.range(range).await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.request().await?;
        match self.next_txn_fault() {
            None => self.store.txn(txn).await,
            Some(TxnFault::NotApplied) => Err(leader_changed()),
            Some(how) => {
                self.store.txn(txn).await?;
                if how == TxnFault::ReplyLostThenReset {
                    self.partition(Partition::Reset);
                }
                Err(leader_changed())
            }
        }
    }

    async fn watch(
        &self,
        key: &str,
        prefix: bool,
        start_revision: Revision,
    ) -> Result<BoxStream<'static, Result<WatchResponse>>> {
        self.faults.watches.fetch_add(1, Ordering::SeqCst);
        self.request().await?;
        if self.read_fails() {
            return Err(no_leader());
        }
        let events = self.store.watch(key, prefix, start_revision).await?;
        let faults = Arc::clone(&self.faults);
        Ok(events
            .then(move |event| {
                let faults = Arc::clone(&faults);
                async move { pass(&faults.partition).await.and(event) }
            })
            .take_while(|event| futures::future::ready(event.is_ok()))
            .boxed())
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        self.request().await?;
        self.store.lease_grant(ttl).await
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<KeepAlive> {
        self.request().await?;
        self.store.lease_keep_alive(lease).await
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        self.request().await?;
        self.store.lease_revoke(lease).await
    }

    async fn lease_time_to_live(&self, lease: LeaseId) -> Result<Option<Duration>> {
        self.request().await?;
        self.store.lease_time_to_live(lease).await
    }
}
