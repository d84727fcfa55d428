//! A session whose id was taken over in the store by another owner (what a restart
//! that forgets sessions and then hands the same id out again produces; random ids
//! make it all but impossible, so the hook forces it): the old session must not renew
//! the newcomer's record as its own, must learn `lost()` at its next renewal, its lock
//! guard too, and it must make no new grant through the newcomer's record.

use distsync_core::Error;

use crate::check::{ensure, secs, violated, within, Bounded, Check, Context, Holds, PROMPT};
use crate::harness::Harness;

/// The case body (see the module docs). The record the hook wrote in the session's
/// place is revoked at the end, whatever the verdict, so that it does not outlive the
/// case (the hook gives it a TTL of minutes).
pub(super) async fn session_id_taken_over(h: Harness) -> Check {
    let session = h.session().set_up("opening the session").await?;
    let id = session.id();
    let verdict = taken_over(&h, session).await;
    // Ends the newcomer's record and releases what the old session's registry lists:
    // the store's own revoke, as an operator would.
    let _ = within(PROMPT, "revoking the record that took the id over", async {
        h.backend().revoke_session(id).await
    })
    .await;
    verdict
}

/// The checks, on the session `session`.
async fn taken_over(h: &Harness, session: distsync_core::Session) -> Check {
    let ttl = h.session_ttl();
    let locker = h
        .backend()
        .locker(&session, h.name("mutex").ctx("naming the lock")?)
        .ctx("making a locker")?;
    let guard = locker.lock().bounded("locking").await?;
    let done = within(
        PROMPT,
        "taking the session's id over",
        h.faults().take_over_session(&**h.backend(), session.id()),
    )
    .await?;
    let taken = tokio::time::Instant::now();
    // One renewal interval (TTL/3) plus the time to notice: within a TTL.
    within(ttl + PROMPT, "the old session's lost()", async {
        session.lost().await;
        Ok(())
    })
    .await?;
    let noticed = taken.elapsed();
    ensure!(
        guard.is_lost(),
        "the session reported lost() but its lock guard does not"
    );
    let other = h
        .backend()
        .locker(&session, h.name("other").ctx("naming a second lock")?)
        .ctx("making a second locker")?;
    match within(PROMPT, "a try_lock through the lost session", async {
        Ok(other.try_lock().await)
    })
    .await?
    {
        Err(Error::SessionLost) => {}
        Ok(Some(granted)) => {
            return violated(format!(
                "a session whose id was taken over was granted a new lock (token {})",
                granted.token()
            ))
        }
        other => {
            return violated(format!(
                "a try_lock through a session whose id was taken over answered {other:?}, not SessionLost"
            ))
        }
    }
    Ok(Holds::figure(
        format!("lost() {} after the takeover", secs(noticed)),
        format!("{done}; session TTL {ttl:?}; new grants refused with SessionLost"),
    ))
}
