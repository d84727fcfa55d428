//! Rate limiter cases: the GCRA bound holds under contention from several clients and
//! across a partition of one of them.
//!
//! The bound: a limiter of `N` permits per `period` in bursts of `B` grants at most
//! `B + ⌊(t1 − t0) / T⌋` permits in any window `[t0, t1]` of the store's time, with
//! `T = period / N`. The store decides every request between the client's first send
//! and its last reply, so the client's span of the run bounds the store's window
//! (clock rates, not offsets, matter, and they agree to parts per million).
//!
//! No client clock enters a decision (see `distsync_core::rate_limiter`): that skewed
//! client clocks cannot cheat is structural, not measured here. It shows in that the
//! clients of a case share no clock with the store but the store's own answers.

use std::sync::Arc;
use std::time::Duration;

use distsync_core::rate_limiter::{Admission, Rate, RateLimiter};
use distsync_core::{Backend, Error};
use tokio::time::Instant;

use super::{boxed, SURVIVES};
use crate::case::{Case, Claim, Group, Need};
use crate::check::{
    eventually, proxied_client, violated, within, Bounded, Check, Context, Holds, Task, LONG,
    PROMPT,
};
use crate::faults::{Hook, PartitionMode, Partitioned, PrivateServer};
use crate::harness::Harness;

/// The rate limiter cases, in matrix order.
pub(super) const CASES: &[Case] = &[
    Case {
        id: "rate_limiter_contention",
        group: Group::RateLimiter,
        guarantee: "at most burst + N·elapsed/period grants from several clients; another rate \
                    or more than the burst is a typed error",
        needs: &[Need::RateLimiter],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(contention(h)),
    },
    Case {
        id: "rate_limiter_partition",
        group: Group::RateLimiter,
        guarantee: "the bound holds while one client is cut off (connections reset) and after \
                    it comes back",
        needs: &[Need::RateLimiter],
        claim: Claim::Offered,
        hooks: &[Hook::Partition],
        run: |h| boxed(partition(h)),
    },
    Case {
        id: "rate_limiter_survives_restart",
        group: Group::RateLimiter,
        guarantee: "restart: a spent limiter stays spent (no fresh burst after the restart)",
        needs: &[Need::RateLimiter],
        claim: SURVIVES,
        hooks: &[Hook::PrivateServer],
        run: |h| boxed(survives_restart(h)),
    },
];

/// 10 permits per 200 ms (one every 20 ms), bursts of 5.
fn rate() -> Rate {
    Rate::new(10, Duration::from_millis(200))
        .and_then(|rate| rate.with_burst(5))
        .unwrap_or_else(|_| unreachable!("a valid constant rate"))
}

/// Clients of the contention case.
const CLIENTS: usize = 6;
/// How long the clients ask.
const WINDOW: Duration = Duration::from_millis(1200);
/// The bound on one request of a client that may be cut off: a second, as the other
/// cut-off cases give (a ZooKeeper decision is two writes and a read, on a loaded machine).
const CUT_CALL: Duration = Duration::from_millis(1000);
/// The bound on one request of a client that is not cut off: what tells a hung request
/// from a slow one. The rows promise the bound on grants, not a request's latency, and
/// the judge's floor on grants checks progress; a compare-and-set store whose six
/// clients race for each permit (NATS: a clock write, a listing and a compare, and a
/// re-read per lost race) takes several round trips per request, which a server
/// starved by a loaded machine stretches past a second without failing anything the
/// row promises.
const HEALTHY_CALL: Duration = PROMPT;

/// One client's tally.
#[derive(Default)]
struct Tally {
    granted: u64,
    /// Requests answered (granted or not): what could have been granted.
    answered: u64,
    failed: u64,
}

