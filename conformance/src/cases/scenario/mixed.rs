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
//! - **Restarts** ([`run_restarting`]): the same clients and schedule on a private
//!   server of the harness's kind, which a further seeded schedule also stops and
//!   starts again a few times ([`restart_schedule`]), each restart a fault of every
//!   client at once. The clients carry a bound on session TTLs where the store's URL
//!   takes one (`Capabilities::session_bound`): the configuration in which a store
//!   that forgets on a restart (Redis without persistence) keeps holds exclusive, by a
//!   lock-delay after it forgot. A restart excuses no hold (see [`crate::history`]):
//!   a holder across it must see `lost()` before anyone else is granted. The liveness
//!   bound after a restart adds that lock-delay ([`PRIVATE_MAX_SESSION_TTL`]). One
//!   in-process hold in eight lasts 1–3 TTLs there ([`hold_time`]), so that some
//!   holders still hold when the server comes back.
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

use crate::check::{proxied_client, violated, within, Check, Context, Fail, Holds, Task, PROMPT};
use crate::cpu_pressure::Contention;
use crate::faults::private::PRIVATE_MAX_SESSION_TTL;
use crate::faults::{
    Faults, HoldKind, HolderSpec, PartitionMode, Partitioned, PrivateServer, ServerFaults,
    HOLDER_PERMITS,
};
use crate::harness::Harness;
use crate::history::{self, Event, Kind, Liveness, Recorder, Rules, Verdict, SERVER};
use crate::rng::Rng;

use super::first_grant::first_grant;

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

/// How long a private server may take to start, and to stop or start again.
const SERVER_LIMIT: Duration = Duration::from_secs(60);

/// How long a brand-new private server may take to grant its first lock (a store with
/// a lock-delay grants nothing for [`PRIVATE_MAX_SESSION_TTL`] after it starts).
const FIRST_GRANT: Duration = Duration::from_secs(30);

/// How long a restart (stop and start, past its seeded downtime) is expected to take
/// at least: a restart starts only if it ends, by the longest so far and at least this,
/// before the quiet tail.
const RESTART_ALLOWANCE: Duration = Duration::from_secs(3);

/// The longest gap before a restart, in ms.
const MAX_RESTART_GAP_MS: usize = 3500;

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

/// The store the clients contend on and the hooks that reach it.
#[derive(Clone)]
enum Store {
    /// The harness's own.
    Harness(Harness),
    /// A private server's (see [`run_restarting`]): its own hooks and a client of it.
    Private {
        faults: Arc<dyn Faults>,
        backend: Arc<dyn Backend>,
    },
}

impl Store {
    fn faults(&self) -> &dyn Faults {
        match self {
            Self::Harness(h) => h.faults(),
            Self::Private { faults, .. } => &**faults,
        }
    }

