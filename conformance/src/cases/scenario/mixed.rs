//! Mixed faults, checked from a history: several clients contend for one lock (or
//! for the permits of one semaphore, or for the leadership of one election) for a
//! bounded time while a seeded random schedule cuts them off and kills and pauses the
//! one that runs in a child process; every call, grant, release, `lost()` and fault
//! is recorded with its monotonic instant, and [`crate::history::check`] judges the
//! history afterwards, without asking the store anything.
//!
//! - **Clients**: [`IN_PROCESS`] contenders in this process, each with its own
//!   session through its own partition proxy (so one can be cut off alone), and one
//!   external holder (a child process; on the memory store, an in-process holder whose
//!   pause freezes its lease). Each loops: call (bounded by [`CALL_LIMIT`]), record
//!   the grant and its token (a leadership's term), hold a short random time,
//!   release (resign); a `lost()` is recorded when it fires. The external holder
//!   holds once per process: each of its holds is a new child, which ends by a
//!   release, a SIGKILL or a pause.
//! - **Schedule**: from the seed, partitions of one in-process contender at a time
//!   (silent or reset, up to 2.5 TTLs), and for each hold of the external holder a
//!   release, a kill or a pause (up to 3 TTLs: past its TTL about half of the time).
//!   A fault starts only if it ends before the quiet tail of the run, which is as
//!   long as the liveness bound.
//! - **Checks** (see [`crate::history`]): one holder (leader) at a time outside
//!   pauses (at most the permits for a semaphore), tokens ordered with real time, and
//!   a grant within the liveness bound of the last fault's end.
//!
//! The seed is in the figure and in the evidence; [`SEED_VAR`] replays one, and
//! [`SECS_VAR`] sets the run's length (a long run; a case run is bounded by
//! [`crate::CASE_LIMIT`]).

use std::sync::Arc;
use std::time::Duration;

use distsync_core::{
    Backend, Bytes, Error, Leadership, LockGuard, Lost, Name, Permit, Session, SessionOptions,
};
use tokio::time::Instant;

use crate::check::{violated, Bounded, Check, Context, Fail, Holds, Task, PROMPT};
use crate::faults::{HoldKind, PartitionMode, Partitioned, HOLDER_PERMITS};
use crate::harness::Harness;
use crate::history::{self, Event, Kind, Liveness, Recorder, Rules, Verdict};
use crate::rng::Rng;

/// The environment variable that sets the seed of the schedule (a decimal `u64`);
/// unset, a seed is taken from the clock.
pub(crate) const SEED_VAR: &str = "DISTSYNC_MIXED_SEED";

/// The environment variable that sets how long a run lasts, in seconds (default
/// [`DEFAULT_SECS`]).
pub(crate) const SECS_VAR: &str = "DISTSYNC_MIXED_SECS";

/// The length of a run in CI.
const DEFAULT_SECS: u64 = 20;

/// Contenders in this process, each through its own partition proxy.
const IN_PROCESS: usize = 3;

/// How long one lock call may wait before it is given up (and tried again).
const CALL_LIMIT: Duration = Duration::from_secs(3);

/// How long a child holder may take to start and be granted.
const SPAWN_LIMIT: Duration = Duration::from_secs(10);

/// The margin of the liveness bound over two TTLs.
const MARGIN: Duration = Duration::from_secs(1);

/// How many events before a violation its evidence shows.
const EXCERPT_BEFORE: usize = 60;

/// How many events after a violation its evidence shows.
const EXCERPT_AFTER: usize = 15;

/// The longest hold between a grant and its release, in ms.
const MAX_HOLD_MS: usize = 150;

/// What the clients contend for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// A lock named `mutex`: one holder at a time.
    Lock,
    /// A permit of a semaphore of [`HOLDER_PERMITS`] permits named `semaphore`: at
    /// most that many holders at a time.
    Permit,
    /// The leadership of an election named `election`: one leader at a time, its
    /// term the token.
    Leadership,
}

