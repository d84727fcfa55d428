//! What a backend declares it offers.

use std::time::Duration;

use crate::stm::Isolation;

/// What a backend offers and which guarantees it claims, as one flat struct.
///
/// The conformance suite measures every claim and reports declared against measured;
/// a claim the suite cannot confirm is a bug in the backend. A primitive or STM level
/// that is `false` here makes the backend return [`crate::Error::Unsupported`].
///
/// New primitives and guarantees add fields, so the struct is `#[non_exhaustive]`:
/// outside this crate it is built from [`Capabilities::all`] or [`Capabilities::none`]
/// and adjusted with the `with_*` setters (or by assigning the public fields), and a
/// field added later starts at that constructor's value.
///
/// ```
/// # use std::time::Duration;
/// # use distsync::Capabilities;
/// let capabilities = Capabilities::all("mystore", Duration::from_secs(1))
///     .with_survives_restart(false)
///     .with_survives_failover(false);
/// assert!(capabilities.lock && !capabilities.survives_restart);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// The backend's short name (`memory`, `etcd`, `redis`, `postgres`, `zookeeper`,
    /// `mysql`, `nats`, or an outside backend's own).
    pub backend: &'static str,
    /// [`crate::Locker`].
    pub lock: bool,
    /// [`crate::Election`].
    pub election: bool,
    /// [`crate::RwLock`].
    pub rwlock: bool,
    /// [`crate::Queue`] in FIFO order.
    pub queue: bool,
    /// [`crate::Queue::enqueue_with_priority`](crate::Queue).
    pub priority_queue: bool,
    /// [`crate::Barrier`].
    pub barrier: bool,
    /// [`crate::DoubleBarrier`].
    pub double_barrier: bool,
    /// STM at [`Isolation::SerializableSnapshot`].
    pub stm_serializable_snapshot: bool,
    /// STM at [`Isolation::Serializable`].
    pub stm_serializable: bool,
    /// STM at [`Isolation::RepeatableReads`].
    pub stm_repeatable_reads: bool,
    /// STM at [`Isolation::ReadCommitted`].
    pub stm_read_committed: bool,
    /// Lock, write-lock, semaphore-permit ([`crate::Permit::token`]) and leadership
    /// grants carry strictly increasing fencing tokens.
    pub fencing: bool,
    /// Waiters are granted in arrival order.
    pub fifo_waiters: bool,
    /// [`Primitives::unfair_locker`](crate::raw::Primitives::unfair_locker): a lock whose release
    /// goes to the first to ask, not the longest waiter, at the fewest store calls
    /// the store allows (see [`crate::lock_options::Fairness`]).
    pub unfair_lock: bool,
    /// `lost()` fires when the store ends a session.
    pub lost_notification: bool,
    /// A holder that stops renewing (paused, hung) loses what it holds after its TTL.
    pub stalled_holder_expires: bool,
    /// [`crate::Semaphore`].
    pub semaphore: bool,
    /// [`crate::LockGuard::put_if_held`]: writes that commit only while the lock is
    /// held.
    pub guarded_writes: bool,
    /// A holder cut off from the store (a silent partition, or its connections reset)
    /// sees `lost()` before the store can grant what it held to another client: the
    /// store frees a hold no earlier than the holder's client-side deadline (see
    /// [`crate::session`]).
    pub partition_safe: bool,
    /// [`crate::Queue::receive`]: at-least-once delivery, an item held through the
    /// consumer's session until acknowledged, put back at its place by `nack` or the
    /// session's end, with a redelivery count (see [`crate::delivery`]).
    pub reliable_delivery: bool,
    /// Durable state (queues, STM keys, barriers) survives a server restart.
    pub survives_restart: bool,
    /// Holds stay exclusive across a server restart: no lock, write lock, permit or
    /// leadership is granted to a second client before the holder it had before the
    /// restart learns it lost it (`lost()`), and fencing tokens keep increasing. Redis
    /// with `appendfsync always` gives it as it gives `survives_restart`. etcd,
    /// PostgreSQL, ZooKeeper, MySQL and NATS declare it only with a bound on session
    /// TTLs ([`Capabilities::session_bound`]): a server whose data was wiped or restored
    /// is a new store to a client that never knew the old one, and only the lock-delay
    /// the bound turns on covers it. A store that forgets at a restart (Redis without
    /// persistence) gives it only with that lock-delay too (Redis with
    /// `max_session_ttl`), which holds holds, not data: queue items and STM keys are
    /// `survives_restart`'s.
    pub exclusive_across_restart: bool,
    /// The URL takes `max_session_ttl=`: a bound on session TTLs that turns on the
    /// lock-delay after the store forgets (sessions above it refused; see
    /// [`crate::raw::check_session_ttl`]), with which the backend declares
    /// `exclusive_across_restart`.
    pub session_bound: bool,
    /// Reads and grants are linearizable.
    pub linearizable: bool,
    /// What was acknowledged survives the store failing over to a replica (etcd: a
    /// raft leader killed; Redis: a primary killed under Sentinel with replica
    /// acknowledgement, `wait_replicas`): no two holders of a lock across the
    /// failover, tokens keep growing, no acknowledged queue item lost, the lock not
    /// stuck behind a lost grant, and a holder whose hold is gone learns it (`lost()`)
    /// before anyone else is granted it. `false` where there is no replica to fail
    /// over to (the memory store, one Redis or PostgreSQL server) or where a failover
    /// may lose acknowledged writes (asynchronous replication); see
    /// `docs/HIGH_AVAILABILITY.md`.
    pub survives_failover: bool,
    /// [`crate::RateLimiter`], decided on the store's clock (see
    /// [`crate::rate_limiter`]); `false` where the store has no clock a client can read
    /// atomically with its writes (etcd).
    pub rate_limiter: bool,
    /// [`crate::Counter`]: a shared 64-bit counter with atomic `add` and
    /// `compare_and_set`.
    pub counter: bool,
    /// [`crate::CountDownLatch`]: a latch opened when its count reaches zero.
    pub latch: bool,
    /// [`crate::Coordinator::break_lock`]: ending another process's hold of a lock by
    /// ending its session in the store, or its hold alone where only a session's owner
    /// can end it (ZooKeeper; see [`crate::broken`]); `false` where the backend cannot
    /// list holders or cannot end another process's hold.
    pub break_lock: bool,
    /// [`crate::Queue::oldest_age`]: each item's enqueue time recorded on the store's
    /// clock; `false` where the store has no clock a client can write with (etcd) or
    /// the key layout has no place for it (Go's recipes).
    pub queue_age: bool,
    /// [`crate::Coordinator::request_release`] and
    /// [`crate::LockGuard::release_requested`]: cooperative revocation, a holder told
    /// that someone asked for its lock back (see [`crate::revocation`]).
    pub release_request: bool,
    /// [`crate::Leadership::resign_to`], [`crate::Coordinator::prefer`] and
    /// [`crate::Leadership::preference_requested`]: handing leadership over to the next
    /// or a named candidate (see [`crate::hand_over`]); `false` where the backend cannot
    /// list an election's candidates with their sessions or has no counter.
    pub hand_over: bool,
    /// A hand-over leaves no moment without a leader: the store elects the next
    /// candidate in the step that removes the old leader (see [`crate::hand_over`]).
    pub gapless_hand_over: bool,
    /// [`Backend::export`](crate::Backend::export): the store's durable state can be read
    /// out whole, so [`crate::migrate::migrate`] takes it as a source or a destination
    /// (a destination is exported again to verify the copy).
    pub export: bool,
    /// Queue items are enqueued and acknowledged inside the caller's own database
    /// transaction, with the caller's writes (the store is the caller's database: an
    /// outbox, and exactly-once effects of consumers); `false` where the store cannot
    /// join a transaction of the caller's.
    pub caller_transactions: bool,
    /// The shortest session TTL the backend accepts.
    pub min_session_ttl: Duration,
    /// The largest value, in bytes, the backend takes from a caller: a queue item, a
    /// candidate's value, a guarded or STM write, a group member's metadata. A larger
    /// one is refused with [`crate::Error::TooLarge`] before any request is sent (see
    /// [`Capabilities::check_value_size`]). The figure leaves room for what the
    /// backend adds to the value in the same request (keys, records, headers); a
    /// backend whose store announces its limit (NATS's `max_payload`, MySQL's
    /// `max_allowed_packet`) declares it from the server at connect. Both constructors
    /// start at [`Capabilities::DEFAULT_MAX_VALUE_SIZE`].
    pub max_value_size: usize,
}

