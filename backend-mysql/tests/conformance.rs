//! The whole conformance suite against a real MySQL or MariaDB server
//! (`DISTSYNC_MYSQL_URL`; skipped loudly when unset, a failure under `CI=true`).
//!
//! A `harness = false` target: `conformance_tests!` writes its `main`, with one test
//! per case.
//!
//! The fault hooks are the default ones ([`distsync_conformance::Harness::new`]):
//! the conformance crate's server hooks (child-process holders, out-of-band session
//! kills, private servers, the partition proxy) know etcd, Redis, PostgreSQL and
//! ZooKeeper URLs only, so every case needing a hook is reported unsupported here.

use std::sync::Arc;

use distsync_conformance::{server_url, Harness};
use distsync_core::Backend;

async fn mysql() -> Option<Harness> {
    let url = server_url("DISTSYNC_MYSQL_URL")?;
    let backend = distsync_mysql::backend(&url)
        .await
        .unwrap_or_else(|error| panic!("connecting to MySQL at {url}: {error}"));
    Some(Harness::new(Arc::new(backend) as Arc<dyn Backend>))
}

distsync_conformance::conformance_tests!(mysql);
