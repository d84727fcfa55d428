//! Losing the leader of a three-member cluster (etcd's raft leader, a ZooKeeper
//! ensemble's leader) while 8 clients contend for one lock: never two holders, no lost
//! update of a counter guarded by the lock, and progress resumes once the remaining
//! members elect a new leader. The figure is the longest gap between two grants around
//! the loss (the stall). With the member still down, new sessions, locks and queue items
//! work too, and with it back, everything does.
//!
//! Sessions have a TTL of 10 s, so their renewals ride out about five seconds without an
//! answer. A contender whose session is lost replaces it, as an application would; the
//! loss is a violation unless the cluster went that long without a grant, or the machine
//! was that long starved of CPU (a renewal task that cannot run misses its deadline on
//! a serving cluster, which says nothing of the store).
//!
//! The member is stopped with `scripts/servers.sh stop-member N` (`zk-stop-member N`
//! for the ZooKeeper ensemble) and started again before the case ends, whatever
//! happens. A backend without a queue skips the enqueues with the member down, and
//! says so in the detail.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distsync_core::{Backend, Locker, Name, Queue, Session, SessionOptions};
use tokio::time::Instant;

use crate::check::{
    ensure, eventually, join_all, lock_vec, retry_transient, secs, violated, within, within_check,
    Bounded, Check, Context, CriticalSection, Holds, Task, LONG, PROMPT,
};
use crate::cpu_pressure::Sampler;
use crate::faults::Cluster;
use crate::harness::Harness;

/// Contenders, each with its own session.
const CONTENDERS: usize = 8;
/// Grants to see before the fault, and again after it.
const GRANTS: usize = 2 * CONTENDERS;
/// Rounds of new session, lock and enqueue while the member is down.
const ROUNDS_DOWN: usize = 10;
/// The session TTL of the contenders: long enough that a leader change fits in the
/// renewal window before the client-side deadline (from TTL/3 to TTL − TTL/5: 4.7 s
/// here), even on a loaded machine where the election and the first renewal after it
/// take a few seconds (4 s, leaving 2 s, lost sessions under CI load; 6 s lost one
/// contender's session once at load average 6.6).
const SESSION_RIDE_OUT: Duration = Duration::from_secs(10);
/// How long the cluster may take to elect a new leader and serve again.
const RECOVERY: Duration = Duration::from_secs(30);

/// The harness's cluster, and a backend connected to it (each for at most [`PROMPT`]).
pub(super) async fn connect_cluster(h: &Harness) -> Check<(Box<dyn Cluster>, Arc<dyn Backend>)> {
    let cluster = within(
        PROMPT,
        "finding the cluster",
        h.faults().cluster(&**h.backend()),
    )
    .await?;
    let backend = within(PROMPT, "connecting to the cluster", cluster.connect()).await?;
    Ok((cluster, backend))
}

/// The cluster's leader member (or the Sentinel group's primary), once it names one
/// (for at most [`PROMPT`]); `what` says which in evidence.
pub(super) async fn leader_of(cluster: &dyn Cluster, what: &str) -> Check<usize> {
    eventually(PROMPT, what, || async {
        cluster.leader().await.ctx("asking for the leader")
    })
    .await
}

/// A stopped leader member: started again by [`Restart::now`], or when dropped if the
/// case ends early.
pub(super) struct Restart<'a> {
    cluster: &'a dyn Cluster,
    member: Option<usize>,
}

impl<'a> Restart<'a> {
    /// Stops `leader`, the cluster's leader member (for at most [`LONG`]).
    pub(super) async fn stop_leader(cluster: &'a dyn Cluster, leader: usize) -> Check<Self> {
        let restart = Self {
            cluster,
            member: Some(leader),
        };
        within(
            LONG,
            format!("stopping member {leader}, the leader"),
            cluster.stop_member(leader),
        )
        .await?;
        Ok(restart)
    }

    /// Starts the stopped member again (for at most [`LONG`]).
    pub(super) async fn now(&mut self) -> Check<()> {
        if let Some(member) = self.member.take() {
            within(
                LONG,
                format!("starting member {member} again"),
                self.cluster.start_member(member),
            )
            .await?;
        }
        Ok(())
    }
}

impl Drop for Restart<'_> {
    fn drop(&mut self) {
        let Some(member) = self.member.take() else {
            return;
        };
        // The case ended early (a violation, a timeout): bring the member back
        // before anyone else needs the cluster, blocking this thread if need be.
        let Some(args) = self.cluster.restart_args(member) else {
            return;
        };
        let script = crate::faults::cluster::servers_script();
        let started = std::process::Command::new("bash")
            .arg(script)
            .args(args)
            .status();
        if let Err(error) = started {
            tracing::error!(member, %error, "could not start a cluster member again");
        }
    }
}

