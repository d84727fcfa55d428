//! The whole conformance suite against a real nats-server with JetStream
//! (`DISTSYNC_NATS_URL`; skipped loudly when unset, a failure under `CI=true`).
//!
//! The conformance crate's server fault hooks (out-of-band kills, child-process
//! holders, private servers, the partition proxy, clusters) know no NATS server yet,
//! so the harness has the store's own hooks only, and a case that needs another is
//! reported not run rather than unsupported: its absence says nothing about NATS.
//! Primitives this backend does not build are declared unsupported by its
//! capabilities and reported so.

use std::sync::Arc;

use distsync_conformance::{server_url, Harness};

async fn nats() -> Option<Harness> {
    let url = server_url("DISTSYNC_NATS_URL")?;
    let backend = distsync_nats::backend(&url)
        .await
        .unwrap_or_else(|error| panic!("connecting to nats at {url}: {error}"));
    Some(Harness::new(Arc::new(backend)).with_absent_hooks_not_run())
}

distsync_conformance::conformance_tests!(nats);
