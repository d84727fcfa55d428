//! `distsync::store::raw` is enough to build a store: a `Kv` implementation wrapped in the
//! recipes' `KvBackend` gives a working `Backend` (here the in-memory `MemoryKv`,
//! under a namespace of its own), reached only through `store` paths.

use std::sync::Arc;
use std::time::Duration;

use distsync::store::memory::MemoryKv;
use distsync::store::raw::kv::{Kv, Range};
use distsync::store::raw::recipes::KvBackend;
use distsync::store::raw::{Backend, KeepAlive};
use distsync::{Coordinator, Result, SessionOptions};

#[tokio::test]
async fn a_kv_store_wrapped_in_the_recipes_is_a_backend() -> Result<()> {
    let kv = Arc::new(MemoryKv::new());
    let backend = KvBackend::with_shared_kv(
        Arc::clone(&kv),
        "app/",
        distsync::store::memory::capabilities(),
    );
    let session = backend
        .session(SessionOptions::with_ttl(Duration::from_secs(5)))
        .await?;
    let coordinator = Coordinator::new(backend);

    let guard = coordinator.locker(&session, "jobs/nightly")?.lock().await?;
    assert!(
        guard.key().starts_with("app/jobs/nightly/"),
        "{}",
        guard.key()
    );
    let held = kv.range(Range::prefix("app/")).await?;
    assert_eq!(held.kvs.len(), 1);
    assert_eq!(held.kvs[0].key, guard.key());

    // The lease behind the session is the store's: renewing it through `Kv` works
    // until the session is closed.
    let lease = held.kvs[0].lease;
    assert_eq!(kv.lease_keep_alive(lease).await?, KeepAlive::Renewed);
    guard.unlock().await?;
    session.close().await?;
    assert_eq!(kv.lease_keep_alive(lease).await?, KeepAlive::Gone);
    assert!(kv.range(Range::prefix("app/")).await?.kvs.is_empty());
    Ok(())
}
