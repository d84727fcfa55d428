//! This backend in the facade's list of drivers.

use distsync_core::driver::Driver;
use distsync_core::{Coordinator, Result};
use futures::future::BoxFuture;

/// The etcd backend for `etcd://` URLs.
pub const DRIVER: Driver = Driver::new(
    crate::BACKEND,
    &[crate::config::SCHEME],
    connect,
    crate::capabilities,
)
.with_url_forms(
    "etcd://[user:password@]host:port[,host:port...][/namespace]\
     [?tls=true&ca=PATH&cert=PATH&key=PATH&layout=go]
    layout=go shares rwlocks, queues, barriers and STM keys with etcd's Go recipes",
);

fn connect(url: &str) -> BoxFuture<'_, Result<Coordinator>> {
    Box::pin(async move { crate::backend(url).await.map(Coordinator::new) })
}
