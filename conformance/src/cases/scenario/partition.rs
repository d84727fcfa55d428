//! Partition cases: a holder cut off from the store (its traffic silenced, or its
//! connections reset, by the harness's partition hook) must learn that it lost its
//! hold *before* the store grants it to another client.
//!
//! Each case runs [`TRIALS`] trials (in waves of [`PARALLEL`], each trial with its own
//! partitioned client and name). In a trial the cut-off client holds (a lock, a write
//! lock, a leadership, or a double-barrier entry) through a session of
//! [`Harness::fault_ttl`], another client of the store waits for the same thing, and
//! the harness cuts the holder off. The case holds when, in every trial, the holder's
//! `lost()` fired strictly before the waiter was granted; the figure is the smallest
//! margin (grant − `lost()`), as a share of the TTL, and the median time from the cut
//! to `lost()`. The holder learns of the loss at its session's client-side deadline or
//! when `lost()` fires, whichever comes first (see [`learned_of_loss`]).

use std::num::NonZeroUsize;
use std::time::Duration;

use distsync_core::{Backend, Bytes, Lost, Name, Session, SessionOptions};
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::time::Instant;

use crate::check::{
    ensure, eventually, lapsed, lapsed_when_lost, ms, proxied_client, secs, set_up_tries, violated,
    within, within_set_up, Bounded, Check, Context, Fail, Holds, Task, PROMPT, SET_UP_CALM_LIMIT,
    SET_UP_TRIES,
};
use crate::faults::{PartitionMode, Partitioned};
use crate::harness::Harness;

/// Trials per case.
pub(crate) const TRIALS: usize = 10;

/// Trials run at once.
pub(crate) const PARALLEL: usize = 5;

/// How many tries a trial's set-up gets: more than most cases' ([`SET_UP_TRIES`]), as
/// ten trials each set up a holder whose two-second session a machine starved by every
/// fault case of the column starting at once (the store's server included) lets lapse.
const TRIAL_SET_UP_TRIES: usize = SET_UP_TRIES + 2;

/// How long a trial's set-up may take, its tries and the waits between them included:
/// per try, the proxied client, the two sessions, the hold and the waiter registering
/// (each bounded by [`PROMPT`]) and the settle time ([`crate::harness::MAX_SETTLE`] at
/// most); between tries, [`SET_UP_CALM_LIMIT`].
const SET_UP_BOUND: Duration = Duration::from_secs(
    (PROMPT.as_secs() * 5 + crate::harness::MAX_SETTLE.as_secs()) * TRIAL_SET_UP_TRIES as u64
        + SET_UP_CALM_LIMIT.as_secs() * (TRIAL_SET_UP_TRIES as u64 - 1),
);

/// What the cut-off client holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Held {
    /// A lock; the waiter locks.
    Lock,
    /// An unfair lock; the waiter locks.
    UnfairLock,
    /// A write lock; the waiter write-locks.
    WriteLock,
    /// A leadership; the waiter campaigns.
    Leadership,
    /// An entry in a double barrier of two; the waiter, the other participant, leaves
    /// and waits for the holder's entry to go.
    DoubleBarrierEntry,
}

impl Held {
    fn describe(self) -> &'static str {
        match self {
            Self::Lock => "lock",
            Self::UnfairLock => "unfair lock",
            Self::WriteLock => "write lock",
            Self::Leadership => "leadership",
            Self::DoubleBarrierEntry => "double-barrier entry",
        }
    }
}

/// What one trial measured.
struct Trial {
    /// From the cut to the holder's `lost()`.
    lost_after: Duration,
    /// From the holder's `lost()` to the waiter's grant.
    margin: Duration,
}

