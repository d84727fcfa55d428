//! # distsync-postgres
//!
//! The PostgreSQL backend of distsync, on `sqlx`: every primitive of
//! [`distsync_core`] over one database, addressed as
//! `postgres://user[:password]@host[:port]/database[?schema=name]` (also
//! `postgresql://`; default schema `distsync`; `max_session_ttl=`, see "When the store
//! forgets"; `grants=unflushed`, see "Unflushed grants").
//!
//! ## What it does not offer
//!
//! Each of these answers [`distsync_core::Error::Unsupported`], as the backend's
//! capabilities declare, one list item for each column of the guarantee matrix this
//! backend runs (generated from the capabilities by `scripts/update-matrix.sh`, and
//! checked in CI):
//!
//! <!-- gaps:begin -->
//! - **postgres**: nothing
//! - **postgres-unflushed**: nothing
//! <!-- gaps:end -->
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
//! let coordinator = distsync::connect("postgres://app@db:5432/app?schema=locks").await?;
//! let session = coordinator.session().await?;
//! let guard = coordinator.locker(&session, "jobs/nightly")?.lock().await?;
//! // ... pass guard.token() with every write to the protected resource ...
//! guard.unlock().await?;
//! # Ok(()) }
//! ```
//!
//! # Connecting
//! TLS as libpq (`sslmode=require|verify-ca|verify-full`, `sslrootcert`, `sslcert`,
//! `sslkey`; rustls through sqlx, the cargo feature `tls`, on by default), SCRAM
//! passwords, `connect_timeout=` and `timeout=`: see [`PostgresConfig::parse`]. A wrong
//! password is [`Error::Authentication`](distsync_core::Error::Authentication); no
//! password appears in errors, logs or `Debug`. In code: [`backend_with_config`]; with a
//! `sqlx::PgPool` of your own: [`backend_from_pool`] (its requirements: session pooling,
//! one role, durable commits).
//!
//! # How it works
//! Each part's design is documented in the prose of its module, private to the crate
//! (`backend-postgres/src/<module>.rs`; `docs/ARCHITECTURE.md` places the main ones):
//! - `schema`: tables and functions (`backend-postgres/sql/*.sql`), created on first use
//!   in the configured schema by an ordinary role (it needs `CREATE` on the database, or
//!   an existing schema it may create objects in), and marked with their layout version
//!   ([`LAYOUT_VERSION`]): a schema of another layout is refused and left untouched
//!   ([`Error::IncompatibleLayout`](distsync_core::Error::IncompatibleLayout) for a newer
//!   one; docs/MIGRATING.md). PostgreSQL 14 or later.
//! - `session`: a heartbeat row per session (random, never-repeating id); a session
//!   holds no connection. The keepalives of all the process's sessions are batched by
//!   one heartbeat task into `UPDATE ... WHERE id = ANY($1)` statements,
//!   each session keeping its own client-side deadline (`send time of its last
//!   acknowledged renewal + TTL − margin`) and `lost()`: its row gone or expired, a
//!   `NOTIFY` from the process that ended it, or its deadline passing.
//! - `waiter_line`: locks, read-write locks and candidacies are entries in a line of rows
//!   per name (the semaphore's tables, a mutex being a semaphore of one permit, a read lock a
//!   shared entry): FIFO, granted by the caller's own statement, which bumps the name's
//!   fencing counter (the election term) durably. Waiters hold no connection and are
//!   woken one by one through `NOTIFY`. A dropped wait withdraws its entry.
//! - `unfair_lock` ([`LockOptions::unfair`](distsync_core::LockOptions::unfair)): the
//!   holder is the fair lock's (in the name's row while no fair contender waits, an
//!   entry of its line otherwise), taken in one statement when the lock is free and
//!   released in one (so the two exclude each other and share the token counter); its
//!   waiters wait apart, beside the holder, and a release that frees the lock wakes only
//!   the first of them, which asks again and may lose to a newcomer.
//! - **Connections proportional to the process**: a backend uses at most 19
//!   connections (pool 8, holds 8, reaper 2, one listener) however many sessions,
//!   holds and waiters it has: 10,000 held locks and 1,000 waiters from one process
//!   measure at that (see docs/BENCHMARKS.md).
//! - **The lease gate** (`waiter_line`): *an entry counts until its session's row is deleted
//!   or expires* (`expires_at` = the server's time of its last renewal + TTL, never
//!   earlier than the holder's client-side deadline), so a holder that vanished without
//!   a release (crashed, partitioned, stalled, declared lost) is granted to the next
//!   waiter only once it can no longer believe it holds; *a clean release (`unlock()`,
//!   `resign()`, a dropped guard, `close()` of a healthy session) hands over at once*.
//!   This applies to locks, write locks, read locks, leadership, permits and
//!   double-barrier entries. The crash-release time is bound by the TTL, as on etcd
//!   and Redis. A connection's death frees nothing, and no backend is ever terminated:
//!   a stalled holder stops renewing, so its row expires after its TTL. Keepalives
//!   sweep expired rows, unused names and old election log entries (bounded growth,
//!   see `limits`) on the reaper's connections.
//! - `semaphore`: the same line with permit entries, the first `N` live ones holding a
//!   permit.
//! - `election`: a candidacy in the election's line plus a leader row and a bounded
//!   log; `observe()` follows the log through `LISTEN`/`NOTIFY` and never yields a stale
//!   leader.
//! - `queue`: rows claimed with `DELETE ... FOR UPDATE SKIP LOCKED ... RETURNING`,
//!   cancel-safe; `barrier` and `double_barrier` on rows. Waiters are woken through
//!   one listening connection per backend (`notify`) and ride out connection trouble
//!   (`retry`).
//! - `export`: the durable state, read in one snapshot for migration between backends.
//! - `stm`: PostgreSQL transactions over a key-value table:
//!
//! | etcd level | PostgreSQL |
//! |---|---|
//! | `SerializableSnapshot` | `SERIALIZABLE` |
//! | `Serializable` | `SERIALIZABLE` |
//! | `RepeatableReads` | `REPEATABLE READ`, with the keys read or written locked `FOR UPDATE` at commit and the keys read as absent validated (etcd's semantics, see `stm`) |
//! | `ReadCommitted` | `READ COMMITTED` (lost updates possible, as on etcd) |
//!
//! # When the store forgets
//! A restart keeps every table, so it forgets nothing. What forgets is an operator's
//! act: a fresh `initdb` at the same address, the database or the schema dropped and
//! created again, a backup restored. The client (`amnesia`) tells it with no extra
//! round trip on the hot path: it reads the cluster's `system_identifier` and the
//! schema's epoch marker (the row of `epoch_marker`: a random id, the longest session
//! TTL, the token offset) at connect, and again, with the store's highest fencing
//! counter, when a renewal finds a session's row gone or a session is lost with its
//! renewals failing. Another `system_identifier`, a schema gone, a marker missing or
//! changed, or counters below a token it handed out: its sessions are lost (`lost()`
//! fires, a warning names the reason), no lock, write lock, leadership or permit is
//! granted through it until the longest session TTL known has passed (the
//! lock-delay), and it raises the store's token floor to the highest token it handed
//! out, so that tokens keep growing across the forgetting. `max_session_ttl=` in the
//! URL ([`PostgresConfig::max_session_ttl`]) makes a client that finds no marker write
//! one (seeding the token floor from the server's clock in microseconds, so that
//! tokens grow even when no old holder's client publishes its own in time) and wait the
//! bound before its first grant, and every client that connects
//! while that lock-delay runs waits too; the backend then declares
//! `exclusive_across_restart` ([`capabilities_with_bound`]). The limits:
//! - every client of a schema must give the bound (the same one, or a larger one);
//!   a session longer than it is refused with
//!   [`Error::InvalidArgument`](distsync_core::Error::InvalidArgument);
//! - a schema's first grants on a store wait the bound once (the store cannot tell a
//!   new store from one that forgot);
//! - without the bound a client that never knew the old store grants at once, free
//!   to be granted before an old holder's `lost()`;
//! - tokens continue above those of clients alive across the forgetting: a token the
//!   old store handed out to a client gone by then is known to nobody;
//! - a restored backup is told by its marker (one written after the backup) or by
//!   counters below a token a client handed out; one that differs in neither (nothing
//!   granted with a token since the backup) is not told, and a read lock granted
//!   since then is lost without a lock-delay;
//! - a client detecting it after the schema was created again listens on the old
//!   schema's notification channel: its waiters fall back to re-checking on their
//!   timers until it connects again.
//!
//! # Unflushed grants
//! Every grant (a lock, write lock, read lock, permit or leadership, with its fencing
//! token) commits synchronously by default: acknowledged once its commit is flushed to
//! disk, so a crash of the server loses no grant and no token. That flush is most of a
//! lock cycle's cost on a durable server (fsync and synchronous commits on).
//! `grants=unflushed` in the URL ([`PostgresConfig::with_unflushed_grants`]) commits
//! grants without waiting for it, as releases and waits already do, and keeps holds
//! exclusive when a crash loses them (`unflushed_grants`): an unlogged sentinel row,
//! which crash recovery and a standby's promotion empty, tells the crash; the first
//! grant after it (by any client) starts a lock-delay of the `max_session_ttl` bound,
//! which the mode requires, during which nothing is granted; and a client that was
//! granted something before the crash learns of it at its next renewal, within a third
//! of a TTL, and treats it as the store forgetting its holds (see "When the store
//! forgets": its sessions are lost, its token floor raised). What the mode gives up:
//! - an acknowledged grant can be lost in a crash of the server or a promotion of a
//!   standby: its holder then gets `lost()` instead of keeping it, before anyone else is
//!   granted (and every other session of its client is lost with it, as are the sessions
//!   of a client whose acquisition was in flight when it noticed the crash);
//! - after a crash or a promotion every grant of the schema waits the bound once;
//! - fencing tokens keep growing above those of clients alive across the crash, but
//!   the tokens of a holder that died across the crash unseen may be handed out again,
//!   as after the store forgets;
//! - `survives_failover` is not declared: the commit does not wait for a synchronous
//!   standby either;
//! - every client of the schema must use the mode, with the same bound: a durable
//!   client does not pass the lock-delay's gate.
//!
//! Choose it for a hot lock on a durable server, where a crash is rare and a lock-delay
//! of the bound after one is acceptable; the default stays durable. Sessions, renewals,
//! queues, STM, counters and guarded writes commit durably in either mode.
//!
//! # Connection poolers
//! Holds are rows, so statements may run on any server connection, but waiters are
//! woken through `LISTEN`, which belongs to a server connection. Behind PgBouncer or
//! another pooler, use **session pooling**: a transaction (or statement) pooler is
//! detected at connect and refused with [`Error::Unsupported`](distsync_core::Error::Unsupported) naming the mode
//! (`connection::checks`). No startup parameter other than `application_name` is sent (PgBouncer
//! rejects `options`): settings are applied after connecting (`connection`).
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod acknowledge_in;
mod amnesia;
mod backend;
mod barrier;
mod capabilities;
mod connection;
mod counter;
mod double_barrier;
mod driver;
mod election;
mod epoch;
mod error;
mod export;
mod facts;
pub mod fence;
mod guarded;
mod limits;
mod lock;
mod notify;
mod outbox;
mod purge;
mod queue;
mod rate_limiter;
mod rwlock;
mod schema;
mod semaphore;
#[cfg(test)]
mod server_tests;
mod session;
mod status;
mod stm;
mod store;
mod transaction_lock;
mod unfair_lock;
mod unflushed_grants;
mod waiter_line;

pub use acknowledge_in::{ack_in, PendingAck};
pub use backend::{backend, backend_from_pool, backend_with_config, PostgresBackend};
pub use capabilities::{
    capabilities, capabilities_with_bound, BACKEND, MAX_VALUE_SIZE, MIN_SESSION_TTL,
};
pub use connection::config::{
    PostgresConfig, DEFAULT_HOLD_CONNECTIONS, DEFAULT_SCHEMA, MAX_HOLD_CONNECTIONS,
};
pub use driver::DRIVER;
pub use limits::Limits;
pub use outbox::Outbox;
pub use schema::LAYOUT_VERSION;
/// The `sqlx` this crate is built with, for [`backend_from_pool`] (its `PgPool` and
/// `PgConnectOptions` must come from this version).
pub use sqlx;
pub use transaction_lock::TransactionLock;
