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
//! Every grant runs under the name's row lock and takes the next value of the name's
//! fencing counter (an exclusive entry) or 0 (a shared one), bumped durably in the
//! grant's transaction, so tokens never go backwards, across crashes too. An entry is
//! granted by whichever statement finds its turn come:
//! - its own join (`semaphore_join2`: an empty line is granted at once, in one
//!   statement that reads the line index, bumps the counter and inserts the entry) or
//!   its own re-check (`semaphore_check2`, after a wake-up or at the expiry of an entry
//!   ahead);
//! - the release that lets it in (since schema version 18): the delete trigger, when
//!   it holds the name's lock (always, for a release or a withdrawal), grants the
//!   waiters that can now hold (`sem_grant`) and notifies them; the woken waiter's
//!   check then only reads its token (no lock, no write, no WAL flush). A candidacy is
//!   only woken, and granted by its own check, which writes its election's leader row
//!   and log entry (the token is the term).
//!
//! A holder's connection is any of the pool's: statements of one hold may run on
//! different connections, and the pool stays at its size however many holds there are.
//!
//! # Asynchronous commits: only what a crash may lose at no harm
//! Each statement is its own transaction, and a synchronous commit waits for its WAL
//! flush, the main cost of a statement on a durable server. Since schema version 17 a
//! statement commits asynchronously (`set_config('synchronous_commit', 'off', true)` in
//! its own transaction; the grant paths never do, and `commit_async` leaves a
//! transaction that granted anything synchronous) when losing it in a crash of the
//! server is safe:
//! - **a join or check that only waits**: lost, the waiter's entry is gone while its
//!   session lives; its next check says so (state 5) and it joins again, at the end of
//!   the line (order across a crash is not kept for waiters);
//! - **a release, or a withdrawn wait, that grants nobody**: lost, the entry comes
//!   back, holding (or waiting) for a holder that has let go. Left alone it would block
//!   the name until its session ends, so the backend records every asynchronous release
//!   until a later synchronous commit proves it durable and makes it again when the
//!   server's epoch shows a crash recovery may have lost it ([`crate::unflushed`]). A
//!   release is idempotent, so making it again is harmless. Where the epoch cannot be
//!   read, releases commit synchronously.
//!
//! What must survive stays synchronous: **grants** (an entry with its token, the
//! counter bump, a candidacy's leader row), including a release that grants the next
//! waiter, whose commit returns, and whose notification is delivered, only after the
//! flush, so a waiter never acts on a grant the server could lose; **session rows and
//! renewals** (a lost renewal would put the server's expiry before the holder's
//! client-side deadline: the lease gate below would no longer hold); guarded writes.
//! A synchronous commit flushes the WAL up to its own record, so every asynchronous
//! commit before it is durable with it: the grant that follows a release makes the
//! release durable too.
//!
//! # Waking, one by one
//! A waiter subscribes to its own payload (`m:<session>.<entry>`) on the backend's one
//! listening connection ([`crate::notify`]), then joins. When an entry leaves (a
//! release, a withdrawn wait, a session's end), the delete trigger grants and notifies
//! exactly the waiters that can now be granted: the next one in line, or the run of
//! readers behind a writer. No waiter blocks in the server, so PostgreSQL's deadlock
//! detector has no part in a hand-off, and a hand-off is the release's statement (with
//! one WAL flush when it grants), one notification and the waiter's read of its token.
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
//! background (`semaphore_leave2`, retried until done or the session ends), releasing
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
