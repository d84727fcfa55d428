//! Holder crashes: a lock holder, or a leader, in a child process is killed with
//! SIGKILL (it releases nothing); the store must free what it held, and the next
//! grant's fencing token (term) must be higher. The figure is the time from the kill
//! to the next grant: about one session TTL where the store waits for the lease to
//! expire (etcd, Redis), at once where the holder's connection is its lease
//! (PostgreSQL).

use distsync_core::Bytes;
use tokio::time::Instant;

use super::contender::{Contender, Target};
use crate::check::{ensure, secs, violated, within, Bounded, Check, Context, Holds, Task, PROMPT};
use crate::faults::HoldKind;
use crate::harness::Harness;

/// A killed holder's lock (or permit) is granted to a waiter with a higher token.
pub(crate) async fn holder(h: Harness, target: Target) -> Check {
    let mut holder = h
        .spawn_holder(target.hold_kind(), target.suffix())
        .await
        .ctx("starting a holder in a child process")?;
    let session = h.session().bounded("opening the waiter's session").await?;
    let contender = Contender::new(&h, &session, target, true)
        .bounded("making the waiter's contender")
        .await?;
    if let Some(intruder) = within(
        PROMPT,
        "try_lock / try_acquire while the child holds",
        contender.try_acquire(),
    )
    .await?
    {
        return violated(format!(
            "{} was granted with token {} while {} held token {}",
            target.describe(),
            intruder.token(),
            holder.describe(),
            holder.token()
        ));
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
    holder.kill().await.ctx("killing the child")?;
    let limit = h.holder_ttl() * 3 + PROMPT;
    let (guard, granted_at, contender) = waiter.join(limit).await?;
    let took = granted_at.saturating_duration_since(killed);
    ensure!(
        guard.token() > holder.token(),
        "the next grant's token {} is not above the killed holder's {}",
        guard.token(),
        holder.token()
    );
    guard.unlock().bounded("releasing").await?;
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

/// A killed leader's election is won by the next candidate with a higher term, and
/// `leader()` then names the new leader.
pub(crate) async fn leader(h: Harness) -> Check {
    let mut holder = h
        .spawn_holder(HoldKind::Leadership, "election")
        .await
        .ctx("starting a leader in a child process")?;
    let name = h.name("election").ctx("naming the election")?;
    let session = h
        .session()
        .bounded("opening the candidate's session")
        .await?;
    let election = h
        .backend()
        .election(&session, name)
        .ctx("making an election")?;
    let current = within(PROMPT, "leader() while the child leads", election.leader()).await?;
    ensure!(
        current.as_ref().map(|leader| leader.term) == Some(holder.token()),
        "while {} leads with term {}, leader() says {current:?}",
        holder.describe(),
        holder.token()
    );
    let candidate = Task::spawn("the candidate", async move {
        let leadership = election
            .campaign(Bytes::from_static(b"next"))
            .await
            .ctx("the candidate campaigning")?;
        Ok((leadership, Instant::now(), election))
    });
    candidate
        .ensure_blocked(h.settle(), "the child leads")
        .await?;
    let mut candidate = candidate;
    let killed = Instant::now();
    holder.kill().await.ctx("killing the child")?;
    let limit = h.holder_ttl() * 3 + PROMPT;
    let (leadership, elected_at, election) = candidate.join(limit).await?;
    let took = elected_at.saturating_duration_since(killed);
    ensure!(
        leadership.term() > holder.token(),
        "the new leader's term {} is not above the killed leader's {}",
        leadership.term(),
        holder.token()
    );
    let now = within(PROMPT, "leader() after the election", election.leader()).await?;
    ensure!(
        now.as_ref().is_some_and(
            |leader| leader.value.as_ref() == b"next" && leader.term == leadership.term()
        ),
        "after the new leader (term {}) was elected, leader() says {now:?}",
        leadership.term()
    );
    leadership.resign().bounded("resigning").await?;
    Ok(Holds::figure(
        format!("new leader {} after SIGKILL", secs(took)),
        format!(
            "{} (term {}) was killed; the waiting candidate was elected with a higher term",
            holder.describe(),
            holder.token()
        ),
    ))
}