/// The case: `held` cut off by `mode`, in [`TRIALS`] trials.
pub(crate) async fn cut_off_holder(h: Harness, held: Held, mode: PartitionMode) -> Check {
    let ttl = h.fault_ttl();
    let mut trials = Vec::with_capacity(TRIALS);
    for wave in 0..TRIALS.div_ceil(PARALLEL) {
        let tasks: Vec<(usize, Task<Trial>, _)> = (wave * PARALLEL
            ..((wave + 1) * PARALLEL).min(TRIALS))
            .map(|i| {
                let h = h.clone();
                let (set_up_done, ready) = tokio::sync::oneshot::channel();
                let task = Task::spawn(format!("trial {i}"), async move {
                    trial(&h, held, mode, i, set_up_done).await
                });
                (i, task, ready)
            })
            .collect();
        for (i, mut task, ready) in tasks {
            // The set-up's own bound first: a set-up that overruns it (its tries and
            // the waits between them on a starved machine) measured nothing, and must
            // not eat into the time the fault phase is judged with. A trial that ended
            // before its set-up completed says why when joined.
            if within(
                SET_UP_BOUND,
                "a trial's set-up",
                ready.map(Ok::<_, distsync_core::Error>),
            )
            .await
            .is_err()
            {
                return Err(Fail::SetUpLapsed(format!(
                    "trial {i}: the set-up did not complete within {SET_UP_BOUND:?}"
                )));
            }
            trials.push(task.join(ttl * 3 + PROMPT * 4).await?);
        }
    }
    let smallest = trials.iter().map(|t| t.margin).min().unwrap_or_default();
    let mut lost_after: Vec<Duration> = trials.iter().map(|t| t.lost_after).collect();
    lost_after.sort();
    let median = lost_after[lost_after.len() / 2];
    let share = smallest.as_secs_f64() / ttl.as_secs_f64() * 100.0;
    Ok(Holds::figure(
        format!(
            "{} trials: lost() first by ≥ {} ({share:.0}% of the TTL); cut → lost() {}",
            trials.len(),
            ms(smallest),
            secs(median)
        ),
        format!(
            "{}: the {} holder (TTL {ttl:?}) saw lost() before the other client was granted in every trial",
            mode.describe(),
            held.describe()
        ),
    ))
}

/// Something held by the cut-off client, kept until the trial ends.
type Keep = Box<dyn Send + Sync>;

/// Something the waiter was granted at an instant.
type Granted = (Instant, Keep);

/// A trial up to its cut: the cut-off client holds, the other waits.
struct SetUp {
    partition: Box<dyn Partitioned>,
    /// Kept for the hold to last.
    _holder: Session,
    _kept: Keep,
    /// The instant the holder's `lost()` fired.
    lost: Task<Instant>,
    waiter: Task<Granted>,
}

/// One trial: its set-up (said done on `set_up_done`), the cut, the verdict.
async fn trial(
    h: &Harness,
    held: Held,
    mode: PartitionMode,
    i: usize,
    set_up_done: tokio::sync::oneshot::Sender<()>,
) -> Check<Trial> {
    let SetUp {
        partition,
        _holder,
        _kept,
        lost: mut lost_task,
        mut waiter,
    } = set_up_tries(TRIAL_SET_UP_TRIES, format!("trial {i}"), |attempt| {
        set_up_trial(h, held, format!("t{i}a{attempt}"))
    })
    .await?;
    // The receiver is gone only when the case has already ended.
    let _ = set_up_done.send(());

    let cut_at = Instant::now();
    partition.set(mode);
    let (granted_at, _grant) = waiter.join(h.fault_ttl() * 3 + PROMPT * 2).await?;
    let Some(lost_at) = loss_learned(&mut lost_task).await? else {
        return violated(format!(
            "trial {i}: the waiter was granted {} after the cut; the holder's lost() never fired",
            secs(granted_at - cut_at)
        ));
    };
    ensure!(
        lost_at < granted_at,
        "trial {i}: the waiter was granted {} after the cut, {} before the holder learned of \
         the loss",
        secs(granted_at - cut_at),
        ms(lost_at - granted_at)
    );
    drop(partition);
    Ok(Trial {
        lost_after: lost_at.saturating_duration_since(cut_at),
        margin: granted_at - lost_at,
    })
}