/// [`retry_transient`] through a cluster's election, for at most [`LONG`] (`op` hanging
/// included): another error, or a transient one still there after [`LONG`], is a
/// violation.
async fn retrying<T, F, Fut>(transient: &AtomicUsize, doing: String, op: F) -> Check<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = distsync_core::Result<T>>,
{
    within_check(LONG, &doing, async {
        match retry_transient(transient, LONG, op).await {
            Ok(value) => Ok(value),
            Err(error) => violated(format!("{doing}: {error}")),
        }
    })
    .await
}

/// The case body (see the module docs).
pub(super) async fn leader_loss(h: Harness) -> Check {
    let (cluster, backend) = connect_cluster(&h).await?;
    // Renewals get from ttl/3 to ttl − ttl/5 (the client-side deadline) to land: with
    // the 2 s fault TTL that is under a second, less than etcd's 1 s election timeout
    // plus a loaded machine's delays, so a session could be lost to the fault itself.
    // SESSION_RIDE_OUT gives the renewals room to ride out one leader change.
    let ttl = SESSION_RIDE_OUT.max(backend.capabilities().min_session_ttl);
    let name = h.name("mutex").ctx("naming the lock")?;
    let clock = Instant::now();
    let pressure = Sampler::start(clock);
    let Contention {
        section,
        grants,
        stop,
        transient,
        mut tasks,
    } = start_contenders(&backend, ttl, &name).await?;
    let granted = || lock_vec(&grants).len();
    eventually(LONG, "contention before the fault", || async {
        Ok((granted() >= GRANTS).then_some(()))
    })
    .await?;
    let leader = leader_of(&*cluster, "a leader in the cluster").await?;
    let before = granted();
    let stopped = Instant::now();
    let mut restart = Restart::stop_leader(&*cluster, leader).await?;
    let new_leader = eventually(RECOVERY, "a new leader", || async {
        let now = cluster.leader().await.ctx("asking for the leader")?;
        Ok(now.filter(|member| *member != leader))
    })
    .await?;
    eventually(RECOVERY, "grants after the leader was lost", || async {
        Ok((granted() >= before + GRANTS).then_some(()))
    })
    .await?;
    let queue = work_with_a_member_down(&h, &*backend, ttl, &transient).await?;
    restart.now().await?;
    drop(restart);
    stop.store(true, Ordering::SeqCst);
    let contended = join_all(&mut tasks, LONG).await?;
    let rounds: usize = contended.iter().map(|c| c.rounds).sum();

    let overlaps = section.overlaps();
    let counted = section.counted();
    ensure!(
        overlaps == 0,
        "{overlaps} of {rounds} grants found another holder inside the critical section"
    );
    ensure!(
        counted == rounds as u64,
        "the counter reads {counted} after {rounds} increments under the lock: updates were lost"
    );
    let times = std::mem::take(&mut *lock_vec(&grants));
    let stall = times
        .windows(2)
        .filter(|pair| pair[1] >= stopped)
        .map(|pair| pair[1].saturating_duration_since(pair[0]))
        .max()
        .unwrap_or_default();
    let losses: Vec<(usize, Instant)> = contended
        .iter()
        .enumerate()
        .flat_map(|(who, c)| c.losses.iter().map(move |&at| (who, at)))
        .collect();
    let sessions_lost = judge_losses(&losses, ttl, stopped, stall, |from, to| {
        pressure.as_ref().map_or(Duration::ZERO, |pressure| {
            pressure.contention().within(
                from.saturating_duration_since(clock),
                to.saturating_duration_since(clock),
            )
        })
    })?;
    everything_works_back(&*backend, ttl, name, queue.as_deref()).await?;
    for c in contended {
        c.session
            .close()
            .bounded("closing a contender's session")
            .await?;
    }
    Ok(Holds::figure(
        format!("stalled {} when the leader was stopped", secs(stall)),
        format!(
            "member {leader} (the leader) stopped, member {new_leader} took over; {rounds} grants to \
             {CONTENDERS} contenders, never two holders, {sessions_lost} (TTL {ttl:?}, one member \
             of {} down); {} transient errors retried{}",
            cluster.members(),
            transient.load(Ordering::SeqCst),
            if queue.is_some() {
                ""
            } else {
                "; no queue offered: enqueues with the member down skipped"
            }
        ),
    ))
}

/// The contenders for the lock, each in a session of its own, and what they share.
struct Contention {
    section: Arc<CriticalSection>,
    grants: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
    transient: Arc<AtomicUsize>,
    tasks: Vec<Task<Contended>>,
}

