//! What the PostgreSQL backend is called ([`BACKEND`]), the shortest session it accepts
//! ([`MIN_SESSION_TTL`]) and what it offers and claims ([`capabilities()`], and
//! [`capabilities_with_bound`] for a URL that bounds session TTLs).

use std::time::Duration;

use distsync_core::Capabilities;

/// The backend's short name, as it appears in errors, logs and [`Capabilities`].
pub const BACKEND: &str = "postgres";

/// The shortest session TTL this backend accepts ([`Capabilities::min_session_ttl`];
/// a shorter one is refused with
/// [`Error::InvalidArgument`](distsync_core::Error::InvalidArgument) when the session
/// is opened): renewals are batched statements on the reaper's connections and a
/// session's row must outlive a renewal's round trip and a durable commit.
pub const MIN_SESSION_TTL: Duration = Duration::from_secs(1);

/// What the PostgreSQL backend offers and claims: every primitive and every STM level,
/// and
/// - `fencing`: counter rows bumped by the granting statement, committed with
///   `synchronous_commit = on`, so tokens never go backwards across a crash or an
///   immediate shutdown of the server (only releases and waits that grant nothing
///   commit asynchronously, see `waiter_line`; under unflushed grants, see below);
/// - `fifo_waiters`: entries in arrival order (see `waiter_line`);
/// - `unfair_lock`: the holder is an entry of the fair lock's line, its waiters rows
///   apart, of which a release wakes the first (see `unfair_lock`);
/// - `lost_notification`: a gone or expired heartbeat row, or a `NOTIFY` from the
///   process that ended the session;
/// - `partition_safe`: the lease gate (see the crate docs, "How it works"). Measured by
///   the partition cases;
/// - `semaphore`: entry rows per name, the first N live ones hold (see `semaphore`);
/// - `guarded_writes`: `LockGuard::put_if_held` (locks, write locks, permits) writes the
///   STM key in one statement that first checks, under the name's row lock that every
///   grant takes, that the guard's entry is still there with its token, its session
///   live and it first in line; a stale holder writes nothing. To enforce tokens at a
///   table of your own, see [`fence::admit`](crate::fence::admit);
/// - `reliable_delivery`: `Queue::receive` marks the item's row as held by the
///   session; the hold counts only while the session's row is live, so a consumer
///   that dies loses nothing: its items come back at their place when its session
///   expires or ends (see `queue`);
/// - `stm_repeatable_reads`: keys read as absent are validated too, as on etcd;
/// - `stalled_holder_expires`: a stalled holder's row expires after its TTL and its
///   entry stops counting (no backend is terminated); keepalives sweep expired rows;
/// - `survives_restart`: queues, STM keys, barriers, fencing counters, sessions and
///   their holds are tables (a session survives a restart shorter than its deadline);
/// - `exclusive_across_restart`: only with a bound on session TTLs
///   (`max_session_ttl=`, [`capabilities_with_bound`]). A restart keeps every hold; a
///   server that forgot its data is told, and then grants wait a lock-delay and tokens
///   keep growing, but a client that never knew the old store waits the lock-delay out
///   only with the bound (see the crate docs, "When the store forgets"; the matrix rows
///   `server_wipe_one_holder` and `server_wipe_one_holder_bounded`);
/// - `linearizable`: one primary serves every read and grant (with replicas, point the
///   URL at the primary);
/// - `gapless_hand_over`: the release that removes a leader's candidacy (a resign, a
///   withdrawn campaign) elects the next live candidate in its own transaction (its
///   term, leader row and log entry), so `leader()`, `observe()` and the status report
///   see the old leader or the new one, never neither (see `waiter_line`). The close of
///   a leader's session does the same unless a join or grant of the election holds its
///   row lock at that instant (then the woken candidate elects itself a moment later);
/// - `min_session_ttl`: [`MIN_SESSION_TTL`], 1 s;
/// - `caller_transactions`: a queue's items are rows of the database, so
///   [`Outbox`](crate::Outbox) enqueues and [`ack_in`](crate::ack_in) acknowledges in
///   the caller's own transaction;
/// - `survives_failover`: false here, as a failover to an asynchronous standby can
///   lose what the primary acknowledged last (docs/HIGH_AVAILABILITY.md); a
///   [`PostgresBackend`](crate::PostgresBackend) connected to a primary whose
///   `synchronous_standby_names` is set declares it true (checked at connect): every
///   commit then waits for the standby, so a promoted standby has every grant, token
///   and acknowledged item (measured by the matrix row `server_primary_failover_promoted`
///   on a private primary with a synchronous standby).
///
/// Under unflushed grants (`grants=unflushed`, which requires the bound and so declares
/// what [`capabilities_with_bound`] declares) a connected backend declares the same,
/// and never `survives_failover`: a grant commits without waiting for the flush or a
/// standby, so an acknowledged grant can be lost in a crash or a promotion. `fencing`
/// and `exclusive_across_restart` hold as after the store forgets (see the crate docs,
/// "Unflushed grants", for how, and for what the mode gives up).
pub fn capabilities() -> Capabilities {
    capabilities_with_bound(None)
}

/// The largest value the PostgreSQL backend takes from a caller: 16 MiB. A `bytea`
/// column takes up to 1 GB, but a value that large is copied whole through the
/// server's memory, its WAL and every standby; coordination values are small, and a
/// bound that every store documents beats one that only a full server finds.
pub const MAX_VALUE_SIZE: usize = 16 * 1024 * 1024;

/// [`capabilities`] of a backend whose URL bounds session TTLs (`max_session_ttl=`,
/// [`PostgresConfig::max_session_ttl`](crate::PostgresConfig::max_session_ttl)):
/// `exclusive_across_restart` with a bound.
pub fn capabilities_with_bound(max_session_ttl: Option<Duration>) -> Capabilities {
    Capabilities::all(BACKEND, MIN_SESSION_TTL)
        .with_max_value_size(MAX_VALUE_SIZE)
        .with_guarded_writes(true)
        .with_reliable_delivery(true)
        .with_survives_failover(false)
        .with_exclusive_across_restart(max_session_ttl.is_some())
        .with_gapless_hand_over(true)
        .with_caller_transactions(true)
}
