//! A caller's own etcd transaction guarded by a lock's hold, as Go's
//! `concurrency.Mutex.IsOwner()`: [`held_compare`] is the compare that holds exactly
//! while the lock is still the guard's, for the caller to add to a `Txn` of its own, so
//! that the transaction's writes apply only while the lock is held. It generalises
//! [`LockGuard::put_if_held`] (one STM key) to any operations on any keys.
//!
//! A hold is its key existing with the create revision of the grant; etcd checks the
//! compare in the same atomic step as the writes, so a holder that lost the lock
//! (released, its session expired or revoked, broken by an administrator), even one
//! that does not know it yet (paused past its lease), writes nothing: its transaction
//! answers `succeeded() == false` and runs its `or_else` operations instead.

use std::sync::Arc;

use distsync_core::raw::SessionStoreSide as _;
use distsync_core::{Error, LockGuard, Result};
use distsync_kv::forgetful::ForgetfulKv;
use distsync_kv::recipes::{hold_of, KvLease};

use crate::{EtcdKv, BACKEND};

/// The compare under which a caller's own etcd transaction applies only while `guard`
/// still holds its lock: the hold's key has the create revision of the grant (Go's
/// `Mutex.IsOwner()`). Add it to the `when` of a [`Txn`](etcd_client::Txn) sent on
/// your own [`etcd_client::Client`] to the cluster the guard's backend uses.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use distsync::store::etcd::etcd_client::{Client, Txn, TxnOp};
/// use distsync::store::etcd::{backend_from_client, held_compare};
///
/// let mut client = Client::connect(["127.0.0.1:2379"], None).await?;
/// let backend = backend_from_client(client.clone(), "apps/billing/")?;
/// let coordinator = distsync::Coordinator::new(backend);
/// let session = coordinator.session().await?;
/// let guard = coordinator.locker(&session, "invoices")?.lock().await?;
/// let txn = Txn::new()
///     .when([held_compare(&guard)?])
///     .and_then([TxnOp::put("billing/invoices/42", "paid", None)]);
/// if !client.txn(txn).await?.succeeded() {
///     // The lock is no longer this guard's: nothing was written.
/// }
/// guard.unlock().await?;
/// # Ok(()) }
/// ```
///
/// The compare names the hold's full key, the backend's namespace included, as etcd
/// stores it: send the transaction through the client's plain KV API
/// ([`Client::txn`](etcd_client::Client::txn), [`Client::kv_client`](etcd_client::Client::kv_client)),
/// not through a [`KvClientPrefix`](etcd_client::KvClientPrefix), which would prefix
/// the key again. Its revision is etcd's own: the number the backend's client knows
/// the grant by is the same except on an etcd that forgot its data, which this compare
/// accounts for (see the crate docs, "When the store forgets"). Keep the data's keys
/// out from under the lock's (`<namespace><name>/`): a lock waits behind every key
/// there, as Go's `Mutex` does.
///
/// It asks etcd nothing: a guard whose lock is already lost still gets its compare,
/// under which the transaction does not apply. It takes the guard of a lock or a write
/// lock; a semaphore [`Permit`](distsync_core::Permit) gives no access to its guard
/// ([`Permit::put_if_held`](distsync_core::Permit::put_if_held) guards an STM write).
///
/// # Errors
/// [`Error::InvalidArgument`] for a guard of another backend, or one whose lock and
/// session come from two different etcd backends (two clients, whose revisions may be
/// numbered apart after etcd forgot its data).
pub fn held_compare(guard: &LockGuard) -> Result<etcd_client::Compare> {
    let not_etcd = || {
        Error::InvalidArgument(format!(
            "held_compare takes the guard of an etcd lock or write lock, not one of the {} backend",
            guard.session().backend()
        ))
    };
    let hold = hold_of(guard).map_err(|_| not_etcd())?;
    let kv = guard
        .session()
        .lease_for::<KvLease<ForgetfulKv<EtcdKv>>>(BACKEND)
        .map_err(|_| not_etcd())?
        .kv();
    if !std::ptr::addr_eq(Arc::as_ptr(hold.store()), Arc::as_ptr(kv)) {
        return Err(Error::InvalidArgument(
            "held_compare: the guard's lock and its session come from two different etcd \
             backends; take both from one backend"
                .into(),
        ));
    }
    Ok(crate::kv::compare(&kv.lower_compare(&hold.compare())))
}