/// What a contender did: its rounds, when each of its sessions was lost, and the
/// session it ended in.
struct Contended {
    rounds: usize,
    losses: Vec<Instant>,
    session: Session,
}

/// Opens [`CONTENDERS`] sessions and starts a contender for the lock `name` in each.
async fn start_contenders(
    backend: &Arc<dyn Backend>,
    ttl: Duration,
    name: &Name,
) -> Check<Contention> {
    let section = Arc::new(CriticalSection::default());
    let grants = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let transient = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..CONTENDERS {
        let session = within(
            PROMPT,
            format!("opening session {i}"),
            backend.session(SessionOptions::with_ttl(ttl)),
        )
        .await?;
        let contender = Contender {
            i,
            backend: Arc::clone(backend),
            ttl,
            name: name.clone(),
            section: section.clone(),
            grants: grants.clone(),
            stop: stop.clone(),
            transient: transient.clone(),
        };
        tasks.push(Task::spawn(
            format!("contender {i}"),
            contender.contend(session),
        ));
    }
    Ok(Contention {
        section,
        grants,
        stop,
        transient,
        tasks,
    })
}

/// One contender for the lock, and what it shares with the others.
struct Contender {
    i: usize,
    backend: Arc<dyn Backend>,
    ttl: Duration,
    name: Name,
    section: Arc<CriticalSection>,
    grants: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
    transient: Arc<AtomicUsize>,
}

impl Contender {
    /// Locks, passes the critical section and unlocks until `stop`. A session lost
    /// (to a leader change that outlasted what its renewals ride out, or to a starved
    /// machine) is noted and replaced, as an application would replace it: the case
    /// judges each loss against how long the cluster could not serve
    /// ([`judge_losses`]), and the critical section still sees every grant.
    async fn contend(self, mut session: Session) -> Check<Contended> {
        let i = self.i;
        let mut rounds = 0usize;
        let mut losses = Vec::new();
        let mut locker = self.locker(&session)?;
        while !self.stop.load(Ordering::SeqCst) {
            let locked = within_check(LONG, format!("contender {i} locking"), async {
                Ok(retry_transient(&self.transient, LONG, || locker.lock()).await)
            })
            .await?;
            let guard = match locked {
                Ok(guard) => guard,
                Err(error) if error.needs_new_session() => {
                    losses.push(Instant::now());
                    session = self.new_session().await?;
                    locker = self.locker(&session)?;
                    continue;
                }
                Err(error) => return violated(format!("contender {i} locking: {error}")),
            };
            self.section.pass().await;
            lock_vec(&self.grants).push(Instant::now());
            rounds += 1;
            match within_check(LONG, format!("contender {i} unlocking"), async {
                Ok(guard.unlock().await)
            })
            .await?
            {
                Ok(()) => {}
                // The key stays with the session, whose next lock() finds it.
                Err(error) if error.is_transient() => {
                    self.transient.fetch_add(1, Ordering::SeqCst);
                }
                Err(error) if error.needs_new_session() => {
                    losses.push(Instant::now());
                    session = self.new_session().await?;
                    locker = self.locker(&session)?;
                }
                Err(error) => return violated(format!("contender {i} unlocking: {error}")),
            }
        }
        Ok(Contended {
            rounds,
            losses,
            session,
        })
    }

    fn locker(&self, session: &Session) -> Check<Box<dyn Locker>> {
        self.backend
            .locker(session, self.name.clone())
            .ctx("making a locker")
    }

    /// A session in place of a lost one, retried through the cluster's election.
    async fn new_session(&self) -> Check<Session> {
        retrying(
            &self.transient,
            format!("contender {} opening a new session", self.i),
            || self.backend.session(SessionOptions::with_ttl(self.ttl)),
        )
        .await
    }
}

/// Fails unless every lost session is explained by the fault: how long a session's
/// renewals can go unanswered before its client-side deadline (from a third of the TTL
/// to the TTL less a fifth: the ride-out) must be less than how long the cluster could
/// not grant since the leader was stopped (`stall`) plus how long the machine's runnable
/// tasks waited for a CPU before the loss (a starved renewal task misses its deadline
/// on a serving cluster). A session lost before the fault, or on a cluster that served
/// again within the ride-out on a machine with CPU to spare, is a violation.
fn judge_losses(
    losses: &[(usize, Instant)],
    ttl: Duration,
    stopped: Instant,
    stall: Duration,
    starved: impl Fn(Instant, Instant) -> Duration,
) -> Check<String> {
    let ride_out = crate::cpu_pressure::ride_out(ttl);
    for &(who, at) in losses {
        let since = at.checked_sub(ttl).unwrap_or(at);
        let starved = starved(since, at);
        let outage = if at >= stopped { stall } else { Duration::ZERO };
        ensure!(
            outage + starved >= ride_out,
            "the session of contender {who} (TTL {ttl:?}) was lost {} the leader was stopped, \
             though the cluster went at most {} without a grant and the machine was starved {} \
             (a session rides out {})",
            if at >= stopped { "after" } else { "before" },
            secs(outage),
            secs(starved),
            secs(ride_out)
        );
    }
    Ok(if losses.is_empty() {
        "no session lost".to_owned()
    } else {
        format!(
            "{} session(s) lost and replaced, each after the cluster could not grant for {} and \
             the machine starved, past the {} a session rides out",
            losses.len(),
            secs(stall),
            secs(ride_out)
        )
    })
}