impl Capabilities {
    /// The [`Capabilities::max_value_size`] both constructors start with: 1 MiB, of the
    /// order of the stores' own limits (ZooKeeper's packet, just under 1 MiB by default;
    /// etcd's request, 1.5 MiB), for a backend to replace with its store's own.
    pub const DEFAULT_MAX_VALUE_SIZE: usize = 1024 * 1024;

    /// A struct with every flag off, for a backend to switch on what it offers.
    pub fn none(backend: &'static str) -> Self {
        Self::every_flag(backend, false, Duration::from_secs(1))
    }

    /// A struct with every primitive, every STM level and every guarantee claimed, for
    /// a backend to switch off what it does not give (with the `with_*` setters).
    pub fn all(backend: &'static str, min_session_ttl: Duration) -> Self {
        Self::every_flag(backend, true, min_session_ttl)
    }

    /// Sets [`Capabilities::min_session_ttl`].
    #[must_use]
    pub fn with_min_session_ttl(mut self, min_session_ttl: Duration) -> Self {
        self.min_session_ttl = min_session_ttl;
        self
    }

    /// Sets [`Capabilities::max_value_size`].
    #[must_use]
    pub fn with_max_value_size(mut self, max_value_size: usize) -> Self {
        self.max_value_size = max_value_size;
        self
    }

