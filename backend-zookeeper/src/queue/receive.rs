//! At-least-once `receive`: an item held by an ephemeral lock node of the receiver's
//! session (Curator's `lockPath`), its delivery counted beside it, and the delivery's
//! `ack` and `nack` (see the protocol in the queue's module docs).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use distsync_core::raw::Look::{NotYet, Ready};
use distsync_core::raw::{
    call_id, Claim, ClaimGuard, CleanUp, RetryPolicy, SessionStoreSide as _, Settle,
};
use distsync_core::{Bytes, Delivery, Error, Result, Session};
use tokio_util::sync::CancellationToken;
use zookeeper_client as zk;

use super::nodes::{self, make_dirs};
use super::{Inner, Look, Took};
use crate::direct::{bounded, persistent, request_found};
use crate::error::{found, is_session_end, map};
use crate::session::LeaseInner;
use crate::BACKEND;

/// How long a dropped receive's background clean-up keeps trying; past it, the item
/// goes back when the session ends.
const RELEASE_DEADLINE: Duration = Duration::from_secs(30);

/// The lease of `session`, checked to be of this backend's store.
fn lease(inner: &Inner, session: &Session) -> Result<Arc<LeaseInner>> {
    crate::session::lease_of(session, &inner.direct.shared).map(Arc::clone)
}

/// Waits for an item and holds it through `session`.
pub(super) async fn receive(inner: &Arc<Inner>, session: &Session) -> Result<Delivery> {
    let lease = lease(inner, session)?;
    RetryPolicy::default()
        .wait_until("receive", Some(session.lost_token()), || async {
            if session.is_lost() {
                return Err(Error::SessionLost);
            }
            Ok(match look(inner, session, &lease, true).await? {
                Look::Found(delivery) => Ready(delivery),
                Look::Empty(watches) => NotYet(async {
                    tokio::select! {
                        () = session.lost() => Err(Error::SessionLost),
                        changed = super::changed(watches, inner.sweeps.next_in()) => changed,
                    }
                }),
            })
        })
        .await
}

/// Holds the first available item through `session`, if there is one.
pub(super) async fn try_receive(inner: &Arc<Inner>, session: &Session) -> Result<Option<Delivery>> {
    let lease = lease(inner, session)?;
    let attempt = || look(inner, session, &lease, false);
    Ok(match inner.one_shot("try_receive", attempt).await? {
        Look::Found(delivery) => Some(delivery),
        Look::Empty(_) => None,
    })
}

/// One look for an item to hold: holds the first available one.
async fn look(
    inner: &Arc<Inner>,
    session: &Session,
    lease: &Arc<LeaseInner>,
    watch: bool,
) -> Result<Look<Delivery>> {
    inner
        .look(watch, |client, child, item, version| async move {
            hold(inner, session, lease, &client, child, item, version).await
        })
        .await
}

