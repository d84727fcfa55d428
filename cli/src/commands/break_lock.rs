//! `distsync break NAME`: end another process's hold of the lock NAME.
//!
//! Prints one line on standard output naming the hold it ended:
//!
//! ```text
//! broke jobs/a session=694d7a3c1b2e0f01 token=17 held_for=1520ms since=1764041230.512 key=distsync/jobs/a/694…
//! ```
//!
//! `held_for` (and `since`, the Unix time in seconds it was taken, on this machine's
//! clock) are `-` where the store does not record when a hold was taken. The break ends
//! the holder's whole session in the store, so every hold of that session is lost.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::args::BreakArgs;
use crate::context::Ctx;
use crate::exit::{self, Failure};
use crate::output::say;

/// Breaks the lock and prints who held it.
///
/// # Errors
/// Exit code 1 (printing `not held NAME` on standard error) when nobody holds it, 2 on
/// a backend that cannot break a hold (ZooKeeper), 4 for a store error, 130 when
/// interrupted (the holder's session may or may not have been ended then).
pub(super) async fn run(ctx: &mut Ctx, args: BreakArgs) -> Result<u8, Failure> {
    let coordinator = ctx.coordinator.clone();
    let Some(hold) = ctx.wait(coordinator.break_lock(&args.name), None).await? else {
        return Err(Failure::not_now(format!("not held {}", args.name)));
    };
    let token = hold
        .token
        .map_or_else(|| "-".to_owned(), |token| token.to_string());
    let held_for = hold
        .held_for
        .map_or_else(|| "-".to_owned(), |age| format!("{}ms", age.as_millis()));
    let since = hold
        .held_for
        .and_then(|age| SystemTime::now().checked_sub(age))
        .and_then(|since| since.duration_since(UNIX_EPOCH).ok())
        .map_or_else(
            || "-".to_owned(),
            |since| format!("{}.{:03}", since.as_secs(), since.subsec_millis()),
        );
    say!(
        "broke {} session={} token={token} held_for={held_for} since={since} key={}",
        hold.name,
        hold.session,
        hold.key
    );
    Ok(exit::OK)
}
