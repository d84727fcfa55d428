//! Holds: locks, read-write locks and candidacies are entries in a line of rows, like
//! the semaphore's; no hold and no waiter occupies a connection.
//!
//! # The line
//! Every name (a row of `lock_names`, kind `lock`, `rwlock` or `election`, holding its
//! fencing counter) has a line of entries in `semaphore_entries` (the table and the
//! functions of [`crate::semaphore`], which a mutex uses as a semaphore of one permit):
//! one row per acquisition, in arrival order, tied to its session's row. An entry is
//! **live** while its session's row has not expired. An exclusive entry (a lock, a
//! write lock, a candidacy) holds when no live entry is ahead of it; a shared entry (a
//! read lock) holds when no live exclusive entry is ahead of it, so a waiting writer
//! blocks the readers that come after it (writer preference, as etcd's recipe), and
//! `try_read` fails while a writer waits. Waiters are served in arrival order (FIFO).
//!
//! # Granting
//! An entry is granted by its own caller's statement (`semaphore_join`, then
//! `semaphore_check` when woken), under the name's row lock: an exclusive grant takes
//! the next value of the name's fencing counter (bumped durably in that statement, so
//! tokens never go backwards, across crashes too), a shared grant takes 0. A candidacy's
//! grant also writes its election's leader row and log entry in that statement (the
//! token is the term). A holder's connection is any of the pool's: statements of one
//! hold may run on different connections, and the pool stays at its size however many
//! holds there are.
//!
//! # Waking, one by one
//! A waiter subscribes to its own payload (`m:<session>.<entry>`) on the backend's one
//! listening connection ([`crate::notify`]), then joins. When an entry leaves (a
//! release, a withdrawn wait, a session's end), the delete trigger notifies exactly the
//! waiters that can now be granted: the next one in line, or the run of readers behind a
//! writer. No waiter blocks in the server, so PostgreSQL's deadlock detector has no part
//! in a hand-off, and a hand-off is one notification and one statement.
//!
//! # The lease gate: no grant while the previous holder may believe it holds
//! An entry counts until its session's row is deleted or expires. `expires_at` is the
//! server's time of the last renewal + TTL, never earlier than the holder's client-side
//! deadline (`send time of its last acknowledged renewal + TTL − margin`, see
//! `distsync_core::SessionOptions`; the renewal was sent before the server ran it). So:
//! - a **clean release** (`unlock()`, `resign()`, a guard dropped inside a runtime, the
//!   close of a healthy session) deletes the entry (or the session's row), and the next
//!   waiter is woken and granted at once;
//! - a holder that **vanished without a release** (its process died, it is partitioned
//!   away, it stalled, its session was declared lost) keeps its entry until its row
//!   expires: waiters re-check at the earliest expiry among the live entries ahead of
//!   them (a renewal that landed meanwhile moves that instant on), and are granted then.
//!   A connection's death frees nothing, since no hold lives in a connection.
//!
//! # TTL enforcement
//! A stalled holder stops renewing (its keepalive is stalled with it), so its row
//! expires after its TTL and the next waiter is granted then, whatever the stalled
//! process's connections do: no backend needs ending (`pg_terminate_backend` is not
//! used). Keepalives also sweep expired session rows every 10 s (see
//! [`crate::limits`]).
//!
//! # Cancel safety
//! If the waiting future is dropped before it returns, its entry is withdrawn in the
//! background (`semaphore_leave`, retried until done or the session ends), releasing
//! it if it was granted meanwhile; a withdrawal that overtakes its own join leaves a
//! tombstone that makes the join give up. An entry whose withdrawal never lands ends
//! with its session.

use std::sync::Arc;

use distsync_core::{Error, FencingToken, LockGuard, Name, ReadGuard, Result, Session};

use crate::error::{is_session_gone, map};

use crate::lock::hold_key;
use crate::semaphore::{self, release_fn, Ask, Entry};
use crate::session::LeaseInner;
use crate::store::LockKind;

/// Takes an exclusive (`shared` false) or shared hold of `kind` `name` for `lease`'s
/// session, waiting if `wait`. Returns the entry and its token (0 for shared holds),
/// or `None` for a failed try.
///
/// Cancel-safe: see the module docs.
pub(crate) async fn acquire(
    lease: &Arc<LeaseInner>,
    kind: LockKind,
    name: &Name,
    shared: bool,
    wait: bool,
) -> Result<Option<(Entry, i64)>> {
    let ask = Ask {
        kind,
        permits: 1,
        shared,
        campaign: None,
    };
    semaphore::take(lease, name, &ask, wait).await
}

/// The guard over a granted exclusive hold of `kind` `name`, with its guarded write
/// ([`crate::guarded`]).
pub(crate) fn lock_guard(
    lease: &Arc<LeaseInner>,
    session: &Session,
    kind: &str,
    name: &Name,
    entry: Entry,
    token: i64,
) -> LockGuard {
    let guarded = crate::guarded::hook(&entry, token);
    LockGuard::new(
        hold_key(lease, kind, name),
        FencingToken(u64::try_from(token).unwrap_or_default()),
        session,
        release_fn(lease, entry),
    )
    .with_guarded_write(guarded)
}

/// The guard over a granted shared hold of read-write lock `name`.
pub(crate) fn read_guard(
    lease: &Arc<LeaseInner>,
    session: &Session,
    name: &Name,
    entry: Entry,
) -> ReadGuard {
    ReadGuard::new(
        hold_key(lease, "rwlock", name),
        session,
        release_fn(lease, entry),
    )
}

/// Maps a statement error of a session's hold or entry: an ended session (`DS001`, or a
/// row referencing its deleted row) is the session lost.
pub(crate) fn session_error(lease: &LeaseInner, error: sqlx::Error) -> Error {
    if is_session_gone(&error) {
        tracing::debug!(session = lease.id, %error, "the session has ended");
        lease.fail();
        Error::SessionLost
    } else {
        map(error)
    }
}
