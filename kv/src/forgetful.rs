//! [`ForgetfulKv`]: a [`Kv`] over a store that can forget everything (its data wiped
//! and started again at the same address, its tables dropped and created again), with
//! the lock-delay after it forgets and fencing tokens that keep growing across it.
//!
//! **What tells it**: the signs [`Amnesia`] judges (see [`crate::amnesia`]): every
//! answer's revision, the store's identity ([`Kv::identity`]), and the epoch marker,
//! read as a session opens and when a renewal finds its lease gone. A session whose
//! check of the marker failed after the read (its write timed out) fails to open; the
//! next session checks again, and waits out the lock-delay its write starts.
//!
//! **On detection** the client's sessions are lost (their next renewal answers at once
//! that they are gone, so `lost()` fires) and a warning names the reason. Then nothing
//! is granted through this client until the lock-delay has passed: every put bound to
//! a lease (joining a lock's, write lock's, election's or semaphore's line) waits until
//! the longest session TTL that could have existed has passed since the detection (the
//! marker's, the client's own longest, and the configured bound). A holder's
//! client-side deadline falls within its TTL, so every old holder's `lost()` comes
//! before anyone is granted again.
//!
//! **Clients that never knew the old store** cannot tell a store that forgot from a
//! new one: for them a missing marker is the only sign. With a bound on session TTLs
//! (the URL's `max_session_ttl=`) the client that finds the marker missing writes it
//! together with a hold key (`<namespace>/amnesia-hold`) bound to a lease of the
//! bound's length, and every client that opens a session while the hold key lives (or
//! writes it) waits out the bound before its first grant. A session longer than the
//! bound is refused ([`distsync_core::Error::InvalidArgument`]), so the bound covers
//! every session. The price: a namespace's first session on a store waits the bound
//! once before its first grant. A client without the bound leaves a missing marker
//! alone (unless it saw the store forget, then it writes the marker and the hold key
//! for its own lock-delay): it cannot tell a new store from one that forgot, and grants
//! without a wait. Only the bound makes a backend declare `exclusive_across_restart`,
//! and every client of a namespace must give it (the same one, or a larger one).
//!
//! **Fencing tokens** are create revisions, which start again at 1 on a store that
//! forgot. The client reports every revision it reads as the store's plus an offset,
//! and sends every revision it writes less it, so the recipes above see one revision
//! sequence. The offset is the marker's: a client that writes a fresh marker seeds it
//! from its clock, in microseconds ([`distsync_core::raw::EpochBook`] says why that
//! is above every token of the store before), and a client that detects that the
//! store forgot raises it to the highest revision it reported. Every client adopts the
//! marker's offset when it reads the marker, and a client reads it again at the end of
//! every lock-delay. An old holder alive across the forgetting publishes its offset
//! as soon as the store answers it again: a publication that fails is retried in the
//! background while the client lives (the probe).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use distsync_core::rate_limiter::Rate;
use distsync_core::raw::{EpochMarker, RetryPolicy};
use distsync_core::{Error, KeepAlive, Result};
use futures::stream::BoxStream;
use futures::StreamExt as _;

use crate::amnesia::{self, Amnesia};
use crate::kv::{
    Compare, CompareOp, CompareTarget, Kv, LeaseId, Range, RangeResponse, RateDecision, Revision,
    Txn, TxnOp, TxnOpResponse, TxnResponse, WatchResponse,
};

/// How soon a probe after a failed renewal reads the marker again, at first: the wait
/// doubles up to [`PROBE_INTERVAL_MAX`].
const PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// The longest wait between a probe's reads: well below any lock-delay, so that an old
/// holder publishes its token offset before a newcomer's lock-delay ends.
const PROBE_INTERVAL_MAX: Duration = Duration::from_secs(1);

/// How many times the marker is read and written again when another client changed it
/// in between.
const MARKER_TRIES: usize = 8;

