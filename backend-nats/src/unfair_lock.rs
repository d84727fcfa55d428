//! The unfair lock: a holder key that fair contenders take for the head of their
//! line, and a wait line of its own in which only the head asks again.
//!
//! # Layout
//!
//! The holder of the unfair lock `<name>` is the key `lock.<name>.q.holder`, in the
//! fair lock's line, where every fair contender orders it first (see
//! `src/lock.rs`): the two kinds of lock of one name exclude each other. Its value
//! names the holding session and attempt, so that a create whose answer was lost is
//! recognised and a revoke finds the session's hold. Takes that lose wait in the
//! line `unfair.<name>.q.<session>.<n>`, entered again with the key the session
//! released there lately, as the fair line is (see `src/released.rs`).
//!
//! # Protocol
//!
//! 1. **Take**, on a server outside a JetStream cluster (where a compare with the
//!    whole line is checked in one step with its write, see
//!    [`crate::store::Store::compares_lines`]): list the fair line; with a live key
//!    there (the holder, or a fair contender holding or waiting) the take loses.
//!    Otherwise create the holder key compared with the whole line
//!    (`Nats-Expected-Last-Subject-Sequence-Subject` on `lock.<name>.q.>`) at the last
//!    sequence the listing read: it lands only while nothing was written to the line
//!    since, so the line is still empty and the take holds. Refused (another take, or
//!    a fair contender, wrote first), it lists again. A handle whose last release left
//!    the line empty (below) takes with no listing: its create is compared with the
//!    line at that release's tombstone, so an uncontended cycle, and the releaser's
//!    take again in a contended one, is a create and a purge.
//!
//!    **In a cluster**: create the holder key with a compare on its last sequence (0,
//!    or the tombstone its last holder left), then list the fair line. The take holds
//!    when the holder key is the only live key there; otherwise (a fair contender,
//!    holding or waiting, was there) it purges the holder key again and loses.
//!
//!    Either way a take holds only where the line is empty, so every fair contender
//!    that arrives later creates its key after it and carries a higher token.
//! 2. **Wait**: a take that lost enters the wait line. Its head lists the fair line
//!    and watches it for any key ending after that listing, then takes again: a
//!    release wakes one waiter, which may lose to a newcomer and wait again. Every
//!    other waiter watches only its predecessor in the wait line.
//! 3. **Release**: outside a cluster, purge the holder key compared with the whole
//!    line at its create: unfair waiters wait in a line of their own and write
//!    nothing to the fair line, so the compare lands unless a fair contender joined
//!    meanwhile, and the line is left empty. Refused, and in a cluster, the key is
//!    purged with a compare on its own sequence, as a fair hold's.
//!
//! The token of a hold is the holder key's create sequence.

use crate::shared::Shared;
use distsync_core::raw::Look::{NotYet, Ready};
use distsync_core::raw::RetryPolicy;
use distsync_core::raw::{Make, OnSession};
use futures::FutureExt as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use distsync_core::raw::locked;
use distsync_core::raw::Locker;
use distsync_core::{Error, LockGuard, Name, Result, Session};

use crate::keys::{self, Kind};
use crate::lock::{contenders, gone_after, hold_guard, hold_guard_with, vanished, Contender};
use crate::session::{Compare, LeaseInner};

/// How many times a take reads again when its create found the line (or, in a
/// cluster, the holder key) written since it read it (another take, a fair
/// contender, a release or an expiry).
const TAKE_TRIES: usize = 3;

/// The fair line's live contenders, in line, and the stream sequence they were read
/// at ([`NatsUnfairLocker::fair_line`]).
type Listing = (Vec<(u64, String)>, u64);

/// What one take came to.
enum Take {
    /// The take holds the lock.
    Held(LockGuard),
    /// It lost; with the fair line as its last listing read it, when that listing
    /// found a live key there and no write of the take followed it.
    Lost(Option<Listing>),
}

