//! A bound on session TTLs (`max_session_ttl=`) bounds sessions only: the record an
//! `enqueue_once` keeps for the dedup window lives under a lease of its own, which is no
//! session, and neither is refused by the bound nor makes a lock-delay after the store
//! forgets wait as long as the window (`DISTSYNC_ETCD_URL`).

use crate::common;

use std::time::Duration;

use distsync::queue::{Enqueued, IdempotencyKey};
use distsync::Coordinator;

use common::{etcd_url, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_on_sessions_leaves_enqueue_once_alone() {
    let Some(url) = etcd_url() else {
        return;
    };
    let url = format!(
        "{url}/{}/?max_session_ttl=5s",
        unique("distsync-test/session-bound")
    );
    let backend = distsync_etcd::backend(&url).await.unwrap();
    let coordinator = Coordinator::new(backend);
    let queue = coordinator.queue("orders").unwrap();
    let key = IdempotencyKey::new("order-1").unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), queue.enqueue_once(&key, "a", 0))
        .await
        .expect("enqueue_once within 10 s");
    assert_eq!(first.unwrap(), Enqueued::New);
    let again = queue.enqueue_once(&key, "a", 0).await.unwrap();
    assert_eq!(again, Enqueued::Duplicate);
    // Sessions stay bounded.
    assert!(coordinator
        .session_with(distsync::SessionOptions::with_ttl(Duration::from_secs(6)))
        .await
        .is_err());
}
