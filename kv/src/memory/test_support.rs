//! Helpers shared by the memory store's unit tests: the contract's
//! ([`crate::contract_tests`]), and what is the memory store's own.

use super::MemoryKv;
pub(super) use crate::contract_tests::{events, get, keys, put, put_one};
use crate::kv::{Kv, LeaseId, Revision, Txn, TxnOp};
use crate::StoreError;
use distsync_core::error::Error;

pub(super) async fn put_leased(kv: &MemoryKv, key: &str, lease: LeaseId) -> Revision {
    kv.txn(Txn::default().and_then(vec![TxnOp::put(key, "v", lease)]))
        .await
        .unwrap()
        .revision
}

/// The memory store's own error inside `error`.
pub(super) fn store_error(error: &Error) -> &StoreError {
    crate::contract_tests::store_error(error, "memory")
}

pub(super) fn watcher_count(kv: &MemoryKv) -> usize {
    kv.inner.lock().watchers.len()
}