    /// Checks a caller's value of `size` bytes against
    /// [`Capabilities::max_value_size`], before anything is sent: the one size check
    /// of every store. `what` names the value in the error (`queue item`, ...).
    ///
    /// A [`crate::Coordinator`] runs it on every value a caller passes (see
    /// [`crate::Error::TooLarge`] for where); a backend's own API that takes a value
    /// outside the primitive traits (PostgreSQL's outbox) calls it itself.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use distsync::{Capabilities, Error};
    /// let capabilities = Capabilities::all("mystore", Duration::from_secs(1)).with_max_value_size(4);
    /// assert!(capabilities.check_value_size("queue item", 4).is_ok());
    /// let refused = capabilities.check_value_size("queue item", 5).unwrap_err();
    /// assert!(matches!(refused, Error::TooLarge { size: 5, limit: 4, .. }));
    /// assert!(!refused.is_transient());
    /// ```
    ///
    /// # Errors
    /// [`crate::Error::TooLarge`] naming the backend, `what`, the size and the limit.
    pub fn check_value_size(&self, what: &'static str, size: usize) -> crate::Result<()> {
        self.value_limit().check(what, size)
    }

    /// The limit [`Capabilities::max_value_size`] sets, as the handles carry it.
    pub(crate) fn value_limit(&self) -> crate::value_size::ValueLimit {
        crate::value_size::ValueLimit::new(self.backend, self.max_value_size)
    }

    /// Checks a session TTL against [`Capabilities::min_session_ttl`].
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming the backend and its minimum.
    pub fn check_session_ttl(&self, ttl: Duration) -> crate::Result<()> {
        if ttl < self.min_session_ttl {
            return Err(crate::Error::InvalidArgument(format!(
                "session ttl {ttl:?} is below the {} backend's minimum {:?}",
                self.backend, self.min_session_ttl
            )));
        }
        Ok(())
    }

    /// Checks session options: the TTL against [`Capabilities::min_session_ttl`] and
    /// the margin against the TTL ([`crate::SessionOptions::validate`]).
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] saying which.
    pub fn check_session(&self, options: &crate::SessionOptions) -> crate::Result<()> {
        self.check_session_ttl(options.ttl)?;
        options.validate()
    }

    /// Whether STM at `isolation` is offered.
    pub fn supports_isolation(&self, isolation: Isolation) -> bool {
        match isolation {
            Isolation::SerializableSnapshot => self.stm_serializable_snapshot,
            Isolation::Serializable => self.stm_serializable,
            Isolation::RepeatableReads => self.stm_repeatable_reads,
            Isolation::ReadCommitted => self.stm_read_committed,
        }
    }

    /// Whether any STM level is offered.
    pub fn stm(&self) -> bool {
        Isolation::ALL.iter().any(|&i| self.supports_isolation(i))
    }
}

