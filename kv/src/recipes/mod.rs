//! Every primitive built on a revisioned key-value store ([`Kv`]) as etcd's Go
//! `clientv3/concurrency` and `recipes` packages build them: same transactions, same
//! waits; Go's key layouts for locks and elections, and for every other kind Go has
//! with [`KeyLayout::Go`]. The memory, etcd and MySQL backends are all [`KvBackend`]s.
//!
//! # Key layouts
//!
//! With `<ns>` the backend's namespace, `<name>` the primitive's [`Name`] as it is, and
//! `<n>` the name escaped into one key segment (`%` → `%25`, `/` → `%2F`):
//!
//! | primitive | keys |
//! |---|---|
//! | lock | `<ns><name>/<lease id, lowercase hex>` (as `etcdctl lock`) |
//! | unfair lock | the lock's holder key; waiters `<ns>/unfair-lock/<n>/<lease id, lowercase hex>` |
//! | election | `<ns><name>/<lease id, lowercase hex>`, value = proclaimed value (as `etcdctl elect`) |
//! | rwlock | `<ns>/rwlock/<n>/read/<unix nanos>`, `<ns>/rwlock/<n>/write/<unix nanos>` |
//! | queue | `<ns>/queue/<n>/i/<priority %05d>/<sequence %016d>` (items), `…/s/<priority>` (sequence guards), `…/c/<call id>/<priority>/<sequence>` (in-flight claims), `…/w/<unix nanos>` (waiting consumers) |
//! | semaphore | `<ns>/semaphore/<n>/<lease id, lowercase hex>`, value = permit count |
//! | barrier | `<ns>/barrier/<n>` |
//! | double barrier | `<ns>/double-barrier/<n>/waiters/<unix nanos>`, `<ns>/double-barrier/<n>/ready` |
//! | stm | `<ns>/stm/<n>` |
//! | counter | `<ns>/counter/<n>`, value = decimal value |
//! | latch | `<ns>/latch/<n>`, value = `<initial count> <remaining count>` |
//!
//! Every key is under `<ns>`, so etcd RBAC on the namespace prefix suffices.
//! Session-bound keys (lock, election, rwlock, semaphore, double-barrier waiters) are
//! attached to the session's lease, so the store deletes them when the session ends.
//!
//! **Distinct (kind, name) pairs never share a key.** Every kind but lock and election
//! lives after `<ns>/`, where no lock or election key (nor the range `<ns><name>/` they
//! read) can reach, since a name never starts with `/`; there the kind and the escaped
//! name are one segment each, so two primitives' keys and prefixes are disjoint (a
//! queue `q` and a queue `q/00001/x` do not meet; see the property test in this
//! module).
//!
//! Locks and elections keep Go's layout so that `etcdctl lock`/`elect` and Go programs
//! interoperate, with Go's two consequences: a lock and an election of the same name
//! are one line of contenders (the lock holder counts as the election's leader, and
//! two tasks of one session serialise on the shared key), and a lock or an election
//! named `a` also waits behind holders of `a/b` (over-exclusion, never
//! under-exclusion). Use sibling names (`a/main`, `a/b`) and distinct names for locks
//! and elections.
//!
//! # Go's layout ([`KeyLayout::Go`], etcd's `layout=go`)
//!
//! For sharing every primitive with Go programs, the backend can put the keys of the
//! kinds above exactly where etcd's Go `recipes` and `concurrency` packages put them:
//!
//! | primitive | keys (Go's) |
//! |---|---|
//! | rwlock | `<ns><name>/read/<unix nanos>`, `<ns><name>/write/<unix nanos>` (`recipe.RWMutex`) |
//! | queue | `<ns><name>/<priority %05d>/<sequence %016d>`, guard `<ns>__<name>/<priority %05d>` (`recipe.PriorityQueue`; `enqueue` is priority 0); items of Go's plain `recipe.Queue` (`<ns><name>/<unix nanos>`) are taken too |
//! | barrier | `<ns><name>` (`recipe.Barrier`) |
//! | double barrier | `<ns><name>/waiters/<unix nanos>`, `<ns><name>/ready` (`recipe.DoubleBarrier`) |
//! | stm | `<ns><key>` (`concurrency.STM`) |
//!
//! The protocols are Go's too (the same transactions and waits), so Go and distsync
//! exclude each other, share readers and wait in one FIFO line on a read-write lock,
//! and take each other's queue items. What distsync adds to a queue (in-flight claims,
//! the line of waiting consumers, receive holds, delivery counters) stays under the
//! reserved `<ns>/queue/<escaped name>`, where Go's readers never look. Go's producers
//! wake nobody, so the first waiting distsync consumer also watches the items.
//! A consumer takes the first item in key order, as Go's `PriorityQueue`: items of
//! Go's plain `Queue` (19-digit keys) come after priorities 0 to 9999 (their keys
//! start with `1`), oldest first.
//!
//! In Go's layout, names can meet as in Go: every primitive named `a` lives under
//! `a/`. distsync's readers only take keys of their own shape (a queue never takes a
//! key that is not an item key of its own name), and a name whose last segment Go
//! writes under another name (a number of 5, 16 or 19 digits, `read`, `write`,
//! `waiters`, `ready`) is refused with [`Error::InvalidName`]. What cannot be detected
//! is documented instead: Go's own readers take every key under their name (Go's
//! `Queue` `a` takes the items of a queue `a/b`, and any key starting with `a`), a
//! barrier and an STM key of one name are one key, and a lock, election or rwlock `a`
//! waits behind any key under `a/` (an STM key `a/x` included). Keep each kind in a
//! subtree of its own (`locks/...`, `queues/...`, `stm/...`) when sharing with Go.
//! Semaphores, which Go lacks, keep the injective layout.