    fn backend(&self) -> &Arc<dyn Backend> {
        match self {
            Self::Harness(h) => h.backend(),
            Self::Private { backend, .. } => backend,
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
    /// Whether a contender's hold is now and then long (see [`hold_time`]).
    long_holds: bool,
}

/// What one client counted.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    errors: usize,
    timeouts: usize,
    /// Partitions injected.
    pub(crate) partitions: usize,
    /// Of which silent (the others reset connections).
    pub(crate) silent: usize,
    kills: usize,
    pauses: usize,
    long_pauses: usize,
    restarts: usize,
    /// How long the server was down over all its restarts.
    downtime: Duration,
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
        self.restarts += other.restarts;
        self.downtime += other.downtime;
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
pub(crate) fn seed() -> Check<u64> {
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
pub(crate) fn length() -> Check<Duration> {
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
    let store = Store::Harness(h.clone());
    run_with(&h, &store, None, target, Instant::now()).await
}

/// The case body with restarts: on a private server, restarted by a seeded schedule
/// under the same faults (see the module docs).
pub(crate) async fn run_restarting(h: Harness, target: Target) -> Check {
    let started = Instant::now();
    let (mut server, store) = private_store(&h).await?;
    run_with(&h, &store, Some(&mut server), target, started).await
}

/// A private server of the harness's kind, and the store of its clients: their URL
/// carries a bound on session TTLs where the store's takes one
/// (`Capabilities::session_bound`); once
/// it has granted a first lock (after its lock-delay, where it has one).
async fn private_store(h: &Harness) -> Check<(Box<dyn PrivateServer>, Store)> {
    let server = within(
        SERVER_LIMIT,
        "starting a private server",
        h.faults().private_server(&**h.backend()),
    )
    .await?;
    let bounded = h.backend().capabilities().session_bound;
    let query = if bounded && !server.url().contains("max_session_ttl") {
        format!("max_session_ttl={}ms", PRIVATE_MAX_SESSION_TTL.as_millis())
    } else {
        String::new()
    };
    let backend = within(
        PROMPT,
        "connecting to the private server",
        server.connect_with(&query),
    )
    .await?;
    if bounded && !backend.capabilities().exclusive_across_restart {
        return Err(Fail::Unsupported(
            "a client with max_session_ttl does not declare exclusive_across_restart: no \
             lock-delay after the store forgets"
                .to_owned(),
        ));
    }
    first_grant(
        &backend,
        SessionOptions::with_ttl(h.fault_ttl()),
        h.name("first-grant").ctx("naming the probe")?,
        FIRST_GRANT,
    )
    .await?;
    let faults = ServerFaults::of_private(&*server, &query).ctx("the private server's hooks")?;
    let store = Store::Private {
        faults: Arc::new(faults),
        backend,
    };
    Ok((server, store))
}

/// The liveness bounds of a run and the quiet tails that leave room for them.
#[derive(Clone, Copy, Debug)]
struct Bounds {
    /// A grant within this of a partition's, pause's or kill's end.
    fault: Duration,
    /// Partitions, pauses and kills end at least this long before the run's end.
    quiet_tail: Duration,
    /// A grant within this of a restarted server answering again: [`Bounds::fault`]
    /// and the lock-delay of a store that forgot.
    restart: Duration,
    /// Restarts end at least this long before the run's end.
    restart_tail: Duration,
}

/// The body of [`run`] and [`run_restarting`]; `started` is when the case started
/// (before its private server's start-up).
async fn run_with(
    h: &Harness,
    store: &Store,
    server: Option<&mut Box<dyn PrivateServer>>,
    target: Target,
    started: Instant,
) -> Check {
    let seed = seed()?;
    let length = length()?;
    let ttl = h.fault_ttl();
    let holder_ttl = h.holder_ttl();
    let bound = ttl.max(holder_ttl) * 2 + MARGIN;
    let restart = bound + PRIVATE_MAX_SESSION_TTL;
    let bounds = Bounds {
        fault: bound,
        quiet_tail: bound + MARGIN,
        restart,
        restart_tail: restart + MARGIN,
    };
    // Room for faults before the quiet tail (for a restart, before its own tail).
    let needed = match server {
        None => bounds.quiet_tail * 2,
        Some(_) => bounds.restart_tail + RESTART_ALLOWANCE + ttl,
    };
    if length < needed {
        return violated(format!(
            "{SECS_VAR}: a run of {length:?} leaves no time for faults before its quiet tail \
             (at least {needed:?} needed)"
        ));
    }
    // The clients' last calls and the joins come after the run's end.
    if started.elapsed() + length + SPAWN_LIMIT + PROMPT * 2 >= crate::CASE_LIMIT {
        return violated(format!(
            "{SECS_VAR}: a run of {length:?} does not fit in a case run's bound of {:?}",
            crate::CASE_LIMIT
        ));
    }
    let outcome = run_seeded(h, store, server, target, seed, length, bounds).await;
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
    store: &Store,
    server: Option<&mut Box<dyn PrivateServer>>,
    target: Target,
    seed: u64,
    length: Duration,
    bounds: Bounds,
) -> Check {
    let restarting = server.is_some();
    let Contenders {
        switches,
        run,
        mut clients,
        mut schedule,
    } = start_contenders(h, store, target, seed, length, bounds, restarting).await?;
    let partitioning = partition_schedule(
        &run.recorder,
        run.ttl,
        (run.quiet, run.stop),
        &switches,
        Rng::new(schedule.next_u64()),
    );
    let restarts = async {
        match server {
            Some(server) => {
                let quiet = run.stop - bounds.restart_tail;
                let rng = Rng::new(schedule.next_u64());
                restart_schedule(&run.recorder, run.ttl, quiet, server, rng).await
            }
            None => Ok(Counts::default()),
        }
    };
    let (partitions, restarts) = tokio::join!(partitioning, restarts);
    let (mut counts, external) = join_contenders(&mut clients, &run).await?;
    counts.add(partitions);
    counts.add(restarts?);
    drop(switches);
    judge(&run, &counts, seed, length, bounds, restarting, &external)
}

/// The contenders running: the in-process ones through their proxies, the external
/// one, and the seeded schedule the faults draw from next.
struct Contenders {
    switches: Vec<Box<dyn Partitioned>>,
    run: Run,
    clients: Vec<Task<Counts>>,
    schedule: Rng,
}

/// Starts [`IN_PROCESS`] contenders, each through a proxy of its own, and the external
/// one.
async fn start_contenders(
    h: &Harness,
    store: &Store,
    target: Target,
    seed: u64,
    length: Duration,
    bounds: Bounds,
    restarting: bool,
) -> Check<Contenders> {
    let name = h
        .name(target.suffix())
        .ctx("naming what is contended for")?;
    let mut switches: Vec<Box<dyn Partitioned>> = Vec::new();
    for _ in 0..IN_PROCESS {
        switches.push(
            proxied_client(store.faults(), store.backend().as_ref(), "", "a contender").await?,
        );
    }
    let recorder = Recorder::new();
    let started = Instant::now();
    let run = Run {
        recorder,
        target,
        name,
        stop: started + length,
        quiet: started + length - bounds.quiet_tail,
        ttl: h.fault_ttl(),
        holder_ttl: h.holder_ttl(),
        long_holds: restarting,
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
        let (run, store) = (run.clone(), store.clone());
        let rng = Rng::new(schedule.next_u64());
        clients.push(Task::spawn("the external contender", async move {
            external(run, IN_PROCESS, store, rng).await
        }));
    }
    Ok(Contenders {
        switches,
        run,
        clients,
        schedule,
    })
}

/// Joins every contender: their counts added up, and the external one's in words.
async fn join_contenders(clients: &mut [Task<Counts>], run: &Run) -> Check<(Counts, String)> {
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
    Ok((counts, external))
}

/// The verdict on the history, and the figure of a run that holds.
fn judge(
    run: &Run,
    counts: &Counts,
    seed: u64,
    length: Duration,
    bounds: Bounds,
    restarting: bool,
    external: &str,
) -> Check {
    let target = run.target;
    let events = run.recorder.events();
    // The recorder's clock starts just before `started`: the run stops calling at
    // about `length` on it.
    let liveness = liveness(&events, bounds, length, run.recorder.contention());
    // To the millisecond, for the figure.
    let bound = liveness
        .as_ref()
        .map_or(bounds.fault, |liveness| liveness.bound);
    let bound = Duration::from_millis(u64::try_from(bound.as_millis()).unwrap_or(u64::MAX));
    let healed = liveness.as_ref().map(|liveness| liveness.healed);
    let rules = Rules {
        capacity: target.capacity(),
        liveness,
    };
    let verdict = history::check(&events, &rules);
    let grants = verdict.holds.len();
    if !verdict.violations.is_empty() {
        return violated(evidence(&verdict, &events, run.ttl));
    }
    if grants == 0 {
        return Err(history::never_granted(
            format!(
                "no grant in {length:?} (last error: {})",
                counts.last_error.as_deref().unwrap_or("none")
            ),
            &verdict,
            &rules,
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
    let (restarts, across) = if restarting {
        let across: Vec<_> = verdict
            .holds
            .iter()
            .filter(|hold| hold.across_restart)
            .collect();
        let lost = across
            .iter()
            .filter(|hold| hold.ended_by == history::Ending::Lost)
            .count();
        (
            format!(
                ", {} restarts ({} down)",
                counts.restarts,
                crate::check::secs(counts.downtime)
            ),
            format!(
                "; {} holds across a restart, {lost} of them ended by lost() after it",
                across.len()
            ),
        )
    } else {
        (String::new(), String::new())
    };
    Ok(Holds::figure(
        format!(
            "seed {seed}: {grants} grants in {}, 0 violations; {} partitions ({} silent), {} kills, \
             {} pauses ({} past the TTL){restarts}",
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
             after {CALL_LIMIT:?}; liveness: a grant within {bound:?} of the last fault's \
             end{}{across}",
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

/// The liveness requirement of a history: a grant soon after the last fault's end,
/// within a bound that covers every fault's own bound (a restart's is longer: the
/// lock-delay of a store that forgot), the machine's starved time (`contention`) not
/// counted; `None` without faults.
fn liveness(
    events: &[Event],
    bounds: Bounds,
    until: Duration,
    contention: Contention,
) -> Option<Liveness> {
    let ends = events.iter().filter_map(|event| match event.kind {
        Kind::Heal | Kind::Resume | Kind::Killed => Some((event.at, bounds.fault)),
        Kind::ServerStart => Some((event.at, bounds.restart)),
        _ => None,
    });
    let (mut healed, mut deadline) = (None, Duration::ZERO);
    for (at, bound) in ends {
        healed = Some(healed.map_or(at, |healed: Duration| healed.max(at)));
        deadline = deadline.max(at + bound);
    }
    healed.map(|healed| Liveness {
        healed,
        bound: deadline - healed,
        until,
        contention,
    })
}

/// Restarts `server` at seeded times until `quiet`: stops it, leaves it down for up
/// to one `ttl`, starts it and waits until it answers, recording each restart for
/// [`SERVER`]. The first restart comes at a seeded time within the room there is, so
/// that a run restarts at least once; the others after the lock-delay of a store that
/// forgot ([`PRIVATE_MAX_SESSION_TTL`]) and a seeded gap of up to
/// [`MAX_RESTART_GAP_MS`], while one ends (by the longest so far, at least
/// [`RESTART_ALLOWANCE`]) before `quiet`.
async fn restart_schedule(
    recorder: &Recorder,
    ttl: Duration,
    quiet: Instant,
    server: &mut Box<dyn PrivateServer>,
    mut rng: Rng,
) -> Check<Counts> {
    let mut counts = Counts::default();
    let mut allowance = RESTART_ALLOWANCE;
    loop {
        let down = share(&mut rng, ttl, 0, 100);
        let gap = Duration::from_millis(rng.below(MAX_RESTART_GAP_MS) as u64);
        let room = quiet.saturating_duration_since(Instant::now() + down + allowance);
        let gap = match counts.restarts {
            0 if room.is_zero() => break,
            0 => gap.min(room.mul_f64(rng.below(100) as f64 / 100.0)),
            // The store grants between restarts, past the lock-delay of one that forgot.
            _ if PRIVATE_MAX_SESSION_TTL + gap >= room => break,
            _ => PRIVATE_MAX_SESSION_TTL + gap,
        };
        tokio::time::sleep(gap).await;
        let stopping = Instant::now();
        recorder.record(SERVER, Kind::ServerStop);
        within(SERVER_LIMIT, "stopping the private server", server.stop()).await?;
        tokio::time::sleep(down).await;
        within(
            SERVER_LIMIT,
            "starting the private server again",
            server.start(),
        )
        .await?;
        recorder.record(SERVER, Kind::ServerStart);
        counts.restarts += 1;
        counts.downtime += stopping.elapsed();
        allowance = allowance.max(stopping.elapsed().saturating_sub(down) + MARGIN);
    }
    Ok(counts)
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
                let hold = hold_time(&run, &mut rng);
                tokio::select! {
                    // A lost() that has fired ends the hold, whatever else a late poll
                    // finds ready: recorded as a release, a hold the store may already
                    // have given to another would read as two holders.
                    biased;
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

/// How long an in-process contender holds: up to [`MAX_HOLD_MS`]; in a run with
/// restarts, one hold in eight lasts 1–3 TTLs instead, so that some holds are still
/// held when the server comes back and their holders must learn whether they lost
/// them.
fn hold_time(run: &Run, rng: &mut Rng) -> Duration {
    if run.long_holds && rng.below(8) == 0 {
        share(rng, run.ttl, 100, 300)
    } else {
        Duration::from_millis(10 + rng.below(MAX_HOLD_MS) as u64)
    }
}

/// How a hold of the external contender ends.
enum Ending {
    Release,
    Kill,
    Pause(Duration),
}

/// The external contender: one holder (a child process) per hold, which ends by a
/// release, a SIGKILL or a pause, as the seed says.
async fn external(run: Run, client: usize, store: Store, mut rng: Rng) -> Check<Counts> {
    let mut counts = Counts::default();
    let kind = run.target.hold_kind();
    let lost_wait = run.holder_ttl + MARGIN;
    while Instant::now() < run.stop {
        run.recorder.record(client, Kind::Invoke);
        let mut holder = match tokio::time::timeout(
            SPAWN_LIMIT,
            store.faults().spawn_holder(
                &**store.backend(),
                &HolderSpec {
                    kind,
                    name: run.name.clone(),
                    ttl: run.holder_ttl,
                },
            ),
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

/// `count` clients, each through a proxy of its own: the switches the partition
/// schedule flips.
pub(crate) async fn proxied_clients(h: &Harness, count: usize) -> Check<Vec<Box<dyn Partitioned>>> {
    let mut switches = Vec::with_capacity(count);
    for _ in 0..count {
        switches.push(proxied_client(h.faults(), h.backend().as_ref(), "", "a client").await?);
    }
    Ok(switches)
}

/// Cuts one client (the one behind `switches[i]` is client `i` in `recorder`) off at
/// a time, silent or reset, for up to 2.5 `ttl`s, until `quiet`; returns at `stop`.
pub(crate) async fn partition_schedule(
    recorder: &Recorder,
    ttl: Duration,
    (quiet, stop): (Instant, Instant),
    switches: &[Box<dyn Partitioned>],
    mut rng: Rng,
) -> Counts {
    let mut counts = Counts::default();
    loop {
        let gap = Duration::from_millis(200 + rng.below(1300) as u64);
        let client = rng.below(switches.len());
        let silent = rng.below(2) == 0;
        let cut = share(&mut rng, ttl, 20, 250);
        if Instant::now() + gap + cut >= quiet {
            break;
        }
        tokio::time::sleep(gap).await;
        let mode = if silent {
            PartitionMode::Silent
        } else {
            PartitionMode::Reset
        };
        switches[client].set(mode);
        recorder.record(client, Kind::Cut);
        counts.partitions += 1;
        counts.silent += usize::from(silent);
        tokio::time::sleep(cut).await;
        switches[client].set(PartitionMode::Forward);
        recorder.record(client, Kind::Heal);
    }
    // The clients run on through the quiet tail.
    tokio::time::sleep_until(stop).await;
    counts
}
