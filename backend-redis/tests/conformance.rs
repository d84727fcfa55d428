//! The whole conformance suite against a real Redis (`DISTSYNC_REDIS_URL`; skipped
//! loudly when unset, a failure under `CI=true`), with the fault hooks of a server
//! (`distsync_conformance::ServerFaults`): holders in child processes (this test
//! binary re-run as `conformance_child`), session keys deleted with `redis-cli`, and a
//! private `redis-server` to restart.

use distsync_conformance::{connector, server_url, Harness};

async fn redis() -> Option<Harness> {
    let url = server_url("DISTSYNC_REDIS_URL")?;
    let connect = connector(|url| async move { distsync_redis::backend(&url).await });
    Some(
        Harness::connect(&url, connect)
            .await
            .unwrap_or_else(|error| panic!("connecting to {url}: {error}")),
    )
}

distsync_conformance::conformance_tests!(redis);