/// A [`Kv`] over a store `K` that can forget, with the epoch marker, the lock-delay and
/// the token offset (see the [module docs](self)). `K` answers with the store's own
/// revisions; the recipes above see the reported ones.
pub struct ForgetfulKv<K: Kv> {
    store: Arc<K>,
    amnesia: Arc<Amnesia>,
    /// Whether a probe of the store runs (see [`ForgetfulKv::probe`]).
    probing: Arc<AtomicBool>,
}

impl<K: Kv + std::fmt::Debug> std::fmt::Debug for ForgetfulKv<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForgetfulKv")
            .field("store", &self.store)
            .field("amnesia", &self.amnesia)
            .finish()
    }
}

impl<K: Kv> ForgetfulKv<K> {
    /// `store`, its epoch marker under `namespace` (the recipes' namespace: the marker
    /// is `<namespace>/amnesia`), with `bound` on session TTLs (`None`: no lock-delay
    /// for a client that never knew the old store).
    pub fn new(store: K, namespace: &str, bound: Option<Duration>) -> Self {
        let amnesia = Amnesia::new(store.backend(), Some(namespace.to_owned()), bound);
        Self {
            amnesia: Arc::new(amnesia),
            store: Arc::new(store),
            probing: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The store underneath, answering with its own revisions.
    pub fn store(&self) -> &K {
        &self.store
    }

    /// The configured bound on session TTLs.
    pub fn bound(&self) -> Option<Duration> {
        self.amnesia.bound()
    }

    /// After a renewal failed or went unanswered (the store down, perhaps being
    /// wiped): the marker read in the background until the store answers, so that a
    /// client whose sessions end at their deadline while the store is down still tells
    /// a store that forgot when it is back, and publishes the token offset before a
    /// newcomer's lock-delay ends. However long the store takes to come back (a wiped
    /// server reinstalled on a loaded machine can take minutes), the probe goes on
    /// while this client lives: a probe that gave up would leave the tokens this
    /// client saw unknown to the store, and a newcomer's tokens could go back below
    /// them. One probe at a time; it ends when the client is dropped.
    fn probe(&self) {
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.probing.store(false, Ordering::Release);
            return;
        };
        // Weak: the probe keeps neither the store's connections nor the client alive.
        let store = Arc::downgrade(&self.store);
        let amnesia = Arc::downgrade(&self.amnesia);
        let probing = Arc::clone(&self.probing);
        runtime.spawn(async move {
            let mut interval = PROBE_INTERVAL;
            loop {
                let (Some(store), Some(amnesia)) = (store.upgrade(), amnesia.upgrade()) else {
                    break;
                };
                let probe = Self {
                    store,
                    amnesia,
                    probing: Arc::clone(&probing),
                };
                match probe.sync_marker(None).await {
                    Ok(()) => break,
                    Err(error) => tracing::debug!(
                        backend = probe.store.backend(),
                        %error,
                        "the store did not answer the epoch marker's read after a failed renewal"
                    ),
                }
                drop(probe);
                tokio::time::sleep(interval).await;
                interval = (interval * 2).min(PROBE_INTERVAL_MAX);
            }
            probing.store(false, Ordering::Release);
        });
    }

    /// After a sign: the marker read again and the token offset written into it, so
    /// that other clients adopt it. A failure starts the probe, which reads and writes
    /// it until the store answers: a holder whose session is gone renews nothing more,
    /// and nothing else of it would publish its tokens.
    async fn publish(&self) {
        if let Err(error) = self.sync_marker(None).await {
            tracing::debug!(
                backend = self.store.backend(),
                %error,
                "writing the epoch marker failed; probing the store until it answers"
            );
            self.probe();
        }
    }

    /// Waits out a lock-delay before a grant, then reads the marker again (adopting
    /// the token offset an old holder wrote during the delay).
    ///
    /// Cancel-safe: it only waits and reads.
    async fn hold(&self) {
        loop {
            while let Some(until) = self.amnesia.hold() {
                tokio::time::sleep_until(until).await;
            }
            if !self.amnesia.take_reread() {
                return;
            }
            self.publish().await;
        }
    }

    /// Judges an answer's `revision` against what was known when its request left
    /// (`ticket`); a sign that the store forgot publishes.
    async fn judge(&self, ticket: amnesia::Ticket, revision: Revision) {
        if self
            .amnesia
            .observe(ticket, self.store.identity(), revision)
        {
            self.publish().await;
        }
    }

    /// Reads the epoch marker and the hold key in one transaction, judges them, and
    /// writes the marker where it is missing or records less than this client knows
    /// (a longer session TTL `ttl`, a higher token offset). A missing marker, with a
    /// bound, is written with the hold key under a lease of the bound, and starts the
    /// lock-delay.
    ///
    /// Cancel-safe: each write is one transaction, compared against what was read.
    async fn sync_marker(&self, ttl: Option<Duration>) -> Result<()> {
        let Some(namespace) = self.amnesia.namespace() else {
            return Ok(());
        };
        let marker_key = amnesia::marker_key(namespace);
        let hold_key = amnesia::hold_key(namespace);
        for _ in 0..MARKER_TRIES {
            let ticket = self.amnesia.ticket();
            let reads = [&marker_key, &hold_key].map(|key| TxnOp::Range(Range::key(key)));
            let read = self
                .store
                .txn(Txn::default().and_then(reads.into()))
                .await?;
            self.amnesia
                .observe(ticket, self.store.identity(), read.revision);
            let first = |index: usize| read.range(index).and_then(|range| range.kvs.first());
            let (stored, held) = (first(0), first(1));
            let marker = stored.and_then(|stored| EpochMarker::parse(&stored.value));
            self.amnesia.observe_marker(marker.as_ref());
            // A hold key waited out once is not waited again (it lives on until the
            // store expires its lease, a little after the delay).
            if let Some(held) = held.filter(|held| self.amnesia.new_hold(held.create_revision)) {
                let delay = std::str::from_utf8(&held.value)
                    .ok()
                    .and_then(|ms| ms.parse().ok())
                    .map_or_else(|| self.amnesia.longest_ttl(), Duration::from_millis);
                self.amnesia.hold_for(delay);
            }
            // A store with no marker may have forgotten. A client with the bound, or
            // one that saw the store forget, writes it with the hold key, under a lease
            // of the lock-delay, so that every client that opens a session while it
            // lives waits it out too; a client with neither leaves it to them (it
            // cannot tell a new store from one that forgot, nor bound the wait).
            let hold = match (stored, self.amnesia.bound()) {
                (Some(_), _) => None,
                (None, Some(_)) => Some(self.amnesia.longest_ttl()),
                (None, None) if self.amnesia.detected() => Some(self.amnesia.longest_ttl()),
                (None, None) => return Ok(()),
            };
            let Some(write) = self
                .amnesia
                .marker_to_write(marker.as_ref(), ttl.unwrap_or_default())
            else {
                return Ok(());
            };
            let compare = match stored {
                None => Compare::create_revision(&marker_key, CompareOp::Equal, 0),
                Some(stored) => {
                    Compare::mod_revision(&marker_key, CompareOp::Equal, stored.mod_revision)
                }
            };
            let mut ops = vec![TxnOp::put(&marker_key, write.encode(), 0)];
            if let Some(bound) = hold {
                let lease = self.store.lease_grant(bound).await?;
                let delay = bound.as_millis().to_string();
                ops.push(TxnOp::put(&hold_key, delay, lease));
            }
            let ticket = self.amnesia.ticket();
            let txn = Txn::when(vec![compare]).and_then(ops);
            let written = self.store.txn(txn).await?;
            self.amnesia
                .observe(ticket, self.store.identity(), written.revision);
            if written.succeeded {
                self.amnesia.wrote_marker(&write);
                if let Some(bound) = hold {
                    // The hold key was created at the transaction's revision.
                    self.amnesia.new_hold(written.revision);
                    tracing::info!(
                        backend = self.store.backend(),
                        lock_delay = ?bound,
                        "no epoch marker: the store is new or forgot; grants wait the lock-delay"
                    );
                    self.amnesia.hold_for(bound);
                }
                return Ok(());
            }
        }
        Err(Error::backend(
            self.store.backend(),
            "the epoch marker kept changing under this client's writes",
        ))
    }

    /// `range` with its revisions as the store knows them.
    fn lower_range(&self, mut range: Range) -> Range {
        for revision in [
            &mut range.max_create_revision,
            &mut range.max_mod_revision,
            &mut range.revision,
        ]
        .into_iter()
        .flatten()
        {
            *revision = self.amnesia.down(*revision);
        }
        range
    }

    /// `compare` with its revision as the store knows it: what every transaction of
    /// this client compares, and what a caller's own transaction on the store must
    /// compare to agree with it.
    pub fn lower_compare(&self, compare: &Compare) -> Compare {
        let mut compare = compare.clone();
        if compare.target != CompareTarget::Version {
            compare.value = self.amnesia.down(compare.value);
        }
        compare
    }

    /// A range answer with its revisions as reported up.
    fn raise_range(&self, mut response: RangeResponse) -> RangeResponse {
        response.revision = self.amnesia.up(response.revision);
        for kv in &mut response.kvs {
            kv.create_revision = self.amnesia.up(kv.create_revision);
            kv.mod_revision = self.amnesia.up(kv.mod_revision);
        }
        response
    }
}

/// Starts [`ForgetfulKv::probe`] when dropped before [`ProbeUnlessAnswered::answered`]:
/// a renewal that failed or was given up unanswered.
struct ProbeUnlessAnswered<'a, K: Kv>(Option<&'a ForgetfulKv<K>>);

