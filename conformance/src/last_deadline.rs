//! The last client-side deadline a session promised before it was lost.
//!
//! A holder that keeps its promise stops counting its hold at its session's deadline
//! (`valid_until`), however late its runtime runs the loss afterwards; on a starved
//! runner that run can come after the next owner's grant. A case that stamps a hold's
//! end therefore stamps it no later than the last deadline the session gave, which this
//! follows.

use distsync_core::session::HealthWatch;

/// Follows `health` until the session is lost, keeping `deadline` the latest
/// `valid_until` it reported: once it returns, `deadline` is the one that passed (or
/// the one in force when the loss came earlier).
///
/// Cancel-safe: `deadline` holds the latest value seen whenever the future is dropped.
pub(crate) async fn follow(health: &mut HealthWatch, deadline: &mut Option<std::time::Instant>) {
    while let Some(until) = health.changed().await.valid_until() {
        *deadline = Some(until);
    }
}
