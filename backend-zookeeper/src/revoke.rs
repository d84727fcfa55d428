//! Cooperative revocation in Curator's protocol (`InterProcessMutex.makeRevocable`
//! and `Revoker.attemptRevoke`), so that a Java `Revoker` asks a Rust holder to let go
//! and a Rust request asks a Java holder made revocable.
//!
//! - **Request**: the holder's node (the lowest contender of the lock, see
//!   [`crate::lock`]) gets the data `__REVOKE__`. Only that node is marked, so the
//!   request is for the current holder alone; a lock nobody holds is left untouched.
//!   The node's earlier data (the holder's session id in hex, which nothing reads
//!   back) is overwritten.
//! - **Holder**: once its guard's `release_requested()` is first used, the holder reads
//!   its node's data with a watch and reads it again on every change, until it reads
//!   `__REVOKE__` (the request) or the node is gone (the hold ended). The request is
//!   seen as soon as the watch fires.

use std::sync::Arc;

use distsync_core::raw::ReleaseRequestWatchFn;
use distsync_core::revocation::ReleaseRequest;
use distsync_core::{FencingToken, Name, Result};
use tokio_util::sync::CancellationToken;
use zookeeper_client as zk;

use crate::direct::{request_found, RETRY_PAUSE};
use crate::keys::{self, Kind, LOCK_NAME};
use crate::session::LeaseInner;
use crate::store::Shared;

/// Curator's `LockInternals.REVOKE_MESSAGE`: the data that asks a holder to release.
pub(crate) const REVOKE_MESSAGE: &[u8] = b"__REVOKE__";

/// How many holders in a row a request may find gone before it gives up (each one
/// released between the listing and the write).
const ATTEMPTS: usize = 8;

/// Asks the holder of the lock `name` to release it: writes [`REVOKE_MESSAGE`] into
/// its node. `None` when nobody holds the lock.
///
/// # Errors
/// The store's error, or [`distsync_core::Error::Backend`] when the holder kept
/// changing under the request.
pub(crate) async fn request_release(
    shared: &Shared,
    name: &Name,
) -> Result<Option<ReleaseRequest>> {
    let dir = keys::path(shared.config.root(), Kind::Lock, name);
    let client = shared.connect(crate::MIN_SESSION_TTL * 4).await?;
    for _ in 0..ATTEMPTS {
        let Some(children) = request_found(shared, client.list_children(&dir)).await? else {
            return Ok(None);
        };
        let Some((_, holder)) = keys::contenders(children, LOCK_NAME).into_iter().next() else {
            return Ok(None);
        };
        let path = format!("{dir}/{holder}");
        let written = request_found(shared, client.set_data(&path, REVOKE_MESSAGE, None)).await?;
        // `None`: released between the listing and the write: ask the next holder, if any.
        if let Some(stat) = written {
            let token = u64::try_from(stat.czxid).ok().map(FencingToken);
            return Ok(Some(ReleaseRequest::new(name, path, token)));
        }
    }
    Err(distsync_core::Error::backend(
        crate::BACKEND,
        format!(
            "release request for {:?}: the holder kept changing",
            name.as_str()
        ),
    ))
}

/// The holder's watch on its node at `path` (see the [module docs](self)).
pub(crate) fn watch(lease: Arc<LeaseInner>, path: String) -> ReleaseRequestWatchFn {
    Box::new(
        move |requested: CancellationToken, ended: CancellationToken| {
            tokio::spawn(watch_data(lease, path, requested, ended));
        },
    )
}

/// Reads the node's data with a watch until it is [`REVOKE_MESSAGE`] (cancels
/// `requested`), the node is gone, or `ended` is cancelled.
async fn watch_data(
    lease: Arc<LeaseInner>,
    path: String,
    requested: CancellationToken,
    ended: CancellationToken,
) {
    loop {
        let Ok(client) = lease.client() else { return };
        let read = tokio::select! {
            () = ended.cancelled() => return,
            read = client.get_and_watch_data(&path) => read,
        };
        drop(client);
        match read {
            Ok((data, _, _)) if data == REVOKE_MESSAGE => {
                tracing::info!(node = %path, "release requested");
                requested.cancel();
                return;
            }
            Ok((_, _, watcher)) => {
                tokio::select! {
                    () = ended.cancelled() => return,
                    _ = watcher.changed() => {}
                }
            }
            Err(zk::Error::NoNode) => return,
            Err(error) if crate::error::is_session_end(&error) => return,
            Err(error) => {
                tracing::debug!(node = %path, %error, "could not read a lock node's data; retrying");
                tokio::select! {
                    () = ended.cancelled() => return,
                    () = tokio::time::sleep(RETRY_PAUSE) => {}
                }
            }
        }
    }
}