impl<K: Kv> ProbeUnlessAnswered<'_, K> {
    /// The store answered: no probe.
    fn answered(mut self) {
        self.0 = None;
    }
}

impl<K: Kv> Drop for ProbeUnlessAnswered<'_, K> {
    fn drop(&mut self) {
        if let Some(kv) = self.0 {
            kv.probe();
        }
    }
}

#[async_trait]
impl<K: Kv> Kv for ForgetfulKv<K> {
    fn backend(&self) -> &'static str {
        self.store.backend()
    }

    fn identity(&self) -> u64 {
        self.store.identity()
    }

    async fn range(&self, range: Range) -> Result<RangeResponse> {
        let range = self.lower_range(range);
        let ticket = self.amnesia.ticket();
        let response = self.store.range(range).await?;
        self.judge(ticket, response.revision).await;
        Ok(self.raise_range(response))
    }

    async fn txn(&self, mut txn: Txn) -> Result<TxnResponse> {
        // A put bound to a lease joins a line of holders: no grant during a lock-delay.
        let joins =
            txn.success.iter().chain(&txn.failure).any(
                |op| matches!(op, TxnOp::Put { lease, ignore_lease: false, .. } if *lease != 0),
            );
        if joins {
            self.hold().await;
        }
        for op in txn.success.iter_mut().chain(txn.failure.iter_mut()) {
            if let TxnOp::Range(range) = op {
                *range = self.lower_range(std::mem::take(range));
            }
        }
        for compare in &mut txn.compares {
            *compare = self.lower_compare(compare);
        }
        let ticket = self.amnesia.ticket();
        let mut response = self.store.txn(txn).await?;
        self.judge(ticket, response.revision).await;
        response.revision = self.amnesia.up(response.revision);
        for op in &mut response.responses {
            if let TxnOpResponse::Range(range) = op {
                *range = self.raise_range(std::mem::take(range));
            }
        }
        Ok(response)
    }

    async fn watch(
        &self,
        key: &str,
        prefix: bool,
        start_revision: Revision,
    ) -> Result<BoxStream<'static, Result<WatchResponse>>> {
        let from = self.amnesia.down(start_revision);
        let stream = self.store.watch(key, prefix, from).await?;
        let amnesia = Arc::clone(&self.amnesia);
        Ok(stream
            .map(move |item| {
                item.map(|response| match response {
                    WatchResponse::Events(mut events) => {
                        for event in &mut events {
                            event.kv.create_revision = amnesia.up(event.kv.create_revision);
                            event.kv.mod_revision = amnesia.up(event.kv.mod_revision);
                        }
                        WatchResponse::Events(events)
                    }
                    WatchResponse::Compacted(revision) => {
                        WatchResponse::Compacted(amnesia.up(revision))
                    }
                })
            })
            .boxed())
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        self.amnesia.check_ttl(ttl)?;
        // Every session reads the marker before its lease exists (see
        // `EpochBook`: a client idle while the store forgot learns it here), and the
        // marker records the TTL before any session of it exists: a lock-delay after
        // the store forgets waits for the longest one recorded.
        self.sync_marker(Some(ttl)).await?;
        self.amnesia.record_ttl(ttl);
        let lease = self.store.lease_grant(ttl).await?;
        self.amnesia.lease_granted(lease);
        Ok(lease)
    }

    /// Straight to the store: a record's lease holds no grant, so neither the bound
    /// nor the lock-delay concerns it.
    async fn lease_grant_for_records(&self, ttl: Duration) -> Result<LeaseId> {
        self.store.lease_grant_for_records(ttl).await
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<KeepAlive> {
        if self.amnesia.lease_forgotten(lease) {
            // Granted by a store that has since forgotten it.
            self.amnesia.lease_ended(lease);
            return Ok(KeepAlive::Gone);
        }
        // A renewal that fails, or that is given up before it answers (a session drops
        // it at its deadline while the store is down and the client keeps trying to
        // connect), starts the probe.
        let unanswered = ProbeUnlessAnswered(Some(self));
        let outcome = self.store.lease_keep_alive(lease).await?;
        unanswered.answered();
        if outcome == KeepAlive::Gone {
            self.amnesia.lease_ended(lease);
            // A lease gone may be a store that forgot: the marker tells (one read, on
            // the loss path only), and a detection publishes the token offset.
            self.publish().await;
        }
        Ok(outcome)
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        self.amnesia.lease_ended(lease);
        self.store.lease_revoke(lease).await
    }

    async fn lease_time_to_live(&self, lease: LeaseId) -> Result<Option<Duration>> {
        self.store.lease_time_to_live(lease).await
    }

    fn retry_policy(&self) -> RetryPolicy {
        self.store.retry_policy()
    }

    async fn clock(&self) -> Result<Option<Duration>> {
        self.store.clock().await
    }

    async fn rate_limit(
        &self,
        key: &str,
        rate: &Rate,
        permits: u32,
    ) -> Result<Option<RateDecision>> {
        self.store.rate_limit(key, rate, permits).await
    }

    async fn describe(&self) -> Result<Vec<(String, String)>> {
        self.store.describe().await
    }
}

