//! A destination that cuts its own connection at a chosen step of a migration.
//!
//! `migrate` is one call, so a case cannot stop between two of its writes; this
//! backend forwards every call to a real client of the store (one behind the partition
//! proxy) and switches the proxy to the partition mode right after the chosen step was
//! acknowledged, before `migrate` issues the next one. Nothing is imitated: every
//! request reaches the store or meets the partition, exactly as the migration sent it.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use distsync_core::migrate::Snapshot;
use distsync_core::queue::{AppendKey, Enqueued};
use distsync_core::raw::Primitives;
use distsync_core::{
    Backend, Barrier, Bytes, Capabilities, CountDownLatch, Counter, DoubleBarrier, Election,
    Locker, Name, Queue, Result, RwLock, Semaphore, Session, SessionId, SessionOptions, Stm,
};
use tokio::time::Instant;

use crate::faults::{PartitionMode, Partitioned};

/// The step of the copy after which the tap cuts the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CutPoint {
    /// Once this many queue items have been acknowledged by the destination.
    AfterItems(usize),
    /// When the verification starts: the destination's second export (the first reads
    /// what it held before the copy).
    AtVerification,
}

impl CutPoint {
    /// The step in a few words, for reports.
    pub(super) fn describe(self) -> String {
        match self {
            Self::AfterItems(items) => format!("after {items} items were written"),
            Self::AtVerification => "when the verification export started".to_owned(),
        }
    }
}

/// What the tap shares with the queues it hands out.
struct Cut {
    partition: Arc<dyn Partitioned>,
    mode: PartitionMode,
    point: CutPoint,
    items: AtomicUsize,
    exports: AtomicUsize,
    /// When the cut was made.
    at: Mutex<Option<Instant>>,
}

impl Cut {
    fn cut(&self) {
        let mut at = self
            .at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if at.is_none() {
            self.partition.set(self.mode);
            *at = Some(Instant::now());
            tracing::debug!(mode = self.mode.describe(), point = ?self.point, "destination cut");
        }
    }
}

/// A client of the destination that cuts its connection at [`CutPoint`].
pub(super) struct CutTap {
    inner: Arc<dyn Backend>,
    cut: Arc<Cut>,
    /// The destination queue handles the migration was given, kept past it: a write
    /// the cut left in flight may still be held by one (see [`CutTap::queues`]).
    queues: Mutex<Vec<Arc<dyn Queue>>>,
}

impl CutTap {
    /// A tap over `partitioned`'s client, switching it to `mode` at `point`.
    pub(super) fn new(
        partitioned: Arc<dyn Partitioned>,
        mode: PartitionMode,
        point: CutPoint,
    ) -> Self {
        Self {
            inner: partitioned.backend(),
            cut: Arc::new(Cut {
                partition: partitioned,
                mode,
                point,
                items: AtomicUsize::new(0),
                exports: AtomicUsize::new(0),
                at: Mutex::new(None),
            }),
            queues: Mutex::new(Vec::new()),
        }
    }

    /// The destination queue handles handed out to the migration. A store's client may
    /// hold a write it took while its connection was down and send it once it
    /// reconnects, whether or not its caller still waits (ZooKeeper's does); a read
    /// through the same handle goes out after it, so once such a read is answered,
    /// that write has landed or never will.
    pub(super) fn queues(&self) -> Vec<Arc<dyn Queue>> {
        self.queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// When the cut was made, if it was.
    pub(super) fn cut_at(&self) -> Option<Instant> {
        *self
            .cut
            .at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl Backend for CutTap {
    async fn session(&self, options: SessionOptions) -> Result<Session> {
        self.inner.session(options).await
    }

    async fn revoke_session(&self, id: SessionId) -> Result<()> {
        self.inner.revoke_session(id).await
    }

    async fn export(&self) -> Result<Snapshot> {
        let nth = self.cut.exports.fetch_add(1, Ordering::SeqCst) + 1;
        if self.cut.point == CutPoint::AtVerification && nth == 2 {
            self.cut.cut();
        }
        self.inner.export().await
    }
}

impl Primitives for CutTap {
    fn capabilities(&self) -> &Capabilities {
        self.inner.capabilities()
    }

    fn locker(&self, session: &Session, name: Name) -> Result<Box<dyn Locker>> {
        self.inner.locker(session, name)
    }

    fn election(&self, session: &Session, name: Name) -> Result<Box<dyn Election>> {
        self.inner.election(session, name)
    }

    fn rwlock(&self, session: &Session, name: Name) -> Result<Box<dyn RwLock>> {
        self.inner.rwlock(session, name)
    }

    fn queue(&self, name: Name) -> Result<Box<dyn Queue>> {
        let inner: Arc<dyn Queue> = Arc::from(self.inner.queue(name)?);
        self.queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Arc::clone(&inner));
        Ok(Box::new(TapQueue {
            inner,
            cut: Arc::clone(&self.cut),
        }))
    }

    fn barrier(&self, name: Name) -> Result<Box<dyn Barrier>> {
        self.inner.barrier(name)
    }

    fn double_barrier(
        &self,
        session: &Session,
        name: Name,
        count: NonZeroUsize,
    ) -> Result<Box<dyn DoubleBarrier>> {
        self.inner.double_barrier(session, name, count)
    }

    fn stm(&self) -> Result<Stm> {
        self.inner.stm()
    }

    fn semaphore(
        &self,
        session: &Session,
        name: Name,
        permits: NonZeroUsize,
    ) -> Result<Box<dyn Semaphore>> {
        self.inner.semaphore(session, name, permits)
    }

    fn counter(&self, name: Name) -> Result<Box<dyn Counter>> {
        self.inner.counter(name)
    }

    fn latch(&self, name: Name, count: u64) -> Result<Box<dyn CountDownLatch>> {
        self.inner.latch(name, count)
    }
}

/// A destination queue that counts the items it has written.
struct TapQueue {
    inner: Arc<dyn Queue>,
    cut: Arc<Cut>,
}

#[async_trait]
impl Queue for TapQueue {
    fn name(&self) -> &Name {
        self.inner.name()
    }

    async fn append_bytes(&self, key: &AppendKey, item: Bytes, priority: u16) -> Result<Enqueued> {
        let enqueued = self.inner.append_bytes(key, item, priority).await?;
        if enqueued == Enqueued::Duplicate {
            return Ok(enqueued);
        }
        let written = self.cut.items.fetch_add(1, Ordering::SeqCst) + 1;
        if self.cut.point == CutPoint::AfterItems(written) {
            self.cut.cut();
        }
        Ok(enqueued)
    }

    async fn dequeue(&self) -> Result<Bytes> {
        self.inner.dequeue().await
    }

    async fn try_dequeue(&self) -> Result<Option<Bytes>> {
        self.inner.try_dequeue().await
    }

    async fn len(&self) -> Result<usize> {
        self.inner.len().await
    }
}
