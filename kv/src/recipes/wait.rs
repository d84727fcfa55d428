//! Waiting on the store, as etcd's Go `waitDelete`, `waitDeletes` and `WaitEvents`.
//!
//! Every wait is a watch from a known revision, so nothing that happens between a read
//! and the watch is missed. A watch stream that ends (the store or the connection
//! cancelled it) or answers [`WatchResponse::Compacted`] is not an error: the waiter
//! re-reads the current state and, if it still has to wait, watches again from the
//! read's revision. Waits held through a session also stop with
//! [`Error::SessionLost`] when the session's lost token fires.
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

/// Watches `key` (every key under it when `prefix`) from revision `from` and returns
/// the first event of `kind`.
///
/// `Ok(None)` means the watch ended (cancelled by the store, or failed transiently) or
/// its start revision was compacted before such an event arrived: the caller re-reads
/// the state and waits again from the read.
pub(crate) async fn next_event(
    kv: &dyn Kv,
    key: &str,
    prefix: bool,
    from: Revision,
    kind: EventKind,
    lost: Option<&CancellationToken>,
) -> Result<Option<WatchEvent>> {
    let mut stream = patiently(lost, "watch", key, || kv.watch(key, prefix, from)).await?;
    loop {
        match until_lost(lost, stream.next()).await? {
            None => {
                tracing::debug!(key, from, "watch ended; re-reading");
                return Ok(None);
            }
            Some(Err(error)) if error.is_transient() => {
                tracing::debug!(key, from, %error, "watch failed; re-reading");
                return Ok(None);
            }
            Some(Err(error)) => return Err(error),
            Some(Ok(WatchResponse::Compacted(compacted))) => {
                tracing::debug!(key, from, compacted, "watch start compacted; re-reading");
                return Ok(None);
            }
            Some(Ok(WatchResponse::Events(events))) => {
                if let Some(event) = events.into_iter().find(|event| event.kind == kind) {
                    return Ok(Some(event));
                }
            }
        }
    }
}

/// Waits until `key`, created at `create_revision`, is deleted, watching from `from`
/// (Go's `waitDelete`). A key that is gone, or was deleted and created again, counts
/// as deleted.
pub(crate) async fn wait_delete(
    kv: &dyn Kv,
    key: &str,
    create_revision: Revision,
    mut from: Revision,
    lost: Option<&CancellationToken>,
) -> Result<()> {
    loop {
        if next_event(kv, key, false, from, EventKind::Delete, lost)
            .await?
            .is_some()
        {
            return Ok(());
        }
        let current = read(kv, Range::key(key), lost).await?;
        match current.kvs.first() {
            Some(found) if found.create_revision == create_revision => {
                from = current.revision + 1;
            }
            _ => return Ok(()),
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
        wait_delete(
            kv,
            &before.key,
            before.create_revision,
            response.revision + 1,
            lost,
        )
        .await?;
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