#[cfg(test)]
mod tests {
    use distsync_core::raw::locked;
    use std::sync::Mutex;

    use super::*;
    use crate::memory::MemoryKv;

    /// A store that forgets on demand: a fresh memory store in place of the old one.
    /// While down, a renewal never answers and every other request fails. The count
    /// of writes to refuse fails that many transactions that write (a write that timed
    /// out, say).
    #[derive(Default)]
    struct Wipeable(Mutex<MemoryKv>, AtomicBool, std::sync::atomic::AtomicUsize);

    impl Wipeable {
        fn now(&self) -> MemoryKv {
            locked(&self.0).clone()
        }

        fn wipe(&self) {
            *locked(&self.0) = MemoryKv::new();
        }

        fn set_down(&self, down: bool) {
            self.1.store(down, Ordering::SeqCst);
        }

        fn refuse_writes(&self, count: usize) {
            self.2.store(count, Ordering::SeqCst);
        }

        fn up(&self) -> Result<MemoryKv> {
            if self.1.load(Ordering::SeqCst) {
                return Err(Error::connection("test", "the store is down"));
            }
            Ok(self.now())
        }
    }

    #[async_trait]
    impl Kv for Arc<Wipeable> {
        fn backend(&self) -> &'static str {
            "test"
        }
        async fn range(&self, range: Range) -> Result<RangeResponse> {
            self.up()?.range(range).await
        }
        async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
            let writes = txn
                .success
                .iter()
                .chain(&txn.failure)
                .any(|op| matches!(op, TxnOp::Put { .. }));
            let refused = writes
                && self
                    .2
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                        left.checked_sub(1)
                    })
                    .is_ok();
            if refused {
                return Err(Error::connection("test", "the write timed out"));
            }
            self.up()?.txn(txn).await
        }
        async fn watch(
            &self,
            key: &str,
            prefix: bool,
            start_revision: Revision,
        ) -> Result<BoxStream<'static, Result<WatchResponse>>> {
            self.now().watch(key, prefix, start_revision).await
        }
        async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
            self.now().lease_grant(ttl).await
        }
        async fn lease_keep_alive(&self, lease: LeaseId) -> Result<KeepAlive> {
            match self.up() {
                Ok(store) => store.lease_keep_alive(lease).await,
                Err(_) => std::future::pending().await,
            }
        }
        async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
            self.now().lease_revoke(lease).await
        }
        async fn lease_time_to_live(&self, lease: LeaseId) -> Result<Option<Duration>> {
            self.up()?.lease_time_to_live(lease).await
        }
    }

    /// Renews `lease` every second in the background until the store no longer knows
    /// it, as a session does: a grant waits out a lock-delay longer than the lease's
    /// TTL, and the memory store expires a lease nobody renews.
    fn keep_renewing(
        kv: &Arc<ForgetfulKv<Arc<Wipeable>>>,
        lease: LeaseId,
    ) -> tokio::task::JoinHandle<()> {
        let kv = Arc::clone(kv);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if !matches!(kv.lease_keep_alive(lease).await, Ok(KeepAlive::Renewed)) {
                    return;
                }
            }
        })
    }

    /// A lock-like grant: a key of the lease, created; its create revision.
    async fn grant(kv: &ForgetfulKv<Arc<Wipeable>>, key: &str, lease: LeaseId) -> Revision {
        let response = kv
            .txn(
                Txn::when(vec![Compare::create_revision(key, CompareOp::Equal, 0)])
                    .and_then(vec![TxnOp::put(key, "held", lease)]),
            )
            .await
            .unwrap();
        assert!(response.succeeded);
        response.revision
    }

    /// A holder on `store` with the bound `bound`: a session of 4 s kept renewed,
    /// holding `ns/lock`, and 20 other keys written after it. Returns the client, its
    /// lease and the highest revision it saw.
    async fn holder_with_history(
        store: &Arc<Wipeable>,
        bound: Duration,
    ) -> (Arc<ForgetfulKv<Arc<Wipeable>>>, LeaseId, Revision) {
        let (holder, lease, highest, _) = holder_renewing(store, bound).await;
        (holder, lease, highest)
    }

    /// [`holder_with_history`], and the task that renews its lease.
    async fn holder_renewing(
        store: &Arc<Wipeable>,
        bound: Duration,
    ) -> (
        Arc<ForgetfulKv<Arc<Wipeable>>>,
        LeaseId,
        Revision,
        tokio::task::JoinHandle<()>,
    ) {
        let holder = Arc::new(ForgetfulKv::new(Arc::clone(store), "ns/", Some(bound)));
        let lease = holder.lease_grant(Duration::from_secs(4)).await.unwrap();
        let renewing = keep_renewing(&holder, lease);
        grant(&holder, "ns/lock", lease).await;
        for other in 0..20 {
            grant(&holder, &format!("ns/other/{other}"), 0).await;
        }
        let highest = holder.range(Range::key("ns/lock")).await.unwrap().revision;
        (holder, lease, highest, renewing)
    }

    /// A newcomer on `store` with the bound `bound`: a session of 4 s kept renewed,
    /// holding `ns/lock`. Returns the client and the lock's token (its create
    /// revision).
    async fn newcomer_holding(
        store: &Arc<Wipeable>,
        bound: Duration,
    ) -> (Arc<ForgetfulKv<Arc<Wipeable>>>, Revision) {
        let newcomer = Arc::new(ForgetfulKv::new(Arc::clone(store), "ns/", Some(bound)));
        let lease = newcomer.lease_grant(Duration::from_secs(4)).await.unwrap();
        keep_renewing(&newcomer, lease);
        let token = grant(&newcomer, "ns/lock", lease).await;
        (newcomer, token)
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_wipe_the_holder_loses_and_a_newcomer_waits_with_a_higher_token() {
        let bound = Duration::from_secs(5);
        let store = Arc::new(Wipeable::default());
        let started = tokio::time::Instant::now();
        let (holder, lease, highest) = holder_with_history(&store, bound).await;
        // A brand-new store: the first grant waits the bound.
        assert!(started.elapsed() >= bound);

        store.wipe();
        // The holder's next renewal finds its lease gone, and the marker with it.
        assert_eq!(
            holder.lease_keep_alive(lease).await.unwrap(),
            KeepAlive::Gone
        );
        let back = tokio::time::Instant::now();
        let (_newcomer, token) = newcomer_holding(&store, bound).await;
        assert!(
            back.elapsed() >= Duration::from_secs(4),
            "granted {:?} after the wipe",
            back.elapsed()
        );
        assert!(token > highest, "token {token} after {highest}");
    }

    /// No client that knew the old store is alive to publish its tokens: the
    /// newcomer's fresh marker seeds the offset from its clock, above every token of
    /// the old store, which handed out fewer than one a microsecond over its life.
    #[tokio::test(start_paused = true)]
    async fn after_a_wipe_with_no_old_client_alive_the_tokens_still_grow() {
        let bound = Duration::from_secs(5);
        let store = Arc::new(Wipeable::default());
        let (holder, _, highest, renewing) = holder_renewing(&store, bound).await;
        renewing.abort();
        assert!(renewing.await.is_err_and(|ended| ended.is_cancelled()));
        drop(holder);
        // Not a wait for anything: the old store's life on the host's clock (which
        // paused tokio time does not stop), a millisecond for its 22 revisions.
        std::thread::sleep(Duration::from_millis(1));
        store.wipe();
        let (_newcomer, token) = newcomer_holding(&store, bound).await;
        assert!(token > highest, "token {token} after {highest}");
    }

    /// A client idle while the store forgot (no session, so no renewal to fail), whose
    /// next answers show no sign because the new store's revision is already past the
    /// highest it saw, still learns it from the marker when it opens its next session:
    /// its tokens are above those handed out on the new marker's offset.
    #[tokio::test(start_paused = true)]
    async fn a_client_idle_across_a_wipe_reads_the_new_marker_at_its_next_session() {
        let bound = Duration::from_secs(5);
        let store = Arc::new(Wipeable::default());
        let idle = Arc::new(ForgetfulKv::new(Arc::clone(&store), "ns/", Some(bound)));
        let lease = idle.lease_grant(Duration::from_secs(4)).await.unwrap();
        let renewing = keep_renewing(&idle, lease);
        let before = grant(&idle, "ns/before", lease).await;
        renewing.abort();
        idle.lease_revoke(lease).await.unwrap();
        // The highest revision the idle client can have seen.
        let old_top = store.now().range(Range::key("ns/")).await.unwrap().revision;
        // The old store's life on the host's clock (see the test above).
        std::thread::sleep(Duration::from_millis(1));
        store.wipe();

        let (newcomer, newcomers) = newcomer_holding(&store, bound).await;
        for other in 0..20 {
            grant(&newcomer, &format!("ns/other/{other}"), 0).await;
        }
        let new_top = store.now().range(Range::key("ns/")).await.unwrap().revision;
        assert!(
            new_top > old_top,
            "the new store's revision {new_top} is past the old store's {old_top}"
        );
        assert!(newcomers > before, "token {newcomers} after {before}");

        let lease = idle.lease_grant(Duration::from_secs(4)).await.unwrap();
        keep_renewing(&idle, lease);
        assert!(
            idle.amnesia.detected(),
            "the new marker tells the store forgot"
        );
        let token = grant(&idle, "ns/after", lease).await;
        assert!(
            token > newcomers,
            "token {token} after the newcomer's {newcomers}"
        );
    }

    /// A newcomer whose first check of the marker read it missing and then failed to
    /// write it (a write that timed out) checks it again at its next session: it waits
    /// out the lock-delay, and adopts the offset the old holder publishes meanwhile.
    #[tokio::test(start_paused = true)]
    async fn a_marker_write_that_failed_is_made_again_before_any_grant() {
        let bound = Duration::from_secs(5);
        let store = Arc::new(Wipeable::default());
        let (holder, _, highest) = holder_with_history(&store, bound).await;

        store.wipe();
        let newcomer = Arc::new(ForgetfulKv::new(Arc::clone(&store), "ns/", Some(bound)));
        store.refuse_writes(1);
        assert!(newcomer.lease_grant(Duration::from_secs(4)).await.is_err());
        let back = tokio::time::Instant::now();
        let lease = newcomer.lease_grant(Duration::from_secs(4)).await.unwrap();
        keep_renewing(&newcomer, lease);
        let granting = {
            let newcomer = Arc::clone(&newcomer);
            tokio::spawn(async move { grant(&newcomer, "ns/lock", lease).await })
        };
        // The holder learns of the wipe only now, during the newcomer's lock-delay,
        // from a read whose revision went back.
        let read = holder.range(Range::key("ns/lock")).await.unwrap();
        assert!(read.kvs.is_empty());
        assert!(holder.amnesia.detected());
        let token = granting.await.unwrap();
        assert!(
            back.elapsed() >= bound,
            "granted {:?} after the newcomer's session",
            back.elapsed()
        );
        assert!(token > highest, "token {token} after {highest}");
    }

    /// However long the store stays down (a wiped server reinstalled on a loaded
    /// machine can take minutes), the holder's client tells the forgetting when it is
    /// back and the newcomer's token is above the holder's.
    #[rstest::rstest]
    #[case::briefly(Duration::from_secs(2))]
    #[case::for_minutes(Duration::from_secs(300))]
    #[tokio::test(start_paused = true)]
    async fn a_renewal_unanswered_while_the_store_is_wiped_still_raises_the_tokens(
        #[case] down_for: Duration,
    ) {
        let bound = Duration::from_secs(5);
        let store = Arc::new(Wipeable::default());
        let (holder, lease, highest) = holder_with_history(&store, bound).await;

        // The store goes down: the holder's session gives its renewal up unanswered at
        // its deadline, and never learns from a renewal that the lease is gone.
        store.set_down(true);
        let renewal = holder.lease_keep_alive(lease);
        assert!(tokio::time::timeout(Duration::from_secs(4), renewal)
            .await
            .is_err());
        store.wipe();
        tokio::time::sleep(down_for).await;
        store.set_down(false);
        let (_newcomer, token) = newcomer_holding(&store, bound).await;
        assert!(token > highest, "token {token} after {highest}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_above_the_bound_is_refused() {
        let store = Arc::new(Wipeable::default());
        let kv = ForgetfulKv::new(store, "ns/", Some(Duration::from_secs(5)));
        assert!(matches!(
            kv.lease_grant(Duration::from_secs(6)).await,
            Err(Error::InvalidArgument(_))
        ));
    }
}
