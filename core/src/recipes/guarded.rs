//! Guarded writes over a [`Kv`] store: an STM key written in one transaction with a
//! compare on the holder's key, as Go's `Mutex.IsOwner()` guards a transaction.

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;
use crate::guard::GuardedWrite;
use crate::kv::{Compare, CompareOp, Txn, TxnOp};
use crate::name::Name;

use super::hold::HeldKey;
use super::key::Kind;

/// Writes through a held key: the write commits only while the key still exists with
/// the create revision of the grant.
pub(crate) struct KvGuardedWrite {
    /// The hold.
    pub(crate) held: HeldKey,
    /// The namespace, for the STM key's store key.
    pub(crate) namespace: String,
}

#[async_trait]
impl GuardedWrite for KvGuardedWrite {
    async fn put_if_held(&self, key: &Name, value: Bytes) -> Result<bool> {
        let txn = Txn::when(vec![Compare::create_revision(
            &self.held.key,
            CompareOp::Equal,
            self.held.create_revision,
        )])
        .and_then(vec![TxnOp::put(
            Kind::Stm.prefix(&self.namespace, key),
            value,
            0,
        )]);
        Ok(self.held.kv.txn(txn).await?.succeeded)
    }
}
