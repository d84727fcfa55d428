//! This backend in the facade's list of drivers.

use distsync_core::driver::Driver;
use distsync_core::{Coordinator, Result};
use futures::future::BoxFuture;

/// The Redis backend for `redis://`, `rediss://`, `redis+sentinel://` and `redis+cluster://` URLs (`rediss+cluster://` is answered with `Unsupported`).
pub const DRIVER: Driver = Driver::new(
    crate::BACKEND,
    crate::config::SCHEMES,
    connect,
    crate::capabilities::capabilities,
);

fn connect(url: &str) -> BoxFuture<'_, Result<Coordinator>> {
    Box::pin(crate::connect(url))
}