impl Target {
    fn suffix(self) -> &'static str {
        match self {
            Self::Lock => "mutex",
            Self::Permit => "semaphore",
            Self::Leadership => "election",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Lock => "the lock",
            Self::Permit => "the permits",
            Self::Leadership => "the leadership",
        }
    }

    fn hold_kind(self) -> HoldKind {
        match self {
            Self::Lock => HoldKind::Lock,
            Self::Permit => HoldKind::Permit,
            Self::Leadership => HoldKind::Leadership,
        }
    }

    /// How many may hold at once.
    fn capacity(self) -> usize {
        match self {
            Self::Lock | Self::Leadership => 1,
            Self::Permit => HOLDER_PERMITS.get(),
        }
    }
}

/// A grant of the target: a lock's guard, a permit, or a leadership.
enum Grant {
    Guard(LockGuard),
    Permit(Permit),
    Leader(Leadership),
}

impl Grant {
    fn token(&self) -> u64 {
        match self {
            Self::Guard(guard) => guard.token().get(),
            Self::Permit(permit) => permit.token().get(),
            Self::Leader(leadership) => leadership.term().get(),
        }
    }

    fn lost(&self) -> Lost {
        match self {
            Self::Guard(guard) => guard.lost(),
            Self::Permit(permit) => permit.lost(),
            Self::Leader(leadership) => leadership.lost(),
        }
    }

    async fn release(self) -> distsync_core::Result<()> {
        match self {
            Self::Guard(guard) => guard.unlock().await,
            Self::Permit(permit) => permit.release().await,
            Self::Leader(leadership) => leadership.resign().await,
        }
    }
}

/// What a run's settings and the harness give every client.
#[derive(Clone)]
struct Run {
    recorder: Recorder,
    target: Target,
    name: Name,
    /// When the clients stop calling.
    stop: Instant,
    /// When faults must have ended.
    quiet: Instant,
    ttl: Duration,
    holder_ttl: Duration,
}

/// What one client counted.
#[derive(Debug, Default)]
struct Counts {
    errors: usize,
    timeouts: usize,
    partitions: usize,
    silent: usize,
    kills: usize,
    pauses: usize,
    long_pauses: usize,
    /// The last error seen, for the figure's detail.
    last_error: Option<String>,
}

impl Counts {
    fn add(&mut self, other: Self) {
        self.errors += other.errors;
        self.timeouts += other.timeouts;
        self.partitions += other.partitions;
        self.silent += other.silent;
        self.kills += other.kills;
        self.pauses += other.pauses;
        self.long_pauses += other.long_pauses;
        if other.last_error.is_some() {
            self.last_error = other.last_error;
        }
    }

    fn error(&mut self, error: &Error) {
        self.errors += 1;
        self.last_error = Some(error.to_string());
    }
}

/// The seed: [`SEED_VAR`], or one from the clock.
fn seed() -> Check<u64> {
    match std::env::var(SEED_VAR) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| Fail::Violated(format!("{SEED_VAR}={text:?} is not a decimal u64 seed"))),
        Err(_) => Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |elapsed| elapsed.as_nanos() as u64)),
    }
}

/// The run's length: [`SECS_VAR`], or [`DEFAULT_SECS`].
fn length() -> Check<Duration> {
    match std::env::var(SECS_VAR) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| Fail::Violated(format!("{SECS_VAR}={text:?} is not a whole number"))),
        Err(_) => Ok(Duration::from_secs(DEFAULT_SECS)),
    }
}

/// A random duration in `[low, high)` percent of `of`.
fn share(rng: &mut Rng, of: Duration, low: usize, high: usize) -> Duration {
    of * u32::try_from(low + rng.below(high - low)).unwrap_or(100) / 100
}