/// One try of a trial's set-up on the name `label`: the holder's client, session and
/// hold, the waiter waiting. A holder whose short session a loaded machine let lapse
/// before the cut measures nothing: that try ends in [`Fail::SetUpLapsed`]
/// (see [`set_up`]), and so does one whose session is lost before the cut (even as
/// its hold was granted). A waiter granted before the cut is a violation unless the
/// holder learned of the loss first ([`learned_of_loss`]).
async fn set_up_trial(h: &Harness, held: Held, label: String) -> Check<SetUp> {
    let name = h.name(&label).ctx("naming the trial")?;
    let partition: Box<dyn Partitioned> = proxied_client(
        h.faults(),
        h.backend().as_ref(),
        "",
        "the client to cut off",
    )
    .await?;
    let cut = partition.backend();
    let holder = within_set_up(
        PROMPT,
        "opening the holder's session",
        cut.session(SessionOptions::with_ttl(h.fault_ttl())),
    )
    .await?;
    let other = h.session().set_up("opening the waiter's session").await?;

    // The instant the holder learns of the loss is taken from the moment it holds, so
    // a lapse during the rest of the set-up is timed against the waiter's grant.
    let watch = |lost: Lost| learned_of_loss(&holder, lost);
    let (mut lost, kept, mut waiter) = match held {
        Held::DoubleBarrierEntry => {
            let lost = watch(holder.lost());
            let (kept, waiter) = double_barrier_entry(h, &cut, &holder, &other, name)
                .await
                .map_err(|fail| lapsed_when_lost(fail, &holder))?;
            (lost, kept, waiter)
        }
        _ => {
            let (lost, kept) = hold(&cut, &holder, held, name.clone())
                .await
                .map_err(|fail| lapsed_when_lost(fail, &holder))?;
            tracing::debug!(%label, session = %holder.id(), health = ?holder.health(), "the holder holds");
            let lost = watch(lost);
            let waiter = wait(h, held, other.clone(), name).await?;
            (lost, kept, waiter)
        }
    };
    if !matches!(held, Held::Lock | Held::UnfairLock) {
        // A lock's waiter is known to wait once the store counts it; the others get
        // the time to be granted wrongly.
        tokio::time::sleep(h.settle()).await;
    }
    if waiter.is_finished() {
        let (granted_at, _) = waiter.wait().await?;
        let learned = loss_learned(&mut lost).await?;
        if matches!(learned, Some(lost_at) if lost_at < granted_at) {
            return Err(Fail::SetUpLapsed(format!(
                "{label}: the holder learned of the loss before the cut, then the waiter was \
                 granted"
            )));
        }
        let when = match learned {
            Some(lost_at) => format!("{} after the grant", ms(lost_at - granted_at)),
            None => format!("not within {PROMPT:?} of the grant"),
        };
        return violated(format!(
            "{label}: the waiter was granted while the {} was held by a client not yet cut off, \
             before the holder learned of the loss (session {}: learned {when})",
            held.describe(),
            holder.id()
        ));
    }
    // A holder that already knows its session lost (it lapsed on a loaded machine, even
    // as its hold was being granted) has nothing left to learn from the cut.
    if holder.is_lost() {
        return Err(Fail::SetUpLapsed(format!(
            "{label}: the holder's session was lost before the cut"
        )));
    }
    Ok(SetUp {
        partition,
        _holder: holder,
        _kept: kept,
        lost,
        waiter,
    })
}

/// The instant the holder learns that its hold is lost: when `lost` fires, or the
/// session's client-side deadline ([`Session::valid_until`]) if that came first.
///
/// The deadline is what the library promises: from it on [`Session::is_lost`] is true
/// and `while_held` work is dropped, however late the session's keepalive task runs.
/// The instant a task sees the `lost()` future fire adds the scheduling of two tasks
/// (the keepalive loop that fires it, the watcher that stamps it), each up to the
/// runtime's lag: on a starved runner that alone can exceed a 2 s session's 400 ms
/// margin while the runner's measured stall stays under its slack, and a store that
/// kept its promise would read as violated.
///
/// So the deadline, and whether the loss is already known, are read here, when the
/// caller starts the watch (before anything the judged grant depends on), not when the
/// watcher task first runs: a session lost before that (a set-up on a loaded machine
/// whose hold was granted as its deadline passed) reports no deadline any more
/// ([`SessionHealth::Lost`](distsync_core::SessionHealth::Lost)), and the watcher's own
/// first run, up to the runtime's lag later, would date the loss after a grant that
/// came after it.
fn learned_of_loss(session: &Session, mut lost: Lost) -> Task<Instant> {
    let mut health = session.health_watch();
    let mut deadline = health.current().valid_until();
    let known_at = ((&mut lost).now_or_never().is_some() || session.is_lost()).then(Instant::now);
    let learned = move |seen: Instant, deadline: Option<std::time::Instant>| {
        deadline.map_or(seen, |until| seen.min(Instant::from_std(until)))
    };
    Task::spawn("the holder's lost()", async move {
        if let Some(seen) = known_at {
            return Ok(learned(seen, deadline));
        }
        let mut lost = std::pin::pin!(lost);
        tokio::select! {
            () = &mut lost => {}
            () = crate::last_deadline::follow(&mut health, &mut deadline) => lost.await,
        }
        Ok(learned(Instant::now(), deadline))
    })
}

