//! This backend in the facade's list of drivers.

use distsync_core::driver::Driver;
use distsync_core::{Coordinator, Result};
use futures::future::BoxFuture;

/// The PostgreSQL backend for `postgres://` and `postgresql://` URLs.
pub const DRIVER: Driver = Driver::new(
    crate::BACKEND,
    &["postgres", "postgresql"],
    connect,
    crate::capabilities,
)
.with_url_forms(
    "postgres://[user[:password]@]host[:port]/database\
     [?schema=S&sslmode=verify-full&sslrootcert=PATH&sslcert=PATH&sslkey=PATH]
    postgresql:// too; tables in schema S (default distsync)",
);

fn connect(url: &str) -> BoxFuture<'_, Result<Coordinator>> {
    Box::pin(async move { crate::backend(url).await.map(Coordinator::new) })
}
