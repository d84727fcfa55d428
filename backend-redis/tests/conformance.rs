//! The whole conformance suite against a real Redis (`DISTSYNC_REDIS_URL`; skipped
//! loudly when unset, a failure under `CI=true`).

use distsync_core::Coordinator;

async fn redis() -> Option<Coordinator> {
    let url = distsync_conformance::server_url("DISTSYNC_REDIS_URL")?;
    Some(
        distsync_redis::connect(&url)
            .await
            .unwrap_or_else(|error| panic!("connecting to {url}: {error}")),
    )
}

distsync_conformance::conformance_tests!(redis);