/// The case body (see the module docs).
pub(crate) async fn run(h: Harness, target: Target) -> Check {
    let seed = seed()?;
    let length = length()?;
    let ttl = h.fault_ttl();
    let holder_ttl = h.holder_ttl();
    let bound = ttl.max(holder_ttl) * 2 + MARGIN;
    let quiet_tail = bound + MARGIN;
    if length < quiet_tail * 2 {
        return violated(format!(
            "{SECS_VAR}: a run of {length:?} leaves no time for faults before its quiet tail of {quiet_tail:?}"
        ));
    }
    // The clients' last calls and the joins come after the run's end.
    if length + SPAWN_LIMIT + PROMPT * 2 >= crate::CASE_LIMIT {
        return violated(format!(
            "{SECS_VAR}: a run of {length:?} does not fit in a case run's bound of {:?}",
            crate::CASE_LIMIT
        ));
    }
    let outcome = run_seeded(&h, target, seed, length, bound, quiet_tail).await;
    // The seed goes with any failure, so the run can be replayed.
    outcome.map_err(|fail| match fail {
        Fail::Violated(evidence) => {
            Fail::Violated(format!("seed {seed} ({SEED_VAR}={seed}): {evidence}"))
        }
        other => other,
    })
}

async fn run_seeded(
    h: &Harness,
    target: Target,
    seed: u64,
    length: Duration,
    bound: Duration,
    quiet_tail: Duration,
) -> Check {
    let name = h
        .name(target.suffix())
        .ctx("naming what is contended for")?;
    let mut switches: Vec<Box<dyn Partitioned>> = Vec::new();
    for _ in 0..IN_PROCESS {
        switches.push(
            h.faults()
                .partitioned_client(h.backend().as_ref())
                .bounded("connecting a contender through its proxy")
                .await?,
        );
    }
    let recorder = Recorder::new();
    let started = Instant::now();
    let run = Run {
        recorder: recorder.clone(),
        target,
        name,
        stop: started + length,
        quiet: started + length - quiet_tail,
        ttl: h.fault_ttl(),
        holder_ttl: h.holder_ttl(),
    };
    let mut schedule = Rng::new(seed);
    let mut clients = Vec::new();
    for (client, switch) in switches.iter().enumerate() {
        let (run, backend) = (run.clone(), switch.backend());
        let rng = Rng::new(schedule.next_u64());
        clients.push(Task::spawn(format!("contender {client}"), async move {
            in_process(run, client, backend, rng).await
        }));
    }
    {
        let (run, h) = (run.clone(), h.clone());
        let rng = Rng::new(schedule.next_u64());
        clients.push(Task::spawn("the external contender", async move {
            external(run, IN_PROCESS, h, rng).await
        }));
    }
    let partitions = partition_schedule(&run, &switches, Rng::new(schedule.next_u64())).await;
    let mut counts = Counts::default();
    let mut external = String::new();
    for (client, task) in clients.iter_mut().enumerate() {
        let limit = run.stop.saturating_duration_since(Instant::now()) + SPAWN_LIMIT + PROMPT;
        let counted = task.join(limit).await?;
        if client == IN_PROCESS {
            external = format!(
                "{} of its holders not granted within {SPAWN_LIMIT:?}, {} failed{}",
                counted.timeouts,
                counted.errors,
                counted
                    .last_error
                    .as_ref()
                    .map_or_else(String::new, |error| format!(" (last: {error})"))
            );
        }
        counts.add(counted);
    }
    counts.add(partitions);
    drop(switches);

    let events = recorder.events();
    let healed = events
        .iter()
        .filter(|event| matches!(event.kind, Kind::Heal | Kind::Resume | Kind::Killed))
        .map(|event| event.at)
        .max();
    let rules = Rules {
        capacity: target.capacity(),
        liveness: healed.map(|healed| Liveness { healed, bound }),
    };
    let verdict = history::check(&events, &rules);
    let grants = verdict.holds.len();
    if !verdict.violations.is_empty() {
        return violated(evidence(&verdict, &events, run.ttl));
    }
    if grants == 0 {
        return violated(format!(
            "no grant in {length:?} (last error: {})",
            counts.last_error.as_deref().unwrap_or("none")
        ));
    }
    let by_external = verdict
        .holds
        .iter()
        .filter(|hold| hold.client == IN_PROCESS)
        .count();
    let lost_after_fault = verdict
        .holds
        .iter()
        .filter(|hold| hold.ended_by == history::Ending::LostAfterFault)
        .count();
    Ok(Holds::figure(
        format!(
            "seed {seed}: {grants} grants in {}, 0 violations; {} partitions ({} silent), {} kills, \
             {} pauses ({} past the TTL)",
            crate::check::secs(length),
            counts.partitions,
            counts.silent,
            counts.kills,
            counts.pauses,
            counts.long_pauses
        ),
        format!(
            "{} contenders ({IN_PROCESS} through their own proxies, 1 external: {by_external} of \
             the grants; {external}) for {}; session TTL {:?}, external holder TTL {:?}; {lost_after_fault} \
             holds ended by lost() after a pause or partition; {} call errors, {} calls given up \
             after {CALL_LIMIT:?}; liveness: a grant within {bound:?} of the last fault's end{}",
            IN_PROCESS + 1,
            target.describe(),
            run.ttl,
            run.holder_ttl,
            counts.errors,
            counts.timeouts,
            healed.map_or_else(String::new, |at| format!(" (at {})", crate::check::secs(at)))
        ),
    ))
}

