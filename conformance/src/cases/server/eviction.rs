//! A store that may evict keys under memory pressure (Redis with a `maxmemory-policy`
//! other than `noeviction`) could drop a waiter line, a grant or a fencing counter,
//! and then grant a lock beside its holder or hand out a token twice. Such a server is
//! refused at connect with a typed error that names the setting and the fix, unless
//! the URL opts in, in which case the backend declares the guarantees it then loses
//! (fencing and FIFO waiters) and still works.

use distsync_core::{Error, SessionOptions};

use crate::check::{ensure, violated, within, Bounded, Check, Context, Holds, LONG, PROMPT};
use crate::harness::Harness;

/// The case body (see the module docs).
pub(super) async fn evicting_server_refused(h: Harness) -> Check {
    let server = within(
        LONG,
        "starting a server that evicts keys",
        h.faults().evicting_server(&**h.backend()),
    )
    .await?;
    let refusal = match within(PROMPT, "connecting without the opt-in", async {
        Ok(server.connect_strict().await)
    })
    .await?
    {
        Ok(_) => {
            return violated(format!(
                "a server running maxmemory-policy {} was accepted without the opt-in",
                server.policy
            ))
        }
        Err(Error::InvalidArgument(message)) => message,
        Err(other) => {
            return violated(format!(
                "the refusal of an evicting server is not a typed InvalidArgument: {other:?}"
            ))
        }
    };
    ensure!(
        refusal.contains(&server.policy) && refusal.contains("noeviction"),
        "the refusal does not name the policy {} and the fix (noeviction): {refusal}",
        server.policy
    );
    let opted_in = within(
        PROMPT,
        "connecting with the opt-in",
        server.connect_opted_in(),
    )
    .await?;
    let declared = opted_in.capabilities();
    let full = h.backend().capabilities();
    ensure!(
        !declared.fencing && !declared.fifo_waiters,
        "with eviction allowed, fencing ({}) and FIFO waiters ({}) are still declared",
        declared.fencing,
        declared.fifo_waiters
    );
    let ttl = declared
        .min_session_ttl
        .max(std::time::Duration::from_secs(2));
    let session = opted_in
        .session(SessionOptions::with_ttl(ttl))
        .bounded("opening a session with eviction allowed")
        .await?;
    let name = h.name("mutex").ctx("naming the lock")?;
    let locker = opted_in.locker(&session, name).ctx("making a locker")?;
    let guard = locker
        .lock()
        .bounded("locking with eviction allowed")
        .await?;
    guard.unlock().bounded("unlocking").await?;
    session.close().bounded("closing the session").await?;
    Ok(Holds::new(format!(
        "refused: \"{refusal}\"; opted in: fencing and FIFO waiters no longer declared (they were: {}, {})",
        full.fencing, full.fifo_waiters
    )))
}
