//! Breaking a lock ([`Backend::break_lock`](distsync_core::Backend::break_lock)):
//! ZooKeeper ends the hold, not the holder's session.
//!
//! A ZooKeeper session can be closed only by a client that has its password, which
//! only its owner has, so the break cannot end another process's session as the other
//! backends' breaks do. It deletes the holder's contender node instead, which is just
//! as safe for the resource the lock protects:
//!
//! - the holder's guard watches its own node, so it sees `lost()` as soon as the
//!   deletion's notification reaches it;
//! - its guarded writes check the node in the same `multi` as the write, so they are
//!   refused from the deletion on;
//! - the next contender, now lowest, was created after the holder's node, so its token
//!   (creation zxid) is higher.
//! - an unfair holder that came from its wait line keeps a place there, which the
//!   waiter behind it watches: the break deletes that place too, so the line moves on
//!   at once, not when the holder's client notices (see `src/unfair_lock.rs`).
//!
//! Unlike a session's end, the break ends this hold only: the holder's session and its
//! other holds go on. A Curator (Java) holder is not told, as `InterProcessMutex` does
//! not watch its own node: it goes on believing it holds, which is what fencing tokens
//! are for.
//!
//! "Since when" is measured on the server's clock: the holder node's `ctime` against
//! the modification time of a write to `<root>/clock`, both the leader's clock.

use std::time::Duration;

use distsync_core::{BrokenHold, Name, Result};

use crate::direct::request_found;
use crate::queue::nodes::server_now;
use crate::rate_limiter::clock_path;
use crate::store::Shared;

/// Breaks the lock `name`: deletes its holder's node and returns the hold it ended;
/// `None` when nobody holds it, or when the hold read ended before the deletion (it
/// was released meanwhile, and its successor is not broken).
pub(crate) async fn break_lock(shared: &Shared, name: &Name) -> Result<Option<BrokenHold>> {
    let report = crate::status::status(shared, name.as_str()).await?;
    let Some(mut hold) = BrokenHold::holder_in(&report, name)? else {
        return Ok(None);
    };
    let client = shared.connect(crate::MIN_SESSION_TTL * 4).await?;
    let Some(stat) = request_found(shared, client.check_stat(&hold.key))
        .await?
        .flatten()
    else {
        return Ok(None);
    };
    let now = server_now(shared, &client, &clock_path(shared)).await?;
    let deleted = request_found(shared, client.delete(&hold.key, Some(stat.version))).await?;
    if deleted.is_none() {
        return Ok(None);
    }
    if let Some((_, child)) = hold.key.rsplit_once('/') {
        // The hold is broken already: a place left behind delays the line, no more (the
        // holder's client deletes it as it notices).
        if let Err(error) = crate::unfair_lock::break_place(shared, &client, name, child).await {
            tracing::warn!(node = %hold.key, %error, "could not delete the broken holder's wait-line place");
        }
    }
    let held_ms = u64::try_from(now.saturating_sub(stat.ctime)).unwrap_or(0);
    hold.held_for = Some(Duration::from_millis(held_ms));
    tracing::debug!(node = %hold.key, "deleted the lock holder's node");
    Ok(Some(hold))
}