/// The violations, and the history around the first one.
fn evidence(verdict: &Verdict, events: &[Event], ttl: Duration) -> String {
    let mut text = verdict
        .violations
        .iter()
        .take(5)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    let around = match &verdict.violations[0] {
        history::Violation::Overlap { at, .. } => Some(*at),
        history::Violation::TokenOrder { later, .. } => Some(later.granted),
        history::Violation::DuplicateToken { second, .. } => Some(second.granted),
        history::Violation::NoGrantAfterHeal { healed, .. } => Some(*healed),
        history::Violation::Malformed(_) => None,
    };
    if let Some(at) = around {
        // The events just before the violation (what led to it) and a few after.
        let before: Vec<&Event> = events
            .iter()
            .filter(|event| event.at <= at && event.at + ttl * 2 >= at)
            .collect();
        let after = events
            .iter()
            .filter(|event| event.at > at && event.at <= at + ttl)
            .take(EXCERPT_AFTER);
        let excerpt: Vec<String> = before[before.len().saturating_sub(EXCERPT_BEFORE)..]
            .iter()
            .copied()
            .chain(after)
            .map(ToString::to_string)
            .collect();
        text.push_str(&format!("; history around it: {}", excerpt.join(", ")));
    }
    text
}

/// Takes the target through `session` on `backend`; returns the grant and the handle
/// it was taken through (kept as long as the grant).
async fn acquire(
    backend: &Arc<dyn Backend>,
    session: &Session,
    target: Target,
    name: &Name,
) -> distsync_core::Result<(Grant, Box<dyn Send + Sync>)> {
    match target {
        Target::Lock => {
            let locker = backend.locker(session, name.clone())?;
            let guard = locker.lock().await?;
            Ok((Grant::Guard(guard), Box::new(locker)))
        }
        Target::Permit => {
            let semaphore = backend.semaphore(session, name.clone(), HOLDER_PERMITS)?;
            let permit = semaphore.acquire().await?;
            Ok((Grant::Permit(permit), Box::new(semaphore)))
        }
        Target::Leadership => {
            let election = backend.election(session, name.clone())?;
            let leadership = election.campaign(Bytes::from_static(b"mixed")).await?;
            Ok((Grant::Leader(leadership), Box::new(election)))
        }
    }
}

