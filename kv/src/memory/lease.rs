//! Leases: grant, keepalive, revoke and expiry (one background reaper task per store,
//! on `tokio` time), and the fault hook that freezes a lease.

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::records::LeaseEntry;
use super::store::{Inner, MemoryKv, State};
use crate::kv::LeaseId;
use distsync_core::error::{Error, Result};
use distsync_core::raw::locked;
use distsync_core::session::KeepAlive;

/// The largest lease TTL etcd accepts (`MaxLeaseTTL`, 9 000 000 000 s).
const MAX_LEASE_TTL: Duration = Duration::from_secs(9_000_000_000);

/// A deadline used when `now + ttl` does not fit in an [`Instant`].
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

impl MemoryKv {
    /// Test / fault hook: from now on, renewals of `lease` are answered
    /// [`KeepAlive::Renewed`] but do not extend it, modelling a paused or partitioned
    /// client whose renewals never reach the store. The lease then expires one TTL
    /// after its last effective renewal, and later renewals answer
    /// [`KeepAlive::Gone`]. Returns whether the lease exists.
    pub fn freeze_lease(&self, lease: LeaseId) -> bool {
        let mut state = self.inner.current(Instant::now());
        let entry = state.leases.get_mut(&lease);
        entry.map(|entry| entry.frozen = true).is_some()
    }

    /// Test hook: the ids of the live leases, in increasing order.
    pub fn lease_ids(&self) -> Vec<LeaseId> {
        let state = self.inner.current(Instant::now());
        let mut ids: Vec<LeaseId> = state.leases.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Test hook: how long `lease` has left before it expires, or `None` if the store
    /// does not know it (never granted, revoked or expired).
    pub fn lease_ttl_remaining(&self, lease: LeaseId) -> Option<Duration> {
        let now = Instant::now();
        self.inner
            .current(now)
            .leases
            .get(&lease)
            .map(|entry| entry.deadline.saturating_duration_since(now))
    }

    /// Test hook: the keys attached to `lease`, in key order, or `None` if the store
    /// does not know the lease (etcd's `TimeToLive` with keys).
    pub fn lease_keys(&self, lease: LeaseId) -> Option<Vec<String>> {
        self.inner
            .current(Instant::now())
            .leases
            .get(&lease)
            .map(|entry| entry.keys.iter().cloned().collect())
    }

    /// Starts the lease reaper if it is not running and a tokio runtime is present
    /// (it also restarts it if the runtime it ran on has shut down).
    pub(super) fn ensure_reaper(&self) {
        let mut slot = locked(&self.inner.reaper);
        if slot.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        *slot = Some(runtime.spawn(reap(
            Arc::downgrade(&self.inner),
            Arc::clone(&self.inner.wake),
        )));
    }
}

impl MemoryKv {
    /// Grants a lease of `ttl` (etcd's `LeaseGrant`; [`Kv::lease_grant`]).
    pub(super) fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        if ttl.is_zero() {
            return Err(Error::InvalidArgument(
                "lease ttl must be positive".to_owned(),
            ));
        }
        if ttl > MAX_LEASE_TTL {
            return Err(Error::InvalidArgument(format!(
                "lease ttl {ttl:?} is too large (at most {MAX_LEASE_TTL:?})"
            )));
        }
        let id = {
            let mut state = self.inner.lock();
            let now = Instant::now();
            state.expire_due(now);
            state.grant(ttl, now)
        };
        // The new deadline may be the earliest: let the reaper recompute its sleep.
        self.inner.wake.notify_one();
        tracing::trace!(lease = format_args!("{id:x}"), ?ttl, "memory lease granted");
        Ok(id)
    }

    /// Renews a lease, unless frozen ([`Kv::lease_keep_alive`]).
    pub(super) fn renew_lease(&self, lease: LeaseId) -> KeepAlive {
        let now = Instant::now();
        self.inner.current(now).renew(lease, now)
    }

    /// Revokes a lease if the store knows it ([`Kv::lease_revoke`]).
    pub(super) fn revoke_lease(&self, lease: LeaseId) {
        let mut state = self.inner.current(Instant::now());
        if state.revoke(lease) {
            tracing::trace!(lease = format_args!("{lease:x}"), "memory lease revoked");
        }
    }
}

