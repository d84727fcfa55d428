//! The read-write lock: one line of readers and writers, the lock's protocol.
//!
//! The read-write lock `<name>` is the line `rwlock.<name>.q`: each acquisition
//! creates a key of its own as a lock contender does (see `src/lock.rs`), holding
//! `r` or `w`. A writer holds when it heads the line and watches its predecessor; a
//! reader holds when no writer is before it and watches the last writer before it,
//! so readers share the lock and a waiting writer blocks the readers behind it. A
//! write hold's token is its key's create sequence.

use crate::shared::Shared;
use distsync_core::raw::Look::{NotYet, Ready};
use distsync_core::raw::RetryPolicy;
use distsync_core::raw::{Make, OnSession};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use distsync_core::raw::{read_guard, RwLock};
use distsync_core::{LockGuard, Name, ReadGuard, Result, Session};

use crate::keys::{self, Kind};
use crate::lock::{gone_after, hold_guard, releasing, token_of, vanished, Contender, NatsLocker};
use crate::session::LeaseInner;

/// A writer's key holds this; a reader's [`READER`].
const WRITER: &[u8] = b"w";
const READER: &[u8] = b"r";

/// A read-write lock named `name`.
pub(crate) struct NatsRwLock {
    line: NatsLocker,
    session: Session,
    lease: Arc<LeaseInner>,
    name: Name,
}

impl NatsRwLock {
    /// The key `contender` must wait for (`None`: it holds), and the sequence the
    /// line was read at.
    async fn blocker(&self, contender: &Contender, writer: bool) -> Result<(Option<String>, u64)> {
        let store = &self.lease.shared.store;
        let (entries, last) = store.list(&[keys::every_in(self.line.line())]).await?;
        let mut line: Vec<(u64, String, bool)> = entries
            .into_iter()
            .filter(|entry| entry.live())
            .map(|entry| (token_of(&entry), entry.key, entry.value == WRITER))
            .collect();
        line.sort();
        let Some(place) = line.iter().position(|(_, key, _)| *key == contender.key) else {
            let over = self.lease.is_over() || self.session.is_lost();
            return Err(vanished(over, "key", &contender.key));
        };
        let before = &line[..place];
        let blocker = if writer {
            before.last()
        } else {
            before.iter().rev().find(|(_, _, writer)| *writer)
        };
        Ok((blocker.map(|(_, key, _)| key.clone()), last))
    }

    /// A contender of a `writer` or a reader, entered and waited for until it holds.
    async fn hold(&self, writer: bool) -> Result<Contender> {
        let value = Bytes::from_static(if writer { WRITER } else { READER });
        let contender = self.line.enter_with(value).await?;
        RetryPolicy::default()
            .wait_until("the read-write lock", self.lease.lost_token(), || async {
                let (blocker, last) = self.blocker(&contender, writer).await?;
                Ok(match blocker {
                    None => Ready(()),
                    Some(key) => {
                        NotYet(async move { gone_after(&self.lease, &key, last, &[]).await })
                    }
                })
            })
            .await?;
        Ok(contender)
    }

    /// A write hold of a granted `contender`.
    fn write_guard(&self, contender: Contender) -> LockGuard {
        let (key, token) = contender.granted();
        hold_guard(&self.session, &self.lease, key, token)
    }

    /// A read hold of a granted `contender`.
    fn read_guard(&self, contender: Contender) -> ReadGuard {
        let (key, _) = contender.granted();
        let release = releasing(&self.lease, &key);
        read_guard(key, &self.session, release)
    }

    /// A one-shot entry of a `writer` or a reader: the contender, granted, or `None`
    /// (its key withdrawn) when a key blocks it.
    async fn try_hold(&self, writer: bool) -> Result<Option<Contender>> {
        let value = Bytes::from_static(if writer { WRITER } else { READER });
        let contender = self.line.try_enter_with(value).await?;
        if self.blocker(&contender, writer).await?.0.is_none() {
            return Ok(Some(contender));
        }
        contender.withdraw().await?;
        Ok(None)
    }
}

#[async_trait]
impl RwLock for NatsRwLock {
    fn name(&self) -> &Name {
        &self.name
    }

    async fn read(&self) -> Result<ReadGuard> {
        Ok(self.read_guard(self.hold(false).await?))
    }

    async fn try_read(&self) -> Result<Option<ReadGuard>> {
        let held = self.try_hold(false).await?;
        Ok(held.map(|contender| self.read_guard(contender)))
    }

    async fn write(&self) -> Result<LockGuard> {
        Ok(self.write_guard(self.hold(true).await?))
    }

    async fn try_write(&self) -> Result<Option<LockGuard>> {
        let held = self.try_hold(true).await?;
        Ok(held.map(|contender| self.write_guard(contender)))
    }
}

impl Make<Arc<Shared>, OnSession<Arc<LeaseInner>>> for NatsRwLock {
    fn make(_: &Arc<Shared>, on: OnSession<Arc<LeaseInner>>) -> Result<Self> {
        let line = NatsLocker::in_line(&on.session, &on.lease, &on.name, Kind::RwLock);
        Ok(Self {
            line,
            session: on.session,
            lease: on.lease,
            name: on.name,
        })
    }
}
