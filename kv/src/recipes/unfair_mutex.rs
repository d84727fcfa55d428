//! The unfair mutex: the fair mutex's keys, taken by whoever asks first after a release.
//!
//! Layout: the holder is the key `<ns><name>/<lease id in lowercase hex>` of the fair
//! mutex ([`super::mutex`], Go's `concurrency.Mutex`), so a holder of either kind is
//! the holder to both, to Go's `etcdctl lock`, to `status` and to a break. Waiters wait
//! apart, in the unfair wait line `<ns>/unfair-lock/<escaped name>/<lease hex>` (each
//! key on its waiter's lease), out of the range the fair line reads.
//!
//! Protocol:
//!
//! - **An attempt** is one transaction: put the own key if nothing is under
//!   `<ns><name>/` (a compare over the prefix, `create_revision == 0`), else read the
//!   own key. Granted, the key holds (the whole uncontended acquisition); refused, it
//!   wrote nothing: no key to delete again, no event for the head's watch, and of
//!   attempts that race for a free lock exactly one holds. So an unfair contender
//!   never stands in the fair line. The own key found there is one an earlier hold of
//!   this session left, its release still running in the background: it holds if it
//!   is the first created under the prefix, as in the fair mutex, and is deleted
//!   otherwise.
//! - **A waiter** puts its key in the unfair wait line and waits, as a fair waiter
//!   does, for the deletion of the wait-line key created just before its own: only the
//!   head of the wait line watches the lock. The head watches `<ns><name>/` and counts
//!   its keys; while there are any, it waits for the next deletion among them (a
//!   release, an expiry, a fair waiter that left) and counts again; it
//!   attempts only when it counts none. A newcomer can attempt first and win (that is
//!   the unfairness): the head then learns it from its count, a read, and waits again
//!   without writing. The head's attempt deletes its wait-line key in the same
//!   transaction that grants it the lock (one write), which makes the next waiter the
//!   head before the hold is returned. So a release wakes one waiter,
//!   and a grant one more (the next head, which reads and, the lock being held,
//!   watches): no herd.
//! - **A release** deletes the holder's key: one transaction, as in the fair mutex.
//!
//! The fencing token is the holder key's create revision, as in the fair mutex: one
//! sequence for both kinds, since every grant of either creates the holding key after
//! the previous holder's key was created.
//!
//! Mixed with fair contenders of the same name, an unfair attempt fails while the fair
//! line has any key, so unfair contenders wait behind the fair line.

use distsync_core::raw::SessionStoreSide as _;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use crate::kv::{Compare, CompareOp, EventKind, Range, Revision, Txn, TxnOp, WatchEvent};
use distsync_core::error::Result;
use distsync_core::guard::LockGuard;
use distsync_core::name::Name;

use super::hold::{gate, WaiterKey};
use super::key::{count_under, lease_key, range_at, KeySpace, Kind};
use super::mutex::KvMutex;
use super::wait::{next_matching, read, watch, NOW};

/// `<ns>/unfair-lock/<escaped name>/`: the unfair wait line of lock `name`.
pub(super) fn wait_line(space: &KeySpace, name: &Name) -> String {
    format!("{}/", Kind::UnfairLock.prefix(space.namespace(), name))
}

/// What one attempt found.
enum Attempt {
    /// The own key holds, created at this revision; `left_line`: the attempt deleted
    /// the waiter's key of the wait line in its transaction.
    Held { revision: Revision, left_line: bool },
    /// Another key was there; nothing of this attempt stays in the store.
    Busy,
}

impl KvMutex {
    /// One attempt: the own key put if nothing is under the prefix, one transaction
    /// that writes nothing when refused (see the module docs). A head of the wait
    /// line deletes its wait-line key (`leave`) in the granting transaction, so that
    /// the next waiter heads the line from the grant on at no write of its own.
    async fn attempt(&self, leave: Option<&str>) -> Result<Attempt> {
        let cleanup = self.keys.waiter(&self.key, None);
        let free = Compare::create_revision(&self.prefix, CompareOp::Equal, 0).over_prefix();
        let mut take = vec![TxnOp::put(&self.key, Bytes::new(), self.keys.lease)];
        take.extend(leave.map(TxnOp::delete));
        let txn = Txn::when(vec![free])
            .and_then(take)
            .or_else(vec![TxnOp::Range(Range::key(&self.key))]);
        let response = self.keys.txn(txn).await?;
        if response.succeeded {
            cleanup.disarm();
            return Ok(Attempt::Held {
                revision: response.revision,
                left_line: leave.is_some(),
            });
        }
        if range_at(&*self.keys.kv, &response, 0)?.kvs.is_empty() {
            // Refused, and nothing was written.
            cleanup.disarm();
            return Ok(Attempt::Busy);
        }
        self.left_behind(cleanup).await
    }

