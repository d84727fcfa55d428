//! Waiting on the store, as etcd's Go `waitDelete`, `waitDeletes` and `WaitEvents`.
//!
//! Every wait is a watch from a known revision, so nothing that happens between a read
//! and the watch is missed. A watch stream that ends (the store or the connection
//! cancelled it) or answers [`WatchResponse::Compacted`] is not an error: the waiter
//! re-reads the current state and, if it still has to wait, watches again from the
//! read's revision. Waits held through a session also stop with
//! [`Error::SessionLost`] when the session's lost token fires.
//!
//! A wait for a deletion ([`wait_delete`]) watches from [`NOW`] instead and reads after
//! the watch is created. etcd serves a watch whose start revision is already past (a
//! write landed between the read and the watch) from its unsynced group, which it
//! catches up only every 100 ms: a contended hand-off would wait for that tick. A watch
//! from now is synced at once, and the read after its creation closes the gap between
//! the two, at the price of that one read.
//!
//! Transient store errors while waiting (a member cut off from the raft leader that
//! refuses or cancels the watch, a broken connection, an election in progress) are
//! ridden out as core's retry policy says of waits ([`distsync_core::raw::retry`]):
//! the waiter re-reads and watches again once the store answers, for as long as its
//! session lives (or, for waits without a session, until the caller drops the wait).
//! So a waiter neither hangs on a silent member nor gives up its place in line during
//! a leader change or an outage.

use std::future::Future;
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::kv::{
    EventKind, Kv, Range, RangeResponse, Revision, SortOrder, SortTarget, WatchEvent, WatchResponse,
};
use distsync_core::error::{Error, Result};
use distsync_core::raw::RetryPolicy;

use super::heads::{Heads, Interest};

/// Runs `operation` (a read or a watch creation: idempotent) for a waiter, riding out
/// transient errors as core's policy says of waits ([`RetryPolicy::wait`]) until it
/// succeeds, fails otherwise, or `lost` fires ([`Error::SessionLost`]). `key` names
/// the wait in the outage's log lines.
pub(crate) async fn patiently<T, F, Fut>(
    lost: Option<&CancellationToken>,
    what: &'static str,
    key: &str,
    operation: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let wait = RetryPolicy::default().wait(what, lost, operation);
    until_lost(lost, wait.instrument(tracing::debug_span!("wait", key)))
        .await
        .and_then(|outcome| outcome)
}

/// A read for a waiter (see [`patiently`]).
pub(crate) async fn read(
    kv: &dyn Kv,
    range: Range,
    lost: Option<&CancellationToken>,
) -> Result<RangeResponse> {
    let key = range.key.clone();
    patiently(lost, "read", &key, || kv.range(range.clone())).await
}

/// Runs `future` unless `lost` fires first, which gives [`Error::SessionLost`].
pub(crate) async fn until_lost<F: Future>(
    lost: Option<&CancellationToken>,
    future: F,
) -> Result<F::Output> {
    match lost {
        None => Ok(future.await),
        Some(lost) => tokio::select! {
            biased;
            () = lost.cancelled() => Err(Error::SessionLost),
            output = future => Ok(output),
        },
    }
}

/// The start revision of a watch from the store's current revision on: etcd creates
/// it synced, so it delivers each change as it is applied.
pub(crate) const NOW: Revision = 0;

/// A watch stream of the store.
pub(crate) type Events = BoxStream<'static, Result<WatchResponse>>;

/// Opens a watch of `key` (every key under it when `prefix`) from revision `from` for a
/// waiter (see [`patiently`]). It returns once the store has created the watch (the
/// [`Kv::watch`] contract), so a change applied after this returns is on the stream.
pub(crate) async fn watch(
    kv: &dyn Kv,
    key: &str,
    prefix: bool,
    from: Revision,
    lost: Option<&CancellationToken>,
) -> Result<Events> {
    patiently(lost, "watch", key, || kv.watch(key, prefix, from)).await
}

/// The first event on `stream` (a watch of `key`) that `wanted` accepts.
///
/// `Ok(None)` means the watch ended (cancelled by the store, or failed transiently) or
/// its start revision was compacted before such an event arrived: the caller re-reads
/// the state and waits again from the read.
pub(crate) async fn next_matching(
    stream: &mut Events,
    key: &str,
    lost: Option<&CancellationToken>,
    mut wanted: impl FnMut(&WatchEvent) -> bool,
) -> Result<Option<WatchEvent>> {
    loop {
        match until_lost(lost, stream.next()).await? {
            None => {
                tracing::debug!(key, "watch ended; re-reading");
                return Ok(None);
            }
            Some(Err(error)) if error.is_transient() => {
                tracing::debug!(key, %error, "watch failed; re-reading");
                return Ok(None);
            }
            Some(Err(error)) => return Err(error),
            Some(Ok(WatchResponse::Compacted(compacted))) => {
                tracing::debug!(key, compacted, "watch start compacted; re-reading");
                return Ok(None);
            }
            Some(Ok(WatchResponse::Events(events))) => {
                if let Some(event) = events.into_iter().find(&mut wanted) {
                    return Ok(Some(event));
                }
            }
        }
    }
}

/// Watches `key` (every key under it when `prefix`) from revision `from` and returns
/// the first event of `kind` (see [`next_matching`] for `Ok(None)`).
pub(crate) async fn next_event(
    kv: &dyn Kv,
    key: &str,
    prefix: bool,
    from: Revision,
    kind: EventKind,
    lost: Option<&CancellationToken>,
) -> Result<Option<WatchEvent>> {
    let mut stream = watch(kv, key, prefix, from, lost).await?;
    next_matching(&mut stream, key, lost, |event| event.kind == kind).await
}

