//! The whole conformance suite against the in-memory backend.

use std::sync::Arc;

use distsync_core::memory::MemoryBackend;
use distsync_core::Backend;

async fn memory() -> Option<Arc<dyn Backend>> {
    Some(Arc::new(MemoryBackend::new()))
}

distsync_conformance::conformance_tests!(memory);
