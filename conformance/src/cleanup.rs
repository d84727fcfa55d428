//! Leaving nothing behind: a run under a throwaway namespace
//! ([`crate::harness::run_namespace`]) removes it at the end, and checks that nothing
//! is left.

use std::fmt;

use distsync_core::{Backend, Name, Result};

/// What the clean-up of a run's namespace did: entries removed, and entries still
/// found under the namespace afterwards (0 when the run left nothing behind).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cleanup {
    /// Entries (keys, rows) [`Backend::purge_prefix`] removed.
    pub purged: u64,
    /// Entries [`Backend::count_prefix`] still found afterwards.
    pub left: u64,
}

impl fmt::Display for Cleanup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} entries removed, {} left", self.purged, self.left)
    }
}

/// Removes everything under `namespace` ([`Backend::purge_prefix`]) and counts what
/// is left ([`Backend::count_prefix`]).
///
/// ```
/// # tokio_test_block_on(async {
/// use distsync_conformance::cleanup::clean_up;
/// use distsync_core::{Coordinator, Name};
///
/// let coordinator = Coordinator::from_arc(std::sync::Arc::new(distsync_kv::memory::MemoryBackend::new()));
/// let namespace = Name::new("conf/run-doc").unwrap();
/// coordinator.counter("conf/run-doc/hits").unwrap().add(1).await.unwrap();
/// let cleanup = clean_up(&**coordinator.backend(), &namespace).await.unwrap();
/// assert_eq!((cleanup.purged, cleanup.left), (1, 0));
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
/// # }
/// ```
///
/// # Errors
/// The store's error, or [`distsync_core::Error::Unsupported`] where the backend
/// cannot purge or count a prefix.
///
/// # Cancel safety
/// Not atomic: dropping the future may leave part of the namespace; calling it again
/// finishes the job.
pub async fn clean_up(backend: &dyn Backend, namespace: &Name) -> Result<Cleanup> {
    let purged = backend.purge_prefix(namespace).await?;
    let left = backend.count_prefix(namespace).await?;
    tracing::debug!(%namespace, purged, left, "cleaned up a run's namespace");
    Ok(Cleanup { purged, left })
}
