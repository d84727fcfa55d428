//! # distsync-nats
//!
//! The NATS JetStream backend of distsync: every primitive lives in one JetStream
//! key-value bucket (a stream `KV_<bucket>` over `$KV.<bucket>.>`), built from what
//! the store really offers rather than from the etcd model of the `distsync-kv`
//! recipes.
//!
//! ## What it does not offer
//!
//! Each of these answers [`distsync_core::Error::Unsupported`], as the backend's
//! capabilities declare, one list item for each column of the guarantee matrix this
//! backend runs (generated from the capabilities by `scripts/update-matrix.sh`, and
//! checked in CI):
//!
//! <!-- gaps:begin -->
//! - **nats**: outbox and exactly-once in the caller's transaction
//! - **nats-cluster**: outbox and exactly-once in the caller's transaction
//! <!-- gaps:end -->
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
//! let coordinator = distsync::connect("nats://127.0.0.1:4222/?bucket=locks").await?;
//! let session = coordinator.session().await?;
//! let guard = coordinator.locker(&session, "jobs/nightly")?.lock().await?;
//! // ... send guard.token() (the holder key's stream sequence) with every write ...
//! guard.unlock().await?;
//! # Ok(()) }
//! ```
//!
//! ## URL
//!
//! `nats://[user:password@]host:port[,host:port...][/][?bucket=distsync&replicas=1]`,
//! or `tls://...?ca=ca.pem` over TLS: [`NatsConfig`] lists every parameter.
//!
//! ## The server and the bucket
//!
//! nats-server 2.12 or later with JetStream ([`MIN_SERVER_VERSION`] says why); an
//! older server is refused with [`distsync_core::Error::Unsupported`]. The bucket is
//! made on first connect with the settings every primitive relies on (`allow_msg_ttl`,
//! `subject_delete_marker_ttl`, `allow_atomic`, `allow_direct`, `allow_rollup_hdrs`),
//! keeping one message per key ([`HISTORY`] says why: with more, nats-server 2.15.1
//! never ends a crashed holder's keys). An existing bucket that lacks one of them (a
//! bucket made by the `nats` CLI has neither TTLs nor atomic batches) is refused with
//! [`distsync_core::Error::InvalidArgument`] naming what it lacks (`src/bucket.rs`).
//!
//! ## Why a backend of its own, not the `Kv` recipes
//!
//! JetStream KV has compare-and-set on revisions (the stream sequence), watches and
//! per-key TTLs, but no lease that many keys hang on, no keep-alive that leaves keys
//! untouched, no create revision, and reads of a past revision that silently drop a
//! key overwritten more than `history` times. The `distsync-kv` recipes rely on all
//! of those, so the primitives here are native to JetStream, as the ZooKeeper
//! backend's are to ZooKeeper.
//!
//! ## How it works
//!
//! Each module under `src/` gives its keys' layout and its protocol; in short:
//!
//! * **Names** are subject tokens, a segment each, escaped injectively and closed by
//!   the token `=`, so that a prefix's names are one filter per kind (`src/keys.rs`).
//! * **Sessions** (`src/session.rs`) are a session key and per-key TTLs: every key a
//!   session holds carries `Nats-TTL` and is rewritten by each renewal as a
//!   compare-and-set on the sequence it last wrote; a refused renewal (the server
//!   ended the key: expired or revoked) fires `lost()`, as does the client-side
//!   deadline. A crashed holder's keys end a TTL after their last renewal, and the
//!   delete marker JetStream writes wakes the next waiter.
//! * **The lock** (`src/lock.rs`) is a line of contender keys, the token a key's create
//!   sequence: the lowest live key holds, each waiter watches only its predecessor (one
//!   wake-up per release), a release purges the key with a compare. A session enters
//!   the line again with the key it released there (`src/released.rs`); outside a
//!   JetStream cluster an uncontended cycle is a create and a purge. A guarded write
//!   (`put_if_held`) is one message whose compare points at the holder's key.
//! * **The unfair lock** (`src/unfair_lock.rs`) is a holder key in the fair lock's
//!   line, so the two exclude each other, taken only where that line is otherwise
//!   empty; takes that lose wait in a line of their own where only the head asks again.
//! * **The election** (`src/election.rs`) is the lock's protocol in a line of its own,
//!   the term the leader key's create sequence; a proclaim rewrites the leader's key
//!   with a compare and writes the value to a key of its own; `observe()` follows the
//!   election's messages from one listing on.
//! * **The semaphore** (`src/semaphore.rs`): the first `permits` live keys of a line
//!   hold. **The read-write lock** (`src/rwlock.rs`): one line of readers and writers.
//!   **The barrier** is one key; **the double barrier** a line of participant keys and
//!   a ready key (`src/barrier.rs`).
//! * **STM** (`src/stm.rs`): the serializable levels read as of the stream sequence of
//!   their first read; a commit is one atomic batch of compared writes and checks.
//! * **Counters and latches** (`src/counter.rs`) are one key each, changed by
//!   compare-and-set; a latch's waiters and a counter's `changed` (a hand-over's
//!   standby candidates) watch the key.
//! * **The rate limiter** (`src/rate_limiter.rs`) is one key per limiter, changed by
//!   compare-and-set, on the server's clock: the time stamps JetStream gives the
//!   messages it stores (`src/clock.rs`).
//! * **Status** lists every kind's keys under the prefix in one batched direct get, or
//!   one name's lines alone (`src/status.rs`). **Breaking a lock**, release requests
//!   and hand-overs read a holder there; a break revokes the holder's session by
//!   purging the keys that carry its id. **Purging a prefix** (`src/purge.rs`) purges
//!   the live keys of the names under it; **export** (`src/export.rs`, for migration)
//!   reads every kind's keys by their layouts; group membership and shards read their
//!   members from the status of their prefix.
//! * **The queue** (`src/queue.rs`) is one key per item, its place its message's
//!   sequence within its priority; a receiver holds an item by a key of its session
//!   (so a delivery ends with the consumer's session, not with an ack-wait timer); an
//!   ack purges item and hold in one atomic batch; a dequeue moves the item into an
//!   in-flight record of its call. An item's age is its message's time stamp.
//!
//! ## Durability
//!
//! With its default `sync_interval` (two minutes) nats-server acknowledges a write
//! before it is synced to disk: a process kill loses nothing (the data is in the
//! page cache), an OS crash or power loss may lose acknowledged writes. So
//! `survives_restart` is not claimed, nor `exclusive_across_restart` without a bound
//! on session TTLs (below).
//!
//! ## When the store forgets
//!
//! A server whose store directory was wiped, or a bucket deleted and made again,
//! forgets every key, sessions' keys with them. The client tells it from the bucket's
//! stream (gone, or made at another time) and from an epoch marker key, loses its
//! sessions, holds every grant back for a lock-delay and keeps fencing tokens growing
//! with an offset (see `src/amnesia.rs`). A client that never knew the old store
//! tells only from a missing marker, and waits the lock-delay only with a bound on
//! session TTLs, `max_session_ttl=` in the URL ([`NatsConfig::max_session_ttl`]): with
//! it the backend declares `exclusive_across_restart` (a restart and a wipe; a power
//! loss at the default sync interval loses recent writes but not the marker, which
//! the bound does not cover, see "Durability"), and a bucket's first session on a
//! server waits the bound once before its first grant.
//!
//! ## Replicated buckets
//!
//! With `replicas=3` the bucket's stream is replicated by Raft and a write is
//! acknowledged once a majority has it, so the kill of one server, its stream leader
//! included, loses no acknowledged write: `survives_failover` is claimed for a bucket
//! of more than one replica (the `nats-cluster` column measures it). Reads are direct
//! gets, which any replica answers, and a follower may be behind the leader: each
//! client keeps a read floor, the highest stream sequence it wrote or saw, and asks a
//! read again while its answer is below it (see `src/store.rs`). So a client reads
//! its own writes and never goes back in time; it may not see another client's write
//! of a moment ago, so `linearizable` is not claimed. Queues work there as on one
//! server (see `src/queue.rs` for a compare the stream's leader refuses without a
//! sequence).
//!
//! ## Why `async-nats`
//!
//! It is the client the NATS authors maintain, on tokio, with JetStream's stream and
//! ordered-consumer APIs. What it lacks (an atomic batch, a batched direct get) is
//! sent as the plain JetStream API requests (see `src/store.rs`).

