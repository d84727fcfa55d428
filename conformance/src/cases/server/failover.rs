//! The store's leader or primary killed (SIGKILL) under load: 8 clients contend for
//! one lock, another holds the leadership of an election, another enqueues items, and
//! one holds a second lock throughout. Across the failover: never two holders inside
//! the critical section, lock tokens and leadership terms only grow, every queue item
//! whose enqueue was acknowledged is still there, the lock keeps being granted (it is
//! not stuck behind a grant or a release the failover lost), and the holder of the
//! second lock either still holds it or learns it lost it (`lost()`) before anyone
//! else is granted it: it never holds silently. A client whose session could not be
//! renewed learns it (`lost()`, or [`Error::SessionLost`]) and goes on with a new
//! session. The figure is the time from the kill to the next grant.
//!
//! Every wait is bounded: lock waits and campaigns are timed ([`WAIT`] each, then
//! retried); a new leader or primary is awaited for [`RECOVERY`] after the kill; then,
//! once the killed member is started again, the grants for [`STALL`], another client's
//! grant of the second lock, once its holder learned it lost it, for the session TTL
//! ([`TTL`], 4 s) and [`PROMPT`], the load's end for [`WAIT`] and twice [`PROMPT`], and
//! the holder's unlock and session close for [`PROMPT`] each. So a failover that breaks
//! something is reported as what breaks (two holders, a token that went backwards,
//! acknowledged items lost, a lock stuck, a holder that did not learn it lost its
//! hold), all of them at once, at most 46 s after the killed member is back (the sum of
//! those bounds; 106 s with a lock-delay, which adds [`LOCK_DELAY`] to the grants' and
//! to the second lock's), plus the queue's drain. A machine starved of CPU stretches
//! most of those waits by the time it starved, and a transient error is retried for up
//! to [`LONG`] a request.
//!
//! Two faults:
//! * [`Fault::Leader`]: the raft leader of the etcd cluster, or the leader of the
//!   ZooKeeper ensemble ([`crate::Hook::Cluster`]), started again once a new leader
//!   serves.
//! * [`Fault::Primary`]: the primary of a Redis Sentinel group, or the master serving
//!   the contended lock's slot in a Redis Cluster ([`crate::Hook::Failover`], aimed at
//!   the lock with [`crate::Cluster::focus`]), after its replica was paused for up to
//!   a second so that it lags (as a replica behind a slow link does): the Sentinels
//!   (the cluster's other masters) promote the lagging replica, and the old primary
//!   comes back as its replica. With replica
//!   acknowledgement (`wait_replicas=1`) nothing acknowledged can be lost; without it,
//!   what the old primary acknowledged during the lag is gone: the case measures it.
//!   Without acknowledgement but with the lock-delay after the store forgets
//!   (`max_session_ttl=` in the column's URL, kept by the case's own connection),
//!   the holds are judged alone: one holder, tokens growing, no stuck or silent hold;
//!   the promoted replica grants nothing on a line it may have forgotten for up to
//!   the bound ([`LOCK_DELAY`] is allowed for it), and queue items acknowledged
//!   during the lag are counted, not judged (data, which only acknowledgement
//!   keeps). A connection that does not declare `fencing` there (no lock-delay) makes
//!   the row unsupported.
//!
//! * [`Fault::Promoted`]: the primary of a store's own primary/replica pair killed,
//!   its replica promoted and the clients' proxy pointed at it
//!   ([`crate::faults::promoted_pair`]): a PostgreSQL primary stopped with `pg_ctl
//!   stop -m immediate` and its streaming standby promoted
//!   ([`crate::faults::postgres_standby::PostgresStandbyPair`]), or a MariaDB primary
//!   SIGKILLed and its GTID replica promoted
//!   ([`crate::faults::mariadb_replica::MariadbReplicaPair`]). With a synchronous
//!   standby or a semi-synchronous replica nothing acknowledged can be lost; an
//!   asynchronous one is paused before the kill so that it lags, and may lose the
//!   last acknowledged commits.
//!
//! The killed member is started again before the case ends, whatever happens (a
//! killed primary of a promoted pair stays down: the pair is the case's own).
//!
//! A backend that offers no election or no queue runs the case without that load: no
//! candidate, or no producer and nothing to drain. The verdict then covers the locks
//! alone, and its detail names what was skipped.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distsync_core::{Backend, Error, LockGuard, Name, Queue, Session, SessionOptions};
use tokio::time::Instant;