    /// The own key was there when an attempt was refused (see the module docs, "An
    /// attempt"): it holds, or is deleted.
    async fn left_behind(&self, mut cleanup: WaiterKey) -> Result<Attempt> {
        let (mine, owns) = self.enter(false).await?;
        cleanup.created_at(mine);
        if owns {
            cleanup.disarm();
            return Ok(Attempt::Held {
                revision: mine,
                left_line: false,
            });
        }
        cleanup.remove_now().await?;
        Ok(Attempt::Busy)
    }

    /// Waits as the head of the wait line, whose own key is `waiter_key`, until an
    /// attempt holds (see the module docs, "A waiter"). It watches the prefix from now,
    /// then counts, so a releaser that takes the lock again at once meets the head's
    /// read, not a take of its own. A deletion of its own key does not count: it is this
    /// session's, of a key an earlier hold left behind.
    async fn lead_the_wait(&self, waiter_key: &str) -> Result<(Revision, bool)> {
        let (kv, lost) = (&*self.keys.kv, self.keys.session.lost_token());
        let mut events = None;
        loop {
            let stream = match &mut events {
                Some(stream) => stream,
                None => events.insert(watch(kv, &self.prefix, true, NOW, Some(lost)).await?),
            };
            let line = read(kv, count_under(&self.prefix), Some(lost)).await?;
            self.wakeups.fetch_add(1, Ordering::Relaxed);
            if line.count == 0 {
                match self.attempt(Some(waiter_key)).await? {
                    Attempt::Held {
                        revision,
                        left_line,
                    } => return Ok((revision, left_line)),
                    Attempt::Busy => continue,
                }
            }
            let released = |event: &WatchEvent| {
                event.kind == EventKind::Delete
                    && event.kv.key != self.key
                    && event.kv.mod_revision > line.revision
            };
            if next_matching(stream, &self.prefix, Some(lost), released)
                .await?
                .is_none()
            {
                // The watch ended: a new one, and a new read.
                events = None;
            }
        }
    }

    /// Joins the wait line, waits to head it, then waits as its head until held.
    async fn wait(&self) -> Result<Revision> {
        let waiter_key = lease_key(&self.waiters, self.keys.lease);
        let mut cleanup = self.keys.waiter(&waiter_key, None);
        let own = self
            .keys
            .put_own(&waiter_key, Bytes::new(), "waiter", vec![], vec![]);
        let created = own.await?.create_revision;
        cleanup.created_at(created);
        cleanup.wait_turn(&self.waiters, created, None).await?;
        let (held, left_line) = self.lead_the_wait(&waiter_key).await?;
        // Before the hold is returned (so before its release can happen): the next
        // waiter heads the line from here, and watches from after this grant. The
        // granting transaction deleted the key, unless an earlier hold's key held.
        if left_line {
            cleanup.disarm();
        } else {
            cleanup.remove_now().await?;
        }
        Ok(held)
    }

    /// An unfair `lock` (`wait`) or `try_lock`: one attempt, then the wait line.
    pub(super) async fn acquire_unfairly(&self, wait: bool) -> Result<Option<LockGuard>> {
        let Some(gate) = gate(&self.keys.session, &self.key, wait).await? else {
            return Ok(None);
        };
        let revision = match self.attempt(None).await? {
            Attempt::Held { revision, .. } => revision,
            Attempt::Busy if !wait => return Ok(None),
            Attempt::Busy => {
                // A hold won while the wait is dropped is deleted again: the attempt
                // is one transaction, and its key is only kept once returned here.
                let mut key = self.keys.waiter(&self.key, None);
                let revision = self.wait().await?;
                key.created_at(revision);
                key.disarm();
                revision
            }
        };
        Ok(Some(self.guard(revision, Some(gate))))
    }
}

#[cfg(test)]
mod tests {
    use crate::recipes::mutex::locked;
    use distsync_core::Primitives;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use crate::kv::{Kv, Range, Revision};
    use crate::memory::MemoryBackend;
    use crate::recipes::testing::{backend, name, session, sessions, settle, within};
    use distsync_core::backend::Backend;
    use distsync_core::guard::LockGuard;
    use distsync_core::lock::Locker;
    use distsync_core::session::Session;