/// Holds `item`, the item `child` read at `version`, through the session: creates
/// the lock node and counts the delivery, in one `multi` sent through the session's
/// client. `LookAgain` when its delivery count changed meanwhile.
async fn hold(
    inner: &Arc<Inner>,
    session: &Session,
    lease: &Arc<LeaseInner>,
    reader: &zk::Client,
    child: String,
    item: Bytes,
    version: i32,
) -> Result<Took<Delivery>> {
    let paths = &inner.paths;
    let lock = paths.lock(&child);
    let count_path = paths.delivery(&child);
    let (count, count_version) =
        match request_found(&inner.direct.shared, reader.get_data(&count_path)).await? {
            Some((data, stat)) => (parse_count(&data), Some(stat.version)),
            None => (0, None),
        };
    let claim = call_id();
    let client = lease.client()?;
    loop {
        let next = count.saturating_add(1).to_string();
        let mut multi = client.new_multi_writer();
        let mut ops = || -> std::result::Result<(), zk::Error> {
            multi.add_create(&lock, claim.as_bytes(), &nodes::ephemeral())?;
            multi.add_check_version(&paths.item(&child), version)?;
            match count_version {
                Some(count_version) => {
                    multi.add_set_data(&count_path, next.as_bytes(), Some(count_version))?
                }
                None => multi.add_create(&count_path, next.as_bytes(), &persistent())?,
            }
            Ok(())
        };
        ops().map_err(map)?;
        let undo = ClaimGuard::new(HoldClaim {
            lease: Arc::clone(lease),
            lock: lock.clone(),
            claim: claim.clone(),
            count_path: count_path.clone(),
            count,
        });
        let committed = bounded(&inner.direct.shared, multi.commit()).await;
        let applied = match committed {
            Ok(Ok(_)) => true,
            Ok(Err(zk::MultiWriteError::OperationFailed { index, source })) => {
                undo.disarm();
                match (index, source) {
                    (0, zk::Error::NodeExists) | (1, zk::Error::NoNode | zk::Error::BadVersion) => {
                        return Ok(Took::No)
                    }
                    (0, zk::Error::NoNode) => {
                        make_dirs(&inner.direct.shared, reader, &[&paths.locks]).await?;
                        continue;
                    }
                    (2, zk::Error::NoNode) if count_version.is_none() => {
                        make_dirs(&inner.direct.shared, reader, &[&paths.deliveries]).await?;
                        continue;
                    }
                    (2, zk::Error::NoNode | zk::Error::NodeExists | zk::Error::BadVersion) => {
                        return Ok(Took::LookAgain)
                    }
                    (_, source) => return Err(lease.error(source)),
                }
            }
            Ok(Err(zk::MultiWriteError::RequestFailed { source })) if is_session_end(&source) => {
                undo.disarm();
                lease.fail();
                return Err(Error::SessionLost);
            }
            // The reply is lost: the lock node says whether it was applied.
            Ok(Err(zk::MultiWriteError::RequestFailed { .. })) | Err(_) => {
                holds(inner, &client, &lock, &claim).await?
            }
        };
        undo.disarm();
        if !applied {
            return Ok(Took::No);
        }
        if session.is_lost() {
            return Err(Error::SessionLost);
        }
        let settle = Hold {
            inner: Arc::clone(inner),
            lease: Arc::clone(lease),
            lost: session.lost_token().clone(),
            child,
            maybe_applied: AtomicBool::new(false),
        };
        return Ok(Took::Item(Delivery::new(
            item,
            count,
            session,
            Box::new(settle),
        )));
    }
}

/// Whether the lock node `lock` holds `claim`: whether a hold whose reply was lost was
/// applied.
async fn holds(inner: &Inner, client: &zk::Client, lock: &str, claim: &str) -> Result<bool> {
    let read = request_found(&inner.direct.shared, client.get_data(lock)).await?;
    Ok(read.is_some_and(|(data, _)| data == claim.as_bytes()))
}

/// A delivery count's data as a number (a count that is not one is taken as 0).
fn parse_count(data: &[u8]) -> u32 {
    std::str::from_utf8(data)
        .ok()
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or(0)
}

/// A hold that may have been applied: put back (a cancelled receive) by deleting the
/// lock node if it holds the claim, and setting the count back.
struct HoldClaim {
    lease: Arc<LeaseInner>,
    lock: String,
    claim: String,
    count_path: String,
    count: u32,
}

#[async_trait]
impl Claim for HoldClaim {
    fn put_back_clean_up(&self) -> CleanUp {
        CleanUp::new(
            "undoing a dropped receive's hold",
            "the item goes back when the session ends",
        )
        .of(&self.lock)
        .within(RELEASE_DEADLINE)
    }

    /// Deletes the lock node if it holds the claim, setting the delivery count back.
    async fn put_back(&self) -> Result<()> {
        let (lock, count_path, count) = (&self.lock, &self.count_path, self.count);
        let Ok(client) = self.lease.client() else {
            return Ok(());
        };
        let timeout = self.lease.shared.config.request_timeout();
        let request = async {
            let read = found(client.get_data(lock).await)?;
            let Some((_, stat)) = read.filter(|(data, _)| *data == self.claim.as_bytes()) else {
                return Ok(());
            };
            let mut multi = client.new_multi_writer();
            multi.add_delete(lock, Some(stat.version))?;
            if count == 0 {
                multi.add_delete(count_path, None)?;
            } else {
                multi.add_set_data(count_path, count.to_string().as_bytes(), None)?;
            }
            match multi.commit().await {
                Ok(_) | Err(zk::MultiWriteError::OperationFailed { .. }) => Ok(()),
                Err(zk::MultiWriteError::RequestFailed { source }) => Err(source),
            }
        };
        match tokio::time::timeout(timeout, request).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) if is_session_end(&error) => Ok(()),
            Ok(Err(error)) => Err(map(error)),
            Err(_) => Err(Error::connection(BACKEND, "zookeeper request not answered")),
        }
    }
}