//! # Waiting
//!
//! Every wait is a watch from a known revision on the one key that must change next
//! (the predecessor's), with a re-read when the watch ends or is compacted; waits held
//! through a session end with [`Error::SessionLost`] when the session is lost. Guards
//! also watch their own key and fire `lost()` when it is deleted by anyone else.
//!
//! # Writes guarded by a hold
//!
//! A lock or write lock is held while its key exists with the create revision of the
//! grant ([`LockHold`], [`hold_of`] a guard). A transaction with the compare
//! [`LockHold::compare`] applies only while the hold lasts, as one with Go's
//! `Mutex.IsOwner()`: [`LockGuard::put_if_held`](distsync_core::LockGuard::put_if_held)
//! writes an STM key that way, and a caller guards writes of its own with it.

mod barrier;
mod counter;
mod double_barrier;
mod election;
mod export;
#[cfg(test)]
mod go_layout;
mod guarded;
mod heads;
mod hold;
#[cfg(test)]
mod injective;
mod key;
mod latch;

use distsync_core::raw::SessionStoreSide as _;
pub use guarded::{hold_of, LockHold};
pub use key::KeyLayout;
use key::{KeySpace, Kind};
mod mutex;
mod purge;
mod queue;
pub use queue::{ack_once, delivery_backend};
mod rate_limiter;
mod rwmutex;
mod semaphore;
mod status;
pub(crate) mod stm;
#[cfg(test)]
mod stm_atomically;
#[cfg(test)]
mod testing;
mod unfair_mutex;
mod wait;

use std::any::Any;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::kv::{Kv, LeaseId};
use distsync_core::backend::Backend;
use distsync_core::barrier::{Barrier, DoubleBarrier};
use distsync_core::capabilities::Capabilities;
use distsync_core::election::Election;
use distsync_core::error::{Error, Result};
use distsync_core::lock::Locker;
use distsync_core::migrate::Snapshot;
use distsync_core::name::Name;
use distsync_core::queue::Queue;
use distsync_core::raw::Primitives;
use distsync_core::rwlock::RwLock;
use distsync_core::session::{KeepAlive, Lease, Session, SessionId, SessionOptions};
use distsync_core::stm::Stm;

use self::barrier::KvBarrier;
use self::double_barrier::KvDoubleBarrier;
use self::election::KvElection;
use self::hold::SessionKv;
use self::mutex::KvMutex;
use self::queue::KvQueue;
use self::rwmutex::KvRwMutex;
use self::stm::KvStm;

/// A [`Backend`] over any [`Kv`] store, with every key under `namespace`.
pub struct KvBackend<K: Kv> {
    kv: Arc<K>,
    space: KeySpace,
    capabilities: Capabilities,
    /// The lock keys of this backend known to have headed their line.
    heads: Arc<heads::Heads>,
    /// How old an at-most-once claim must be before a consumer puts its item back.
    stale_claim: Duration,
}

impl<K: Kv> std::fmt::Debug for KvBackend<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvBackend")
            .field("backend", &self.kv.backend())
            .field("namespace", &self.space.namespace())
            .field("layout", &self.space.layout())
            .finish_non_exhaustive()
    }
}