/// Waits until `key`, created at `create_revision`, is deleted (Go's `waitDelete`). A
/// key that is gone, or was deleted and created again, counts as deleted.
///
/// The watch starts from [`NOW`] (see the module docs), and the key is read once the
/// store has created it: a deletion before the read is seen by the read, one after it
/// by the watch, so no deletion is missed and the watch is never one etcd catches up
/// late.
pub(crate) async fn wait_delete(
    kv: &dyn Kv,
    key: &str,
    create_revision: Revision,
    lost: Option<&CancellationToken>,
) -> Result<()> {
    loop {
        let mut stream = watch(kv, key, false, NOW, lost).await?;
        let current = read(kv, Range::key(key), lost).await?;
        match current.kvs.first() {
            Some(found) if found.create_revision == create_revision => {}
            _ => return Ok(()),
        }
        let deleted = |event: &WatchEvent| event.kind == EventKind::Delete;
        if next_matching(&mut stream, key, lost, deleted)
            .await?
            .is_some()
        {
            return Ok(());
        }
    }
}

/// Waits for the turn of `key`, created under `prefix` at `create_revision`: until no
/// key under `prefix` created before it is left (Go's `waitDeletes`, which waits for the
/// deletion of the last-created one only, so a waiter is woken by its direct
/// predecessor alone), then checks that `key` itself is still there, as Go does after
/// `waitDeletes`. Returns `false` when `key` is gone (its lease expired or was revoked)
/// or was created again.
///
/// Each look is one read: the two keys created last up to `create_revision`, newest
/// first, which are `key` itself and its predecessor, if any. So a waiter woken by its
/// predecessor's deletion holds after that one read, where `waitDeletes` and the check
/// took two. That read costs the store in proportion to the line (etcd reads every key
/// of a range it sorts); with `heads`, a predecessor known to have headed the line
/// (see [`Heads`]) is followed by a read of `key` alone.
pub(crate) async fn wait_turn(
    kv: &dyn Kv,
    prefix: &str,
    key: &str,
    create_revision: Revision,
    heads: Option<&Arc<Heads>>,
    lost: Option<&CancellationToken>,
) -> Result<bool> {
    loop {
        let range = Range::prefix(prefix)
            .sorted(SortTarget::CreateRevision, SortOrder::Descend, 2)
            .max_create_revision(create_revision);
        let response = read(kv, range, lost).await?;
        let mut newest = response.kvs.into_iter();
        match newest.next() {
            Some(own) if own.key == key && own.create_revision == create_revision => {}
            _ => return Ok(false),
        }
        let Some(before) = newest.next() else {
            return Ok(true);
        };
        let interest = heads.map(|heads| heads.watch(prefix, &before.key, before.create_revision));
        wait_delete(kv, &before.key, before.create_revision, lost).await?;
        if interest.as_ref().is_some_and(Interest::headed) {
            // No key older than a head comes back, and the read above found none
            // between it and `key`: the turn is `key`'s if `key` is still there.
            let own = read(kv, Range::key(key), lost).await?;
            return Ok(own
                .kvs
                .first()
                .is_some_and(|own| own.create_revision == create_revision));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::recipes::mutex::locked;
    use distsync_core::Primitives;
    use std::sync::atomic::{AtomicBool, Ordering};

    use crate::kv::{Txn, TxnOp};
    use crate::recipes::testing::{name, recording_backend, session_of, settle, within};

    #[tokio::test]
    async fn a_wait_opened_after_another_write_watches_from_now() {
        let backend = recording_backend();
        // Every watch opens just after a write of another key, so the waiter's read is
        // behind the store when its watch opens, as under contention.
        let other = || Txn::when(vec![]).and_then(vec![TxnOp::put("other", "x", 0)]);
        backend.kv().before_watch(Box::new(move |_| Some(other())));
        let (s1, s2) = (session_of(&backend).await, session_of(&backend).await);
        let held = locked(&backend, &s1, "l").await;
        let waiter = backend.locker(&s2, name("l")).unwrap();
        let waiting = tokio::spawn(async move { waiter.lock().await });
        settle().await;
        assert!(!waiting.is_finished());
        let watches = backend.kv().watches();
        assert!(
            watches.iter().any(|watch| watch.key == held.key()),
            "{watches:?}"
        );
        let late: Vec<_> = watches
            .iter()
            .filter(|watch| watch.starts_in_the_past())
            .collect();
        assert!(late.is_empty(), "watches etcd catches up late: {late:?}");
        held.unlock().await.unwrap();
        within(waiting)
            .await
            .unwrap()
            .unwrap()
            .unlock()
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_deletion_between_the_waiters_read_and_its_watch_wakes_it() {
        let backend = recording_backend();
        let (s1, s2) = (session_of(&backend).await, session_of(&backend).await);
        let held = locked(&backend, &s1, "l").await;
        // The holder's key is deleted after the waiter read the line and before its
        // watch opens: the watch, from now, does not see that deletion.
        let holder = held.key().to_owned();
        let armed = AtomicBool::new(true);
        backend.kv().before_watch(Box::new(move |key| {
            (key == holder && armed.swap(false, Ordering::SeqCst))
                .then(|| Txn::when(vec![]).and_then(vec![TxnOp::delete(key)]))
        }));
        let waiter = backend.locker(&s2, name("l")).unwrap();
        let next = within(waiter.lock()).await.unwrap();
        assert!(next.token() > held.token());
        within(held.lost()).await;
    }
}