/// When the holder learned of the loss ([`learned_of_loss`]), waiting up to [`PROMPT`]
/// for its `lost()` to fire; `None` if it never did.
async fn loss_learned(lost: &mut Task<Instant>) -> Check<Option<Instant>> {
    let fired = within(
        PROMPT,
        "waiting for the holder's lost()",
        lost.wait().map(Ok::<_, distsync_core::Error>),
    )
    .await;
    match fired {
        Ok(at) => at.map(Some),
        Err(Fail::Violated(_)) => Ok(None),
        Err(other) => Err(other),
    }
}

/// Takes `held` on `name` through the cut-off client; returns its `lost()` and what
/// must be kept for the hold to last.
async fn hold(
    cut: &std::sync::Arc<dyn Backend>,
    session: &Session,
    held: Held,
    name: Name,
) -> Check<(Lost, Keep)> {
    match held {
        Held::Lock | Held::UnfairLock => {
            let locker = if held == Held::Lock {
                cut.locker(session, name)
            } else {
                cut.unfair_locker(session, name)
            }
            .ctx("making the holder's locker")?;
            let guard = locker.lock().bounded("locking").await?;
            Ok((guard.lost(), Box::new((locker, guard))))
        }
        Held::WriteLock => {
            let rwlock = cut
                .rwlock(session, name)
                .ctx("making the holder's rwlock")?;
            let guard = rwlock.write().bounded("write-locking").await?;
            Ok((guard.lost(), Box::new((rwlock, guard))))
        }
        Held::Leadership => {
            let election = cut
                .election(session, name)
                .ctx("making the holder's election")?;
            let leadership = election
                .campaign(Bytes::from_static(b"cut off"))
                .bounded("campaigning")
                .await?;
            Ok((leadership.lost(), Box::new((election, leadership))))
        }
        Held::DoubleBarrierEntry => violated("a double-barrier entry is taken with its waiter"),
    }
}

/// Starts the other client's wait for `held` on `name`; for a lock, returns once the
/// store counts it as a contender (the others are given the settle time by the
/// set-up).
async fn wait(h: &Harness, held: Held, session: Session, name: Name) -> Check<Task<Granted>> {
    let backend = std::sync::Arc::clone(h.backend());
    let waiting: BoxFuture<'static, Check<Granted>> = match held {
        Held::Lock | Held::UnfairLock => {
            let locker = if held == Held::Lock {
                backend.locker(&session, name.clone())
            } else {
                backend.unfair_locker(&session, name.clone())
            }
            .ctx("making the waiter's locker")?;
            let counter = if held == Held::Lock {
                backend.locker(&session, name)
            } else {
                backend.unfair_locker(&session, name)
            }
            .ctx("making a locker")?;
            let task = Task::spawn("the waiting locker", async move {
                let guard = locker.lock().await.ctx("waiting for the lock")?;
                Ok((Instant::now(), Box::new((guard, locker, session)) as Keep))
            });
            // Before the cut: a waiter the store has not counted in time is the
            // machine's slowness, not a grant to the wrong client.
            eventually(PROMPT, "the waiter registering", || async {
                let contenders = counter.contenders().await.ctx("counting contenders")?;
                Ok((contenders >= 2).then_some(()))
            })
            .await
            .map_err(lapsed)?;
            return Ok(task);
        }
        Held::WriteLock => {
            let rwlock = backend
                .rwlock(&session, name)
                .ctx("making the waiter's rwlock")?;
            async move {
                let guard = rwlock.write().await.ctx("waiting for the write lock")?;
                Ok((Instant::now(), Box::new((guard, rwlock, session)) as Keep))
            }
            .boxed()
        }
        Held::Leadership => {
            let election = backend
                .election(&session, name)
                .ctx("making the waiter's election")?;
            async move {
                let leadership = election
                    .campaign(Bytes::from_static(b"waiter"))
                    .await
                    .ctx("campaigning")?;
                Ok((
                    Instant::now(),
                    Box::new((leadership, election, session)) as Keep,
                ))
            }
            .boxed()
        }
        Held::DoubleBarrierEntry => return violated("a double-barrier entry waits by leaving"),
    };
    Ok(Task::spawn(
        format!("the waiting {}", held.describe()),
        waiting,
    ))
}

