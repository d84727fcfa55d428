//! The counting semaphore, in the layout and protocol of Curator's
//! `InterProcessSemaphoreV2`, so that Rust and Java holders of one path share one
//! limit and wait in one line.
//!
//! # Layout
//!
//! The semaphore's node, its `locks/` mutex and its `leases/`, their names and data,
//! and what a Java client must configure alike are in docs/ZOOKEEPER.md, "The
//! semaphore: `InterProcessSemaphoreV2`".
//!
//! # Protocol
//!
//! 1. **Line up**: take the mutex on `locks/` (see `src/lock.rs`; the semaphore's node
//!    and its two children are made on first use).
//! 2. **Check the count**: the first distsync lease found under `leases/` names it,
//!    and an acquirer naming another count is refused ([`Error::InvalidArgument`]).
//! 3. **Take a lease**: create the lease node, then list `leases/` with a watch; while
//!    it has more than `permits` children, wait for the watch (a lease released, or
//!    its session ended) and list again.
//! 4. **Let the next in**: release the mutex. The lease is the permit.
//! 5. **Release**: delete the lease node; it also goes with its session.
//!
//! Only the acquirer at the head of the mutex's line waits for a lease, so waiters are
//! granted in arrival order ([`fifo_waiters`]).
//!
//! # Fencing
//!
//! A permit's token is the creation zxid of its lease node. Leases are created one at
//! a time under the mutex, each after the previous acquirer was granted, so tokens
//! grow with every grant.
//!
//! # Cancel safety
//!
//! An acquirer dropped before its grant deletes its mutex node and its lease node in
//! the background, by their protected prefixes (see `src/lock.rs`); should that fail,
//! they go with the session.
//!
//! [`fifo_waiters`]: distsync_core::Capabilities::fifo_waiters

use std::num::NonZeroUsize;
use std::sync::Arc;

use async_trait::async_trait;
use distsync_core::raw::permit;
use distsync_core::raw::{Make, OnSession};
use distsync_core::{Error, Name, Permit, Result, Semaphore};
use zookeeper_client as zk;

use crate::direct::Direct;
use crate::keys::{self, Kind, LEASE_NAME, LOCK_NAME};
use crate::lock::{Entry, Line};
use crate::session::LeaseInner;

/// What a distsync lease's data starts with, before the permit count.
const DATA_PREFIX: &str = "distsync permits=";

/// The permit count a distsync lease's data records; `None` for Curator's leases (the
/// client's address) and any other data.
pub(crate) fn recorded_permits(data: &str) -> Option<usize> {
    data.strip_prefix(DATA_PREFIX)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|count| count.parse::<usize>().ok())
}

/// A counting semaphore of `permits` named `name`: Curator's `InterProcessSemaphoreV2`
/// on its node.
pub(crate) struct ZkSemaphore {
    permits: NonZeroUsize,
    /// The mutex on `locks/`.
    mutex: Line,
    /// The leases under `leases/`.
    leases: Line,
}

impl ZkSemaphore {
    /// A lease's data: the count and the session.
    fn lease_data(&self) -> Vec<u8> {
        format!(
            "{DATA_PREFIX}{} session={:x}",
            self.permits, self.leases.lease.id
        )
        .into_bytes()
    }

    /// Step 2: fails with [`Error::InvalidArgument`] when a distsync lease held now
    /// names another count.
    async fn check_count(&self) -> Result<()> {
        let client = self.leases.lease.client()?;
        for (_, child) in keys::contenders(self.leases.children().await?, LEASE_NAME) {
            let path = format!("{}/{child}", self.leases.dir);
            let data = match self.leases.retrying(|| client.get_data(&path)).await? {
                Ok((data, _)) => data,
                Err(zk::Error::NoNode) => continue,
                Err(error) => return Err(self.leases.lease.error(error)),
            };
            let Some(count) = std::str::from_utf8(&data).ok().and_then(recorded_permits) else {
                // Curator's lease (the client's address) or someone else's data.
                continue;
            };
            if count != self.permits.get() {
                return Err(Error::InvalidArgument(format!(
                    "semaphore {:?} is held with {count} permits, not {}",
                    self.leases.name, self.permits
                )));
            }
            return Ok(());
        }
        Ok(())
    }

    /// Steps 2 and 3 under the mutex: the lease once it fits, or `None` when `wait` is
    /// false and it does not fit now (its node then withdrawn).
    async fn take_lease(&self, wait: bool) -> Result<Option<Entry>> {
        self.check_count().await?;
        let lease = self.leases.enter(&self.lease_data()).await?;
        loop {
            let client = self.leases.lease.client()?;
            let listed = self
                .leases
                .retrying(|| client.list_and_watch_children(&self.leases.dir))
                .await?;
            drop(client);
            let (children, watcher) = match listed {
                Ok(listed) => listed,
                Err(zk::Error::NoNode) => return Err(self.leases.gone(&lease)),
                Err(error) => return Err(self.leases.lease.error(error)),
            };
            if !children.contains(&lease.child) {
                return Err(self.leases.gone(&lease));
            }
            if children.len() <= self.permits.get() {
                return Ok(Some(lease));
            }
            if !wait {
                self.leases.leave(lease).await?;
                return Ok(None);
            }
            tokio::select! {
                () = self.leases.session.lost() => return Err(Error::SessionLost),
                _ = watcher.changed() => {}
            }
        }
    }
}

#[async_trait]
impl Semaphore for ZkSemaphore {
    fn name(&self) -> &Name {
        &self.leases.name
    }

    fn permits(&self) -> usize {
        self.permits.get()
    }

    async fn acquire(&self) -> Result<Permit> {
        let mutex = self.mutex.enter(&self.mutex.session_data()).await?;
        self.mutex.wait(&mutex).await?;
        let lease = self.take_lease(true).await?;
        self.mutex.leave(mutex).await?;
        let lease = lease.ok_or_else(|| Error::backend(crate::BACKEND, "no lease taken"))?;
        Ok(permit(self.leases.guard(lease)))
    }

    async fn try_acquire(&self) -> Result<Option<Permit>> {
        let attempt = async {
            // Refused before lining up, so that a wrong count is an error even while
            // someone else holds the mutex.
            self.check_count().await?;
            let mutex = self.mutex.enter(&self.mutex.session_data()).await?;
            // An acquirer ahead takes the next free permit, not this one.
            let Some(mutex) = self.mutex.head_or_leave(mutex, None).await? else {
                return Ok(None);
            };
            let lease = self.take_lease(false).await?;
            self.mutex.leave(mutex).await?;
            Ok(lease.map(|lease| permit(self.leases.guard(lease))))
        };
        self.mutex
            .lease
            .shared
            .one_shot("try_acquire", attempt)
            .await
    }
}

impl Make<Arc<Direct>, (OnSession<Arc<LeaseInner>>, NonZeroUsize)> for ZkSemaphore {
    fn make(
        _: &Arc<Direct>,
        (on, permits): (OnSession<Arc<LeaseInner>>, NonZeroUsize),
    ) -> Result<Self> {
        let (session, lease, name) = (on.session, on.lease, on.name);
        let dir = keys::path(lease.shared.config.root(), Kind::Semaphore, &name);
        Ok(Self {
            permits,
            mutex: Line::at(
                session.clone(),
                Arc::clone(&lease),
                name.clone(),
                format!("{dir}/locks"),
                LOCK_NAME,
            ),
            leases: Line::at(session, lease, name, format!("{dir}/leases"), LEASE_NAME),
        })
    }
}
