//! The store's leader or primary killed (SIGKILL) under load: 8 clients contend for
//! one lock, another holds the leadership of an election, another enqueues items.
//! Across the failover: never two holders inside the critical section, lock tokens and
//! leadership terms only grow, every queue item whose enqueue was acknowledged is
//! still there, and a client whose session could not be renewed learns it (`lost()`,
//! or [`Error::SessionLost`]) and goes on with a new session. The figure is the
//! longest gap between two grants after the kill, and the sessions lost.
//!
//! Two faults:
//! * [`Fault::Leader`]: the raft leader of the etcd cluster ([`crate::Hook::Cluster`]),
//!   started again once a new leader serves.
//! * [`Fault::Primary`]: the primary of a Redis Sentinel group
//!   ([`crate::Hook::Failover`]), after its replica was paused for up to a second so
//!   that it lags (as a replica behind a slow link does): the Sentinels promote the
//!   lagging replica, and the old primary comes back as its replica. With replica
//!   acknowledgement (`wait_replicas=1`) nothing acknowledged can be lost; without it,
//!   what the old primary acknowledged during the lag is gone: the case measures it.
//!
//! The killed member is started again before the case ends, whatever happens.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distsync_core::{Backend, Error, SessionOptions};
use tokio::time::Instant;

use super::lock::lock_vec;
use crate::check::{
    eventually, join_all, secs, violated, within, Check, Context, Holds, Task, LONG, PROMPT,
};
use crate::harness::Harness;

/// Contenders for the lock, each with its own sessions.
const CONTENDERS: usize = 8;
/// Grants to see before the fault, and again after it.
const GRANTS: usize = 2 * CONTENDERS;
/// Session TTL: room for renewals to ride out a leader change.
const TTL: Duration = Duration::from_secs(4);
/// How long the store may take to serve again after the kill.
const RECOVERY: Duration = Duration::from_secs(40);
/// The longest the replica is paused before the primary is killed.
const LAG: Duration = Duration::from_secs(1);
/// Acknowledged operations to wait for while the replica lags (if the store
/// acknowledges any: with replica acknowledgement it does not).
const DURING_LAG: usize = 20;

/// What is killed.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Fault {
    /// The leader member of a replicated cluster.
    Leader,
    /// The primary of a Sentinel group after its replica lagged, with or without
    /// replica acknowledgement.
    Primary { acknowledged: bool },
}

/// Starts the killed member (and resumes a paused one) if the case ends early.
struct Restore {
    command: Vec<String>,
}

impl Drop for Restore {
    fn drop(&mut self) {
        if self.command.is_empty() {
            return;
        }
        let script = crate::faults::cluster::servers_script();
        for args in self.command.chunks(2) {
            if let Err(error) = std::process::Command::new("bash")
                .arg(&script)
                .args(args.iter().filter(|arg| !arg.is_empty()))
                .status()
            {
                tracing::error!(%error, ?args, "could not restore a killed member");
            }
        }
    }
}

#[derive(Default)]
struct Seen {
    overlaps: AtomicUsize,
    holders: AtomicUsize,
    sessions_lost: AtomicUsize,
    transient: AtomicUsize,
    tokens: Mutex<Vec<(u64, Instant)>>,
    terms: Mutex<Vec<u64>>,
    backwards: Mutex<Vec<String>>,
    acked: Mutex<Vec<String>>,
}

impl Seen {
    /// Records a token (a grant's or a term) in `list`, noting one that did not grow.
    fn grew(&self, what: &str, last: Option<u64>, now: u64) {
        if let Some(last) = last {
            if now <= last {
                lock_vec(&self.backwards).push(format!("{what} {now} after {last}"));
            }
        }
    }
}