/// New sessions, locks and queue items while the member is still down (requests
/// balanced to it are retried on the others); no queue items on a backend that
/// offers no queue. Returns the queue, where there is one.
async fn work_with_a_member_down(
    h: &Harness,
    backend: &dyn Backend,
    ttl: Duration,
    transient: &AtomicUsize,
) -> Check<Option<Box<dyn Queue>>> {
    let queue = if backend.capabilities().queue {
        Some(
            backend
                .queue(h.name("jobs").ctx("naming the queue")?)
                .ctx("making a queue")?,
        )
    } else {
        None
    };
    let probe = h.name("probe").ctx("naming the probe lock")?;
    for round in 0..ROUNDS_DOWN {
        let session = retrying(
            transient,
            format!("opening a session with a member down (round {round})"),
            || backend.session(SessionOptions::with_ttl(ttl)),
        )
        .await?;
        let locker = backend
            .locker(&session, probe.clone())
            .ctx("making a locker")?;
        let guard = retrying(
            transient,
            format!("locking with a member down (round {round})"),
            || locker.lock(),
        )
        .await?;
        guard.unlock().bounded("unlocking").await?;
        // Not retried: a retry after an enqueue that was applied would duplicate it.
        if let Some(queue) = &queue {
            within(
                PROMPT,
                "enqueueing with a member down",
                queue.enqueue(round.to_string()),
            )
            .await?;
        }
        session.close().bounded("closing a session").await?;
    }
    Ok(queue)
}

/// Everything works with all members back: a session, the lock, and the items
/// enqueued with the member down, in order.
async fn everything_works_back(
    backend: &dyn Backend,
    ttl: Duration,
    name: Name,
    queue: Option<&dyn Queue>,
) -> Check<()> {
    let session = within(
        PROMPT,
        "opening a session after the member is back",
        backend.session(SessionOptions::with_ttl(ttl)),
    )
    .await?;
    let guard = within(
        PROMPT,
        "locking after the member is back",
        backend
            .locker(&session, name)
            .ctx("making a locker")?
            .lock(),
    )
    .await?;
    guard.unlock().bounded("unlocking").await?;
    session.close().bounded("closing").await?;
    if let Some(queue) = queue {
        for round in 0..ROUNDS_DOWN {
            let item = within(PROMPT, "dequeueing", queue.dequeue()).await?;
            ensure!(
                item.as_ref() == round.to_string().as_bytes(),
                "item {round} enqueued with a member down came back as {item:?}"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::judge_losses;

    const TTL: Duration = Duration::from_secs(10);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn no_loss_holds() {
        let stopped = Instant::now();
        let judged = judge_losses(&[], TTL, stopped, secs(1), |_, _| Duration::ZERO);
        assert_eq!(judged.ok().as_deref(), Some("no session lost"));
    }

    #[test]
    fn a_loss_the_outage_or_the_starved_machine_explains_holds() {
        let stopped = Instant::now();
        let lost = stopped + secs(6);
        let outage = judge_losses(&[(3, lost)], TTL, stopped, secs(5), |_, _| Duration::ZERO);
        assert!(outage.is_ok(), "{outage:?}");
        let starved = judge_losses(&[(3, lost)], TTL, stopped, secs(1), |_, _| secs(4));
        assert!(starved.is_ok(), "{starved:?}");
    }

    #[test]
    fn a_loss_on_a_serving_cluster_with_cpu_to_spare_is_a_violation() {
        let stopped = Instant::now() + secs(20);
        let after = judge_losses(&[(2, stopped + secs(6))], TTL, stopped, secs(1), |_, _| {
            Duration::ZERO
        });
        assert!(after.is_err());
        // Before the fault the cluster's outage does not count, only the machine's.
        let before = judge_losses(&[(2, stopped - secs(6))], TTL, stopped, secs(9), |_, _| {
            secs(1)
        });
        assert!(before.is_err());
    }
}
