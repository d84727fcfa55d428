//! The rule a transaction lock (a lock held for the rest of the caller's database
//! transaction, as the SQL stores offer) checks before it locks.
//!
//! Such a lock is released when the transaction on the caller's connection commits or
//! rolls back; on a connection with no transaction open, the store would release it
//! with the statement that takes it, so the lock would protect nothing. Every store
//! refuses that case the same way, before sending anything.

use crate::error::{Error, Result};
use crate::name::Name;

/// Refuses to take the transaction lock `lock` on a connection where no transaction is
/// `open`.
///
/// ```
/// use distsync_core::raw::require_open_transaction;
/// use distsync_core::{Error, Name};
///
/// let nightly = Name::new("reports/nightly")?;
/// assert!(require_open_transaction(&nightly, true).is_ok());
/// let refused = require_open_transaction(&nightly, false).unwrap_err();
/// assert!(matches!(refused, Error::InvalidArgument(_)));
/// # Ok::<(), Error>(())
/// ```
///
/// # Errors
/// [`Error::InvalidArgument`] naming the lock when `open` is false.
pub fn require_open_transaction(lock: &Name, open: bool) -> Result<()> {
    if open {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "transaction lock {:?}: the connection has no transaction open",
        lock.as_str()
    )))
}
