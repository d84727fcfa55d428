//! The barrier and the double barrier.
//!
//! A barrier `<name>` is the key `barrier.<name>`: held while it holds a value
//! (`hold` puts one, `release` purges it); a waiter reads it and, while it is held,
//! watches it from the sequence read + 1 until it ends.
//!
//! A double barrier `<name>` of `count` participants is the line
//! `dbarrier.<name>.q` of the participants' keys, each created as a lock contender's
//! (held through the participant's session), and the key `dbarrier.<name>.ready`.
//! `enter` creates the participant's key and lists the line with the ready key: a
//! participant beyond the count is refused ([`Error::TooManyParticipants`], its key
//! purged), the one that completes the count puts the ready key, and the others
//! watch the barrier's keys until it is there. `leave` purges the participant's key
//! and waits until the line is empty, then purges the ready key for the next round.

use distsync_core::raw::Look::{NotYet, Ready};
use distsync_core::raw::RetryPolicy;
use distsync_core::raw::{Make, OnSession};
use std::num::NonZeroUsize;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use distsync_core::raw::{Barrier, DoubleBarrier};
use distsync_core::{Error, Name, Result};
use futures::StreamExt;

use crate::counter::watch_until;
use crate::keys::{self, Kind};
use crate::lock::{contenders, gone_after, vanished, Contender, NatsLocker};
use crate::session::LeaseInner;
use crate::shared::Shared;
use crate::store::Write;

/// The barrier `name`.
pub(crate) struct NatsBarrier {
    shared: Arc<Shared>,
    name: Name,
    key: String,
}

#[async_trait]
impl Barrier for NatsBarrier {
    fn name(&self) -> &Name {
        &self.name
    }

    async fn hold(&self) -> Result<()> {
        let write = Write::put(self.key.as_str(), Bytes::from_static(b"held"));
        self.shared.store.publish(write).await?.compared().map(drop)
    }

    async fn release(&self) -> Result<()> {
        let write = Write::purge(self.key.as_str());
        self.shared.store.publish(write).await?.compared().map(drop)
    }

    async fn wait(&self) -> Result<()> {
        watch_until(&self.shared, &self.key, "a barrier", || async {
            Ok(match self.shared.store.last(&self.key).await? {
                Some(entry) if entry.live() => (None, entry.seq),
                _ => (Some(()), 0),
            })
        })
        .await
    }
}

/// A double barrier `name` of `count` participants.
pub(crate) struct NatsDoubleBarrier {
    line: NatsLocker,
    lease: Arc<LeaseInner>,
    name: Name,
    count: NonZeroUsize,
    ready: String,
    /// This participant's key, from `enter` to `leave`.
    entry: tokio::sync::Mutex<Option<Contender>>,
}

impl NatsDoubleBarrier {
    /// The live participants in line, whether the ready key is there, and the
    /// sequence they were read at.
    async fn state(&self) -> Result<(Vec<(u64, String)>, bool, u64)> {
        let store = &self.lease.shared.store;
        let filters = [keys::every_in(self.line.line()), self.ready.clone()];
        let (entries, last) = store.list(&filters).await?;
        let ready = entries
            .iter()
            .any(|entry| entry.key == self.ready && entry.live());
        let line = contenders(entries.iter().filter(|entry| entry.key != self.ready));
        Ok((line, ready, last))
    }
}

#[async_trait]
impl DoubleBarrier for NatsDoubleBarrier {
    fn name(&self) -> &Name {
        &self.name
    }

    fn count(&self) -> usize {
        self.count.get()
    }

    async fn enter(&self) -> Result<()> {
        let mut entry = self.entry.lock().await;
        if entry.is_none() {
            let mut contender = self.line.enter_with(Bytes::new()).await?;
            // Kept until `leave`, or the session's end.
            contender.armed = false;
            *entry = Some(contender);
        }
        let key = entry.as_ref().map(|c| c.key.clone()).unwrap_or_default();
        drop(entry);
        let filter = &format!("{}.>", keys::key(Kind::DoubleBarrier, &self.name));
        RetryPolicy::default()
            .wait_until("a double barrier", None, || async {
                let (line, ready, last) = self.state().await?;
                match line.iter().position(|(_, k)| *k == key) {
                    Some(place) if place >= self.count.get() => {
                        self.lease.release(&key).await?;
                        *self.entry.lock().await = None;
                        Err(Error::TooManyParticipants {
                            name: self.name.as_str().to_owned(),
                            count: self.count.get(),
                        })
                    }
                    Some(_) if ready => Ok(Ready(())),
                    Some(_) if line.len() >= self.count.get() => {
                        let write = Write::put(self.ready.as_str(), Bytes::from_static(b"ready"));
                        self.lease.shared.store.publish(write).await?.compared()?;
                        Ok(Ready(()))
                    }
                    Some(_) => Ok(NotYet(async move {
                        let mut events = self.lease.shared.store.watch(filter, last + 1).await?;
                        tokio::select! {
                            () = self.lease.lost() => Err(Error::SessionLost),
                            event = events.next() => event.transpose().map(drop),
                        }
                    })),
                    None => Err(vanished(self.lease.is_over(), "participant key", &key)),
                }
            })
            .await
    }

    async fn leave(&self) -> Result<()> {
        if let Some(contender) = self.entry.lock().await.take() {
            self.lease.release(&contender.key).await?;
        }
        let filter = keys::every_in(self.line.line());
        RetryPolicy::default()
            .wait_until("a double barrier", None, || async {
                let (line, ready, last) = self.state().await?;
                if line.is_empty() {
                    if ready {
                        let write = Write::purge(self.ready.as_str());
                        self.lease.shared.store.publish(write).await?.compared()?;
                    }
                    return Ok(Ready(()));
                }
                Ok(NotYet(gone_after(&self.lease, &filter, last, &[])))
            })
            .await
    }
}

impl Make<Arc<Shared>, (OnSession<Arc<LeaseInner>>, NonZeroUsize)> for NatsDoubleBarrier {
    fn make(
        _: &Arc<Shared>,
        (on, count): (OnSession<Arc<LeaseInner>>, NonZeroUsize),
    ) -> Result<Self> {
        let line = NatsLocker::in_line(&on.session, &on.lease, &on.name, Kind::DoubleBarrier);
        Ok(Self {
            ready: format!("{}.ready", keys::key(Kind::DoubleBarrier, &on.name)),
            line,
            lease: on.lease,
            name: on.name,
            count,
            entry: tokio::sync::Mutex::new(None),
        })
    }
}

impl Make<Arc<Shared>, Name> for NatsBarrier {
    fn make(context: &Arc<Shared>, name: Name) -> Result<Self> {
        Ok(Self {
            key: keys::key(Kind::Barrier, &name),
            shared: Arc::clone(context),
            name,
        })
    }
}
