//! Guarded writes over a [`Kv`] store: an STM key written in one transaction with a
//! compare on the holder's key, as Go's `Mutex.IsOwner()` guards a transaction.

use async_trait::async_trait;
use bytes::Bytes;

use std::sync::Arc;

use crate::kv::{Compare, CompareOp, Kv, Revision, Txn, TxnOp};
use distsync_core::error::Result;
use distsync_core::guard::GuardedWrite;
use distsync_core::name::Name;

use super::key::{KeySpace, Kind};

/// Writes through a held key: the write commits only while the key still exists with
/// the create revision of the grant.
pub(crate) struct KvGuardedWrite {
    /// The store.
    pub(crate) kv: Arc<dyn Kv>,
    /// The held key.
    pub(crate) key: String,
    /// The revision that created it: the grant's identity.
    pub(crate) create_revision: Revision,
    /// Where the STM key's store key is.
    pub(crate) space: KeySpace,
}

#[async_trait]
impl GuardedWrite for KvGuardedWrite {
    async fn put_if_held_bytes(&self, key: &Name, value: Bytes) -> Result<bool> {
        self.space.check(Kind::Stm, key)?;
        let txn = Txn::when(vec![Compare::create_revision(
            &self.key,
            CompareOp::Equal,
            self.create_revision,
        )])
        .and_then(vec![TxnOp::put(self.space.root(Kind::Stm, key), value, 0)]);
        Ok(self.kv.txn(txn).await?.succeeded)
    }
}