impl State {
    /// Grants a lease.
    pub(super) fn grant(&mut self, ttl: Duration, now: Instant) -> LeaseId {
        let id = loop {
            self.lease_counter = self.lease_counter.wrapping_add(1);
            let id = lease_id(self.lease_counter);
            if id != 0 && !self.leases.contains_key(&id) {
                break id;
            }
        };
        let deadline = deadline_after(now, ttl);
        self.leases.insert(
            id,
            LeaseEntry {
                ttl,
                deadline,
                frozen: false,
                keys: BTreeSet::new(),
            },
        );
        self.deadlines.insert((deadline, id));
        id
    }

    /// Renews a lease from `now`, unless frozen.
    pub(super) fn renew(&mut self, lease: LeaseId, now: Instant) -> KeepAlive {
        let Some(entry) = self.leases.get_mut(&lease) else {
            return KeepAlive::Gone;
        };
        if !entry.frozen {
            let deadline = deadline_after(now, entry.ttl);
            let before = std::mem::replace(&mut entry.deadline, deadline);
            self.deadlines.remove(&(before, lease));
            self.deadlines.insert((deadline, lease));
        }
        KeepAlive::Renewed
    }

    /// Forgets a lease and deletes its keys in one revision; whether it existed.
    pub(super) fn revoke(&mut self, lease: LeaseId) -> bool {
        let Some(entry) = self.leases.remove(&lease) else {
            return false;
        };
        self.deadlines.remove(&(entry.deadline, lease));
        let mut batch = self.begin();
        for key in &entry.keys {
            self.delete_key(&mut batch, key);
        }
        self.finish(batch);
        true
    }

    /// Expires every lease whose deadline has passed, earliest first, each in its own
    /// revision (as etcd's lessor revokes them one by one).
    pub(super) fn expire_due(&mut self, now: Instant) {
        while let Some(&(deadline, lease)) = self.deadlines.first() {
            if deadline > now {
                return;
            }
            if self.revoke(lease) {
                tracing::debug!(lease = format_args!("{lease:x}"), "memory lease expired");
            } else {
                // An index entry without its lease (revoke removes both, so this is a
                // bug elsewhere): dropped, so that expiry cannot loop on it.
                self.deadlines.remove(&(deadline, lease));
            }
        }
    }

    /// The earliest lease deadline.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(deadline, _)| deadline)
    }
}