impl<K: Kv> KvBackend<K> {
    /// A backend over `kv`, prefixing every key with `namespace` (may be empty; a
    /// non-empty namespace usually ends with `/`), declaring `capabilities`.
    pub fn with_kv(kv: K, namespace: impl Into<String>, capabilities: Capabilities) -> Self {
        Self::with_shared_kv(Arc::new(kv), namespace, capabilities)
    }

    /// As [`KvBackend::with_kv`], over a store shared with other backends.
    pub fn with_shared_kv(
        kv: Arc<K>,
        namespace: impl Into<String>,
        capabilities: Capabilities,
    ) -> Self {
        Self {
            kv,
            space: KeySpace::new(namespace, KeyLayout::default()),
            capabilities,
            heads: Arc::default(),
            stale_claim: distsync_core::queue::STALE_CLAIM,
        }
    }

    /// The same backend with `bound` for stale claims: how old an at-most-once
    /// dequeue's claim must be before any consumer of its queue puts the item back
    /// (a URL's `stale_claim=`; by default [`STALE_CLAIM`](distsync_core::queue::STALE_CLAIM),
    /// whose docs say why and what a short bound risks: a second delivery). A bound
    /// below [`MIN_STALE_CLAIM`](distsync_core::queue::MIN_STALE_CLAIM) or above
    /// [`MAX_STALE_CLAIM`](distsync_core::queue::MAX_STALE_CLAIM) becomes it.
    #[must_use]
    pub fn with_stale_claim(mut self, bound: Duration) -> Self {
        use distsync_core::queue::{MAX_STALE_CLAIM, MIN_STALE_CLAIM};
        self.stale_claim = bound.clamp(MIN_STALE_CLAIM, MAX_STALE_CLAIM);
        self
    }

    /// How old an at-most-once claim must be before a consumer puts its item back (see
    /// [`KvBackend::with_stale_claim`]).
    pub fn stale_claim(&self) -> Duration {
        self.stale_claim
    }

    /// The same backend with the keys of read-write locks, queues, barriers, double
    /// barriers and STM in `layout` (see [`KeyLayout`]; the default is
    /// [`KeyLayout::Injective`]). Go's layout has no place for enqueue times, so it
    /// turns [`Capabilities::queue_age`] off.
    ///
    /// ```
    /// use distsync::store::memory::capabilities;
    /// use distsync::store::raw::recipes::{KeyLayout, KvBackend};
    /// use distsync::store::memory::MemoryKv;
    ///
    /// let backend =
    ///     KvBackend::with_kv(MemoryKv::new(), "apps/", capabilities()).with_layout(KeyLayout::Go);
    /// assert_eq!(backend.layout(), KeyLayout::Go);
    /// assert!(!distsync::store::raw::Primitives::capabilities(&backend).queue_age);
    /// ```
    #[must_use]
    pub fn with_layout(mut self, layout: KeyLayout) -> Self {
        self.space = KeySpace::new(self.space.namespace(), layout);
        if layout == KeyLayout::Go {
            self.capabilities = self.capabilities.clone().with_queue_age(false);
        }
        self
    }

    /// Where the keys of read-write locks, queues, barriers, double barriers and STM
    /// go.
    pub fn layout(&self) -> KeyLayout {
        self.space.layout()
    }

    /// The store.
    pub fn kv(&self) -> &Arc<K> {
        &self.kv
    }

    /// The key prefix of this backend.
    pub fn namespace(&self) -> &str {
        self.space.namespace()
    }

    /// `<ns><name>`: the prefix of the keys of a lock or an election named `name`
    /// (`<ns><name>/<lease id in hex>`, Go's layout). Other kinds' keys are elsewhere
    /// (see the [module docs](self)).
    pub fn key(&self, name: &Name) -> String {
        format!("{}{}", self.space.namespace(), name)
    }

    fn offers(&self, offered: bool, what: &str) -> Result<()> {
        offered
            .then_some(())
            .ok_or_else(|| Error::unsupported(self.kv.backend(), what))
    }

    fn shared_kv(&self) -> Arc<dyn Kv> {
        Arc::clone(&self.kv) as Arc<dyn Kv>
    }

    /// The store and `session`, whose lease must be this store's (see [`lease_in`]).
    fn session_kv(&self, session: &Session) -> Result<SessionKv> {
        let lease = lease_in(session, &self.kv)?;
        Ok(SessionKv {
            kv: self.shared_kv(),
            session: session.clone(),
            lease,
        })
    }

