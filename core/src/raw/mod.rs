//! The backend author's API: what it takes to implement a store for distsync.
//!
//! Users of the primitives need nothing here: they hold a [`Coordinator`](crate::Coordinator)
//! from `distsync::connect` and the handles, guards and sessions it gives. This module
//! gathers, as OpenDAL's `raw` does, the traits a backend implements and the pieces it
//! builds them from:
//!
//! - [`Backend`]: the object-safe store (sessions, and the operators' reads and
//!   writes), held by a `Coordinator` as `Arc<dyn Backend>`, and [`Primitives`], its
//!   factories, which a store writes with [`impl_primitives!`](crate::impl_primitives)
//!   from the type of each handle, made by [`Make`] (those bound to a session from
//!   [`OnSession`]);
//! - [`Lease`] and [`KeepAlive`]: the store's side of a session, handed to
//!   `Session::start` together with the instant the grant was sent;
//! - the primitive traits a backend returns boxed ([`Locker`], [`Election`] with its
//!   [`Proclaim`] part and the [`LeaderObserver`] that [`observe_leaders`] makes its
//!   `observe` stream of, [`RwLock`], [`Queue`], [`Barrier`], [`DoubleBarrier`],
//!   [`Semaphore`]; a method that takes a value is the `_bytes` one, taking
//!   [`Bytes`](crate::Bytes): [`Election::campaign_bytes`],
//!   [`Queue::append_bytes`] (with its [`AppendKey`]),
//!   [`Proclaim::proclaim_bytes`], [`GuardedWrite::put_if_held_bytes`], which users
//!   reach through generic methods of the same name without the suffix) and the STM
//!   engine ([`StmEngine`], [`StmAttempt`], [`Write`], the conflict signal
//!   [`StmRetry`]), whose user handle [`Stm`](crate::Stm) a backend makes with
//!   `Stm::new`;
//! - guards and leaderships, made with [`lock_guard`], [`read_guard`] and
//!   [`leadership`] from the key, the token, the session and a [`ReleaseFn`] (a
//!   semaphore's [`Permit`] is a lock guard named with [`permit`]), and the
//!   store's side of sessions and guards ([`SessionStoreSide`]: the lost token,
//!   `mark_lost`, the typed lease, the in-process gate; [`GuardStoreSide`]), which no
//!   user reaches without importing `raw`;
//! - [`call_id`]: a fresh id that makes a store call idempotent by naming it;
//! - [`require_open_transaction`]: the check of a transaction lock (one held for the
//!   rest of the caller's database transaction) before it locks;
//! - [`CleanUp`]: the work a `Drop` cannot await (a release, a withdrawal, a put-back),
//!   spawned and retried within its bound, and [`ClaimGuard`]: a queue item's
//!   [`Claim`] between the store's answer and the caller, put back when dropped;
//! - [`Settle`]: a held queue item's ack and return as a store's atomic steps, which
//!   [`Delivery`](crate::Delivery) runs as one protocol on every store;
//! - [`QUEUE_WAITER_TTL`] and [`queue_recheck_after`]: a waiting queue consumer's
//!   place in a store's line of waiters, and when it looks again without a wake-up;
//! - [`Snapshot`]: what [`Backend::export`] returns for migrations;
//! - [`retry`]: the one retry policy of every backend ([`RetryPolicy`], [`WaitRetry`]):
//!   what is retried after a transient store failure, for how long, per kind of call;
//! - [`Backoff`]: the exponential pause schedule every retry loop uses, and
//!   [`Contention`]: the randomized pause of a client that lost a race for a compare;
//! - [`random_u64`] and [`random_fraction`]: the one source of random ids and jitter;
//! - [`locked`]: the one poisoning policy of every std mutex in a store's client;
//! - [`RateStep`]: a store's rate limiter as its one atomic step, which
//!   [`RateStepLimiter`] makes a handle of, and [`StampedTat`]: the limiter's record on
//!   a store that stamps writes with its time but cannot read it ([`StampedStore`]);
//! - [`RenewalBatch`]: session renewals handed to one task that renews them together,
//!   one statement for every session due, for a store whose renewal is a statement;
//! - [`EpochMarker`]: what a store that can forget keeps so that its clients tell it
//!   forgot, and [`EpochBook`]: what a client keeps of its store's epochs (the marker
//!   it knows, the lock-delay after the store forgot, the token offset);
//! - [`check_session_ttl`]: the bound on session TTLs (`max_session_ttl=`) that the
//!   lock-delay after a store forgets relies on;
//! - [`UrlOptions`]: the query options every backend's URL shares (timeouts, whose
//!   defaults are [`DEFAULT_CONNECT_TIMEOUT`] and [`DEFAULT_REQUEST_TIMEOUT`],
//!   `max_session_ttl=`, TLS files) read in one grammar ([`UrlGrammar`] says what a
//!   backend adds), with the value syntax of durations ([`parse_duration`]) and
//!   flags ([`parse_url_flag`]), and the [`TlsFiles`] of a TLS URL;
//! - [`name_connect_timeout`]: a connection attempt that fails before its bound (a
//!   refused port) names the option that bounds connecting, as every store's does;
//!   [`refusing_hosts`] tells a refusal by every server (fail at once) from servers
//!   not serving yet (wait);
//! - [`SharedSettings`]: those shared options as a configuration holds them, and
//!   [`config_accessors!`](crate::config_accessors): their accessors on a store's
//!   configuration type, the same methods on every store;
//! - [`MultiHostUrl`]: the parts of a URL that names several hosts (etcd, ZooKeeper,
//!   NATS, Redis Sentinel and Cluster), its login, and one `host:port` rule
//!   ([`parse_host_port`], [`join_host_port`]).
//!
//! A store that offers etcd's operations (ranges by revision, compare-and-swap
//! transactions, watches from a revision, leases) need not build the primitives
//! itself: it implements the `Kv` trait of the `distsync-kv` crate and gets every
//! primitive from `distsync_kv::recipes::KvBackend`, as the etcd, MySQL and memory
//! backends do.
//!
//! # Contract
//!
//! The conformance suite (`distsync-conformance`) checks most of this, and each backend
//! crate runs it as `cargo test`; what it cannot measure is still required. A backend
//! must guarantee:
//!
//! - **Names and keys.** Every key lives under the namespace the URL names. Distinct
//!   (kind, name) pairs never share a store key: a queue `a`, a queue `a/b`, a lock
//!   `a` and an STM key `a` do not interfere. Names arrive validated ([`Name`]) and
//!   counts as [`NonZeroUsize`](std::num::NonZeroUsize): a backend checks neither again.
//! - **Factories do no I/O.** A primitive or STM level the backend does not offer is
//!   [`Error::Unsupported`](crate::Error::Unsupported), exactly as its
//!   [`Capabilities`] say; a [`Session`] from another backend is
//!   [`Error::InvalidArgument`](crate::Error::InvalidArgument).
//! - **Sessions.** A session is a lease with the TTL asked for (at least
//!   [`Capabilities::min_session_ttl`]: [`Capabilities::check_session`] checks the
//!   options, before any I/O). Start it with [`start_session`], passing the
//!   instant *before* the grant request was sent: the session counts its validity from
//!   there and fires `lost()` a margin before the TTL, whatever the network does.
//!   [`Lease::keep_alive`] answers [`KeepAlive::Gone`] once the store no longer knows
//!   the lease; [`Lease::revoke`] of a lease already gone succeeds.
//! - **Holds die with their session.** Locks, candidacies, read/write locks and
//!   double-barrier entries are released by the store when the session ends (closed,
//!   revoked, expired), without the client's help. Where the store frees a hold on a
//!   signal the holder may not see (a hold tied to a connection, freed when the
//!   connection closes), the next waiter is not granted before the previous holder's
//!   client-side deadline, unless it released cleanly.
//! - **Fencing.** While [`Capabilities::fencing`] is declared, every lock grant,
//!   write-lock grant and leadership term carries a [`FencingToken`] that strictly
//!   increases across successive grants of one name, also across a server restart or
//!   a failover; session ids never repeat.
//! - **Waiting.** Every blocking call is cancel safe: dropping its future leaves no
//!   residue that blocks anyone else (the waiter's entry is removed, or bounded by the
//!   lease). Waiters wake on a notification from the store, never on a fixed polling
//!   interval, and only the waiter next in line where the store allows it. `try_*`
//!   calls return at once.
//! - **Queues.** Items are durable; under any mix of producers, consumers and
//!   cancelled dequeues no item is lost or delivered twice; lower priority numbers
//!   first, FIFO within a priority.
//! - **STM.** An attempt that sees a conflict (a read no longer consistent with its
//!   snapshot, a serialization failure) says so with [`StmRetry`] (or `Ok(false)` from
//!   [`StmAttempt::commit`]); [`Stm`](crate::Stm) retries it. A backend never returns
//!   [`Error::StmConflict`](crate::Error::StmConflict), which means only that a
//!   transaction gave up after its last attempt.
//! - **Errors.** Typed ([`Error`](crate::Error)), no panic on anything the network or
//!   the user controls, and no secret (password, token) in an error, a log line, a
//!   `Debug` output or a printed URL.
//! - **Status.** [`Backend::status`] (who holds what, default `Unsupported`) only
//!   reads: it never changes, extends or settles what it reports. It lists the live
//!   entries only (an entry whose session has ended or expired is left out), holders
//!   apart from waiters, waiters in the order the store will serve them, and each
//!   holder's key exactly as its guard's `key()` shows it (see [`crate::status`]).
//! - **Claims are measured.** Every `true` in [`Capabilities`] is a claim the
//!   conformance suite measures; a claim it cannot confirm is a bug. Declare `false`
//!   what a configuration cannot give, and it is shown as such in the guarantee matrix
//!   (docs/GUARANTEES.md).
//!
//! `docs/ARCHITECTURE.md` in the repository walks through the five implementation
//! strategies (recipes over `distsync_kv::kv::Kv`, the Redis waiter line, PostgreSQL's
//! entry rows, Curator's recipes on ZooKeeper, a NATS JetStream key-value bucket) and the
//! checklist for adding a backend.

