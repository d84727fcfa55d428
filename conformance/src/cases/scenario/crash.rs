//! Holder crashes: a lock holder, or a semaphore permit holder, in a child process is
//! killed with SIGKILL (it releases nothing); the store must free what it held, and
//! the next grant's fencing token must be higher. The figure is the time from the kill
//! to the next grant: about one session TTL where the store waits for the lease to
//! expire (etcd, Redis), at once where the holder's connection is its lease
//! (PostgreSQL).

use tokio::time::Instant;

use super::contender::{Contender, Target};
use crate::check::{
    ensure, secs, violated, within, Bounded, Check, Context, Fail, Holds, Task, PROMPT,
};
use crate::cpu_pressure::{join_live, Sampler};
use crate::harness::Harness;

/// A killed holder's lock (or permit) is granted to a waiter with a higher token.
pub(crate) async fn holder(h: Harness, target: Target) -> Check {
    let mut holder = h
        .spawn_holder(target.hold_kind(), target.suffix())
        .await
        .set_up_ctx("starting a holder in a child process")?;
    let session = h.session().set_up("opening the waiter's session").await?;
    let contender = Contender::new(&h, &session, target, true)
        .bounded("making the waiter's contender")
        .await?;
    // The child's deadline by its own clock is at least `asked + left`.
    let asked = Instant::now();
    let left = holder
        .lease_left()
        .bounded("asking the holder for its lease")
        .await?;
    if let Some(intruder) = within(
        PROMPT,
        "try_lock / try_acquire while the child holds",
        contender.try_acquire(),
    )
    .await?
    {
        let granted = Instant::now();
        let evidence = format!(
            "{} was granted with token {} while {} held token {}",
            target.describe(),
            intruder.token(),
            holder.describe(),
            holder.token()
        );
        // A grant before the child's own deadline took a live hold. One after it took a
        // hold whose renewals the machine starved before the fault (the child's lease
        // had run out by its clock): the set-up lapsed, and starts again.
        let left_now = holder
            .lease_left()
            .bounded("asking the holder for its lease after the grant")
            .await?;
        return match (left, left_now) {
            (Some(left), Some(left_now)) if granted >= asked + left && left_now.is_zero() => {
                Err(Fail::SetUpLapsed(format!(
                    "{evidence}, whose lease had run out by its own clock (it had {} left \
                     when asked, {} before the grant, and none after it): its renewals \
                     starved before the kill",
                    secs(left),
                    secs(granted.saturating_duration_since(asked))
                )))
            }
            _ => violated(evidence),
        };
    }
    let waiter = Task::spawn("the waiter", async move {
        let guard = contender.acquire().await.ctx("the waiter acquiring")?;
        Ok((guard, Instant::now(), contender))
    });
    waiter
        .ensure_blocked(h.settle(), "the child holds what the waiter waits for")
        .await?;
    let mut waiter = waiter;
    let killed = Instant::now();
    // A liveness bound: the time the machine's runnable tasks waited for a CPU meanwhile
    // (the servers expiring the lease, the waiter woken) is added to it.
    let pressure = Sampler::start(killed);
    holder.kill().await.ctx("killing the child")?;
    let limit = h.holder_ttl() * 3 + PROMPT;
    let (guard, granted_at, contender) =
        join_live(&mut waiter, killed, limit, pressure.as_ref()).await?;
    let took = granted_at.saturating_duration_since(killed);
    ensure!(
        guard.token() > holder.token(),
        "the next grant's token {} is not above the killed holder's {}",
        guard.token(),
        holder.token()
    );
    guard.release().bounded("releasing").await?;
    drop(contender);
    drop(session);
    Ok(Holds::figure(
        format!("re-acquired {} after SIGKILL", secs(took)),
        format!(
            "{} (token {}) was killed; a waiter got {} with a higher token; holder TTL {:?}",
            holder.describe(),
            holder.token(),
            target.describe(),
            h.holder_ttl()
        ),
    ))
}
