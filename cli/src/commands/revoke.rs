//! `distsync revoke NAME`: ask the holder of the lock NAME to release it.
//!
//! Prints one line on standard output naming the hold asked:
//!
//! ```text
//! asked jobs/a token=17 key=distsync/jobs/a/694d7a3c1b2e0f01
//! ```
//!
//! `token` is `-` where the store does not record it. Nothing is taken away: the
//! holder decides when to release (a `distsync lock --revocable` holder sends its CMD
//! SIGTERM).

use crate::args::RevokeArgs;
use crate::context::Ctx;
use crate::exit::{self, Failure};
use crate::output::say;

/// Asks the holder to release and prints the hold asked.
///
/// # Errors
/// Exit code 1 (printing `not held NAME` on standard error) when nobody holds it, 2 on a
/// backend without release requests, 4 for a store error, 130 when interrupted (the
/// request may or may not have been made then).
pub(super) async fn run(ctx: &mut Ctx, args: RevokeArgs) -> Result<u8, Failure> {
    let coordinator = ctx.coordinator.clone();
    let Some(asked) = ctx
        .wait(coordinator.request_release(&args.name), None)
        .await?
    else {
        return Err(Failure::not_now(format!("not held {}", args.name)));
    };
    let token = asked
        .token
        .map_or_else(|| "-".to_owned(), |token| token.to_string());
    say!("asked {} token={token} key={}", asked.name, asked.key);
    Ok(exit::OK)
}