mod call_id;
mod claim_guard;
mod claim_sweep;
mod clean_up;
mod connect_failure;
mod detached;
mod epoch_book;
mod epoch_marker;
mod locked;
mod login;
mod multi_host_url;
mod prefix;
mod queue_waiter;
mod random;
mod rate_step;
mod renewal_batch;
pub mod retry;
mod session_bound;
mod shared_settings;
mod stamped_tat;
mod store_side;
mod tls_files;
mod transaction_lock;
mod url_options;
mod waited;

pub use call_id::call_id;
pub use claim_guard::{Claim, ClaimGuard};
pub use claim_sweep::{ClaimSweeps, SWEEP_EVERY};
pub use clean_up::CleanUp;
pub use connect_failure::{name_connect_timeout, refusing_hosts};
pub use detached::detached;
pub use epoch_book::EpochBook;
pub use epoch_marker::EpochMarker;
pub use locked::locked;
pub use login::Login;
pub use multi_host_url::{MultiHostUrl, join_host_port, parse_host_port};
pub use prefix::name_under;
pub use queue_waiter::{QUEUE_WAITER_TTL, queue_recheck_after};
pub use random::{random_fraction, random_u64};
pub use rate_step::{RateStep, RateStepLimiter};
pub use renewal_batch::{BatchRenewed, RenewalBatch};
pub use retry::{Failure, Idempotence, Look, RetryPolicy, WaitRetry, Wakes};
pub use session_bound::{MaxSessionTtl, check_session_ttl};
pub use shared_settings::SharedSettings;
pub use stamped_tat::{NotStampedTat, StampedRead, StampedStep, StampedStore, StampedTat};
pub use store_side::{
    GuardStoreSide, SessionStoreSide, leadership, lock_guard, permit, read_guard, start_session,
    with_guarded_write, with_release_request_watch,
};
pub use tls_files::TlsFiles;
pub use transaction_lock::require_open_transaction;
pub use url_options::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT, UrlGrammar, UrlOptions, check_tls_files,
    parse_duration, parse_url_flag,
};
pub use waited::waited;

