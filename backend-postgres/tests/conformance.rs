//! The whole conformance suite against the PostgreSQL server named by
//! `DISTSYNC_POSTGRES_URL` (skipped loudly when unset; a failure under `CI=true`).

use std::sync::Arc;

use distsync_core::Backend;

async fn postgres() -> Option<Arc<dyn Backend>> {
    let url = distsync_conformance::server_url("DISTSYNC_POSTGRES_URL")?;
    match distsync_postgres::backend(&url).await {
        Ok(backend) => Some(Arc::new(backend)),
        Err(error) => panic!("connecting to postgres at {url}: {error}"),
    }
}

distsync_conformance::conformance_tests!(postgres);