/// The error of an ack that may or may not have applied: the item is gone, and the
/// session that held it ended after a reply was lost.
fn unknown_ack() -> Error {
    Error::connection(
        BACKEND,
        "the ack's reply was lost and its session ended: it may have applied",
    )
}

/// A held item's settlement.
struct Hold {
    inner: Arc<Inner>,
    lease: Arc<LeaseInner>,
    lost: CancellationToken,
    child: String,
    /// Whether an attempt of the ack lost its reply: a request sent before the
    /// session's end may have applied, whatever error the client then reports.
    maybe_applied: AtomicBool,
}

#[async_trait]
impl Settle for Hold {
    /// Deletes the item and its lock node together; sets `maybe_applied` when its
    /// reply is lost.
    async fn ack_step(&self) -> Result<bool> {
        let maybe_applied = &self.maybe_applied;
        let paths = &self.inner.paths;
        let client = self.lease.client()?;
        let lock = paths.lock(&self.child);
        let item = paths.item(&self.child);
        let mut multi = client.new_multi_writer();
        multi.add_delete(&lock, None).map_err(map)?;
        multi.add_delete(&item, None).map_err(map)?;
        let committed = bounded(&self.inner.direct.shared, multi.commit()).await;
        if matches!(
            committed,
            Err(_) | Ok(Err(zk::MultiWriteError::RequestFailed { .. }))
        ) {
            maybe_applied.store(true, Ordering::Relaxed);
        }
        match committed? {
            Ok(_) => {}
            Err(zk::MultiWriteError::OperationFailed { index: 0, .. }) => {
                // The lock node is gone: with the session (the item is back), or with
                // an earlier attempt of this ack whose reply was lost (the item too).
                let gone = bounded(&self.inner.direct.shared, client.check_stat(&item)).await?;
                match gone {
                    Ok(None) if !self.lease.is_over() => {}
                    Ok(None) if maybe_applied.load(Ordering::Relaxed) => return Err(unknown_ack()),
                    Ok(_) => return Ok(false),
                    Err(error) => return Err(self.lease.error(error)),
                }
            }
            Err(zk::MultiWriteError::OperationFailed { index: 1, .. }) => {
                // Someone deleted the item (a consumer that ignores lock nodes): it is
                // gone for good, as the ack wants; let go of the lock node.
                if let Err(error) =
                    bounded(&self.inner.direct.shared, client.delete(&lock, None)).await?
                {
                    if error != zk::Error::NoNode {
                        return Err(self.lease.error(error));
                    }
                }
            }
            Err(zk::MultiWriteError::OperationFailed { source, .. })
            | Err(zk::MultiWriteError::RequestFailed { source }) => {
                return Err(self.lease.error(source))
            }
        }
        let inner = &self.inner;
        super::forget_deliveries(&inner.direct.shared, &inner.paths, &client, &self.child).await;
        Ok(true)
    }

    /// Deletes the lock node.
    async fn nack_step(&self) -> Result<()> {
        let client = self.lease.client()?;
        let lock = self.inner.paths.lock(&self.child);
        match bounded(&self.inner.direct.shared, client.delete(&lock, None)).await? {
            Ok(()) | Err(zk::Error::NoNode) => Ok(()),
            Err(error) => Err(self.lease.error(error)),
        }
    }

    /// After an attempt whose reply was lost, read through the backend's own
    /// connection: the item still there means the ack did not apply (the multi is
    /// atomic, so the item went back with the session), and the item gone means it
    /// applied or another consumer acknowledged it after the session ended; the two
    /// cannot be told apart.
    async fn ack_after_loss(&self) -> Result<()> {
        if !self.maybe_applied.load(Ordering::Relaxed) {
            return Err(Error::SessionLost);
        }
        let item = self.inner.paths.item(&self.child);
        let client = self.inner.direct.client().await?;
        match bounded(&self.inner.direct.shared, client.check_stat(&item)).await? {
            Ok(Some(_)) => Err(Error::SessionLost),
            Ok(None) => Err(unknown_ack()),
            Err(error) => Err(map(error)),
        }
    }

    fn policy(&self) -> RetryPolicy {
        self.inner.policy()
    }

    fn lost(&self) -> Option<&CancellationToken> {
        Some(&self.lost)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_count;

    #[test]
    fn counts_parse_and_junk_is_zero() {
        assert_eq!(parse_count(b"3"), 3);
        assert_eq!(parse_count(b"junk"), 0);
        assert_eq!(parse_count(b"\xff"), 0);
    }
}
