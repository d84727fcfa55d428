//! Cooperative revocation: a third party asks the holder to release
//! ([`Coordinator::request_release`](distsync_core::Coordinator::request_release)); the
//! holder sees it through
//! [`LockGuard::release_requested`](distsync_core::LockGuard::release_requested).

use std::time::Duration;

use distsync_core::revocation::RELEASE_REQUEST_POLL;
use distsync_core::{Coordinator, LockGuard, Session};
use tokio::time::Instant;

use crate::check::{ensure, ms, violated, within, Bounded, Check, Context, Holds, Task, PROMPT};
use crate::harness::Harness;

/// How long a holder may take to see a request: the portable protocol's poll
/// interval plus a prompt round trip.
fn seen_within() -> Duration {
    RELEASE_REQUEST_POLL + PROMPT
}

/// How long a holder that was not asked is watched to stay unasked: long enough for
/// several reads of the portable protocol's counter.
fn quiet_for(h: &Harness) -> Duration {
    h.settle().max(RELEASE_REQUEST_POLL * 4)
}

/// A session, a coordinator locker over it, and a guard from it.
async fn hold(h: &Harness, coordinator: &Coordinator, who: &str) -> Check<(Session, LockGuard)> {
    let name = h.key("mutex");
    let session = h
        .session()
        .set_up(format!("opening {who}'s session"))
        .await?;
    let locker = coordinator
        .locker(&session, &name)
        .ctx(format!("making {who}'s locker"))?;
    let guard = within(PROMPT, format!("{who} locking"), locker.lock()).await?;
    Ok((session, guard))
}

/// Checks that `guard`'s holder stays unasked for [`quiet_for`].
async fn stays_unasked(h: &Harness, guard: &LockGuard, who: &str, why: &str) -> Check<()> {
    let quiet = quiet_for(h);
    match tokio::time::timeout(quiet, guard.release_requested()).await {
        Err(_) => Ok(()),
        Ok(Ok(())) => violated(format!("{who} saw a release request although {why}")),
        Ok(Err(error)) => Err(error).ctx(format!("{who} watching for release requests")),
    }
}

/// A holds the lock, B waits. A third party asks for it back: the answer names A's
/// grant; A sees the request within the poll interval (plus a round trip); A releases
/// and B is granted with a strictly higher token.
pub(super) async fn request(h: Harness) -> Check {
    let coordinator = h.coordinator();
    let name = h.key("mutex");
    let (_a, held) = hold(&h, &coordinator, "A").await?;
    let requested = held.release_requested();
    let b = h.session().set_up("opening B's session").await?;
    let lb = coordinator.locker(&b, &name).ctx("making B's locker")?;
    let mut waiter = Task::spawn("waiter B", async move { lb.lock().await.ctx("B locking") });
    waiter
        .ensure_blocked(h.settle(), "A holds the lock")
        .await?;

    let asked_at = Instant::now();
    let Some(asked) = coordinator
        .request_release(&name)
        .bounded("a third party asking for the lock back")
        .await?
    else {
        return violated("request_release found nobody holding the lock A holds");
    };
    if let Some(token) = asked.token {
        ensure!(
            token == held.token(),
            "the request names token {token}; A's guard has {}",
            held.token()
        );
    }
    within(seen_within(), "A seeing the release request", requested).await?;
    let seen_after = asked_at.elapsed();
    ensure!(
        held.is_release_requested(),
        "A's release_requested() resolved but is_release_requested() says no"
    );
    let token = held.token();
    held.unlock().bounded("A unlocking").await?;
    let next = waiter.join(PROMPT).await?;
    ensure!(
        next.token() > token,
        "B's token {} is not above A's {token}",
        next.token()
    );
    next.unlock().bounded("B unlocking").await?;
    Ok(Holds::figure(
        format!("seen after {}", ms(seen_after)),
        "the request named A's grant; A saw it, released, and B was granted with a higher token",
    ))
}

/// A request while nobody holds the lock answers `None` and does not reach the next
/// holder A; a request for A does not reach B, who is granted after A released.
pub(super) async fn no_holder(h: Harness) -> Check {
    let coordinator = h.coordinator();
    let name = h.key("mutex");
    let nobody = coordinator
        .request_release(&name)
        .bounded("asking for a lock nobody holds")
        .await?;
    ensure!(
        nobody.is_none(),
        "a request for a lock nobody holds named a holder: {nobody:?}"
    );
    let (_a, held) = hold(&h, &coordinator, "A").await?;
    stays_unasked(
        &h,
        &held,
        "A",
        "the only request came before A held the lock",
    )
    .await?;
    let asked = coordinator
        .request_release(&name)
        .bounded("asking A for the lock")
        .await?;
    ensure!(asked.is_some(), "a request while A holds found nobody");
    within(
        seen_within(),
        "A seeing the release request",
        held.release_requested(),
    )
    .await?;
    held.unlock().bounded("A unlocking").await?;
    let (_b, next) = hold(&h, &coordinator, "B").await?;
    stays_unasked(&h, &next, "B", "the request was for A's hold, which ended").await?;
    next.unlock().bounded("B unlocking").await?;
    Ok(Holds::new(
        "a request with no holder named none and reached nobody; a request for A did not \
         reach the next holder",
    ))
}
