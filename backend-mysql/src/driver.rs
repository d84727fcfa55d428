//! This backend in the facade's list of drivers.

use distsync_core::driver::Driver;
use distsync_core::{Coordinator, Result};
use futures::future::BoxFuture;

/// The MySQL/MariaDB backend for `mysql://` and `mariadb://` URLs.
pub const DRIVER: Driver = Driver::new(
    crate::BACKEND,
    &crate::config::SCHEMES,
    connect,
    crate::capabilities,
)
.with_url_forms(
    "mysql://user[:password]@host[:port]/database[?table_prefix=distsync_&poll_interval=20ms&pool_size=8]
    also mariadb://; MySQL 8 or MariaDB 10.6+ with InnoDB",
);

fn connect(url: &str) -> BoxFuture<'_, Result<Coordinator>> {
    Box::pin(async move { crate::backend(url).await.map(Coordinator::new) })
}
