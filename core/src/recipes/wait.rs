//! Waiting on the store, as etcd's Go `waitDelete`, `waitDeletes` and `WaitEvents`.
//!
//! Every wait is a watch from a known revision, so nothing that happens between a read
//! and the watch is missed. A watch stream that ends (the store or the connection
//! cancelled it) or answers [`WatchResponse::Compacted`] is not an error: the waiter
//! re-reads the current state and, if it still has to wait, watches again from the
//! read's revision. Waits held through a session also stop with
//! [`Error::SessionLost`] when the session's lost token fires.

use std::future::Future;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::kv::{EventKind, Kv, Range, Revision, WatchEvent, WatchResponse};

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
/// `Ok(None)` means the watch ended or its start revision was compacted before such an
/// event arrived: the caller re-reads the state and waits again from the read.
pub(crate) async fn next_event(
    kv: &dyn Kv,
    key: &str,
    prefix: bool,
    from: Revision,
    kind: EventKind,
    lost: Option<&CancellationToken>,
) -> Result<Option<WatchEvent>> {
    let mut stream = until_lost(lost, kv.watch(key, prefix, from)).await??;
    loop {
        match until_lost(lost, stream.next()).await? {
            None => {
                tracing::debug!(key, from, "watch ended; re-reading");
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
        let current = until_lost(lost, kv.range(Range::key(key))).await??;
        match current.kvs.first() {
            Some(found) if found.create_revision == create_revision => {
                from = current.revision + 1;
            }
            _ => return Ok(()),
        }
    }
}

/// Waits until no key under `prefix` created at or before `max_create_revision` is
/// left (Go's `waitDeletes`): each time, waits for the deletion of the last-created
/// one only, so a waiter is woken by its direct predecessor alone.
pub(crate) async fn wait_deletes(
    kv: &dyn Kv,
    prefix: &str,
    max_create_revision: Revision,
    lost: Option<&CancellationToken>,
) -> Result<()> {
    loop {
        let range = Range::prefix(prefix)
            .last_create()
            .max_create_revision(max_create_revision);
        let response = until_lost(lost, kv.range(range)).await??;
        let Some(last) = response.kvs.into_iter().next() else {
            return Ok(());
        };
        wait_delete(
            kv,
            &last.key,
            last.create_revision,
            response.revision + 1,
            lost,
        )
        .await?;
    }
}
