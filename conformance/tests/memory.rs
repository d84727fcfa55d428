//! The whole conformance suite against the in-process memory backend, with its fault
//! hooks (frozen leases model paused holders; process-level faults are unsupported).

use distsync_conformance::Harness;

async fn memory() -> Option<Harness> {
    Some(Harness::memory())
}

distsync_conformance::conformance_tests!(memory);
