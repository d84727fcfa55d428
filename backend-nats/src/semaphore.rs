//! The semaphore: the lock's line, the first `permits` live keys hold.
//!
//! The semaphore `<name>` is the line `semaphore.<name>.q`: each acquisition creates a
//! key of its own as a lock contender does (see `src/lock.rs`), and holds a permit
//! while fewer than `permits` live keys are before it. A waiter watches the whole
//! line and lists it again when any key ends: which key's end lets it in depends on
//! every key before it, so a watch of one predecessor could miss its turn. A release
//! purges the key. The permit's token is its key's create sequence. Each key holds
//! the number of permits its acquirer named; one naming another number than a live
//! key's is refused ([`Error::InvalidArgument`]), and its own key purged.

use crate::shared::Shared;
use distsync_core::raw::Look::{NotYet, Ready};
use distsync_core::raw::RetryPolicy;
use distsync_core::raw::{Make, OnSession};
use std::num::NonZeroUsize;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use distsync_core::raw::{permit, Permit, Semaphore};
use distsync_core::{Error, Name, Result, Session};

use crate::keys::{self, Kind};
use crate::lock::{contenders, gone_after, hold_guard, vanished, Contender, NatsLocker};
use crate::session::LeaseInner;

/// A counting semaphore named `name` of `permits` permits.
pub(crate) struct NatsSemaphore {
    line: NatsLocker,
    session: Session,
    lease: Arc<LeaseInner>,
    name: Name,
    permits: NonZeroUsize,
}

impl NatsSemaphore {
    /// Whether `contender` holds a permit in a listing, and the sequence it was read at.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (its key purged) when the oldest live key of the
    /// line names another number of permits; [`Error::SessionLost`] when
    /// `contender`'s key is gone.
    async fn holds(&self, contender: &Contender) -> Result<(bool, u64)> {
        let store = &self.lease.shared.store;
        let (entries, last) = store.list(&[keys::every_in(self.line.line())]).await?;
        let mine = self.permits.get().to_string();
        // The oldest live key sets the number: a newer one naming another is refused.
        let oldest = (entries.iter())
            .filter(|entry| entry.live())
            .min_by_key(|entry| entry.seq);
        if let Some(oldest) = oldest.filter(|oldest| oldest.value != mine.as_bytes()) {
            self.lease.release(&contender.key).await?;
            return Err(Error::InvalidArgument(format!(
                "semaphore {:?} is in use with {} permits, not {mine}",
                self.name.as_str(),
                String::from_utf8_lossy(&oldest.value)
            )));
        }
        let line = contenders(&entries);
        match line.iter().position(|(_, key)| *key == contender.key) {
            Some(place) => Ok((place < self.permits.get(), last)),
            None => {
                let over = self.lease.is_over() || self.session.is_lost();
                Err(vanished(over, "permit key", &contender.key))
            }
        }
    }

    /// What a key in the line holds: the number of permits.
    fn value(&self) -> Bytes {
        Bytes::from(self.permits.get().to_string())
    }

    /// The permit of a granted `contender`.
    fn grant(&self, contender: Contender) -> Permit {
        let (key, token) = contender.granted();
        permit(hold_guard(&self.session, &self.lease, key, token))
    }
}

#[async_trait]
impl Semaphore for NatsSemaphore {
    fn name(&self) -> &Name {
        &self.name
    }

    fn permits(&self) -> usize {
        self.permits.get()
    }

    async fn acquire(&self) -> Result<Permit> {
        let contender = self.line.enter_with(self.value()).await?;
        let filter = keys::every_in(self.line.line());
        RetryPolicy::default()
            .wait_until("a permit", self.lease.lost_token(), || async {
                let (held, last) = self.holds(&contender).await?;
                Ok(if held {
                    Ready(())
                } else {
                    NotYet(gone_after(&self.lease, &filter, last, &[]))
                })
            })
            .await?;
        Ok(self.grant(contender))
    }

    async fn try_acquire(&self) -> Result<Option<Permit>> {
        let contender = self.line.try_enter_with(self.value()).await?;
        if self.holds(&contender).await?.0 {
            Ok(Some(self.grant(contender)))
        } else {
            contender.withdraw().await?;
            Ok(None)
        }
    }
}

impl Make<Arc<Shared>, (OnSession<Arc<LeaseInner>>, NonZeroUsize)> for NatsSemaphore {
    fn make(
        _: &Arc<Shared>,
        (on, permits): (OnSession<Arc<LeaseInner>>, NonZeroUsize),
    ) -> Result<Self> {
        let line = NatsLocker::in_line(&on.session, &on.lease, &on.name, Kind::Semaphore);
        Ok(Self {
            line,
            session: on.session,
            lease: on.lease,
            name: on.name,
            permits,
        })
    }
}
