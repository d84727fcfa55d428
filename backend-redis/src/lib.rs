//! distsync backend for redis (filled by its own issue).

use distsync_core::{Error, Result};

/// Connects to the store named by `url`.
///
/// # Errors
/// Until this backend lands: [`Error::Unsupported`].
pub async fn connect(url: &str) -> Result<distsync_core::Coordinator> {
    let _ = url;
    Err(Error::unsupported("redis", "connect"))
}