/// An in-process contender through its own proxy: call, hold, release, until the run
/// stops; a new session whenever its session is lost.
async fn in_process(
    run: Run,
    client: usize,
    backend: Arc<dyn Backend>,
    mut rng: Rng,
) -> Check<Counts> {
    let mut counts = Counts::default();
    let mut session: Option<Session> = None;
    while Instant::now() < run.stop {
        let current = match &session {
            Some(session) if !session.is_lost() => session.clone(),
            _ => {
                let opened = tokio::time::timeout(
                    CALL_LIMIT,
                    backend.session(SessionOptions::with_ttl(run.ttl)),
                )
                .await;
                match opened {
                    Ok(Ok(opened)) => {
                        session = Some(opened.clone());
                        opened
                    }
                    Ok(Err(error)) => {
                        counts.error(&error);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    Err(_) => {
                        counts.timeouts += 1;
                        continue;
                    }
                }
            }
        };
        run.recorder.record(client, Kind::Invoke);
        let called = tokio::time::timeout(
            CALL_LIMIT,
            acquire(&backend, &current, run.target, &run.name),
        )
        .await;
        match called {
            Ok(Ok((guard, _handle))) => {
                run.recorder.record(client, Kind::Grant(guard.token()));
                let lost = guard.lost();
                let hold = Duration::from_millis(10 + rng.below(MAX_HOLD_MS) as u64);
                tokio::select! {
                    () = lost => {
                        run.recorder.record(client, Kind::Lost);
                    }
                    () = tokio::time::sleep(hold) => {
                        run.recorder.record(client, Kind::Release);
                        match tokio::time::timeout(CALL_LIMIT, guard.release()).await {
                            Ok(Ok(())) => {}
                            Ok(Err(error)) => counts.error(&error),
                            Err(_) => counts.timeouts += 1,
                        }
                    }
                }
            }
            Ok(Err(error)) => {
                counts.error(&error);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(_) => counts.timeouts += 1,
        }
        tokio::time::sleep(Duration::from_millis(rng.below(30) as u64)).await;
    }
    if let Some(session) = session {
        let _ = tokio::time::timeout(PROMPT, session.close()).await;
    }
    Ok(counts)
}

/// How a hold of the external contender ends.
enum Ending {
    Release,
    Kill,
    Pause(Duration),
}

/// The external contender: one holder (a child process) per hold, which ends by a
/// release, a SIGKILL or a pause, as the seed says.
async fn external(run: Run, client: usize, h: Harness, mut rng: Rng) -> Check<Counts> {
    let mut counts = Counts::default();
    let kind = run.target.hold_kind();
    let lost_wait = run.holder_ttl + MARGIN;
    while Instant::now() < run.stop {
        run.recorder.record(client, Kind::Invoke);
        let mut holder = match tokio::time::timeout(
            SPAWN_LIMIT,
            h.spawn_holder(kind, run.target.suffix()),
        )
        .await
        {
            Ok(Ok(holder)) => holder,
            Ok(Err(error @ Error::Unsupported { .. })) => {
                return Err(Fail::Unsupported(error.to_string()))
            }
            Ok(Err(error)) => {
                counts.error(&error);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(_) => {
                counts.timeouts += 1;
                continue;
            }
        };
        run.recorder
            .record(client, Kind::Grant(holder.token().get()));
        // The holder may lose its session while it holds (a child starved on a loaded
        // machine): its lost() ends the hold, as an in-process contender's does.
        let hold = Duration::from_millis(10 + rng.below(MAX_HOLD_MS) as u64);
        if let Ok(woke) = tokio::time::timeout(hold, holder.lost()).await {
            match woke {
                Ok(()) => {
                    run.recorder.record(client, Kind::Lost);
                }
                // Its process ended: it acts on nothing any more.
                Err(error) => {
                    run.recorder.record(client, Kind::Killed);
                    counts.error(&error);
                }
            }
            drop(holder);
            continue;
        }
        let pause = share(&mut rng, run.holder_ttl, 20, 300);
        // A fault ends (a paused holder has woken and been waited for) before the
        // quiet tail.
        let fits = |lasts: Duration| Instant::now() + lasts < run.quiet;
        let ending = match rng.below(10) {
            0..=1 if fits(run.holder_ttl) => Ending::Kill,
            2..=4 if fits(pause + lost_wait) => Ending::Pause(pause),
            _ => Ending::Release,
        };
        match ending {
            Ending::Kill => match holder.kill().await {
                Ok(()) => {
                    run.recorder.record(client, Kind::Killed);
                    counts.kills += 1;
                }
                // No process to kill (the memory store's in-process holder): dropped.
                Err(Error::Unsupported { .. }) => {
                    run.recorder.record(client, Kind::Release);
                }
                Err(error) => return Err(Fail::Violated(format!("killing the holder: {error}"))),
            },
            Ending::Pause(pause) => {
                holder.pause().await.ctx("pausing the holder")?;
                run.recorder.record(client, Kind::Pause);
                counts.pauses += 1;
                if pause > run.holder_ttl {
                    counts.long_pauses += 1;
                }
                tokio::time::sleep(pause).await;
                run.recorder.record(client, Kind::Resume);
                holder.resume().await.ctx("resuming the holder")?;
                // A holder whose lease may have run out learns it once awake; one whose
                // lease had most of its TTL left goes on holding.
                let wait = if pause >= run.holder_ttl / 2 {
                    lost_wait
                } else {
                    Duration::from_millis(100)
                };
                match tokio::time::timeout(wait, holder.lost()).await {
                    Ok(Ok(())) => {
                        run.recorder.record(client, Kind::Lost);
                    }
                    Ok(Err(error)) => {
                        return Err(Fail::Violated(format!(
                            "the woken holder (token {}): {error}",
                            holder.token()
                        )))
                    }
                    Err(_) => release(&run, client, &mut *holder, &mut counts).await,
                }
            }
            Ending::Release => release(&run, client, &mut *holder, &mut counts).await,
        }
        drop(holder);
    }
    Ok(counts)
}

/// Releases the external holder's hold: through the holder where it can, by dropping
/// it otherwise (an in-process holder releases on drop).
async fn release(
    run: &Run,
    client: usize,
    holder: &mut dyn crate::faults::ExternalHolder,
    counts: &mut Counts,
) {
    run.recorder.record(client, Kind::Release);
    match tokio::time::timeout(CALL_LIMIT, holder.release()).await {
        Ok(Ok(()) | Err(Error::Unsupported { .. })) => {}
        Ok(Err(error)) => counts.error(&error),
        Err(_) => counts.timeouts += 1,
    }
}

/// Cuts one in-process contender off at a time, silent or reset, until the quiet tail.
async fn partition_schedule(run: &Run, switches: &[Box<dyn Partitioned>], mut rng: Rng) -> Counts {
    let mut counts = Counts::default();
    loop {
        let gap = Duration::from_millis(200 + rng.below(1300) as u64);
        let client = rng.below(switches.len());
        let silent = rng.below(2) == 0;
        let cut = share(&mut rng, run.ttl, 20, 250);
        if Instant::now() + gap + cut >= run.quiet {
            break;
        }
        tokio::time::sleep(gap).await;
        let mode = if silent {
            PartitionMode::Silent
        } else {
            PartitionMode::Reset
        };
        switches[client].set(mode);
        run.recorder.record(client, Kind::Cut);
        counts.partitions += 1;
        counts.silent += usize::from(silent);
        tokio::time::sleep(cut).await;
        switches[client].set(PartitionMode::Forward);
        run.recorder.record(client, Kind::Heal);
    }
    // The clients run on through the quiet tail.
    tokio::time::sleep_until(run.stop).await;
    counts
}