/// Asks `limiter` for one permit at a time until `until`; `tolerant`: errors and
/// replies slower than [`CUT_CALL`] are counted (a cut-off client's), not violations;
/// otherwise an error, or a reply slower than [`HEALTHY_CALL`], is one.
async fn ask(limiter: Arc<dyn RateLimiter>, until: Instant, tolerant: bool) -> Check<Tally> {
    let bound = if tolerant { CUT_CALL } else { HEALTHY_CALL };
    let mut tally = Tally::default();
    while Instant::now() < until {
        let reply = tokio::time::timeout(bound, limiter.try_acquire(1)).await;
        match reply {
            Ok(Ok(admission)) if admission.is_granted() => {
                tally.granted += 1;
                tally.answered += 1;
            }
            // A denied client asks again when its answer says the next permit falls due
            // (at most one interval later), as `acquire` does: every client wakes for the
            // same permit, which is the contention the case wants, and a store whose
            // decision is a durable write (ZooKeeper's clock) is not flooded with writes
            // that only answer "not yet".
            Ok(Ok(admission)) => {
                tally.answered += 1;
                let due = admission.retry_after().unwrap_or(Duration::ZERO);
                let interval = rate().emission_interval();
                tokio::time::sleep(due.clamp(Duration::from_millis(1), interval)).await;
            }
            Ok(Err(_)) | Err(_) if tolerant => {
                tally.failed += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok(Err(error)) => return Err(error).ctx("asking for a permit"),
            Err(_) => return violated(format!("a request took longer than {bound:?}")),
        }
    }
    Ok(tally)
}

/// The GCRA bound for `span`, and a floor a working limiter reaches: half of what was
/// both allowed and asked (`answered` requests: a client slowed down by a loaded
/// machine asks less often than permits fall due, and cannot be granted more than it
/// asked).
fn bound(span: Duration, answered: u64) -> (u64, u64) {
    let rate = rate();
    let intervals = span.as_micros() / u128::from(rate.emission_interval_micros());
    let most = u64::from(rate.burst()) + u64::try_from(intervals).unwrap_or(u64::MAX);
    (most, most.min(answered) / 2)
}

fn judge(granted: u64, answered: u64, span: Duration, detail: String) -> Check {
    let (most, least) = bound(span, answered);
    if granted > most {
        return violated(format!(
            "{granted} permits granted in {span:?}; the bound is {most} ({detail})"
        ));
    }
    if granted < least {
        return violated(format!(
            "only {granted} permits granted in {span:?} of {most} allowed, to \
             {answered} answered requests: the limiter refuses what is due ({detail})"
        ));
    }
    Ok(Holds::figure(
        format!("{granted}/{most}"),
        format!("{granted} grants in {span:?}, bound {most}; {detail}"),
    ))
}

fn limiter(backend: &dyn Backend, h: &Harness, rate: Rate) -> Check<Arc<dyn RateLimiter>> {
    named_limiter(backend, h, "limiter", rate)
}

/// A handle on the case's limiter `label` at `rate`.
fn named_limiter(
    backend: &dyn Backend,
    h: &Harness,
    label: &str,
    rate: Rate,
) -> Check<Arc<dyn RateLimiter>> {
    let name = h.name(label).ctx("naming the limiter")?;
    Ok(Arc::from(
        backend
            .rate_limiter(name, rate)
            .ctx("making a rate limiter")?,
    ))
}

/// Several clients ask at once; the grants stay within the bound. A client naming
/// another rate, or more permits than the burst, gets `InvalidArgument`.
async fn contention(h: Harness) -> Check {
    let first = limiter(h.backend().as_ref(), &h, rate())?;
    let start = Instant::now();
    let until = start + WINDOW;
    let mut tasks: Vec<Task<Tally>> = (0..CLIENTS)
        .map(|i| {
            let handle = limiter(h.backend().as_ref(), &h, rate());
            Task::spawn(format!("client {i}"), async move {
                ask(handle?, until, false).await
            })
        })
        .collect();
    // Another rate is refused while the limiter is live (its TAT in the future),
    // asked amid the contention, on a limiter of its own that one grant keeps live for
    // an hour. The contended limiter's TAT is at most a burst (100 ms) ahead: a request
    // landing after the clients stalled that long finds it idle, where the other rate
    // rightly takes over, and the clients' next requests are then the ones refused.
    tokio::time::sleep_until(start + WINDOW / 2).await;
    let hourly = Rate::new(1, Duration::from_secs(3600)).ctx("an hourly rate")?;
    let live = named_limiter(h.backend().as_ref(), &h, "live", hourly)?;
    match within(
        PROMPT,
        "taking the live limiter's one permit",
        live.try_acquire(1),
    )
    .await?
    {
        Admission::Granted => {}
        denied => {
            return violated(format!(
                "the first request to an idle limiter was answered {denied:?}, not a grant"
            ))
        }
    }
    let other = Rate::new(11, Duration::from_millis(200)).ctx("another rate")?;
    let disagreeing = named_limiter(h.backend().as_ref(), &h, "live", other)?;
    let answer = within(PROMPT, "asking at another rate", async {
        Ok(disagreeing.try_acquire(1).await)
    })
    .await?;
    let (mut granted, mut answered) = (0, 0);
    for task in &mut tasks {
        let tally = task.wait().await?;
        granted += tally.granted;
        answered += tally.answered;
    }
    let span = start.elapsed();
    match answer {
        Err(Error::InvalidArgument(_)) => {}
        other => {
            return violated(format!(
                "a client naming another rate of a live limiter got {other:?}, not \
                 InvalidArgument"
            ))
        }
    }
    match within(PROMPT, "asking beyond the burst", async {
        Ok(first.try_acquire(rate().burst() + 1).await)
    })
    .await?
    {
        Err(Error::InvalidArgument(_)) => {}
        other => {
            return violated(format!(
                "a request for more than the burst got {other:?}, not InvalidArgument"
            ))
        }
    }
    judge(granted, answered, span, format!("{CLIENTS} clients"))
}

/// A healthy client and one through the harness's proxy ask at once; the proxy client
/// is cut off (connections reset) for the middle third and comes back. Its requests
/// whose replies are lost may have been granted unseen: that only lowers the count,
/// and the bound must hold all the same.
async fn partition(h: Harness) -> Check {
    let cut: Box<dyn Partitioned> = proxied_client(
        h.faults(),
        h.backend().as_ref(),
        "",
        "the client to cut off",
    )
    .await?;
    let healthy = limiter(h.backend().as_ref(), &h, rate())?;
    let through_proxy = limiter(cut.backend().as_ref(), &h, rate())?;
    let start = Instant::now();
    let until = start + WINDOW;
    let mut steady = Task::spawn("the healthy client", ask(healthy, until, false));
    let mut cut_off = Task::spawn("the cut-off client", ask(through_proxy, until, true));
    tokio::time::sleep_until(start + WINDOW / 3).await;
    cut.set(PartitionMode::Reset);
    tokio::time::sleep_until(start + 2 * WINDOW / 3).await;
    cut.set(PartitionMode::Forward);
    let steady = steady.wait().await?;
    let cut_off = cut_off.wait().await?;
    let span = start.elapsed();
    judge(
        steady.granted + cut_off.granted,
        steady.answered + cut_off.answered,
        span,
        format!(
            "healthy client {} grants, cut-off client {} grants and {} failed requests",
            steady.granted, cut_off.granted, cut_off.failed
        ),
    )
}

/// A limiter of one permit a minute, spent before the server restarts, must still be
/// spent after it: a store that forgets the TAT grants a fresh burst (Redis without
/// persistence, which declares `survives_restart = false`).
async fn survives_restart(h: Harness) -> Check {
    let mut server: Box<dyn PrivateServer> = within(
        LONG,
        "starting a private server",
        h.faults().private_server(&**h.backend()),
    )
    .await?;
    let backend = within(PROMPT, "connecting to the private server", server.connect()).await?;
    let rate = Rate::new(1, Duration::from_secs(60)).ctx("one a minute")?;
    let before = limiter(backend.as_ref(), &h, rate)?;
    let first = before.try_acquire(1).bounded("taking the permit").await?;
    if !first.is_granted() {
        return violated(format!(
            "a fresh limiter refused its first permit: {first:?}"
        ));
    }
    within(LONG, "stopping the private server", server.stop()).await?;
    within(LONG, "starting the private server again", server.start()).await?;
    let after = limiter(backend.as_ref(), &h, rate)?;
    let admission = eventually(LONG, "asking after the restart", || {
        let after = Arc::clone(&after);
        async move { Ok(after.try_acquire(1).await.ok()) }
    })
    .await?;
    match admission.retry_after() {
        Some(wait) => Ok(Holds::new(format!(
            "the permit spent before the restart was still spent after it (due in {wait:?})"
        ))),
        None => violated(
            "a limiter spent before the restart granted a fresh permit after it: the store \
             forgot its state",
        ),
    }
}