use super::cluster::leader_of;
use crate::check::{
    ensure, eventually, join_all, lock_vec, retry_transient, secs, set_up, violated, within,
    within_set_up, Check, Context, Fail, Holds, Task, LONG, PROMPT,
};
use crate::faults::Cluster;
use crate::harness::Harness;
use crate::slack;

/// Contenders for the lock, each with its own sessions.
const CONTENDERS: usize = 8;
/// Grants to see before the fault, and again after it.
const GRANTS: usize = 2 * CONTENDERS;
/// Session TTL: room for renewals to ride out a leader change.
const TTL: Duration = Duration::from_secs(4);
/// How long the store may take to name a new leader or primary after the kill.
const RECOVERY: Duration = Duration::from_secs(40);
/// How long the lock may go without [`GRANTS`] grants once the new leader or primary
/// serves before it is called stuck.
const STALL: Duration = Duration::from_secs(15);
/// One timed lock wait or campaign (under [`distsync_core::timeout`]); a
/// waiter that times out counts it and waits again.
const WAIT: Duration = Duration::from_secs(2);
/// The longest the replica is paused before the primary is killed.
const LAG: Duration = Duration::from_secs(1);
/// The longest lock-delay after a promotion the case allows for, on top of its other
/// bounds: the default bound on session TTLs of a Redis that forgets (15 s, which the
/// suite's Redis URLs keep), with room.
const LOCK_DELAY: Duration = Duration::from_secs(30);
/// Acknowledged operations to wait for while the replica lags (if the store
/// acknowledges any: with replica acknowledgement it does not).
const DURING_LAG: usize = 20;

/// What is killed.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Fault {
    /// The leader member of a replicated cluster.
    Leader,
    /// The primary of a Sentinel group after its replica lagged, with or without
    /// replica acknowledgement; without it, with the holds judged alone under the
    /// lock-delay of the column's URL (`lock_delay`) or everything judged.
    Primary {
        acknowledged: bool,
        lock_delay: bool,
    },
    /// The primary of a PostgreSQL or MariaDB pair killed, its standby or replica
    /// (synchronous or not) promoted, clients sent to it through a proxy.
    Promoted,
}

impl Fault {
    /// How much longer than [`STALL`] and a TTL grants may take after the failover.
    fn lock_delay(self) -> Duration {
        match self {
            Self::Primary {
                lock_delay: true, ..
            } => LOCK_DELAY,
            _ => Duration::ZERO,
        }
    }

    /// Whether acknowledged queue items lost are a violation (else only counted).
    fn judges_items(self) -> bool {
        !matches!(
            self,
            Self::Primary {
                lock_delay: true,
                ..
            }
        )
    }
}

/// Starts the killed member (and resumes a paused one) if the case ends early: the
/// `scripts/servers.sh` commands of [`crate::Cluster::restart_args`] and
/// [`crate::Cluster::resume_args`].
struct Restore {
    commands: Vec<Vec<String>>,
}