    /// `session`'s hold of the unfair lock `l`.
    async fn hold(backend: &MemoryBackend, session: &Session) -> LockGuard {
        let locker = backend.unfair_locker(session, name("l")).unwrap();
        locker.lock().await.unwrap()
    }

    /// The store's current revision.
    async fn revision(backend: &MemoryBackend) -> Revision {
        backend.kv().range(Range::key("x")).await.unwrap().revision
    }

    #[tokio::test]
    async fn the_holder_key_is_the_fair_mutexs_and_one_transaction_takes_it() {
        let backend = backend();
        let s = session(&backend).await;
        let before = backend.kv().range(Range::key("x")).await.unwrap().revision;
        let guard = backend
            .unfair_locker(&s, name("jobs/nightly"))
            .unwrap()
            .lock()
            .await
            .unwrap();
        assert_eq!(guard.key(), format!("jobs/nightly/{:x}", s.id().0));
        let stored = backend.kv().range(Range::key(guard.key())).await.unwrap();
        assert_eq!(stored.kvs[0].create_revision as u64, guard.token().get());
        assert_eq!(stored.revision, before + 1, "one write acquires");
        guard.unlock().await.unwrap();
        let after = backend.kv().range(Range::prefix("jobs/")).await.unwrap();
        assert_eq!((after.count, after.revision), (0, before + 2));
    }

    #[tokio::test]
    async fn a_refused_attempt_writes_nothing() {
        let backend = backend();
        let [s1, s2, s3] = sessions(&backend).await;
        let held = hold(&backend, &s1).await;
        let before = revision(&backend).await;
        for s in [&s2, &s3, &s2] {
            let locker = backend.unfair_locker(s, name("l")).unwrap();
            assert!(locker.try_lock().await.unwrap().is_none());
        }
        assert_eq!(revision(&backend).await, before, "a refused try_lock wrote");
        let line = backend.kv().range(Range::prefix("l/")).await.unwrap();
        assert_eq!(line.count, 1, "only the holder's key is under the lock");
        held.unlock().await.unwrap();
    }

    #[tokio::test]
    async fn a_head_is_granted_and_leaves_the_line_in_one_write() {
        let backend = backend();
        let [s1, s2] = sessions(&backend).await;
        let held = hold(&backend, &s1).await;
        let waiter = backend.unfair_locker(&s2, name("l")).unwrap();
        let waiting = tokio::spawn(async move {
            let guard = waiter.lock().await;
            (guard, waiter)
        });
        settle().await;
        assert!(!waiting.is_finished());
        let before = revision(&backend).await;
        held.unlock().await.unwrap();
        let (guard, waiter) = within(waiting).await.unwrap();
        let guard = guard.unwrap();
        assert_eq!(
            revision(&backend).await,
            before + 2,
            "the release, then the grant that also takes the waiter out of the line"
        );
        assert_eq!(waiter.contenders().await.unwrap(), 1, "the holder alone");
        guard.unlock().await.unwrap();
    }