/// An unfair mutex named `name`.
pub(crate) struct NatsUnfairLocker {
    session: Session,
    lease: Arc<LeaseInner>,
    name: Name,
    /// The fair line, `lock.<name>.q`.
    line: String,
    /// `lock.<name>.q.holder`.
    holder: String,
    /// The wait line, `unfair.<name>.q`.
    waiting: String,
    /// The fair line's last sequence as this handle's last release left it empty,
    /// taken by the next take (see the module docs).
    emptied: Arc<Mutex<Option<u64>>>,
    wakeups: AtomicU64,
}

impl NatsUnfairLocker {
    pub(crate) fn new(session: Session, lease: Arc<LeaseInner>, name: Name) -> Self {
        Self {
            line: keys::line(Kind::Lock, &name),
            holder: keys::unfair_holder(&name),
            waiting: keys::line(Kind::UnfairWait, &name),
            emptied: Arc::default(),
            session,
            lease,
            name,
            wakeups: AtomicU64::new(0),
        }
    }

    /// The fair line's live keys and the stream sequence they were read at, and the
    /// line's own last sequence (0: no key of it has a message).
    async fn fair_line(&self) -> Result<(Listing, u64)> {
        let store = &self.lease.shared.store;
        let (entries, last) = store.list(&[keys::every_in(&self.line)]).await?;
        let line_last = entries.iter().map(|entry| entry.seq).max().unwrap_or(0);
        Ok(((contenders(&entries), last), line_last))
    }

    /// Step 1: one take; `None` when the lock is held or the take lost.
    async fn take(&self) -> Result<Option<LockGuard>> {
        Ok(match self.attempt().await? {
            Take::Held(guard) => Some(guard),
            Take::Lost(_) => None,
        })
    }

    /// Step 1: one take, and what it found.
    async fn attempt(&self) -> Result<Take> {
        if self.session.is_lost() {
            return Err(Error::SessionLost);
        }
        if self.lease.shared.store.compares_lines() {
            self.take_on_empty_line().await
        } else {
            self.take_then_list().await
        }
    }

    /// Step 1 outside a cluster: a create compared with the line as a listing (or
    /// this handle's last release) left it.
    async fn take_on_empty_line(&self) -> Result<Take> {
        let mut emptied = locked(&self.emptied).take();
        for _ in 0..TAKE_TRIES {
            let last = match emptied.take() {
                Some(last) => last,
                None => match self.fair_line().await? {
                    ((line, _), last) if line.is_empty() => last,
                    (held, _) => return Ok(Take::Lost(Some(held))),
                },
            };
            let value = keys::owner_value(self.lease.id, self.lease.next_number());
            let empty = Compare::line(&self.lease.shared.store, &self.line, last);
            let created = self
                .lease
                .create_at(&self.holder, Bytes::from(value), empty, None, None)
                .await?;
            if let Some(token) = created {
                return Ok(Take::Held(self.hold(token)));
            }
        }
        Ok(Take::Lost(None))
    }

    /// Step 1 in a cluster: a create compared with the holder key's last sequence,
    /// then a listing of the line that tells whether it holds.
    async fn take_then_list(&self) -> Result<Take> {
        let store = &self.lease.shared.store;
        for _ in 0..TAKE_TRIES {
            let expected = match store.last(&self.holder).await? {
                Some(entry) if entry.live() => return Ok(Take::Lost(None)),
                Some(entry) => entry.seq,
                None => 0,
            };
            let value = keys::owner_value(self.lease.id, self.lease.next_number());
            let Some(token) = self
                .lease
                .create_at(
                    &self.holder,
                    value.into(),
                    Compare::Key(expected),
                    None,
                    None,
                )
                .await?
            else {
                continue;
            };
            let ((line, _), _) = self.fair_line().await?;
            if line.iter().all(|(_, key)| *key == self.holder) {
                let holder = self.holder.clone();
                return Ok(Take::Held(hold_guard(
                    &self.session,
                    &self.lease,
                    holder,
                    token,
                )));
            }
            // A fair contender was in line: leave the lock to it.
            self.lease.release(&self.holder).await?;
            return Ok(Take::Lost(None));
        }
        Ok(Take::Lost(None))
    }