impl Drop for Restore {
    fn drop(&mut self) {
        if self.commands.is_empty() {
            return;
        }
        let script = crate::faults::cluster::servers_script();
        for args in &self.commands {
            if let Err(error) = std::process::Command::new("bash")
                .arg(&script)
                .args(args)
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
    /// Timed lock waits and campaigns that gave up after [`WAIT`].
    waits_timed_out: AtomicUsize,
    tokens: Mutex<Vec<(u64, Instant)>>,
    terms: Mutex<Vec<u64>>,
    backwards: Mutex<Vec<String>>,
    acked: Mutex<Vec<String>>,
    /// Sessions the load could not open through [`LONG`] of transient errors, and the
    /// last error: the case's own checks (a lock stuck, the checker's session and
    /// [`client_stuck`]) judge what that means; this is their evidence.
    sessions_refused: Mutex<Vec<String>>,
}

impl Seen {
    /// A session of `ttl`, through the failover's transient errors (counted).
    async fn session(&self, backend: &dyn Backend, ttl: Duration) -> Result<Session, Error> {
        retry_transient(&self.transient, LONG, || {
            backend.session(SessionOptions::with_ttl(ttl))
        })
        .await
    }

    /// A session for the load (`who`): `None` when transient errors kept it from
    /// opening for [`LONG`] (recorded, for the caller to try again), a violation for
    /// any other error.
    async fn load_session(
        &self,
        backend: &dyn Backend,
        ttl: Duration,
        who: &str,
    ) -> Check<Option<Session>> {
        match self.session(backend, ttl).await {
            Ok(session) => Ok(Some(session)),
            Err(error) if error.is_transient() => {
                lock_vec(&self.sessions_refused).push(format!("{who}: {error}"));
                Ok(None)
            }
            Err(error) => violated(format!("{who} opening a session: {error}")),
        }
    }

    /// Records a token (a grant's or a term) in `list`, noting one that did not grow.
    fn grew(&self, what: &str, last: Option<u64>, now: u64) {
        if let Some(last) = last {
            if now <= last {
                lock_vec(&self.backwards).push(format!("{what} {now} after {last}"));
            }
        }
    }

    fn count(counter: &AtomicUsize) {
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

/// Awaits a clean-up step (an unlock, a resignation, a session close) for at most
/// [`PROMPT`]: an error or a timeout there is counted as transient, not fatal (the
/// failover may have taken what it cleans up).
async fn tidy<T>(seen: &Seen, fut: impl std::future::Future<Output = Result<T, Error>>) {
    match tokio::time::timeout(PROMPT, fut).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) | Err(_) => Seen::count(&seen.transient),
    }
}

/// One contender: locks (timed waits), checks that it is alone and that the token
/// grew, unlocks; a new session when its session is lost.
async fn contend(
    i: usize,
    backend: Arc<dyn Backend>,
    lock: Name,
    ttl: Duration,
    seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
) -> Check<()> {
    while !stop.load(Ordering::SeqCst) {
        let who = format!("contender {i}");
        let Some(session) = seen.load_session(&*backend, ttl, &who).await? else {
            continue;
        };
        let locker = backend.locker(&session, lock.clone()).ctx("a locker")?;
        // The token of a hold whose unlock did not finish (the failover cut it off):
        // its key may still be there, and this session's next lock() then resumes
        // that same hold, with the same token. That is not a token handed out
        // twice: nobody else held in between (the overlap check would see it).
        let mut unreleased: Option<u64> = None;
        while !stop.load(Ordering::SeqCst) {
            let guard = match distsync_core::timeout(WAIT, locker.lock()).await {
                Ok(guard) => guard,
                Err(Error::Timeout(_)) => {
                    Seen::count(&seen.waits_timed_out);
                    continue;
                }
                Err(Error::SessionLost) => break,
                Err(error) if error.is_transient() => {
                    Seen::count(&seen.transient);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                Err(error) => return violated(format!("contender {i} locking: {error}")),
            };
            if seen.holders.fetch_add(1, Ordering::SeqCst) != 0 {
                Seen::count(&seen.overlaps);
            }
            {
                let mut tokens = lock_vec(&seen.tokens);
                let token = guard.token().0;
                let last = tokens.last().map(|(t, _)| *t);
                if !(unreleased == Some(token) && last == Some(token)) {
                    seen.grew("lock token", last, token);
                }
                tokens.push((token, Instant::now()));
            }
            unreleased = Some(guard.token().0);
            tokio::task::yield_now().await;
            seen.holders.fetch_sub(1, Ordering::SeqCst);
            match tokio::time::timeout(PROMPT, guard.unlock()).await {
                Ok(Ok(())) => unreleased = None,
                Ok(Err(error)) if error.is_transient() || matches!(error, Error::SessionLost) => {
                    Seen::count(&seen.transient);
                }
                Ok(Err(error)) => return violated(format!("contender {i} unlocking: {error}")),
                Err(_) => Seen::count(&seen.transient),
            }
        }
        if session.is_lost() {
            Seen::count(&seen.sessions_lost);
        }
        tidy(&seen, session.close()).await;
    }
    Ok(())
}

/// The leader: campaigns (timed), holds the leadership until it is lost or the case
/// ends, checks that terms grow.
async fn lead(
    backend: Arc<dyn Backend>,
    election: Name,
    ttl: Duration,
    seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
) -> Check<()> {
    while !stop.load(Ordering::SeqCst) {
        let Some(session) = seen.load_session(&*backend, ttl, "the leader").await? else {
            continue;
        };
        let candidate = backend
            .election(&session, election.clone())
            .ctx("an election")?;
        let leadership = loop {
            if stop.load(Ordering::SeqCst) {
                break None;
            }
            match distsync_core::timeout(WAIT, candidate.campaign("leader")).await {
                Ok(leadership) => break Some(leadership),
                Err(Error::Timeout(_)) => Seen::count(&seen.waits_timed_out),
                Err(Error::SessionLost) => break None,
                Err(error) if error.is_transient() => {
                    Seen::count(&seen.transient);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(error) => return violated(format!("campaigning: {error}")),
            }
        };
        if let Some(leadership) = leadership {
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
                Seen::count(&seen.sessions_lost);
            } else {
                tidy(&seen, leadership.resign()).await;
            }
        } else if session.is_lost() {
            Seen::count(&seen.sessions_lost);
        }
        tidy(&seen, session.close()).await;
    }
    Ok(())
}

/// The producer: a steady trickle of enqueues, each acknowledged one recorded.
async fn produce(queue: Arc<dyn Queue>, seen: Arc<Seen>, stop: Arc<AtomicBool>) -> Check<()> {
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let item = format!("item-{n}");
        n += 1;
        match tokio::time::timeout(PROMPT, queue.enqueue(item.clone())).await {
            Ok(Ok(())) => lock_vec(&seen.acked).push(item),
            // Not acknowledged: it may or may not be there.
            Ok(Err(error)) if error.is_transient() => Seen::count(&seen.transient),
            Err(_) => Seen::count(&seen.transient),
            Ok(Err(error)) => return violated(format!("enqueueing: {error}")),
        }
        // A steady trickle, not a flood.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// What became of the hold taken before the fault and kept throughout, checked with
/// `session` (of the load's client): still held (nobody else can take it), or lost and
/// known lost before anyone else got it, and then taken by another client within
/// `allowed`. Pushes what broke onto `broken`; returns the detail.
async fn check_holder(
    backend: &Arc<dyn Backend>,
    seen: &Seen,
    session: Session,
    name: Name,
    guard: &LockGuard,
    allowed: Duration,
    broken: &mut Vec<String>,
) -> Check<String> {
    let locker = backend.locker(&session, name).ctx("the checker's locker")?;
    let deadline = Instant::now() + allowed;
    let detail = loop {
        let lost_before = guard.is_lost();
        match retry_transient(&seen.transient, LONG, || locker.try_lock()).await {
            Ok(Some(taken)) => {
                let detail = if lost_before {
                    "the holder learned it lost its hold, then another client took it".to_owned()
                } else if guard.is_lost() {
                    // Lost between the two reads: the store granted it to the checker
                    // at about the moment the holder learned it, not silently.
                    "the holder learned it lost its hold as another client took it".to_owned()
                } else {
                    broken.push(
                        "a holder held silently: another client was granted its lock while \
                         its guard did not report lost()"
                            .to_owned(),
                    );
                    "the holder's lock was granted to another client".to_owned()
                };
                tidy(seen, taken.unlock()).await;
                break detail;
            }
            Ok(None) if !guard.is_lost() => break "the holder kept its hold".to_owned(),
            Ok(None) if Instant::now() >= deadline => {
                broken.push(format!(
                    "a lock stuck: its holder learned it lost it, yet no other client could \
                     take it for {}",
                    secs(allowed)
                ));
                break "the holder's lock stayed taken after it was lost".to_owned();
            }
            Ok(None) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(error) => return violated(format!("the checker's try_lock: {error}")),
        }
    };
    tidy(seen, session.close()).await;
    Ok(detail)
}

/// What the load's client failing to open a session for [`LONG`] after the failover
/// (`error`, the last attempt's) says, once the store is whole again (the killed member
/// is back): a fresh client of the same store either opens one at once (the load's
/// client did not recover from the failover: the library's fault) or cannot either (the
/// store does not serve). Either is a lock nobody can take; the verdict names which.
async fn client_stuck(
    h: &Harness,
    cluster: &dyn Cluster,
    fault: Fault,
    ttl: Duration,
    error: &Error,
) -> String {
    let fresh = match connect(h, cluster, fault).await {
        Ok(fresh) => match within(
            PROMPT,
            "opening a session on a fresh client",
            fresh.session(SessionOptions::with_ttl(ttl)),
        )
        .await
        {
            Ok(session) => {
                let _ = tokio::time::timeout(PROMPT, session.close()).await;
                "a fresh client of the same store opened one at once: the load's client did \
                 not recover from the failover"
                    .to_owned()
            }
            Err(fail) => {
                format!("a fresh client could not either ({fail:?}): the store does not serve")
            }
        },
        Err(fail) => {
            format!("a fresh client could not connect ({fail:?}): the store does not serve")
        }
    };
    format!(
        "the load's client could not open a session for {} after the failover (the last \
         attempt: {error}); {fresh}",
        secs(LONG)
    )
}

/// The name `<prefix>/<suffix>`, or `<prefix>/<suffix>-<n>` for the first `n` that
/// puts it on the shard of `lock` ([`Cluster::same_shard`]): in a Redis Cluster the
/// held lock, the queue and the election must live on the master that is killed, as
/// the contended lock does, for the case to test them across its failover.
fn on_lock_shard(h: &Harness, cluster: &dyn Cluster, lock: &Name, suffix: &str) -> Check<Name> {
    let mut name = h.name(suffix).ctx("naming a primitive")?;
    let mut n = 0u32;
    while !cluster.same_shard(lock, &name) {
        n += 1;
        ensure!(
            n < 1 << 20,
            "no name {suffix}-N on the shard of {lock} in {n} tries"
        );
        name = h.name(&format!("{suffix}-{n}")).ctx("naming a primitive")?;
    }
    Ok(name)
}

/// A backend connected to the failover topology: with or without replica
/// acknowledgement, as `fault` asks. A connection that does not come up in time, or
/// refused as transient, is a set-up that lapsed ([`within_set_up`]): nothing has
/// been measured, and no fault has been injected, when the load connects.
async fn connect(h: &Harness, cluster: &dyn Cluster, fault: Fault) -> Check<Arc<dyn Backend>> {
    let backend: Arc<dyn Backend> = match fault {
        Fault::Leader | Fault::Promoted => {
            within_set_up(PROMPT, "connecting", cluster.connect()).await?
        }
        Fault::Primary {
            acknowledged,
            lock_delay,
        } => {
            // Without acknowledgement: the column's lock-delay kept (`lock_delay`),
            // or turned off (`max_session_ttl=off`), to measure what breaks
            // without either.
            let query = match (acknowledged, lock_delay) {
                (true, _) => "wait_replicas=1&wait_timeout=500ms",
                (false, true) => "wait_replicas=0",
                (false, false) => "wait_replicas=0&max_session_ttl=off",
            };
            within_set_up(PROMPT, "connecting", cluster.connect_with(query)).await?
        }
    };
    // Without acknowledgement, tokens keep growing across a promotion only under a
    // lock-delay, which the connection then declares (`fencing`).
    if let Fault::Primary {
        lock_delay: true, ..
    } = fault
    {
        if !backend.capabilities().fencing {
            return Err(Fail::Unsupported(
                "without replica acknowledgement the connection declares no fencing: no \
                 lock-delay after a promotion (max_session_ttl= in the URL turns it on)"
                    .to_owned(),
            ));
        }
    }
    // A promoted pair's harness judges by the pair's declaration (the harness's
    // own backend is on another server): the backend on the pair must agree.
    ensure!(
        !matches!(fault, Fault::Promoted)
            || backend.capabilities().survives_failover == h.capabilities().survives_failover,
        "a backend connected to the failover topology declares survives_failover = {}, \
         the harness judges by {}",
        backend.capabilities().survives_failover,
        h.capabilities().survives_failover
    );
    Ok(backend)
}

/// Pauses the replica (or asynchronous standby) that `fault` makes lag behind
/// `leader`, registering its resumption in `restore`; `None` where nothing lags.
async fn pause_replica(
    cluster: &dyn Cluster,
    fault: Fault,
    leader: usize,
    restore: &mut Restore,
) -> Check<Option<usize>> {
    Ok(match fault {
        Fault::Primary { .. } => {
            let replica = within(
                PROMPT,
                "finding the primary's replica",
                cluster.replica_of(leader),
            )
            .await?;
            restore.commands.extend(cluster.resume_args(replica));
            within(PROMPT, "pausing the replica", cluster.pause_member(replica)).await?;
            Some(replica)
        }
        // An asynchronous standby or replica lags; a synchronous standby or a
        // semi-synchronous replica cannot be paused (commits would wait for it), and
        // is not.
        Fault::Promoted => match tokio::time::timeout(PROMPT, cluster.pause_member(2)).await {
            Ok(Ok(())) => Some(2),
            Ok(Err(_)) | Err(_) => None,
        },
        Fault::Leader => None,
    })
}

/// Every item left in `queue`, drained.
async fn drain(queue: &dyn Queue, seen: &Seen) -> Check<HashSet<String>> {
    let mut present = HashSet::new();
    loop {
        match retry_transient(&seen.transient, LONG, || queue.try_dequeue()).await {
            Ok(Some(item)) => {
                present.insert(String::from_utf8_lossy(&item).into_owned());
            }
            Ok(None) => return Ok(present),
            Err(error) => return violated(format!("draining the queue: {error}")),
        }
    }
}

/// What the failover itself looked like: who was killed, who took over and when,
/// what the primary acknowledged while its replica lagged (replica, grants, enqueues,
/// for how long), and the load the backend could not carry (see [`Skipped`]).
struct Failover {
    leader: usize,
    new_leader: usize,
    took_over: Duration,
    first_after: Option<Duration>,
    holder_detail: String,
    lagged: Option<(usize, usize, usize, Duration)>,
    skipped: Skipped,
}

/// The parts of the load a backend that offers no election or no queue runs without.
#[derive(Clone, Copy)]
struct Skipped {
    election: bool,
    queue: bool,
}

impl Skipped {
    /// What `backend` does not offer.
    fn of(backend: &dyn Backend) -> Self {
        let capabilities = backend.capabilities();
        Self {
            election: !capabilities.election,
            queue: !capabilities.queue,
        }
    }

    /// The detail's note, empty when nothing was skipped.
    fn note(self) -> &'static str {
        match (self.election, self.queue) {
            (false, false) => "",
            (true, false) => "; no election offered: the leadership load skipped",
            (false, true) => "; no queue offered: the producer and its items skipped",
            (true, true) => {
                "; no election or queue offered: the leadership and queue load skipped, \
                 the locks judged alone"
            }
        }
    }
}

/// The verdict, once the load has stopped and the queue is drained (`present`): what
/// `broken` already holds, two holders at once, tokens that went backwards, and
/// acknowledged items lost.
fn judge(
    seen: &Seen,
    present: &HashSet<String>,
    mut broken: Vec<String>,
    took: Failover,
    judges_items: bool,
) -> Check {
    let Failover {
        leader,
        new_leader,
        took_over,
        first_after,
        holder_detail,
        lagged,
        skipped,
    } = took;
    let granted = || lock_vec(&seen.tokens).len();
    let acked_items = std::mem::take(&mut *lock_vec(&seen.acked));
    let lost: Vec<&String> = acked_items
        .iter()
        .filter(|item| !present.contains(*item))
        .collect();
    let overlaps = seen.overlaps.load(Ordering::SeqCst);
    let backwards = std::mem::take(&mut *lock_vec(&seen.backwards));
    let grants = granted();
    let sessions_lost = seen.sessions_lost.load(Ordering::SeqCst);
    if overlaps > 0 {
        broken.push(format!(
            "two holders at once: {overlaps} grants found another holder in the critical section"
        ));
    }
    if !backwards.is_empty() {
        broken.push(format!(
            "{} tokens went backwards or repeated across the failover (first: {})",
            backwards.len(),
            backwards[0]
        ));
    }
    let mut items_lost = String::new();
    if !lost.is_empty() {
        let what = format!(
            "{} of {} acknowledged queue items lost (first: {})",
            lost.len(),
            acked_items.len(),
            lost[0]
        );
        if judges_items {
            broken.push(what);
        } else {
            // Data, not holds: only acknowledgement keeps it.
            items_lost = format!("; {what}, not judged");
        }
    }
    let lag = match lagged {
        Some((_, grants, items, took)) => format!(
            "; while the replica lagged ({}): {grants} grants and {items} enqueues acknowledged",
            secs(took)
        ),
        None => String::new(),
    };
    let next = first_after.map_or_else(|| "none".to_owned(), secs);
    let refused = match lock_vec(&seen.sessions_refused).as_slice() {
        [] => String::new(),
        all @ [first, ..] => format!(
            "; {} sessions of the load could not open for {} each (first: {first})",
            all.len(),
            secs(LONG)
        ),
    };
    let detail = format!(
        "member {leader} killed, member {new_leader} took over after {}; next grant after \
         {next}; {grants} grants, {} items acknowledged, {sessions_lost} sessions or \
         leaderships lost and renewed, {} timed waits gave up, {} transient errors \
         retried; {holder_detail}{lag}{items_lost}{refused}{}",
        secs(took_over),
        acked_items.len(),
        seen.waits_timed_out.load(Ordering::SeqCst),
        seen.transient.load(Ordering::SeqCst),
        skipped.note()
    );
    if !broken.is_empty() {
        return violated(format!("{}; {detail}", broken.join("; ")));
    }
    Ok(Holds::figure(
        format!("next grant {next} after the kill"),
        detail,
    ))
}

/// The load the failover happens under, until `stop`: the contenders for `lock`, a
/// candidate staying leader of `election`, and a producer enqueueing into `queue`
/// (each of the last two only where the backend offers it).
fn spawn_load(
    backend: &Arc<dyn Backend>,
    lock: &Name,
    election: Option<Name>,
    queue: Option<&Arc<dyn Queue>>,
    ttl: Duration,
    seen: &Arc<Seen>,
    stop: &Arc<AtomicBool>,
) -> Vec<Task<()>> {
    let mut tasks: Vec<Task<()>> = Vec::new();
    for i in 0..CONTENDERS {
        let (backend, seen, stop, lock) =
            (backend.clone(), seen.clone(), stop.clone(), lock.clone());
        tasks.push(Task::spawn(
            format!("contender {i}"),
            contend(i, backend, lock, ttl, seen, stop),
        ));
    }
    if let Some(election) = election {
        tasks.push(Task::spawn(
            "leader",
            lead(backend.clone(), election, ttl, seen.clone(), stop.clone()),
        ));
    }
    if let Some(queue) = queue {
        tasks.push(Task::spawn(
            "producer",
            produce(queue.clone(), seen.clone(), stop.clone()),
        ));
    }
    tasks
}

/// While `replica` lags (for at most [`LAG`]): the grants and enqueues the primary
/// still acknowledges, and for how long it was watched.
async fn acknowledged_while_lagging(
    seen: &Seen,
    replica: usize,
) -> (usize, usize, usize, Duration) {
    let granted = || lock_vec(&seen.tokens).len();
    let acked = || lock_vec(&seen.acked).len();
    let (tokens, items) = (granted(), acked());
    let lag = Instant::now();
    // A window watched, not a bound: its end is an expected outcome.
    let _ = slack::unmeasured(tokio::time::timeout(
        LAG,
        eventually(LAG, "acknowledgements while the replica lags", || async {
            Ok((granted() + acked() >= tokens + items + DURING_LAG).then_some(()))
        }),
    ))
    .await;
    (replica, granted() - tokens, acked() - items, lag.elapsed())
}

/// The case body (see the module docs).
pub(super) async fn failover(h: Harness, fault: Fault) -> Check {
    let Load {
        cluster,
        backend,
        ttl,
        held,
        skipped,
        queue,
        seen,
        stop,
        mut tasks,
        holder_session,
        holder,
    } = start_load(&h, fault).await?;
    let granted = || lock_vec(&seen.tokens).len();
    eventually(LONG, "contention before the fault", || async {
        Ok((granted() >= GRANTS).then_some(()))
    })
    .await?;
    let FailedOver {
        leader,
        new_leader,
        took_over,
        killed,
        before,
        lagged,
    } = kill_the_leader(&*cluster, fault, &seen).await?;

    let mut broken = Vec::new();
    // The lock must keep being granted: a grant or a release lost with the failover
    // (an entry the new primary still has, of a holder that already let go) would
    // leave it stuck.
    let stall_from = Instant::now();
    let stall = STALL + fault.lock_delay();
    let resumed = eventually(stall, "grants after the kill", || async {
        Ok((granted() >= before + GRANTS).then_some(()))
    })
    .await;
    if resumed.is_err() {
        broken.push(format!(
            "the lock stuck: {} grants in the {} after member {new_leader} took over \
             ({} timed lock waits and campaigns gave up after {} each)",
            granted() - before,
            secs(stall_from.elapsed()),
            seen.waits_timed_out.load(Ordering::SeqCst),
            secs(WAIT)
        ));
    }
    // While the holder's hold lasts nobody else may take it; once the holder knows it
    // lost it (or never lost it), someone else must be able to take it within a TTL
    // and a prompt margin (and a lock-delay after a promotion, where one is on).
    let holder_detail = match seen.session(&*backend, ttl).await {
        Ok(session) => {
            let allowed = ttl + PROMPT + fault.lock_delay();
            check_holder(
                &backend,
                &seen,
                session,
                held,
                &holder,
                allowed,
                &mut broken,
            )
            .await?
        }
        Err(error) => {
            broken.push(client_stuck(&h, &*cluster, fault, ttl, &error).await);
            "the holder's lock not checked: no session to check it with".to_owned()
        }
    };
    let first_after = lock_vec(&seen.tokens)
        .iter()
        .find(|(_, at)| *at >= killed)
        .map(|(_, at)| at.saturating_duration_since(killed));
    stop.store(true, Ordering::SeqCst);
    join_all(&mut tasks, WAIT + 2 * PROMPT).await?;
    tidy(&seen, holder.unlock()).await;
    tidy(&seen, holder_session.close()).await;

    // Every acknowledged item must still be in the queue.
    let present = match &queue {
        Some(queue) => drain(&**queue, &seen).await?,
        None => HashSet::new(),
    };
    let took = Failover {
        leader,
        new_leader,
        took_over,
        first_after,
        holder_detail,
        lagged,
        skipped,
    };
    judge(&seen, &present, broken, took, fault.judges_items())
}

/// The cluster, a client of it and the load on it before the fault: the contenders,
/// the leader and the producer running, and the holder holding its lock.
struct Load {
    cluster: Box<dyn Cluster>,
    backend: Arc<dyn Backend>,
    ttl: Duration,
    held: Name,
    skipped: Skipped,
    queue: Option<Arc<dyn Queue>>,
    seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
    tasks: Vec<Task<()>>,
    holder_session: Session,
    holder: LockGuard,
}

/// Finds the cluster, connects to it and starts the load on the shard of the lock.
async fn start_load(h: &Harness, fault: Fault) -> Check<Load> {
    // A promoted pair is started here (two servers installed, the replica filled):
    // more than a prompt.
    let mut cluster = within(
        LONG,
        "finding the cluster",
        h.faults().cluster(&**h.backend()),
    )
    .await?;
    let topology: &dyn Cluster = &*cluster;
    let backend = set_up("connecting to the topology", |_| {
        connect(h, topology, fault)
    })
    .await?;
    let ttl = TTL.max(backend.capabilities().min_session_ttl);
    let lock = h.name("mutex").ctx("naming the lock")?;
    // A sharded store (Redis Cluster): the member killed serves this lock.
    cluster.focus(&lock);
    let held = on_lock_shard(h, &*cluster, &lock, "held")?;
    let skipped = Skipped::of(&*backend);
    let queue: Option<Arc<dyn Queue>> = if skipped.queue {
        None
    } else {
        Some(Arc::from(
            backend
                .queue(on_lock_shard(h, &*cluster, &lock, "jobs")?)
                .ctx("a queue")?,
        ))
    };
    let election = if skipped.election {
        None
    } else {
        Some(on_lock_shard(h, &*cluster, &lock, "leader")?)
    };
    let seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = spawn_load(&backend, &lock, election, queue.as_ref(), ttl, &seen, &stop);
    let holder_session = within(
        PROMPT,
        "opening the holder's session",
        backend.session(SessionOptions::with_ttl(ttl)),
    )
    .await?;
    // A first grant of a new name may wait out a lock-delay (on a server promoted
    // since it started).
    let holder = within(
        PROMPT + fault.lock_delay(),
        "taking the held lock",
        backend
            .locker(&holder_session, held.clone())
            .ctx("the holder's locker")?
            .lock(),
    )
    .await?;
    Ok(Load {
        cluster,
        backend,
        ttl,
        held,
        skipped,
        queue,
        seen,
        stop,
        tasks,
        holder_session,
        holder,
    })
}

/// The fault and the takeover: who led, who leads after, how long it took, when the
/// killed member was gone and how many grants came before.
struct FailedOver {
    leader: usize,
    new_leader: usize,
    took_over: Duration,
    killed: Instant,
    before: usize,
    lagged: Option<(usize, usize, usize, Duration)>,
}

/// Kills the leader (or primary), a replica lagging first where the fault asks for
/// it, waits for a new one and starts the killed member again.
async fn kill_the_leader(cluster: &dyn Cluster, fault: Fault, seen: &Seen) -> Check<FailedOver> {
    let granted = || lock_vec(&seen.tokens).len();
    let leader = leader_of(cluster, "a leader or primary").await?;
    let mut restore = Restore {
        commands: Vec::new(),
    };
    let lag_replica = pause_replica(cluster, fault, leader, &mut restore).await?;
    let lagged = match lag_replica {
        Some(replica) => Some(acknowledged_while_lagging(seen, replica).await),
        None => None,
    };
    // (A promoted pair is the case's own: nothing of servers.sh to restore.)
    restore.commands.extend(cluster.restart_args(leader));
    within(
        LONG,
        format!("killing member {leader}"),
        cluster.kill_member(leader),
    )
    .await?;
    // The member is gone (the hook waits for its process to end): grants from now on
    // come from after the kill.
    let killed = Instant::now();
    let before = granted();
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
    restore.commands.clear();
    Ok(FailedOver {
        leader,
        new_leader,
        took_over,
        killed,
        before,
        lagged,
    })
}
