//! The whole conformance suite against a real ZooKeeper (`DISTSYNC_ZOOKEEPER_URL`;
//! skipped loudly when unset, a failure under `CI=true`).
//!
//! The suite's server fault hooks (child-process holders, restarts, partitions) do not
//! know ZooKeeper yet: the cases that need them are reported as not run. Every other
//! case runs, and a primitive this backend does not build is reported unsupported, as
//! its capabilities declare.

use std::sync::Arc;

use distsync_conformance::{server_url, Harness};

async fn zookeeper() -> Option<Harness> {
    let url = server_url("DISTSYNC_ZOOKEEPER_URL")?;
    let backend = distsync_zookeeper::backend(&url)
        .await
        .unwrap_or_else(|error| panic!("connecting to zookeeper at {url}: {error}"));
    Some(Harness::new(Arc::new(backend)))
}

distsync_conformance::conformance_tests!(zookeeper);
