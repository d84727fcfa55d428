//! Helpers shared by the memory store's unit tests.

use super::MemoryKv;
use crate::kv::{
    EventKind, KeyValue, Kv, LeaseId, Range, RangeResponse, Revision, Txn, TxnOp, WatchResponse,
};
use crate::StoreError;
use distsync_core::error::Error;

pub(super) fn put(key: &str, value: &str) -> TxnOp {
    TxnOp::put(key, value.to_owned(), 0)
}

pub(super) async fn put_one(kv: &MemoryKv, key: &str, value: &str) -> Revision {
    kv.txn(Txn::default().and_then(vec![put(key, value)]))
        .await
        .unwrap()
        .revision
}

pub(super) async fn put_leased(kv: &MemoryKv, key: &str, lease: LeaseId) -> Revision {
    kv.txn(Txn::default().and_then(vec![TxnOp::put(key, "v", lease)]))
        .await
        .unwrap()
        .revision
}

pub(super) async fn get(kv: &MemoryKv, key: &str) -> Option<KeyValue> {
    kv.range(Range::key(key))
        .await
        .unwrap()
        .kvs
        .into_iter()
        .next()
}

pub(super) fn keys(response: &RangeResponse) -> Vec<&str> {
    response.kvs.iter().map(|kv| kv.key.as_str()).collect()
}

pub(super) fn store_error(error: &Error) -> &StoreError {
    match error {
        Error::Backend { backend, source } => {
            assert_eq!(*backend, "memory");
            source.downcast_ref::<StoreError>().unwrap()
        }
        other => panic!("expected a memory store error, got {other:?}"),
    }
}

pub(super) fn events(response: WatchResponse) -> Vec<(EventKind, String, Revision)> {
    match response {
        WatchResponse::Events(events) => events
            .into_iter()
            .map(|event| (event.kind, event.kv.key, event.kv.mod_revision))
            .collect(),
        other => panic!("expected events, got {other:?}"),
    }
}

pub(super) fn watcher_count(kv: &MemoryKv) -> usize {
    kv.inner.lock().watchers.len()
}