    /// The guard of a take that holds with `token`: its release tries to leave the
    /// line empty, and records it for this handle's next take.
    fn hold(&self, token: u64) -> LockGuard {
        let lease = Arc::clone(&self.lease);
        let (holder, line) = (self.holder.clone(), self.line.clone());
        let emptied = Arc::clone(&self.emptied);
        hold_guard_with(
            &self.session,
            &self.lease,
            self.holder.clone(),
            token,
            Box::new(move || {
                Box::pin(async move {
                    let left = lease.release_emptying(&holder, &line).await?;
                    *locked(&emptied) = left;
                    Ok(())
                })
            }),
        )
    }

    /// Step 2, for a take that lost: waits in the wait line until a take holds.
    async fn wait(&self, entry: &Contender) -> Result<LockGuard> {
        let store = &self.lease.shared.store;
        RetryPolicy::default()
            .wait_until("the unfair lock", self.lease.lost_token(), || async {
                let (entries, last) = store.list(&[keys::every_in(&self.waiting)]).await?;
                let line = contenders(&entries);
                let place = line.iter().position(|(_, key)| *key == entry.key);
                match place {
                    None => Err(vanished(self.lease.is_over(), "waiter key", &entry.key)),
                    Some(0) => {
                        let listed = match self.attempt().await? {
                            Take::Held(guard) => return Ok(Ready(guard)),
                            Take::Lost(listed) => listed,
                        };
                        // The take's own listing when it lost to a live key there: the line
                        // to watch, with no second read.
                        let (line, last) = match listed {
                            Some(listed) => listed,
                            None => self.fair_line().await?.0,
                        };
                        Ok(NotYet(
                            async move {
                                if line.is_empty() {
                                    return Ok(());
                                }
                                let filter = keys::every_in(&self.line);
                                if gone_after(&self.lease, &filter, last, &line).await? {
                                    self.wakeups.fetch_add(1, Ordering::Relaxed);
                                }
                                Ok(())
                            }
                            .boxed(),
                        ))
                    }
                    Some(at) => {
                        let before = line[at - 1].clone();
                        Ok(NotYet(
                            async move {
                                let listed = std::slice::from_ref(&before);
                                gone_after(&self.lease, &before.1, last, listed)
                                    .await
                                    .map(drop)
                            }
                            .boxed(),
                        ))
                    }
                }
            })
            .await
    }
}

#[async_trait]
impl Locker for NatsUnfairLocker {
    fn name(&self) -> &Name {
        &self.name
    }

    async fn lock(&self) -> Result<LockGuard> {
        if let Some(guard) = self.take().await? {
            return Ok(guard);
        }
        // The key this session released in the wait line lately, if any: a line of one
        // key per session lists no tombstones of earlier waits (see `src/released.rs`).
        let entered = self
            .lease
            .enter_line(&self.waiting, Bytes::new(), None)
            .await?;
        // Dropped (granted or cancelled), the waiter's key is purged. Alone in the
        // wait line or not, it waits for the lock.
        let entry = Contender::new(&self.lease, entered);
        self.wait(&entry).await
    }

    async fn try_lock(&self) -> Result<Option<LockGuard>> {
        self.take().await
    }

    async fn contenders(&self) -> Result<usize> {
        let store = &self.lease.shared.store;
        let filters = [keys::every_in(&self.line), keys::every_in(&self.waiting)];
        let (entries, _) = store.list(&filters).await?;
        Ok(entries.iter().filter(|entry| entry.live()).count())
    }

    fn wakeups(&self) -> u64 {
        self.wakeups.load(Ordering::Relaxed)
    }
}

