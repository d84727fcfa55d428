//! This backend in the facade's list of drivers.

use distsync_core::driver::Driver;
use distsync_core::{Coordinator, Result};
use futures::future::BoxFuture;

/// The ZooKeeper backend for `zk://` URLs (`zks://` answers
/// [`distsync_core::Error::Unsupported`]).
pub const DRIVER: Driver = Driver::new(
    crate::BACKEND,
    &[crate::config::SCHEME, crate::config::TLS_SCHEME],
    connect,
    crate::capabilities,
)
.with_url_forms(
    "zk://[user:password@]host:port[,host:port...][/root][?connect_timeout=5s&timeout=10s]
    the lock is Curator's InterProcessMutex on <root>/lock/<name> (root: /distsync);
    user:password is a digest login
zks://...  TLS: answers Unsupported (the client crate takes certificates in code only)",
);

fn connect(url: &str) -> BoxFuture<'_, Result<Coordinator>> {
    Box::pin(async move { crate::backend(url).await.map(Coordinator::new) })
}