/// A double barrier of two: the cut-off client and the other client both enter; the
/// other then leaves, which returns only once the holder's entry is gone.
async fn double_barrier_entry(
    h: &Harness,
    cut: &std::sync::Arc<dyn Backend>,
    holder: &Session,
    other: &Session,
    name: Name,
) -> Check<(Keep, Task<Granted>)> {
    const PARTICIPANTS: NonZeroUsize = NonZeroUsize::new(2).unwrap();
    let mine = cut
        .double_barrier(holder, name.clone(), PARTICIPANTS)
        .ctx("making the holder's double barrier")?;
    let theirs = h
        .backend()
        .double_barrier(other, name, PARTICIPANTS)
        .ctx("making the other double barrier")?;
    let (entered, other_entered) = tokio::join!(
        within(PROMPT * 2, "the holder entering", mine.enter()),
        within(PROMPT * 2, "the other entering", theirs.enter()),
    );
    // Before the cut: an entry the store has not answered in time is the machine's
    // slowness, not the partition's doing.
    entered.map_err(lapsed)?;
    other_entered.map_err(lapsed)?;
    let session = other.clone();
    let task = Task::spawn("the other participant leaving", async move {
        theirs.leave().await.ctx("leaving")?;
        Ok((Instant::now(), Box::new((theirs, session)) as Keep))
    });
    Ok((Box::new(mine), task))
}

#[cfg(test)]
mod tests {
    use std::any::Any;
    use std::sync::Arc;
    use std::time::Duration;

    use async_trait::async_trait;
    use distsync_core::{KeepAlive, Lease, Result, Session, SessionId, SessionOptions};
    use tokio::time::Instant;

    use super::learned_of_loss;

    /// A lease whose renewals answer `Some` at once, or never (`None`: a store cut off).
    struct Answering(Option<KeepAlive>);

    #[async_trait]
    impl Lease for Answering {
        async fn keep_alive(&self) -> Result<KeepAlive> {
            match self.0 {
                Some(answer) => Ok(answer),
                None => std::future::pending().await,
            }
        }

        async fn revoke(&self) -> Result<()> {
            Ok(())
        }

        fn as_any(&self) -> &dyn Any {
            self
        }
    }

    fn session(ttl: Duration, renewals: Option<KeepAlive>) -> Session {
        distsync_core::raw::start_session(
            "test",
            SessionId(1),
            &SessionOptions::with_ttl(ttl),
            Instant::now(),
            Arc::new(Answering(renewals)),
        )
    }

    /// The holder's session lapsed before the watch started (its hold granted as its
    /// deadline passed, on a loaded machine), then the runner starves the watcher: the
    /// loss is dated when the watch started, not when the watcher first ran (dated then,
    /// a waiter granted in between read as granted before the holder knew).
    #[tokio::test(flavor = "current_thread")]
    async fn a_loss_known_when_the_watch_starts_is_dated_then() {
        let session = session(Duration::from_millis(500), None);
        tokio::time::timeout(Duration::from_secs(10), session.lost())
            .await
            .expect("the session's deadline passed");
        let mut watch = learned_of_loss(&session, session.lost());
        let started = Instant::now();
        // The runtime's one thread is busy: the watcher runs only after this.
        std::thread::sleep(Duration::from_millis(300));
        let learned = watch.wait().await.expect("the watcher");
        assert!(
            learned <= started,
            "the loss was dated {:?} after the watch started",
            learned - started
        );
    }

    /// The deadline passes while the watcher is starved: the loss is dated at the
    /// deadline, however late the keepalive and the watcher run.
    #[tokio::test(flavor = "current_thread")]
    async fn a_deadline_passed_while_the_watcher_starved_is_dated_at_the_deadline() {
        let session = session(Duration::from_millis(500), None);
        let deadline = Instant::from_std(session.valid_until().expect("a fresh session"));
        let mut watch = learned_of_loss(&session, session.lost());
        std::thread::sleep(Duration::from_millis(700));
        let learned = watch.wait().await.expect("the watcher");
        assert!(
            learned <= deadline,
            "the loss was dated {:?} after the deadline",
            learned - deadline
        );
    }

    /// A healthy session is not dated lost: not while it lives, nor before it ends.
    #[tokio::test(flavor = "current_thread")]
    async fn a_live_session_is_not_dated_lost_before_it_is() {
        let session = session(Duration::from_secs(6), Some(KeepAlive::Renewed));
        let mut watch = learned_of_loss(&session, session.lost());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!watch.is_finished(), "a live session was dated lost");
        let closed = Instant::now();
        session.close().await.expect("closing");
        let learned = watch.wait().await.expect("the watcher");
        assert!(
            learned >= closed,
            "the loss was dated {:?} before the close",
            closed - learned
        );
    }
}