    /// The lock `name`, held through `session`: `unfair` or fair.
    fn mutex(&self, session: &Session, name: Name, unfair: bool) -> Result<Box<dyn Locker>> {
        let keys = self.session_kv(session)?;
        if unfair {
            self.offers(self.capabilities.unfair_lock, "the unfair lock")?;
        } else {
            self.offers(self.capabilities.lock, "lock")?;
        }
        let mutex = KvMutex::new(keys, &self.space, name, Arc::clone(&self.heads), unfair);
        Ok(Box::new(mutex))
    }
}

/// The [`Lease`] behind a session of a [`KvBackend`].
pub struct KvLease<K: Kv> {
    kv: Arc<K>,
    id: LeaseId,
}

impl<K: Kv> std::fmt::Debug for KvLease<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvLease")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl<K: Kv> KvLease<K> {
    /// The store's lease id.
    pub fn id(&self) -> LeaseId {
        self.id
    }

    /// The store the lease is in (the backend's, which granted it).
    pub fn kv(&self) -> &Arc<K> {
        &self.kv
    }
}

#[async_trait]
impl<K: Kv> Lease for KvLease<K> {
    async fn keep_alive(&self) -> Result<KeepAlive> {
        self.kv.lease_keep_alive(self.id).await
    }

    async fn revoke(&self) -> Result<()> {
        self.kv.lease_revoke(self.id).await
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The id of `session`'s lease, which `kv` must have granted: a lease id names a lease in
/// one store only, so a session of another store (another etcd cluster, another memory
/// store) is refused, while backends over one shared store
/// ([`KvBackend::with_shared_kv`]) take each other's sessions.
fn lease_in<K: Kv>(session: &Session, kv: &Arc<K>) -> Result<LeaseId> {
    let lease = session
        .lease_granted_here::<KvLease<K>>(kv.backend(), |lease| Arc::ptr_eq(&lease.kv, kv))?;
    Ok(lease.id)
}

#[async_trait]
impl<K: Kv> Backend for KvBackend<K> {
    async fn session(&self, options: SessionOptions) -> Result<Session> {
        self.capabilities.check_session(&options)?;
        let grant_sent = tokio::time::Instant::now();
        let id = self.kv.lease_grant(options.ttl).await?;
        let lease = KvLease {
            kv: Arc::clone(&self.kv),
            id,
        };
        Ok(distsync_core::raw::start_session(
            self.kv.backend(),
            SessionId(id as u64),
            &options,
            grant_sent,
            Arc::new(lease),
        ))
    }

    async fn revoke_session(&self, id: SessionId) -> Result<()> {
        self.kv.lease_revoke(id.0 as LeaseId).await
    }

    /// Every key under the namespace, classified by the recipes' layouts (see
    /// `recipes/export.rs`).
    async fn export(&self) -> Result<Snapshot> {
        export::export(&*self.kv, &self.space).await
    }

    /// One range read of the namespace, classified by the recipes' layouts (see
    /// `recipes/status.rs`).
    async fn status(&self, prefix: &str) -> Result<distsync_core::status::StatusReport> {
        status::status(&*self.kv, self.space.namespace(), prefix, false).await
    }

    /// One lease read per session shown (see `recipes/status.rs`).
    async fn status_with_time_left(
        &self,
        prefix: &str,
    ) -> Result<distsync_core::status::StatusReport> {
        status::status(&*self.kv, self.space.namespace(), prefix, true).await
    }

    /// The keys of the names under `prefix`, in both places a name reaches the store
    /// (see `recipes/purge.rs`).
    async fn count_prefix(&self, prefix: &Name) -> Result<u64> {
        purge::count_prefix(&*self.kv, &self.space, prefix).await
    }

    /// The store's facts as its [`Kv`] reads them (etcd: version and cluster size).
    async fn describe_store(&self) -> Result<Vec<(String, String)>> {
        self.kv.describe().await
    }

    /// Deletes the keys [`Backend::count_prefix`] counts, a batch per transaction.
    async fn purge_prefix(&self, prefix: &Name) -> Result<u64> {
        purge::purge_prefix(&*self.kv, &self.space, prefix).await
    }
}

impl<K: Kv> Primitives for KvBackend<K> {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn locker(&self, session: &Session, name: Name) -> Result<Box<dyn Locker>> {
        self.mutex(session, name, false)
    }

    fn unfair_locker(&self, session: &Session, name: Name) -> Result<Box<dyn Locker>> {
        self.mutex(session, name, true)
    }

    fn election(&self, session: &Session, name: Name) -> Result<Box<dyn Election>> {
        let keys = self.session_kv(session)?;
        self.offers(self.capabilities.election, "election")?;
        Ok(Box::new(KvElection::new(keys, &self.space, name)))
    }

    fn rwlock(&self, session: &Session, name: Name) -> Result<Box<dyn RwLock>> {
        self.space.check(Kind::RwLock, &name)?;
        let keys = self.session_kv(session)?;
        self.offers(self.capabilities.rwlock, "rwlock")?;
        Ok(Box::new(KvRwMutex::new(keys, &self.space, name)))
    }

    fn queue(&self, name: Name) -> Result<Box<dyn Queue>> {
        self.space.check(Kind::Queue, &name)?;
        // The recipe is Go's priority queue; `enqueue` is priority 0.
        self.offers(self.capabilities.queue, "queue")?;
        let kv = Arc::clone(&self.kv);
        let lease_of: queue::LeaseOf = Arc::new(move |session: &Session| lease_in(session, &kv));
        let queue = KvQueue::new(self.shared_kv(), &self.space, name, lease_of)
            .with_stale_claim(self.stale_claim);
        Ok(Box::new(queue))
    }

    fn barrier(&self, name: Name) -> Result<Box<dyn Barrier>> {
        self.space.check(Kind::Barrier, &name)?;
        self.offers(self.capabilities.barrier, "barrier")?;
        let barrier = KvBarrier::new(self.shared_kv(), &self.space, name);
        Ok(Box::new(barrier))
    }

    fn double_barrier(
        &self,
        session: &Session,
        name: Name,
        count: NonZeroUsize,
    ) -> Result<Box<dyn DoubleBarrier>> {
        self.space.check(Kind::DoubleBarrier, &name)?;
        let keys = self.session_kv(session)?;
        self.offers(self.capabilities.double_barrier, "double barrier")?;
        let barrier = KvDoubleBarrier::new(keys, &self.space, name, count.get());
        Ok(Box::new(barrier))
    }

    fn semaphore(
        &self,
        session: &Session,
        name: Name,
        permits: NonZeroUsize,
    ) -> Result<Box<dyn distsync_core::semaphore::Semaphore>> {
        let keys = self.session_kv(session)?;
        self.offers(self.capabilities.semaphore, "semaphore")?;
        let semaphore = semaphore::KvSemaphore::new(keys, &self.space, name, permits.get());
        Ok(Box::new(semaphore))
    }

    fn counter(&self, name: Name) -> Result<Box<dyn distsync_core::counter::Counter>> {
        self.offers(self.capabilities.counter, "counter")?;
        let counter = counter::KvCounter::new(self.shared_kv(), &self.space, name);
        Ok(Box::new(counter))
    }

    fn latch(
        &self,
        name: Name,
        count: u64,
    ) -> Result<Box<dyn distsync_core::latch::CountDownLatch>> {
        self.offers(self.capabilities.latch, "latch")?;
        let latch = latch::KvLatch::new(self.shared_kv(), &self.space, name, count);
        Ok(Box::new(latch))
    }

    /// GCRA on one key, decided on the store's clock: by the store in one request
    /// ([`Kv::rate_limit`]) where it can, else by a compare-and-swap on a time read by
    /// [`Kv::clock`]; unsupported on a store without a clock (etcd's capabilities say
    /// so, and a request answers `Unsupported` on a store whose [`Kv::clock`] reads
    /// nothing).
    fn rate_limiter(
        &self,
        name: Name,
        rate: distsync_core::rate_limiter::Rate,
    ) -> Result<Box<dyn distsync_core::rate_limiter::RateLimiter>> {
        self.offers(self.capabilities.rate_limiter, "rate limiter")?;
        Ok(Box::new(rate_limiter::KvRateStep::limiter(
            self.shared_kv(),
            self.space.namespace(),
            name,
            rate,
        )))
    }

    fn stm(&self) -> Result<Stm> {
        self.offers(self.capabilities.stm(), "stm")?;
        let stm = KvStm::new(self.shared_kv(), &self.space, self.capabilities.clone());
        Ok(Stm::new(Arc::new(stm)))
    }
}