/// One `with_<flag>(bool)` setter per flag, so that backends outside this crate (which
/// `#[non_exhaustive]` keeps from struct literals) adjust a constructor's flags in one
/// expression; and the constructors' struct literal, which lists every flag, so that a
/// flag missing here does not compile.
macro_rules! flag_setters {
    ($($flag:ident => $setter:ident,)*) => {
        impl Capabilities {
            /// Every flag set to `on`, with [`Capabilities::DEFAULT_MAX_VALUE_SIZE`].
            fn every_flag(backend: &'static str, on: bool, min_session_ttl: Duration) -> Self {
                Self {
                    backend,
                    $($flag: on,)*
                    min_session_ttl,
                    max_value_size: Self::DEFAULT_MAX_VALUE_SIZE,
                }
            }

            $(
                #[doc = concat!("Sets [`Capabilities::", stringify!($flag), "`].")]
                #[must_use]
                pub fn $setter(mut self, value: bool) -> Self {
                    self.$flag = value;
                    self
                }
            )*
        }
    };
}

flag_setters! {
    lock => with_lock,
    election => with_election,
    rwlock => with_rwlock,
    queue => with_queue,
    priority_queue => with_priority_queue,
    barrier => with_barrier,
    double_barrier => with_double_barrier,
    stm_serializable_snapshot => with_stm_serializable_snapshot,
    stm_serializable => with_stm_serializable,
    stm_repeatable_reads => with_stm_repeatable_reads,
    stm_read_committed => with_stm_read_committed,
    fencing => with_fencing,
    fifo_waiters => with_fifo_waiters,
    unfair_lock => with_unfair_lock,
    lost_notification => with_lost_notification,
    stalled_holder_expires => with_stalled_holder_expires,
    semaphore => with_semaphore,
    guarded_writes => with_guarded_writes,
    partition_safe => with_partition_safe,
    reliable_delivery => with_reliable_delivery,
    survives_restart => with_survives_restart,
    exclusive_across_restart => with_exclusive_across_restart,
    session_bound => with_session_bound,
    linearizable => with_linearizable,
    survives_failover => with_survives_failover,
    counter => with_counter,
    latch => with_latch,
    break_lock => with_break_lock,
    queue_age => with_queue_age,
    rate_limiter => with_rate_limiter,
    release_request => with_release_request,
    hand_over => with_hand_over,
    gapless_hand_over => with_gapless_hand_over,
    export => with_export,
    caller_transactions => with_caller_transactions,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Capabilities;

    /// Every flag has its setter: switching each on from `none` gives `all`.
    #[test]
    fn every_flag_has_a_setter() {
        let ttl = Duration::from_millis(250);
        let built = Capabilities::none("test")
            .with_min_session_ttl(ttl)
            .with_lock(true)
            .with_election(true)
            .with_rwlock(true)
            .with_queue(true)
            .with_priority_queue(true)
            .with_barrier(true)
            .with_double_barrier(true)
            .with_stm_serializable_snapshot(true)
            .with_stm_serializable(true)
            .with_stm_repeatable_reads(true)
            .with_stm_read_committed(true)
            .with_fencing(true)
            .with_fifo_waiters(true)
            .with_unfair_lock(true)
            .with_lost_notification(true)
            .with_stalled_holder_expires(true)
            .with_semaphore(true)
            .with_guarded_writes(true)
            .with_partition_safe(true)
            .with_reliable_delivery(true)
            .with_survives_restart(true)
            .with_exclusive_across_restart(true)
            .with_session_bound(true)
            .with_linearizable(true)
            .with_survives_failover(true)
            .with_counter(true)
            .with_latch(true)
            .with_break_lock(true)
            .with_queue_age(true)
            .with_rate_limiter(true)
            .with_release_request(true)
            .with_hand_over(true)
            .with_gapless_hand_over(true)
            .with_export(true)
            .with_caller_transactions(true)
            .with_max_value_size(Capabilities::DEFAULT_MAX_VALUE_SIZE);
        assert_eq!(built, Capabilities::all("test", ttl));
    }
}