    #[tokio::test]
    async fn fair_and_unfair_lockers_of_one_name_exclude_each_other() {
        let backend = backend();
        let [s1, s2, s3] = sessions(&backend).await;
        let fair = locked(&backend, &s1, "l").await;
        let unfair = backend.unfair_locker(&s2, name("l")).unwrap();
        assert!(unfair.try_lock().await.unwrap().is_none());
        let waiting = tokio::spawn(async move { unfair.lock().await });
        settle().await;
        assert!(!waiting.is_finished());
        let fair_token = fair.token();
        fair.unlock().await.unwrap();
        let unfair = within(waiting).await.unwrap().unwrap();
        assert!(unfair.token() > fair_token);
        let fair = backend.locker(&s3, name("l")).unwrap();
        assert!(fair.try_lock().await.unwrap().is_none());
        let waiting = tokio::spawn(async move { fair.lock().await });
        settle().await;
        assert!(!waiting.is_finished());
        let unfair_token = unfair.token();
        unfair.unlock().await.unwrap();
        assert!(within(waiting).await.unwrap().unwrap().token() > unfair_token);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn contenders_exclude_each_other_and_tokens_grow() {
        let backend = backend();
        let inside = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let s = session(&backend).await;
            let locker = backend.unfair_locker(&s, name("shared")).unwrap();
            let inside = Arc::clone(&inside);
            tasks.push(tokio::spawn(async move {
                let mut tokens = Vec::new();
                for _ in 0..20 {
                    let guard = locker.lock().await.unwrap();
                    assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                    tokio::task::yield_now().await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                    tokens.push(guard.token());
                    guard.unlock().await.unwrap();
                }
                drop(s);
                tokens
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            let tokens = within(task).await.unwrap();
            assert!(tokens.windows(2).all(|pair| pair[0] < pair[1]));
            all.extend(tokens);
        }
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 120, "every grant has a token of its own");
    }

    #[tokio::test]
    async fn a_release_wakes_the_head_of_the_wait_line_alone() {
        let backend = backend();
        let holder = session(&backend).await;
        let holding = backend.unfair_locker(&holder, name("l")).unwrap();
        let mut guard = holding.lock().await.unwrap();
        let mut lockers = Vec::new();
        let mut waits = Vec::new();
        for _ in 0..100 {
            let s = session(&backend).await;
            let locker: Arc<dyn Locker> = Arc::from(backend.unfair_locker(&s, name("l")).unwrap());
            lockers.push((s, Arc::clone(&locker)));
            waits.push(tokio::spawn(
                async move { locker.lock().await?.unlock().await },
            ));
        }
        settle().await;
        assert_eq!(holding.contenders().await.unwrap(), 101);
        let releases = 20;
        for _ in 0..releases {
            // The holder releases and takes the lock again at once: the head of the
            // wait line is woken, and either wins or loses to the holder.
            guard.unlock().await.unwrap();
            guard = within(holding.lock()).await.unwrap();
        }
        let woken: u64 = lockers.iter().map(|(_, locker)| locker.wakeups()).sum();
        assert!(
            woken <= 2 * releases,
            "{woken} wake-ups for {releases} releases"
        );
        guard.unlock().await.unwrap();
        for wait in waits {
            within(wait).await.unwrap().unwrap();
        }
        let woken: u64 = lockers.iter().map(|(_, locker)| locker.wakeups()).sum();
        // Each waiter's grant was one more release.
        assert!(woken <= 2 * (releases + 101), "{woken} wake-ups in all");
    }

    #[tokio::test]
    async fn a_head_that_loses_the_take_writes_nothing() {
        let backend = backend();
        let [s1, s2] = sessions(&backend).await;
        let holding = backend.unfair_locker(&s1, name("l")).unwrap();
        let mut guard = holding.lock().await.unwrap();
        let waiter = backend.unfair_locker(&s2, name("l")).unwrap();
        let waiting = tokio::spawn(async move { waiter.lock().await });
        settle().await;
        let before = revision(&backend).await;
        let releases = 10;
        for _ in 0..releases {
            // The release wakes the head, which looks only after the holder took the
            // lock again: it must go back to waiting without a write.
            guard.unlock().await.unwrap();
            guard = within(holding.lock()).await.unwrap();
            settle().await;
        }
        assert!(!waiting.is_finished());
        assert_eq!(
            revision(&backend).await - before,
            2 * releases,
            "only the holder's releases and takes write"
        );
        guard.unlock().await.unwrap();
        within(waiting)
            .await
            .unwrap()
            .unwrap()
            .unlock()
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_cancelled_waiter_leaves_no_key_behind() {
        let backend = backend();
        let [s1, s2] = sessions(&backend).await;
        let held = hold(&backend, &s1).await;
        let waiter = backend.unfair_locker(&s2, name("l")).unwrap();
        let waiting = tokio::spawn(async move { waiter.lock().await });
        settle().await;
        assert_eq!(
            backend
                .kv()
                .range(Range::prefix("/unfair-lock/l/"))
                .await
                .unwrap()
                .count,
            1
        );
        waiting.abort();
        settle().await;
        assert_eq!(
            backend
                .kv()
                .range(Range::prefix("/unfair-lock/l/"))
                .await
                .unwrap()
                .count,
            0
        );
        assert_eq!(
            backend.kv().range(Range::prefix("l/")).await.unwrap().count,
            1
        );
        held.unlock().await.unwrap();
    }

    #[tokio::test]
    async fn a_revoked_holder_frees_the_lock_and_learns_it() {
        let backend = backend();
        let [s1, s2] = sessions(&backend).await;
        let held = hold(&backend, &s1).await;
        let waiter = backend.unfair_locker(&s2, name("l")).unwrap();
        let waiting = tokio::spawn(async move { waiter.lock().await });
        settle().await;
        backend.revoke_session(s1.id()).await.unwrap();
        within(held.lost()).await;
        let next = within(waiting).await.unwrap().unwrap();
        assert!(next.token() > held.token());
    }
}
