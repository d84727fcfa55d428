//! The refusals of a store that keeps etcd's MVCC model itself ([`StoreError`]): the
//! in-memory store, and any [`Kv`](crate::kv::Kv) over a database that stores
//! revisions in its own tables. A store that forwards to etcd gets etcd's own errors.

use distsync_core::error::Error;

use crate::kv::{LeaseId, Revision};

/// A refusal of the MVCC model, carried as the source of an [`Error::Backend`] naming
/// the store ([`StoreError::in_backend`]; downcast the source to match on it).
///
/// The messages follow etcd's, so every store that keeps the model fails as etcd does.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A read or watch asked for a revision older than the compaction point.
    #[error("mvcc: required revision {requested} has been compacted (compacted at {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The oldest revision still readable.
        compacted: Revision,
    },
    /// A read or compaction asked for a revision the store has not reached yet.
    #[error("mvcc: required revision {requested} is a future revision (current {current})")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The store's current revision.
        current: Revision,
    },
    /// A put named a lease the store does not know (never granted, revoked or expired).
    #[error("lease not found: requested lease {0:x} not found")]
    LeaseNotFound(LeaseId),
    /// A put keeping the key's lease (`ignore_lease`) named a key that does not exist.
    #[error("key not found: {0:?}")]
    KeyNotFound(String),
}

impl StoreError {
    /// This refusal as the error of the store `backend` (its short name, as in
    /// `Capabilities::backend`).
    ///
    /// ```
    /// use distsync_kv::StoreError;
    ///
    /// let error = StoreError::LeaseNotFound(42).in_backend("memory");
    /// assert!(error.to_string().contains("lease not found"));
    /// ```
    pub fn in_backend(self, backend: &'static str) -> Error {
        Error::backend(backend, self)
    }
}