impl Make<Arc<Shared>, OnSession<Arc<LeaseInner>>> for NatsUnfairLocker {
    fn make(_: &Arc<Shared>, on: OnSession<Arc<LeaseInner>>) -> Result<Self> {
        Ok(Self::new(on.session, on.lease, on.name))
    }
}

#[cfg(test)]
mod tests {
    use distsync_core::{Backend, SessionOptions};

    use super::*;
    use crate::lock::NatsLocker;

    /// The test server's bucket `unfair_line`, or `None` after a loud skip notice.
    async fn backend() -> Option<crate::NatsBackend> {
        crate::test_server::backend("DISTSYNC_NATS_URL", "unfair_line").await
    }

    /// The unfair lock of a name of its own on the test server, through a session of
    /// its own, and that name.
    async fn unfair_locker() -> Option<(crate::NatsBackend, Session, NatsUnfairLocker, Name)> {
        let backend = backend().await?;
        let name = Name::new(format!("unfair-{}", distsync_core::raw::call_id())).unwrap();
        let (session, lease) = open(&backend).await;
        let unfair = NatsUnfairLocker::new(session.clone(), lease, name.clone());
        Some((backend, session, unfair, name))
    }

    /// A session of `backend` and its lease.
    async fn open(backend: &crate::NatsBackend) -> (Session, Arc<LeaseInner>) {
        let session = backend.session(SessionOptions::default()).await.unwrap();
        let lease = Arc::clone(crate::session::lease_of(&session, &backend.shared).unwrap());
        (session, lease)
    }

    /// A release that nobody's write followed leaves the line empty, and the handle's
    /// next take holds without a listing; once a fair contender has written to the
    /// line, that take's compare is refused and the take finds the fair holder.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_take_after_an_emptying_release_holds_only_while_the_line_is_untouched() {
        let Some((backend, session, unfair, name)) = unfair_locker().await else {
            return;
        };
        let emptied = || *unfair.emptied.lock().unwrap();

        unfair.lock().await.unwrap().unlock().await.unwrap();
        let left = emptied().expect("an uncontended release leaves the line empty");
        let again = unfair.try_lock().await.unwrap().expect("a free lock");
        assert_eq!(emptied(), None, "the take used the release's record");
        assert!(again.token().0 > left, "its create came after the release");
        again.unlock().await.unwrap();
        assert!(emptied().is_some());

        let (fair_session, fair_lease) = open(&backend).await;
        let fair = NatsLocker::new(fair_session.clone(), fair_lease, name);
        let held = fair.lock().await.unwrap();
        assert!(
            unfair.try_lock().await.unwrap().is_none(),
            "taken while the fair lock is held"
        );
        held.unlock().await.unwrap();
        let taken = unfair.try_lock().await.unwrap().expect("a free lock");
        taken.unlock().await.unwrap();
        fair_session.close().await.unwrap();
        session.close().await.unwrap();
    }

    /// A fair contender that joins the line while the unfair lock is held keeps the
    /// release from leaving the line empty, and is granted by it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fair_contender_in_line_keeps_the_release_from_emptying_it() {
        let Some((backend, session, unfair, name)) = unfair_locker().await else {
            return;
        };
        let held = unfair.lock().await.unwrap();
        let (fair_session, fair_lease) = open(&backend).await;
        let fair = NatsLocker::new(fair_session.clone(), fair_lease, name);
        let waiting = tokio::spawn(async move { fair.lock().await.map(|guard| (guard, fair)) });
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while unfair.contenders().await.unwrap() < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the fair contender never joined"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        held.unlock().await.unwrap();
        assert_eq!(*unfair.emptied.lock().unwrap(), None);
        let (granted, _fair) = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("the fair contender is granted on the release")
            .unwrap()
            .unwrap();
        assert!(unfair.try_lock().await.unwrap().is_none());
        granted.unlock().await.unwrap();
        fair_session.close().await.unwrap();
        session.close().await.unwrap();
    }
}