#[doc(inline)]
pub use crate::backend::Backend;
#[doc(inline)]
pub use crate::backoff::Backoff;
#[doc(inline)]
pub use crate::contention::Contention;
#[doc(inline)]
pub use crate::delivery::Settle;
#[doc(inline)]
pub use crate::guard::{GuardedWrite, LossWatchFn, ReleaseFn, ReleaseRequestWatchFn};
pub use crate::make::{Make, OnSession};
pub use crate::primitives::Primitives;
#[doc(inline)]
pub use crate::session::{KeepAlive, Lease};
#[doc(inline)]
pub use crate::stm::{StmAttempt, StmEngine, StmRetry, Write};

pub use crate::barrier::{Barrier, DoubleBarrier};
pub use crate::capabilities::Capabilities;
pub use crate::election::{
    Election, LeaderInfo, LeaderObserver, Leadership, Proclaim, observe_leaders,
};
pub use crate::guard::{LockGuard, ReadGuard};
pub use crate::lock::Locker;
pub use crate::migrate::{QueueItem, Snapshot};
pub use crate::name::Name;
pub use crate::queue::{AppendKey, Queue};
pub use crate::rwlock::RwLock;
pub use crate::semaphore::{Permit, Semaphore};
pub use crate::session::{Session, SessionId, SessionOptions};
pub use crate::token::FencingToken;
