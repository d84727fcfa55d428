//! The in-memory revisioned store.

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::error::{Error, Result};
use crate::kv::{Kv, LeaseId, Range, RangeResponse, Revision, Txn, TxnResponse, WatchResponse};
use crate::session::KeepAlive;

/// An in-memory revisioned key-value store (to be written).
pub struct MemoryKv {}

impl MemoryKv {
    /// An empty store.
    pub fn new() -> Self {
        Self {}
    }
}

#[async_trait]
impl Kv for MemoryKv {
    fn backend(&self) -> &'static str {
        "memory"
    }
    async fn range(&self, _range: Range) -> Result<RangeResponse> {
        Err(Error::unsupported("memory", "range"))
    }
    async fn txn(&self, _txn: Txn) -> Result<TxnResponse> {
        Err(Error::unsupported("memory", "txn"))
    }
    async fn watch(
        &self,
        _key: &str,
        _prefix: bool,
        _start_revision: Revision,
    ) -> Result<BoxStream<'static, Result<WatchResponse>>> {
        Err(Error::unsupported("memory", "watch"))
    }
    async fn lease_grant(&self, _ttl: Duration) -> Result<LeaseId> {
        Err(Error::unsupported("memory", "lease"))
    }
    async fn lease_keep_alive(&self, _lease: LeaseId) -> Result<KeepAlive> {
        Err(Error::unsupported("memory", "lease"))
    }
    async fn lease_revoke(&self, _lease: LeaseId) -> Result<()> {
        Err(Error::unsupported("memory", "lease"))
    }
}
