//! The waiting loop of every blocking call: look at the store, wait for a change when
//! the answer is "not yet", and look again.
//!
//! The riding out of transient store failures is core's, as its retry policy says of
//! waits ([`RetryPolicy::wait`]): pauses from 10 ms growing to 1 s, no give-up of its
//! own, the outage logged once when it starts and once when it ends, and
//! [`Error::SessionLost`] when the session the wait is held through is lost. Here only
//! the "not yet" is added: each answer of the store is a success for the policy (its
//! pauses start over), and the loop looks again.

use std::future::Future;

use distsync_core::error::Result;
use distsync_core::raw::RetryPolicy;
#[cfg(doc)]
use distsync_core::Error;
use tokio_util::sync::CancellationToken;

/// Runs `attempt` (one look at the store, which waits for a change itself when it
/// answers `None`) until it answers `Some`, riding out transient failures as core's
/// policy says of waits; `lost` is the lost token of the session the wait is held
/// through, if any. `what` names the wait in the outage's log lines.
///
/// # Errors
/// [`Error::SessionLost`] once `lost` fires while the store is failing; the error of
/// `attempt` when it is not transient.
///
/// # Cancel safety
/// Cancel-safe: dropping the future drops the attempt in flight, which is how a caller
/// bounds the wait.
pub(crate) async fn until<T, F, Fut>(
    what: &'static str,
    lost: Option<&CancellationToken>,
    mut attempt: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    loop {
        if let Some(value) = RetryPolicy::default()
            .wait(what, lost, &mut attempt)
            .await?
        {
            return Ok(value);
        }
    }
}
