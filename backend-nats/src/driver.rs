//! This backend in the facade's list of drivers.

use distsync_core::driver::Driver;
use distsync_core::{Coordinator, Result};
use futures::future::BoxFuture;

/// The NATS JetStream backend for `nats://` and `tls://` URLs.
pub const DRIVER: Driver = Driver::new(
    crate::BACKEND,
    &[crate::config::SCHEME, crate::config::TLS_SCHEME],
    connect,
    crate::capabilities,
)
.with_url_forms(
    "nats://[user:password@]host:port[,host:port...][/][?bucket=distsync&replicas=1&creds=FILE]
    every key lives in the JetStream key-value bucket `bucket` (the stream KV_<bucket>),
    made on first connect with per-key TTLs and atomic batches; nats-server 2.12 or later
tls://...?ca=ca.pem[&cert=client.pem&key=client-key.pem]  the same over TLS",
);

fn connect(url: &str) -> BoxFuture<'_, Result<Coordinator>> {
    Box::pin(async move { crate::backend(url).await.map(Coordinator::new) })
}
