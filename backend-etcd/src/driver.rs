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
);

fn connect(url: &str) -> BoxFuture<'_, Result<Coordinator>> {
    Box::pin(crate::connect(url))
}
