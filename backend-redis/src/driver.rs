//! This backend in the facade's list of drivers.

use distsync_core::driver::Driver;
use distsync_core::{Coordinator, Result};
use futures::future::BoxFuture;

/// The Redis backend for `redis://`, `rediss://`, `redis+sentinel://` and `redis+cluster://` URLs (`rediss+cluster://` is answered with `Unsupported`).
///
/// The capabilities it lists without a server are [`crate::capabilities()`]: those of
/// one server that never evicts keys and runs without an append-only file fsynced on
/// every write. A connected backend's own `capabilities()` are the ones measured at
/// connect (eviction policy, persistence, Sentinel or Cluster).
pub const DRIVER: Driver = Driver::new(
    crate::BACKEND,
    crate::config::SCHEMES,
    connect,
    crate::capabilities::capabilities,
)
.with_url_forms(
    "redis://[user[:password]@]host[:port][/db][?namespace=NS&allow_eviction=true]
    the server must run maxmemory-policy noeviction unless allow_eviction=true (which
    gives up the guarantees)
rediss://[user[:password]@]host[:port][/db][?ca=PATH&cert=PATH&key=PATH&namespace=NS]
    Redis over TLS
redis+sentinel://[user[:password]@]host[:port][,host[:port]...]/SERVICE[/db]\
     [?wait_replicas=N&wait_timeout=DURATION]
    the primary of SERVICE, found through its Sentinels (port 26379 by default);
    wait_replicas=N makes grants survive a failover
redis+cluster://[user[:password]@]host[:port][,host[:port]...]\
     [?nat_map=ANNOUNCED:PORT=REACHED:PORT,...]
    Redis Cluster (database 0), found from any node that answers (rediss+cluster://: TLS)",
);

fn connect(url: &str) -> BoxFuture<'_, Result<Coordinator>> {
    Box::pin(async move { crate::backend(url).await.map(Coordinator::new) })
}