/// Retries `op` on transient errors (counted) for at most [`LONG`]; another error is
/// returned.
async fn retry<T, F, Fut>(seen: &Seen, mut op: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let deadline = Instant::now() + LONG;
    loop {
        match op().await {
            Err(error) if error.is_transient() && Instant::now() < deadline => {
                seen.transient.fetch_add(1, Ordering::SeqCst);
                // A pause between attempts while the store elects or reconnects.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

/// The case body (see the module docs).
pub(crate) async fn failover(h: Harness, fault: Fault) -> Check {
    let cluster = within(
        PROMPT,
        "finding the cluster",
        h.faults().cluster(&**h.backend()),
    )
    .await?;
    let backend: Arc<dyn Backend> = match fault {
        Fault::Leader => within(PROMPT, "connecting", cluster.connect()).await?,
        Fault::Primary { acknowledged } => {
            let query = if acknowledged {
                "wait_replicas=1&wait_timeout=500"
            } else {
                "wait_replicas=0"
            };
            within(PROMPT, "connecting", cluster.connect_with(query)).await?
        }
    };
    let ttl = TTL.max(backend.capabilities().min_session_ttl);
    let lock = h.name("mutex").ctx("naming the lock")?;
    let queue = Arc::new(
        backend
            .queue(h.name("jobs").ctx("naming the queue")?)
            .ctx("a queue")?,
    );
    let election = h.name("leader").ctx("naming the election")?;
    let seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks: Vec<Task<()>> = Vec::new();
    for i in 0..CONTENDERS {
        let (backend, seen, stop, lock) =
            (backend.clone(), seen.clone(), stop.clone(), lock.clone());
        tasks.push(Task::spawn(format!("contender {i}"), async move {
            while !stop.load(Ordering::SeqCst) {
                let session = retry(&seen, || backend.session(SessionOptions::with_ttl(ttl)))
                    .await
                    .ctx("opening a session")?;
                let locker = backend.locker(&session, lock.clone()).ctx("a locker")?;
                while !stop.load(Ordering::SeqCst) {
                    let guard = match retry(&seen, || locker.lock()).await {
                        Ok(guard) => guard,
                        Err(Error::SessionLost) => break,
                        Err(error) => return violated(format!("contender {i} locking: {error}")),
                    };
                    if seen.holders.fetch_add(1, Ordering::SeqCst) != 0 {
                        seen.overlaps.fetch_add(1, Ordering::SeqCst);
                    }
                    {
                        let mut tokens = lock_vec(&seen.tokens);
                        let token = guard.token().0;
                        seen.grew("lock token", tokens.last().map(|(t, _)| *t), token);
                        tokens.push((token, Instant::now()));
                    }
                    tokio::task::yield_now().await;
                    seen.holders.fetch_sub(1, Ordering::SeqCst);
                    match guard.unlock().await {
                        Ok(()) => {}
                        Err(error)
                            if error.is_transient() || matches!(error, Error::SessionLost) =>
                        {
                            seen.transient.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(error) => return violated(format!("contender {i} unlocking: {error}")),
                    }
                }
                if session.is_lost() {
                    seen.sessions_lost.fetch_add(1, Ordering::SeqCst);
                }
                drop(session.close().await);
            }
            Ok(())
        }));
    }
    {
        let (backend, seen, stop) = (backend.clone(), seen.clone(), stop.clone());
        tasks.push(Task::spawn("leader", async move {
            while !stop.load(Ordering::SeqCst) {
                let session = retry(&seen, || backend.session(SessionOptions::with_ttl(ttl)))
                    .await
                    .ctx("opening the leader's session")?;
                let candidate = backend
                    .election(&session, election.clone())
                    .ctx("an election")?;
                let leadership = match retry(&seen, || candidate.campaign("leader".into())).await {
                    Ok(leadership) => leadership,
                    Err(Error::SessionLost) => continue,
                    Err(error) => return violated(format!("campaigning: {error}")),
                };
                {
                    let mut terms = lock_vec(&seen.terms);
                    seen.grew(
                        "leadership term",
                        terms.last().copied(),
                        leadership.term().0,
                    );
                    terms.push(leadership.term().0);
                }
                // Hold until the leadership is lost or the case ends.
                while !stop.load(Ordering::SeqCst) && !leadership.is_lost() {
                    tokio::select! {
                        () = leadership.lost() => {}
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
                if leadership.is_lost() {
                    seen.sessions_lost.fetch_add(1, Ordering::SeqCst);
                } else {
                    drop(leadership.resign().await);
                }
                drop(session.close().await);
            }
            Ok(())
        }));
    }
    {
        let (queue, seen, stop) = (queue.clone(), seen.clone(), stop.clone());
        tasks.push(Task::spawn("producer", async move {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let item = format!("item-{n}");
                n += 1;
                match queue.enqueue(item.clone().into()).await {
                    Ok(()) => lock_vec(&seen.acked).push(item),
                    // Not acknowledged: it may or may not be there.
                    Err(error) if error.is_transient() => {
                        seen.transient.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(error) => return violated(format!("enqueueing: {error}")),
                }
                // A steady trickle, not a flood.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(())
        }));
    }
    let granted = || lock_vec(&seen.tokens).len();
    let acked = || lock_vec(&seen.acked).len();
    eventually(LONG, "contention before the fault", || async {
        Ok((granted() >= GRANTS).then_some(()))
    })
    .await?;
    let leader = eventually(PROMPT, "a leader or primary", || async {
        cluster.leader().await.ctx("asking for the leader")
    })
    .await?;
    let mut restore = Restore {
        command: Vec::new(),
    };
    let lagged = if let Fault::Primary { .. } = fault {
        let replica = if leader == 1 { 2 } else { 1 };
        restore.command = vec!["sentinel-resume-replica".into(), String::new()];
        within(PROMPT, "pausing the replica", cluster.pause_member(replica)).await?;
        let (tokens, items) = (granted(), acked());
        let lag = Instant::now();
        // While the replica lags: what does the primary still acknowledge?
        let _ = tokio::time::timeout(
            LAG,
            eventually(LAG, "acknowledgements while the replica lags", || async {
                Ok((granted() + acked() >= tokens + items + DURING_LAG).then_some(()))
            }),
        )
        .await;
        Some((replica, granted() - tokens, acked() - items, lag.elapsed()))
    } else {
        None
    };
    let before = granted();
    let killed = Instant::now();
    restore.command.extend(match fault {
        Fault::Leader => ["start-member".to_owned(), leader.to_string()],
        Fault::Primary { .. } => ["sentinel-start-node".to_owned(), leader.to_string()],
    });
    within(
        LONG,
        format!("killing member {leader}"),
        cluster.kill_member(leader),
    )
    .await?;
    if let Some((replica, ..)) = lagged {
        within(
            PROMPT,
            "resuming the replica",
            cluster.resume_member(replica),
        )
        .await?;
    }
    let new_leader = eventually(RECOVERY, "a new leader or primary", || async {
        Ok(cluster
            .leader()
            .await
            .ok()
            .flatten()
            .filter(|member| *member != leader))
    })
    .await?;
    let took_over = killed.elapsed();
    within(
        LONG,
        format!("starting member {leader} again"),
        cluster.start_member(leader),
    )
    .await?;
    restore.command.clear();
    eventually(RECOVERY, "grants after the kill", || async {
        Ok((granted() >= before + GRANTS).then_some(()))
    })
    .await?;
    let first_after = lock_vec(&seen.tokens)
        .iter()
        .find(|(_, at)| *at >= killed)
        .map(|(_, at)| at.saturating_duration_since(killed));
    stop.store(true, Ordering::SeqCst);
    join_all(&mut tasks, LONG).await?;

    // Every acknowledged item must still be in the queue.
    let mut present = HashSet::new();
    loop {
        match retry(&seen, || queue.try_dequeue()).await {
            Ok(Some(item)) => {
                present.insert(String::from_utf8_lossy(&item).into_owned());
            }
            Ok(None) => break,
            Err(error) => return violated(format!("draining the queue: {error}")),
        }
    }
    let acked_items = std::mem::take(&mut *lock_vec(&seen.acked));
    let lost: Vec<&String> = acked_items
        .iter()
        .filter(|item| !present.contains(*item))
        .collect();
    let overlaps = seen.overlaps.load(Ordering::SeqCst);
    let backwards = std::mem::take(&mut *lock_vec(&seen.backwards));
    let grants = granted();
    let sessions_lost = seen.sessions_lost.load(Ordering::SeqCst);
    let mut broken = Vec::new();
    if overlaps > 0 {
        broken.push(format!(
            "{overlaps} grants found another holder in the critical section"
        ));
    }
    if !backwards.is_empty() {
        broken.push(format!(
            "{} tokens did not grow across the failover (first: {})",
            backwards.len(),
            backwards[0]
        ));
    }
    if !lost.is_empty() {
        broken.push(format!(
            "{} of {} acknowledged queue items lost (first: {})",
            lost.len(),
            acked_items.len(),
            lost[0]
        ));
    }
    let lag = match lagged {
        Some((_, grants, items, took)) => format!(
            "; while the replica lagged ({}): {grants} grants and {items} enqueues acknowledged",
            secs(took)
        ),
        None => String::new(),
    };
    let detail = format!(
        "member {leader} killed, member {new_leader} took over after {}; {grants} grants, \
         {} items acknowledged, {sessions_lost} sessions or leaderships lost and renewed, \
         {} transient errors retried{lag}",
        secs(took_over),
        acked_items.len(),
        seen.transient.load(Ordering::SeqCst)
    );
    if !broken.is_empty() {
        return violated(format!("{}; {detail}", broken.join("; ")));
    }
    Ok(Holds::figure(
        format!(
            "next grant {} after the kill",
            first_after.map_or_else(|| "?".to_owned(), secs)
        ),
        detail,
    ))
}
