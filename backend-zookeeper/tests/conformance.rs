//! The whole conformance suite against a real ZooKeeper (`DISTSYNC_ZOOKEEPER_URL`;
//! skipped loudly when unset, a failure under `CI=true`), with the fault hooks of a
//! server (`distsync_conformance::ServerFaults`): holders in child processes (this test
//! binary re-run as `conformance_child`), a private ZooKeeper to crash and restart,
//! the partition proxy, and the three-server ensemble of
//! `DISTSYNC_ZOOKEEPER_ENSEMBLE_URL`, whose leader the cluster cases stop or kill
//! (unsupported when it is unset). ZooKeeper has no out-of-band session kill, so the cases
//! that need one are reported unsupported, as is a primitive this backend does not
//! build.

use distsync_conformance::{connector, server_url, Harness};

async fn zookeeper() -> Option<Harness> {
    let url = server_url("DISTSYNC_ZOOKEEPER_URL")?;
    let connect = connector(|url| async move { distsync_zookeeper::backend(&url).await });
    Some(
        Harness::connect(&url, connect)
            .await
            .unwrap_or_else(|error| panic!("connecting to zookeeper at {url}: {error}")),
    )
}

distsync_conformance::conformance_tests!(zookeeper);