#![cfg_attr(docsrs, feature(doc_cfg))]

mod amnesia;
mod backend;
mod barrier;
mod bucket;
mod clock;
mod config;
mod counter;
mod driver;
mod election;
mod error;
mod export;
mod facts;
mod keys;
mod line_listing;
mod lock;
mod purge;
mod queue;
mod queue_status;
mod rate_limiter;
mod released;
mod rwlock;
mod scan;
mod semaphore;
mod session;
mod shared;
mod status;
mod stm;
mod store;
#[cfg(test)]
mod test_server;
mod unfair_lock;

use std::time::Duration;

use distsync_core::Capabilities;

pub use backend::{backend, backend_with_config, NatsBackend};
pub use bucket::{HISTORY, MARKER_TTL, MIN_SERVER_VERSION};
pub use config::{NatsConfig, DEFAULT_BUCKET};
pub use driver::DRIVER;
pub use election::PROCLAIM_TTL;

/// The backend's name, as [`Capabilities::backend`] gives it.
pub const BACKEND: &str = "nats";

/// The shortest session TTL: `Nats-TTL` counts whole seconds.
pub const MIN_SESSION_TTL: Duration = Duration::from_secs(1);

/// What this backend offers and claims, each measured by the conformance suite: every
/// primitive and guarantee but those not claimed below. Fencing tokens are the holder
/// key's stream sequence, which only grows; `lost()` fires when a renewal is refused
/// (the store ended the session); `stalled_holder_expires` and `partition_safe`: a
/// holder that stops renewing loses its keys a TTL after its last renewal reached the
/// server, never before its client-side deadline. Breaking a lock and release requests
/// go through status, which records each hold's session. A hand-over is gapless: a
/// resignation purges the leader's key, and the next candidate's key is the line's
/// lowest in the same step; the hand-over record reads the election's line alone (see
/// `src/status.rs`), not the bucket. The rate limiter and queue ages run on the
/// server's clock (message time stamps).
///
/// Not claimed (see the crate docs, whose sections say why): `survives_restart`,
/// `exclusive_across_restart` (declared by a [`NatsBackend`] whose URL bounds session
/// TTLs), `linearizable`, `survives_failover` (declared by a [`NatsBackend`] whose
/// bucket has more than one replica) and `caller_transactions` (no outbox).
pub fn capabilities() -> Capabilities {
    Capabilities::all(BACKEND, MIN_SESSION_TTL)
        .with_max_value_size(max_value_size(DEFAULT_MAX_PAYLOAD))
        .with_survives_restart(false)
        .with_exclusive_across_restart(false)
        .with_linearizable(false)
        .with_survives_failover(false)
        .with_caller_transactions(false)
}

/// NATS's default `max_payload`, the largest message a server takes: 1 MiB.
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

/// What a message carries beside its value: the JetStream headers of a write (its
/// compare, its TTL, its batch's id and sequence), 4 KiB.
const HEADER_ROOM: usize = 4 * 1024;

/// The largest value the NATS backend takes from a caller on a server whose
/// `max_payload` is `max_payload`: that less 4 KiB for the headers each write carries.
/// A server tells its `max_payload` when a client connects, and a
/// [`NatsBackend`] declares the figure it was told
/// ([`Capabilities::max_value_size`]); [`capabilities()`] declares that of the default,
/// 1 MiB, which gives 1 044 480 bytes.
pub fn max_value_size(max_payload: usize) -> usize {
    max_payload.saturating_sub(HEADER_ROOM)
}