/// The lease reaper: expires due leases, then sleeps until the earliest deadline or
/// until woken. Holds the store only weakly, so dropping the store ends it.
pub(super) async fn reap(inner: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        let next = {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let state = inner.current(Instant::now());
            state.next_deadline()
        };
        match next {
            Some(deadline) => {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

/// `now + ttl`, or a far future deadline if that does not fit.
pub(super) fn deadline_after(now: Instant, ttl: Duration) -> Instant {
    now.checked_add(ttl)
        .or_else(|| now.checked_add(FAR_FUTURE))
        .unwrap_or(now)
}

/// A positive, unique, random-looking lease id from a counter (a bijection on 63 bits,
/// so distinct counters give distinct ids).
fn lease_id(counter: u64) -> LeaseId {
    const MASK: u64 = (1 << 63) - 1;
    let mut x = counter & MASK;
    x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15) & MASK;
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9) & MASK;
    x ^= x >> 32;
    // `x` < 2^63, so it fits.
    LeaseId::try_from(x).unwrap_or(LeaseId::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use bytes::Bytes;
    use futures::StreamExt;

    use super::super::test_support::*;
    use super::*;
    use crate::kv::{EventKind, Kv, Range, Txn, TxnOp};
    use crate::StoreError;

    #[tokio::test]
    async fn leases_attach_move_and_are_kept_with_ignore_lease() {
        let kv = MemoryKv::new();
        let first = kv.lease_grant(Duration::from_secs(60)).await.unwrap();
        let second = kv.lease_grant(Duration::from_secs(60)).await.unwrap();
        assert_ne!(first, second);
        assert!(first > 0 && second > 0);

        put_leased(&kv, "k", first).await;
        assert_eq!(kv.lease_keys(first).unwrap(), ["k"]);
        kv.txn(Txn::default().and_then(vec![TxnOp::put_ignore_lease("k", "new")]))
            .await
            .unwrap();
        let k = get(&kv, "k").await.unwrap();
        assert_eq!(
            (k.lease, k.value, k.version),
            (first, Bytes::from("new"), 2)
        );

        // Moving the key to another lease detaches it from the first.
        put_leased(&kv, "k", second).await;
        assert_eq!(kv.lease_keys(first).unwrap(), Vec::<String>::new());
        kv.lease_revoke(first).await.unwrap();
        assert_eq!(get(&kv, "k").await.unwrap().lease, second);

        // A plain put detaches it from any lease.
        put_one(&kv, "k", "plain").await;
        kv.lease_revoke(second).await.unwrap();
        assert_eq!(get(&kv, "k").await.unwrap().lease, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn lease_expiry_deletes_keys_in_one_revision_with_delete_events() {
        let kv = MemoryKv::new();
        let ttl = Duration::from_secs(5);
        let lease = kv.lease_grant(ttl).await.unwrap();
        let started = Instant::now();
        kv.txn(Txn::default().and_then(vec![
            TxnOp::put("s/a", "1", lease),
            TxnOp::put("s/b", "1", lease),
        ]))
        .await
        .unwrap(); // 2
        put_one(&kv, "s/plain", "1").await; // 3
        let mut watch = kv.watch("s/", true, 0).await.unwrap();

        // Nothing but the reaper runs while the test waits on the watch.
        let expired = events(watch.next().await.unwrap().unwrap());
        assert!(
            started.elapsed() >= ttl,
            "expired after {:?}",
            started.elapsed()
        );
        assert!(started.elapsed() < ttl + Duration::from_secs(1));
        assert_eq!(
            expired,
            [
                (EventKind::Delete, "s/a".to_owned(), 4),
                (EventKind::Delete, "s/b".to_owned(), 4)
            ]
        );
        assert_eq!(
            keys(&kv.range(Range::prefix("s/")).await.unwrap()),
            ["s/plain"]
        );
        assert_eq!(kv.lease_keep_alive(lease).await.unwrap(), KeepAlive::Gone);
        assert!(kv.lease_ids().is_empty());
        // A put to the expired lease is refused.
        let refused = put_leased_err(&kv, "s/late", lease).await;
        assert_eq!(store_error(&refused), &StoreError::LeaseNotFound(lease));
    }

    async fn put_leased_err(kv: &MemoryKv, key: &str, lease: LeaseId) -> Error {
        kv.txn(Txn::default().and_then(vec![TxnOp::put(key, "v", lease)]))
            .await
            .unwrap_err()
    }

    #[test]
    fn the_deadline_index_follows_grants_renewals_and_revokes() {
        let start = Instant::now();
        let mut state = State::new(100);
        let long = state.grant(Duration::from_secs(30), start);
        let short = state.grant(Duration::from_secs(10), start);
        let middle = state.grant(Duration::from_secs(20), start);
        assert_eq!(state.next_deadline(), Some(start + Duration::from_secs(10)));
        // Renewed late, the shortest lease is due last.
        assert_eq!(
            state.renew(short, start + Duration::from_secs(15)),
            KeepAlive::Renewed
        );
        let renewed = start + Duration::from_secs(25);
        assert_eq!(state.next_deadline(), Some(start + Duration::from_secs(20)));
        assert!(state.revoke(middle));
        assert_eq!(state.next_deadline(), Some(renewed));
        // Expiry takes the due leases in deadline order and leaves the index in step.
        state.expire_due(start + Duration::from_secs(26));
        assert_eq!(state.leases.keys().copied().collect::<Vec<_>>(), [long]);
        assert_eq!(
            state.deadlines.iter().copied().collect::<Vec<_>>(),
            [(start + Duration::from_secs(30), long)]
        );
        state.expire_due(start + Duration::from_secs(30));
        assert!(state.leases.is_empty() && state.deadlines.is_empty());
        assert_eq!(state.next_deadline(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn keepalive_extends_the_deadline() {
        let kv = MemoryKv::new();
        let ttl = Duration::from_secs(10);
        let lease = kv.lease_grant(ttl).await.unwrap();
        put_leased(&kv, "k", lease).await;

        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(kv.lease_ttl_remaining(lease), Some(Duration::from_secs(4)));
        assert_eq!(
            kv.lease_keep_alive(lease).await.unwrap(),
            KeepAlive::Renewed
        );
        assert_eq!(kv.lease_ttl_remaining(lease), Some(ttl));

        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(
            get(&kv, "k").await.is_some(),
            "renewed: alive past the first TTL"
        );

        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(get(&kv, "k").await.is_none());
        assert_eq!(kv.lease_ttl_remaining(lease), None);
        assert_eq!(kv.lease_keep_alive(lease).await.unwrap(), KeepAlive::Gone);
    }

    #[tokio::test]
    async fn revoke_deletes_keys_in_one_revision_and_forgets_the_lease() {
        let kv = MemoryKv::new();
        let lease = kv.lease_grant(Duration::from_secs(60)).await.unwrap();
        put_leased(&kv, "r/a", lease).await; // 2
        put_leased(&kv, "r/b", lease).await; // 3
        let mut watch = kv.watch("r/", true, 0).await.unwrap();

        kv.lease_revoke(lease).await.unwrap();
        assert_eq!(kv.revision(), 4);
        assert_eq!(
            events(watch.next().await.unwrap().unwrap()),
            [
                (EventKind::Delete, "r/a".to_owned(), 4),
                (EventKind::Delete, "r/b".to_owned(), 4)
            ]
        );
        assert_eq!(kv.lease_keep_alive(lease).await.unwrap(), KeepAlive::Gone);
        assert_eq!(kv.lease_keys(lease), None);

        // Unknown leases: revoking succeeds and changes nothing.
        kv.lease_revoke(lease).await.unwrap();
        kv.lease_revoke(12345).await.unwrap();
        assert_eq!(kv.revision(), 4);
        // A lease without keys is revoked without a new revision.
        let empty = kv.lease_grant(Duration::from_secs(60)).await.unwrap();
        kv.lease_revoke(empty).await.unwrap();
        assert_eq!(kv.revision(), 4);
        assert_eq!(kv.lease_keep_alive(77).await.unwrap(), KeepAlive::Gone);
    }

    #[tokio::test]
    async fn lease_grants_validate_the_ttl() {
        let kv = MemoryKv::new();
        assert!(matches!(
            kv.lease_grant(Duration::ZERO).await,
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            kv.lease_grant(Duration::MAX).await,
            Err(Error::InvalidArgument(_))
        ));
        let mut ids = HashSet::new();
        for _ in 0..100 {
            let id = kv.lease_grant(Duration::from_millis(1500)).await.unwrap();
            assert!(id > 0);
            assert!(ids.insert(id));
        }
        assert_eq!(kv.lease_ids().len(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn frozen_lease_expires_although_renewals_answer_renewed() {
        let kv = MemoryKv::new();
        let ttl = Duration::from_secs(3);
        let lease = kv.lease_grant(ttl).await.unwrap();
        put_leased(&kv, "held", lease).await;
        let mut watch = kv.watch("held", false, 0).await.unwrap();

        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            kv.lease_keep_alive(lease).await.unwrap(),
            KeepAlive::Renewed
        );
        let frozen_at = Instant::now();
        assert!(kv.freeze_lease(lease));
        assert!(!kv.freeze_lease(999));

        tokio::time::advance(Duration::from_secs(2)).await;
        // The renewal "succeeds" for the client but does not reach the store.
        assert_eq!(
            kv.lease_keep_alive(lease).await.unwrap(),
            KeepAlive::Renewed
        );
        assert_eq!(kv.lease_ttl_remaining(lease), Some(Duration::from_secs(1)));

        let expired = events(watch.next().await.unwrap().unwrap());
        assert_eq!(expired, [(EventKind::Delete, "held".to_owned(), 3)]);
        assert_eq!(
            frozen_at.elapsed(),
            ttl,
            "one TTL after the last real renewal"
        );
        assert_eq!(kv.lease_keep_alive(lease).await.unwrap(), KeepAlive::Gone);
    }

    #[test]
    fn a_store_built_outside_a_runtime_starts_its_reaper_on_first_use() {
        let kv = MemoryKv::new();
        assert!(kv.inner.reaper.lock().unwrap().is_none());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let lease = kv.lease_grant(Duration::from_secs(2)).await.unwrap();
            put_leased(&kv, "k", lease).await;
            let mut watch = kv.watch("k", false, 0).await.unwrap();
            let expired = events(watch.next().await.unwrap().unwrap());
            assert_eq!(expired, [(EventKind::Delete, "k".to_owned(), 3)]);
        });
    }

    #[tokio::test(start_paused = true)]
    async fn leases_expire_one_revision_each_in_deadline_order() {
        let kv = MemoryKv::new();
        let late = kv.lease_grant(Duration::from_secs(4)).await.unwrap();
        let early = kv.lease_grant(Duration::from_secs(2)).await.unwrap();
        put_leased(&kv, "late", late).await; // 2
        put_leased(&kv, "early", early).await; // 3
                                               // Both are due by the time anyone looks: expiry order is by deadline.
        tokio::time::advance(Duration::from_secs(5)).await;
        let mut watch = kv.watch("", true, 4).await.unwrap();
        assert_eq!(
            events(watch.next().await.unwrap().unwrap()),
            [(EventKind::Delete, "early".to_owned(), 4)]
        );
        assert_eq!(
            events(watch.next().await.unwrap().unwrap()),
            [(EventKind::Delete, "late".to_owned(), 5)]
        );
    }
}
