//! # distsync-mysql
//!
//! The MySQL/MariaDB backend of distsync, built as k3s's `kine` builds etcd on SQL:
//! this crate implements etcd's v3 model, [`distsync_kv::kv::Kv`] (one global
//! revision, ranges, multi-key transactions with compares, watches from a revision,
//! leases), on InnoDB tables, and every primitive comes from the tested recipes of
//! [`distsync_kv::recipes`], exactly as the etcd backend gets them:
//! [`MysqlBackend`] is `KvBackend<ForgetfulKv<MysqlKv>>` (the store with the epoch
//! marker of [`distsync_kv::forgetful`], see "When the store forgets").
//!
//! ## What it does not offer
//!
//! Each of these answers [`distsync_core::Error::Unsupported`], as the backend's
//! capabilities declare, one list item for each column of the guarantee matrix this
//! backend runs (generated from the capabilities by `scripts/update-matrix.sh`, and
//! checked in CI):
//!
//! <!-- gaps:begin -->
//! - **mysql**: nothing
//! <!-- gaps:end -->
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync_core::Result<()> {
//! let coordinator = distsync::connect("mysql://app:PASSWORD@127.0.0.1:3306/app").await?;
//! let session = coordinator.session().await?;
//! let guard = coordinator.locker(&session, "jobs/nightly")?.lock().await?;
//! println!("holding with fencing token {}", guard.token());
//! guard.unlock().await?;
//! # Ok(()) }
//! ```
//!
//! # The tables (prefix `distsync_` by default, `table_prefix=` in the URL)
//!
//! | table | rows | why |
//! |---|---|---|
//! | `meta` | one: `revision`, `compacted` | the store's revision and compaction point; every writer locks it |
//! | `kv` | one per live key: `k` (VARBINARY, bytewise order), `create_revision`, `mod_revision`, `version`, `lease`, `v` | the current state: compares and current ranges read one row per key, by primary key or key range |
//! | `log` | one per change of one key: `(revision, sub)` key, `k`, `create_revision`, `version`, `lease`, `v`, `deleted` | history: a range at a past revision reads, per key, its latest row at or before it; watches read rows after a revision |
//! | `leases` | one per lease: `id`, `ttl_us`, `expires_at` (DATETIME(6), server time, UTC) | expiry judged on the server's clock, never a client's |
//! | `txn_locks` | one per [`TransactionLock`] name: `name` | the row a transaction lock's holder locks (`SELECT … FOR UPDATE`) in its own transaction |
//! | `txn_lock_tokens` | none between calls: `id` (`AUTO_INCREMENT`) | the counter transaction locks draw their fencing tokens from; each row is removed in the transaction that drew it |
//!
//! Keys are `VARBINARY(2048)`, so no collation folds case or trims spaces, and key
//! order is byte order, as etcd's (and Rust's `str` order).
//!
//! # Revisions in commit order
//!
//! An `AUTO_INCREMENT` id is not commit-ordered in InnoDB: a transaction that took
//! id 7 may commit after one that took id 8, and a watcher that read 8 would skip 7.
//! So every transaction that writes locks the `meta` row (`SELECT … FOR UPDATE`),
//! takes `revision + 1` for all its changes, and writes the new revision before it
//! commits: writers run one at a time, commit order is revision order, and a reader
//! that sees revision `r` in `meta` finds every row up to `r` in the log. Writes to
//! the whole store are thus serialized on one row, as etcd's are on its raft log.
//!
//! A writer never holds that row across a client round trip: a client descheduled
//! between two of its statements (a machine short of CPU) would keep every other
//! writer of the store waiting meanwhile. It works optimistically instead: it first
//! reads what it needs (the rows of the keys its compares and writes name, whether
//! its leases are live, the keys under its prefix deletes) in one snapshot without
//! a lock, and decides there what to write; then it sends one batch of statements
//! that takes the lock, checks that what it read is unchanged (every change of a key
//! moves its `mod_revision`), runs the writes only if so, writes the new revision
//! and commits. The server runs that batch without waiting for the client, so the
//! row is held for the server's work and one commit's fsync. When something had
//! changed, the batch wrote nothing and the writer reads again (another writer
//! committed in between); after 8 such rounds it takes the lock before it reads
//! (`txn.rs`), so that it commits at the next round instead of starving. A transaction
//! that names only the keys its process holds on a lease, or a prefix compared as
//! empty, guesses them instead of reading, and the batch checks the guess as it checks
//! a read: a lock's take and release are one round trip each (what is guessed and
//! when: `guesses.rs`). Reads and transactions whose chosen
//! branch writes nothing take no lock (one consistent snapshot, `START TRANSACTION
//! WITH CONSISTENT SNAPSHOT, READ ONLY`, with the same check when compares chose the
//! branch). A transaction that changes nothing leaves the revision as it was, as
//! etcd's.
//!
//! # Transactions
//!
//! A [`Txn`](distsync_kv::kv::Txn) is applied as one MySQL transaction: the compares
//! ([`Compare`](distsync_kv::kv::Compare)) are evaluated on the rows read before the
//! lock and hold at the transaction's revision (checked under the lock); then the
//! chosen branch's puts, deletes (of a key or a prefix, counted) and ranges run in
//! order in one batch, each range seeing the branch's earlier writes, and every change
//! shares one revision. A put naming a lease that is gone or expired on the server's
//! clock fails with [`StoreError::LeaseNotFound`](distsync_kv::StoreError) and a put
//! keeping the lease of a missing key with
//! [`StoreError::KeyNotFound`](distsync_kv::StoreError); nothing is applied then. Ranges
//! sort, limit and bound (`max_create_revision`, `max_mod_revision`) in SQL, and count
//! as etcd does (before the bounds and the limit).
//!
//! # Compaction
//!
//! The reaper compacts the log every ten seconds to keep the last
//! [`DEFAULT_RETAINED_REVISIONS`] revisions (also [`MysqlKv::compact`]): per key, the
//! rows followed by a newer one at or before the compaction point go, and tombstones
//! before it. A range at an older revision fails with [`StoreError::Compacted`](distsync_kv::StoreError); a
//! watch from one answers [`WatchResponse::Compacted`](distsync_kv::kv::WatchResponse)
//! and ends, and the recipes re-read. One process at a time compacts a store's log: it
//! holds a named lock (`GET_LOCK`, named by a hash of the database and the log table's
//! name) while it does, and a reaper that finds it held leaves the window to that
//! process. Every process's reaper compacting at once would delete the same rows in
//! orders that deadlock, each doing work the first one does.
//!
//! # Leases
//!
//! A lease is a row whose `expires_at` is `NOW(6) + ttl` on the server. A renewal
//! extends it only while it has not expired (`… WHERE expires_at > NOW(6)`; no row:
//! [`KeepAlive::Gone`](distsync_core::session::KeepAlive), the session is lost). A
//! revoke deletes the lease and its keys in one revisioned transaction. Expiry is the
//! same transaction, run by a reaper: every client process runs one (one task per
//! backend), which sleeps until the next expiry on the server's clock, at most a
//! quarter of the shortest live TTL and at most a second. Reapers race harmlessly:
//! each locks the expired lease's row first and skips one another reaper holds
//! (`SKIP LOCKED`), and only the winner takes the revision lock (in one batch that
//! checks the lease's keys as read before, deletes them and commits), so a lease's
//! expiry costs the store one write however many processes run a reaper. etcd's lessor
//! expires leases the same way, on its leader. Grants and renewals use two
//! connections of their own, so that a renewal never queues behind writers, and the
//! renewals of a process's sessions go together: one statement renews every lease
//! due (`distsync_core::raw::RenewalBatch`), so 10,000 sessions cost a few statements
//! a second rather than 2,000.
//!
//! # Watches
//!
//! One hub per backend (per process) reads the log after the last revision it has
//! seen and hands each revision's changes, as one
//! [`WatchResponse::Events`](distsync_kv::kv::WatchResponse), to the watches they
//! concern; a new watch first reads its own history from its start revision in one
//! snapshot (a start of `0` is etcd's "from now": no history). **How the hub learns of
//! writes: key bells and a bounded poll.** A write of the same process rings it at
//! once. A key created on a lease (a lock's, an election's, a semaphore's) has a
//! *bell*, a MySQL named lock that its creator's process holds until it deletes the
//! key and releases right after that commit; a watch of one key (a waiter's watch of
//! the key ahead of it) waits on that bell in the server (`GET_LOCK`) and rings its
//! hub the moment it is released, so a lock passes between processes without a poll
//! interval. A bell is a hint: the hub still reads the log, and every missed bell (a
//! key deleted by another process, a creator that died, more waited keys in one
//! process than its `key_bells` connections, four by default; `key_bells=0` turns
//! bells off in a process) leaves that waiter to the poll: other processes' writes are found
//! by one statement (the revision row) per `poll_interval` (20 ms by default) per
//! process, and only while the process has an open watch. There is no poll per
//! waiter, and no statement at all in a process that waits on nothing. The hub reads
//! the log on a connection of its own (beside the pool, opened once the process
//! watches), so that a pool filled by the caller's transactions holds back no wake-up.
//! Each of its reads ends within the request timeout (`timeout=`): a server that stops
//! answering (a silent partition) ends the process's open watches, and the recipes
//! watch again once it answers, rather than wait on a connection that may never answer;
//! and no read of the hub's holds back a new watch of the process.
//! A bell is per key, not per commit: a doorbell that every commit rang would wake
//! every hub of every process at every write, which costs more than the poll under
//! load.
//!
//! # A client that stops half-way
//!
//! Every writer waits for the revision row, so a client that stops while holding it
//! (paused, cut off by a partition) would stop the whole store. A writer holds it
//! only inside one batch, which the server runs to its commit whatever the client
//! does; the one transaction that waits on its client, the claim of a lease's row
//! before its end, holds that row alone. And:
//!
//! - every call runs in a task of its own: a caller that gives up (a dropped future,
//!   `timeout=`) never cuts a statement off half-way on its connection, so every
//!   transaction commits or rolls back and its connection returns to the pool clean;
//! - each connection sets MariaDB's `idle_transaction_timeout` to one second: the
//!   server ends a connection that sits idle inside a transaction for longer, rolling
//!   it back. MySQL 8 has no such setting: there a stopped client holds its
//!   transaction's rows until its connection dies (`wait_timeout`, TCP keepalive).
//!   The caller's own transactions on [`Transactional::pool`] (an [`Outbox`]'s,
//!   [`ack_in`]'s) hold the revision row too and get the same second (see [`Outbox`]
//!   and [`ack_in`] for what the caller then sees).
//!
//! # Failover to a replica
//!
//! A primary that waits for its replica before it acknowledges a commit loses nothing
//! a client saw when the replica is promoted: MariaDB's semi-synchronous replication
//! with the `AFTER_SYNC` wait point (`rpl_semi_sync_master_enabled=ON`,
//! `rpl_semi_sync_master_wait_point=AFTER_SYNC`, and `rpl_semi_sync_slave_enabled=ON`
//! on the replica) makes a commit visible and acknowledged only once the replica has
//! it in its relay log. The backend reads both settings when it connects
//! ([`MysqlKv::replica_has_every_commit`]) and declares `survives_failover` then, and
//! only then. The failover manager must let the promoted replica apply its whole relay
//! log before it takes writes, and point the clients at it (a virtual IP, a proxy);
//! clients whose connections break see transient errors and retry.
//!
//! Not seen from here, and not covered by the declaration:
//!
//! - the fallback: a primary whose replica does not acknowledge within
//!   `rpl_semi_sync_master_timeout` (10 s by default) goes on asynchronously
//!   (`Rpl_semi_sync_master_status = OFF`) without telling its clients, and what it
//!   acknowledges until the replica catches up can be lost; set the timeout long and
//!   watch the status;
//! - a promoted replica without a semi-synchronous replica of its own: a backend
//!   connected before the promotion goes on declaring what it read at connect.
//!
//! With asynchronous replication (or the `AFTER_COMMIT` wait point, where other clients
//! see a commit before the replica has it) a promoted replica may lack acknowledged
//! commits: the revision counter goes back to the replica's, and with it lock fencing
//! tokens, so a new holder can get a token lower than one an old holder already
//! used. The backend does not declare `survives_failover` there; the conformance case
//! `server_primary_failover_promoted` measures both (docs/GUARANTEES.md).
//!
//! # MySQL 8
//!
//! Only MariaDB 10.11 is tested: MySQL 8 installs neither from Debian 12 nor from
//! PyPI, where the tests run. The statements are plain (no `RETURNING`, no
//! sequences) and should run on MySQL 8, which warns about `VALUES()` in `ON
//! DUPLICATE KEY UPDATE` (deprecated since 8.0.20) and lacks
//! `idle_transaction_timeout` (see above; the backend then goes on without it). MySQL's
//! semi-synchronous replication is a plugin, named `rpl_semi_sync_source_*` since
//! 8.0.26: the backend reads only MariaDB's (and the older plugin's)
//! `rpl_semi_sync_master_*` names, and declares no `survives_failover` without them.
//!
//! # The server's clock
//!
//! Queue ages and the rate limiter go by the server's clock, never a client's, so
//! clients whose clocks disagree see one age and share one rate. [`Kv::clock`] is the
//! server's `UTC_TIMESTAMP(6)`, read in a statement of its own: an enqueue dates its
//! item with the clock read beside its first read, at no extra latency, and
//! `oldest_age` is the clock less the oldest date of the items not held.
//!
//! The rate limiter reads the same clock inside the one statement that decides
//! ([`Kv::rate_limit`]): one round trip a decision, under the limiter's row lock alone,
//! outside the revision order (the statement, why it is not the recipes'
//! compare-and-swap, and what reads a limiter: `rate_limit.rs`).
//!
//! # TLS
//!
//! `ca=`, `cert=` and `key=` in the URL, as on every other store (see [`MysqlConfig`]):
//! sqlx's rustls (the cargo feature `tls`, on by default), with MySQL's `ssl-mode`.
//! The files alone mean TLS with the server's certificate and host name checked
//! (`verify_identity`), so moving to a server that requires TLS and a client
//! certificate (`require_secure_transport=ON`, a user created `REQUIRE X509`) is a
//! change of URL. The errors are [`MysqlKv::connect`]'s.
//!
//! # When the store forgets
//!
//! InnoDB keeps every committed row across a restart. What forgets is an operator's
//! act: a data directory wiped and the server started again at the same address, the
//! tables dropped, a dump restored. The leases are then gone with every key they held,
//! and the revision starts again at 1. The backend is the recipes over
//! [`distsync_kv::forgetful::ForgetfulKv`], the same detection the etcd backend makes:
//! a revision going back, and an epoch marker row (key `/amnesia`) read when a client
//! opens a session and when a renewal finds its lease gone. On detection the
//! client's sessions are lost, nothing is granted through it for the longest session
//! TTL known, and fencing tokens keep growing (an offset written into the marker).
//! A renewal that finds the tables missing creates them again and reports its lease
//! gone, so a holder's client tells the store forgot as soon as it is back.
//!
//! `max_session_ttl=` in the URL (sessions above it refused; give it in every client's
//! URL) makes a client that never knew the old store wait it out too, and the backend
//! then declares `exclusive_across_restart` ([`capabilities_with_bound`]).
//!
//! [`Kv::clock`]: distsync_kv::kv::Kv::clock
//! [`Kv::rate_limit`]: distsync_kv::kv::Kv::rate_limit
#![warn(missing_docs)]
#![forbid(unsafe_code)]

use std::time::Duration;

use distsync_core::Capabilities;

mod acknowledge_in;
mod backend;
mod batch;
mod callers;
mod clock;
mod compaction;
mod config;
mod driver;
mod error;
mod guesses;
mod key_bell;
mod kv;
mod lease;
mod optimistic;
mod outbox;
mod range;
mod rate_limit;
mod reaper;
mod replication;
mod schema;
mod tls;
mod transaction_lock;
mod transactional;
mod txn;
mod watch;

pub use acknowledge_in::{ack_in, PendingAck};
pub use backend::{backend, backend_with_config, MysqlBackend};
pub use compaction::DEFAULT_RETAINED_REVISIONS;
pub use config::{
    MysqlConfig, DEFAULT_KEY_BELLS, DEFAULT_POLL_INTERVAL, DEFAULT_POOL_SIZE, DEFAULT_PORT,
    DEFAULT_TABLE_PREFIX, SCHEMES,
};
pub use driver::DRIVER;
pub use error::database_error;
pub use kv::MysqlKv;
pub use outbox::Outbox;
/// The `sqlx` this crate is built with: the connections an [`Outbox`], [`ack_in`] and a
/// [`TransactionLock`] take must come from this version, as must [`MysqlKv::pool`]'s.
pub use sqlx;
pub use transaction_lock::TransactionLock;
pub use transactional::Transactional;

/// The backend's name, as it appears in [`Capabilities::backend`], in errors and in
/// log fields.
pub const BACKEND: &str = "mysql";

/// The shortest session TTL: a lease's expiry is judged on the server's clock to the
/// microsecond, but the reaper sleeps up to a quarter of the shortest TTL between
/// rounds and a renewal is a round trip, so a second keeps both well inside the TTL.
pub const MIN_SESSION_TTL: Duration = Duration::from_secs(1);

/// MariaDB's default `max_allowed_packet`, the largest statement the server takes:
/// 16 MiB (MySQL 8's is 64 MiB).
pub const DEFAULT_MAX_ALLOWED_PACKET: usize = 16 * 1024 * 1024;

/// What a write's statements carry beside its values: keys, revisions, compares and
/// the statements' text, 64 KiB.
const STATEMENT_ROOM: usize = 64 * 1024;

/// The largest value the MySQL backend takes from a caller on a server whose
/// `max_allowed_packet` is `max_allowed_packet`: a quarter of what is left of it after
/// 64 KiB for the rest of the statement. A write is one batch of statements, sent as one packet, that
/// holds each value twice (the `kv` row and its `log` row), each as a hexadecimal
/// literal of two characters per byte (see `batch.rs`). The server's figure is read at
/// connect (`SELECT @@max_allowed_packet`); MariaDB's default, 16 MiB, gives
/// 4 177 920 bytes. The `LONGBLOB` columns take 4 GiB, never the tighter bound.
pub fn max_value_size(max_allowed_packet: usize) -> usize {
    max_allowed_packet.saturating_sub(STATEMENT_ROOM) / 4
}

/// What the MySQL backend offers: every primitive of the recipes, with
///
/// - fencing: create revisions strictly increase (one global revision);
/// - lost notification and stalled holders expiring: leases on the server's clock;
/// - surviving a restart: InnoDB keeps every committed row (with
///   `innodb_flush_log_at_trx_commit=1`, [`Kv::describe`](distsync_kv::kv::Kv::describe)
///   shows it);
/// - linearizable: one primary, writers serialized on the revision row;
/// - queue ages and the rate limiter: on the server's clock, the limiter's decision in
///   one statement (see the crate docs, "The server's clock");
/// - holds exclusive across a store that forgot: only with a bound on session TTLs
///   (`max_session_ttl=`, [`capabilities_with_bound`]), which a client that never
///   knew the old store needs to wait out the lock-delay;
/// - transactions of the caller's: an outbox and acknowledgements inside them
///   ([`Outbox`], [`ack_in`]);
/// - surviving a failover: false here; a backend connected to a semi-synchronous
///   `AFTER_SYNC` primary declares it (see the crate docs, "Failover to a replica");
/// - the largest value: [`max_value_size`] of MariaDB's default `max_allowed_packet`
///   ([`DEFAULT_MAX_ALLOWED_PACKET`]); a connected backend declares that of the
///   server's own.
pub fn capabilities() -> Capabilities {
    capabilities_with_bound(None)
}

/// [`capabilities`] of a backend whose URL bounds session TTLs (`max_session_ttl=`,
/// [`MysqlConfig::max_session_ttl`]): `exclusive_across_restart` with a bound.
pub fn capabilities_with_bound(max_session_ttl: Option<Duration>) -> Capabilities {
    Capabilities::all(BACKEND, MIN_SESSION_TTL)
        .with_max_value_size(max_value_size(DEFAULT_MAX_ALLOWED_PACKET))
        .with_exclusive_across_restart(max_session_ttl.is_some())
        .with_session_bound(true)
        .with_caller_transactions(true)
        .with_survives_failover(false)
}
