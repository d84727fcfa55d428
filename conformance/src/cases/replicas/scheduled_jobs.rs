//! `replicas_scheduled_job_faults`: [`RUNNERS`] runners of one scheduled job (every
//! [`JOB_INTERVAL`], `at_least` [`JOB_AT_LEAST`], grace [`JOB_GRACE`], each run
//! working [`JOB_WORK`]), each in this process through a partition proxy of its own,
//! while the mixed cases' seeded [`partition_schedule`] cuts one at a time, silent or
//! reset, for up to 2.5 session TTLs; beside them a runner in a child process
//! ([`HoldKind::JobRunner`]) is SIGKILLed (while it runs an occurrence, if it runs one
//! soon) and started again. On the memory store, which has no child processes, that
//! runner is in process and its loop is dropped instead.
//!
//! Every run is recorded (occurrence, token, start, runner) and judged:
//! - no occurrence runs twice, and the store's record ([`ScheduledJob::last_run`])
//!   counts at least the runs seen (a claim whose runner died or was cut off before it
//!   said so counts without a run);
//! - no two runs start closer than `at_least` (by the starts the store records), and
//!   no run starts past its occurrence's grace (`Missed::Skip`: a replica that reads
//!   its grant late hands it back);
//! - each runner's holds of the job's lock are judged by [`crate::history::check`]:
//!   one runner at a time outside pauses (a hold ended by `lost()` after a cut ends
//!   where the cut started), tokens growing with real time;
//! - every occurrence whose try window (its time to its grace's end) had no fault near
//!   it was run: an occurrence is excused when a cut or a kill falls within the
//!   faulted session's TTL and [`MARGIN`] before its window or inside it (a cut-off
//!   waiter or holder keeps the lock until its session expires), a heal or the
//!   restarted runner's start within [`MARGIN`] before it or inside it, or when
//!   `at_least` after the previous run's start leaves less of its grace than a runner
//!   needs to start (a quarter second plus twice the worst lag of this runtime, which
//!   a [`StallMeter`] of the case's own measures: under load runs start late and
//!   the next occurrence's window shrinks), or when a start itself was slow near its
//!   window: a probe makes a start's calls directly on the store every
//!   [`PROBE_EVERY`] (the job's record read, a lock of its own taken, a key of its own
//!   written under it, the lock released), and calls that took over [`SLOW_START`]
//!   overlapping the window mean that a runner at the head of the job's line could not
//!   have started within the grace, and the runners behind it wait for it (a store
//!   starved by the machine's other work, whose writes wait longer than its reads, or
//!   a harness whose tasks ran late; neither shows in the runtime's lag alone). The
//!   probe's calls are at read-committed isolation, which takes no part in the claims'
//!   serializable transactions, so that the probe cannot make them conflict. The
//!   partitions stop early enough to leave [`TAIL`] of occurrences that must all run.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use distsync_core::schedule::Schedule;
use distsync_core::scheduled_job::{JobOptions, LastRun, Missed, ScheduledJob, RECORD_SUFFIX};
use distsync_core::{Coordinator, Error, Isolation, Locker, Session, SessionOptions, Stm};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use crate::cases::scenario::mixed::{partition_schedule, proxied_clients, seed, SEED_VAR};
use crate::check::{lock_vec, violated, Check, Context, Fail, Holds};
use crate::cpu_pressure::Starved;
use crate::faults::child::{
    JobEvent, JOB_AT_LEAST, JOB_AT_MOST, JOB_GRACE, JOB_INTERVAL, JOB_WORK,
};
use crate::faults::{ExternalHolder, HoldKind, Partitioned};
use crate::harness::Harness;
use crate::history::{self, Event, Kind, Recorder, Rules};
use crate::rng::Rng;
use crate::{StallMeter, STALL_FLOOR};

/// In-process runners, each through its own proxy.
const RUNNERS: usize = 3;

/// The run's length.
const LENGTH: Duration = Duration::from_secs(14);

/// The fault-free tail, past a session TTL and [`MARGIN`] after the last partition's
/// start: the occurrences in it must all run.
const TAIL: Duration = Duration::from_secs(4);

/// When the external runner is killed (at the latest; sooner once it runs), and how
/// long it stays dead.
const KILL_AFTER: Duration = Duration::from_secs(3);
const DEAD_FOR: Duration = Duration::from_millis(1500);

/// The margin of the liveness excuse.
const MARGIN: Duration = Duration::from_secs(1);

/// How often the probe makes a start's calls.
const PROBE_EVERY: Duration = Duration::from_millis(100);

/// A start's calls (the probe's) slower than this overlapping an occurrence's window
/// leave a runner at the head of the line too little of the grace to start: half of
/// it, as a runner's calls also cross its proxy and its wake-up comes on top.
const SLOW_START: Duration = Duration::from_millis(JOB_GRACE.as_millis() as u64 / 2);

/// One probe: when it was sent (wall ms) and how long its calls took (until an error,
/// for a failed one).
#[derive(Clone, Copy, Debug)]
struct Probe {
    sent_ms: u64,
    took: Duration,
}

/// What the probe calls: the job's record, a lock and a key of its own, on a session
/// it keeps.
struct Prober {
    _session: Session,
    stm: Stm,
    locker: Arc<dyn Locker>,
    record: String,
    scratch: String,
}

impl Prober {
    /// Makes a start's calls every [`PROBE_EVERY`] until dropped, recording each.
    async fn run(self, probes: Arc<Mutex<Vec<Probe>>>) {
        let mut every = tokio::time::interval(PROBE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let sent_ms = millis(std::time::SystemTime::now());
            let sent = Instant::now();
            let _ = self.start_calls().await;
            lock_vec(&probes).push(Probe {
                sent_ms,
                took: sent.elapsed(),
            });
        }
    }

    /// A start's calls: the record read, the lock taken, a write under it, the lock
    /// released.
    async fn start_calls(&self) -> Result<(), Error> {
        let record = self.record.clone();
        self.stm
            .atomically(Isolation::ReadCommitted, move |tx| {
                let record = record.clone();
                async move { tx.get(&record).await }
            })
            .await?;
        let guard = self.locker.lock().await?;
        let scratch = self.scratch.clone();
        let written = self
            .stm
            .atomically(Isolation::ReadCommitted, move |tx| {
                let scratch = scratch.clone();
                async move {
                    tx.put(&scratch, "probe");
                    Ok(())
                }
            })
            .await;
        guard.unlock().await?;
        written
    }
}

/// One run as its runner saw it.
#[derive(Clone, Copy, Debug)]
struct Run {
    runner: usize,
    occurrence_ms: u64,
    token: u64,
    started_ms: u64,
}

/// What the runners share: the history and the runs.
#[derive(Clone)]
struct Log {
    clock: Recorder,
    runs: Arc<Mutex<Vec<Run>>>,
}

impl Log {
    fn started(&self, run: Run) {
        self.clock.record(run.runner, Kind::Grant(run.token));
        lock_vec(&self.runs).push(run);
    }
}

fn millis(at: std::time::SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    })
}

fn options(ttl: Duration) -> JobOptions {
    JobOptions::default()
        .with_at_most(JOB_AT_MOST)
        .with_at_least(JOB_AT_LEAST)
        .with_missed(Missed::Skip)
        .with_grace(JOB_GRACE)
        .with_session(SessionOptions::with_ttl(ttl))
}

/// An in-process runner's loop, recording as client `runner`.
async fn run_in_process(mut job: ScheduledJob, runner: usize, log: Log) -> Error {
    loop {
        log.clock.record(runner, Kind::Invoke);
        let occurrence = match job.next().await {
            Ok(occurrence) => occurrence,
            Err(error) => return error,
        };
        log.started(Run {
            runner,
            occurrence_ms: millis(occurrence.time()),
            token: occurrence.token().get(),
            started_ms: millis(occurrence.started()),
        });
        match occurrence.while_held(tokio::time::sleep(JOB_WORK)).await {
            Err(Error::SessionLost) => log.clock.record(runner, Kind::Lost),
            _ => log.clock.record(runner, Kind::Release),
        };
        let _ = occurrence.finish().await;
    }
}

/// Reads an external runner's reports until it exits, recording as client `runner`.
async fn follow_external(holder: &mut dyn ExternalHolder, runner: usize, log: &Log) {
    log.clock.record(runner, Kind::Invoke);
    while let Ok(event) = holder.next_job_event().await {
        match event {
            JobEvent::Started {
                occurrence_ms,
                token,
                started_ms,
            } => log.started(Run {
                runner,
                occurrence_ms,
                token,
                started_ms,
            }),
            JobEvent::Ended { lost, .. } => {
                log.clock
                    .record(runner, if lost { Kind::Lost } else { Kind::Release });
                log.clock.record(runner, Kind::Invoke);
            }
        }
    }
}

pub(crate) async fn run(h: Harness) -> Check {
    let seed = seed()?;
    run_seeded(&h, seed).await.map_err(|fail| match fail {
        Fail::Violated(evidence) => {
            Fail::Violated(format!("seed {seed} ({SEED_VAR}={seed}): {evidence}"))
        }
        other => other,
    })
}

async fn run_seeded(h: &Harness, seed: u64) -> Check {
    let ttl = h.fault_ttl();
    let holder_ttl = h.holder_ttl();
    let meter = StallMeter::start();
    let starved = Starved::since_now();
    let runners = start_runners(h, ttl).await?;
    // The external runner: clients RUNNERS (killed) and RUNNERS + 1 (restarted).
    let external = h.spawn_holder(HoldKind::JobRunner, "job").await;
    let started = Instant::now();
    let stop = started + LENGTH;
    let quiet = stop - (ttl + MARGIN + TAIL);
    let killer = kill_external(
        h,
        external,
        runners.log.clone(),
        runners.name.clone(),
        h.coordinator(),
        runners.schedule.clone(),
    );
    let partitions = partition_schedule(
        &runners.log.clock,
        ttl,
        (quiet, stop),
        &runners.switches,
        Rng::new(seed),
    );
    let (killed, counts) = tokio::join!(killer, partitions);
    let killed = killed?;
    let until = runners.log.clock.now();
    let lag = meter.stop();
    let until_wall = millis(std::time::SystemTime::now());
    let ended = stop_and_read(h, runners, killed, ttl).await?;

    let judged = Judged {
        seed,
        ttl,
        holder_ttl,
        lag,
        until,
        until_wall,
        partitions: counts.partitions,
        starved: starved.so_far(),
    };
    let runs = check_runs(&ended)?;
    let verdict = check_holds(&ended.events)?;
    let occurrences = check_occurrences(&judged, &ended, &runs)?;
    Ok(figure(&judged, &ended, &runs, &verdict, &occurrences))
}

/// What the set-up leaves running: the runners through their proxies and the probe.
struct Runners {
    switches: Vec<Box<dyn Partitioned>>,
    name: String,
    schedule: Schedule,
    log: Log,
    probes: Arc<Mutex<Vec<Probe>>>,
    prober: JoinHandle<()>,
    tasks: Vec<JoinHandle<Error>>,
}

/// Starts the probe and the [`RUNNERS`] in-process runners, each through its own proxy.
async fn start_runners(h: &Harness, ttl: Duration) -> Check<Runners> {
    let switches = proxied_clients(h, RUNNERS).await?;
    let name = h.key("job");
    let schedule = Schedule::every(JOB_INTERVAL).ctx("the schedule")?;
    let log = Log {
        clock: Recorder::new(),
        runs: Arc::default(),
    };
    let probes = Arc::new(Mutex::new(Vec::new()));
    let direct = Coordinator::from_arc(Arc::clone(h.backend()));
    let session = h.session().await.set_up_ctx("the probe's session")?;
    let prober = Prober {
        _session: session.clone(),
        stm: direct.stm().ctx("the probe's STM")?,
        locker: direct
            .locker(&session, &h.key("probe"))
            .ctx("the probe's lock")?,
        record: format!("{name}{RECORD_SUFFIX}"),
        scratch: h.key("probe-write"),
    };
    let prober = tokio::spawn(prober.run(Arc::clone(&probes)));
    let mut tasks = Vec::new();
    for (runner, switch) in switches.iter().enumerate() {
        let job = Coordinator::from_arc(switch.backend())
            .scheduled_job(&name, schedule.clone(), options(ttl))
            .ctx("scheduling the job")?;
        let span = tracing::info_span!("runner", client = runner);
        tasks.push(tokio::spawn(
            run_in_process(job, runner, log.clone()).instrument(span),
        ));
    }
    Ok(Runners {
        switches,
        name,
        schedule,
        log,
        probes,
        prober,
        tasks,
    })
}

/// How the external runner was killed, and what runs its restarted copy.
struct Killed {
    how: &'static str,
    restarted: Option<JoinHandle<()>>,
    stop_follower: Option<tokio::sync::oneshot::Sender<()>>,
}

/// The fault: kills the external runner (client [`RUNNERS`]) and starts it again as
/// client `RUNNERS + 1`; on the memory store, which has no child processes, drops an
/// in-process runner's loop instead.
async fn kill_external(
    h: &Harness,
    external: Result<Box<dyn ExternalHolder>, Error>,
    log: Log,
    name: String,
    coordinator: Coordinator,
    schedule: Schedule,
) -> Check<Killed> {
    let first = RUNNERS;
    if matches!(external, Err(Error::Unsupported { .. })) {
        return drop_in_process_runner(h.holder_ttl(), log, name, coordinator, schedule).await;
    }
    let mut holder = external.ctx("starting the external runner")?;
    // Follow it until it has run an occurrence past KILL_AFTER's first half, or
    // KILL_AFTER: then kill it mid-run if it is running.
    let deadline = Instant::now() + KILL_AFTER;
    let half = Instant::now() + KILL_AFTER / 2;
    {
        let follow = follow_external(holder.as_mut(), first, &log);
        tokio::pin!(follow);
        let watch = async {
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if Instant::now() >= deadline {
                    return;
                }
                if Instant::now() >= half && running_a_run(&log, first) {
                    return;
                }
            }
        };
        tokio::select! {
            () = &mut follow => {}
            () = watch => {}
        }
    }
    holder.kill().await.ctx("killing the external runner")?;
    log.clock.record(first, Kind::Killed);
    drop(holder);
    tokio::time::sleep(DEAD_FOR).await;
    let mut holder = h
        .spawn_holder(HoldKind::JobRunner, "job")
        .await
        .set_up_ctx("restarting the external runner")?;
    log.clock.record(first + 1, Kind::Invoke);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let follower = tokio::spawn(async move {
        tokio::select! {
            () = follow_external(holder.as_mut(), first + 1, &log) => {}
            _ = stop_rx => {}
        }
        drop(holder);
    });
    Ok(Killed {
        how: "SIGKILL",
        restarted: Some(follower),
        stop_follower: Some(stop_tx),
    })
}

/// Whether `runner` has run an occurrence and holds the job's lock now.
fn running_a_run(log: &Log, runner: usize) -> bool {
    let runs = lock_vec(&log.runs);
    let events = log.clock.events();
    let holding = events
        .iter()
        .rev()
        .find(|event| event.client == runner)
        .is_some_and(|event| matches!(event.kind, Kind::Grant(_)));
    holding && runs.iter().any(|run| run.runner == runner)
}

/// Memory's fault: a runner in process (client [`RUNNERS`]), its loop dropped after
/// [`KILL_AFTER`] and started again (client `RUNNERS + 1`) after [`DEAD_FOR`].
async fn drop_in_process_runner(
    holder_ttl: Duration,
    log: Log,
    name: String,
    coordinator: Coordinator,
    schedule: Schedule,
) -> Check<Killed> {
    let first = RUNNERS;
    let job = coordinator
        .scheduled_job(&name, schedule.clone(), options(holder_ttl))
        .ctx("scheduling the job")?;
    let task = tokio::spawn(run_in_process(job, first, log.clone()));
    tokio::time::sleep(KILL_AFTER).await;
    task.abort();
    log.clock.record(first, Kind::Killed);
    tokio::time::sleep(DEAD_FOR).await;
    let job = coordinator
        .scheduled_job(&name, schedule, options(holder_ttl))
        .ctx("scheduling the job")?;
    let restarted = tokio::spawn(async move {
        let _ = run_in_process(job, first + 1, log).await;
    });
    Ok(Killed {
        how: "an in-process runner's loop dropped",
        restarted: Some(restarted),
        stop_follower: None,
    })
}

/// The history once every runner has stopped: the events, the runs, the store's
/// record and the probe's reads.
struct Ended {
    events: Vec<Event>,
    runs: Vec<Run>,
    record: Option<LastRun>,
    probes: Vec<Probe>,
    killed_how: &'static str,
}

/// Stops the runners and the probe, and reads the store's record of the job.
async fn stop_and_read(
    h: &Harness,
    runners: Runners,
    killed: Killed,
    ttl: Duration,
) -> Check<Ended> {
    let Runners {
        switches,
        name,
        schedule,
        log,
        probes,
        prober,
        tasks,
    } = runners;
    for task in &tasks {
        task.abort();
    }
    prober.abort();
    if let Some(stop) = killed.stop_follower {
        let _ = stop.send(());
    }
    if let Some(task) = killed.restarted {
        task.abort();
        let _ = task.await;
    }
    for task in tasks {
        if let Ok(error) = task.await {
            return violated(format!("a runner's loop ended: {error}"));
        }
    }
    let record = Coordinator::from_arc(Arc::clone(h.backend()))
        .scheduled_job(&name, schedule, options(ttl))
        .ctx("scheduling the job")?
        .last_run()
        .await
        .ctx("reading the job's record")?;
    drop(switches);
    let events = log.clock.events();
    let runs = lock_vec(&log.runs).clone();
    let probes = lock_vec(&probes).clone();
    Ok(Ended {
        events,
        runs,
        record,
        probes,
        killed_how: killed.how,
    })
}

/// What the run measured beside its history.
struct Judged {
    seed: u64,
    ttl: Duration,
    holder_ttl: Duration,
    lag: Duration,
    until: Duration,
    until_wall: u64,
    partitions: usize,
    /// How long the machine's runnable tasks waited for a CPU during the run.
    starved: Duration,
}

/// The runs' figures the later verdicts and the figure use.
struct Runs {
    by_start: Vec<Run>,
    closest: u64,
    seen: u64,
    first_runs: u64,
}

/// No occurrence runs twice, the store counts every run seen, no run starts past its
/// grace, and no two runs start closer than `at_least`. A run with no occurrence run at
/// all is judged occurrence by occurrence ([`check_occurrences`]), where a starved
/// machine or store can excuse it.
fn check_runs(ended: &Ended) -> Check<Runs> {
    let runs = &ended.runs;
    // No occurrence twice.
    let mut by_occurrence = runs.clone();
    by_occurrence.sort_by_key(|run| run.occurrence_ms);
    for pair in by_occurrence.windows(2) {
        if pair[0].occurrence_ms == pair[1].occurrence_ms {
            return violated(format!(
                "the occurrence {} ran twice: runner {} token {} and runner {} token {}",
                pair[0].occurrence_ms, pair[0].runner, pair[0].token, pair[1].runner, pair[1].token
            ));
        }
    }
    // No start past the grace: by the runner's own clock, which set both its start and
    // the end of its try.
    let grace = u64::try_from(JOB_GRACE.as_millis()).unwrap_or(u64::MAX);
    if let Some(late) = runs
        .iter()
        .find(|run| run.started_ms > run.occurrence_ms.saturating_add(grace))
    {
        return violated(format!(
            "the occurrence {} started {} ms late on runner {}, past its grace of {grace} ms",
            late.occurrence_ms,
            late.started_ms - late.occurrence_ms,
            late.runner
        ));
    }
    // The store counts every run seen.
    let seen = u64::try_from(runs.len()).unwrap_or(u64::MAX);
    let first_runs = ended.record.as_ref().map_or(0, |record| record.runs);
    if first_runs < seen {
        return violated(format!(
            "{seen} runs seen, the store's record counts {first_runs}"
        ));
    }
    if let (Some(record), Some(last)) = (&ended.record, by_occurrence.last()) {
        if millis(record.occurrence) < last.occurrence_ms {
            return violated(format!(
                "the store's record says the last occurrence run was {}, a run of {} was seen",
                millis(record.occurrence),
                last.occurrence_ms
            ));
        }
    }
    // at_least between starts.
    let mut by_start = runs.clone();
    by_start.sort_by_key(|run| run.started_ms);
    let at_least = u64::try_from(JOB_AT_LEAST.as_millis()).unwrap_or(u64::MAX);
    let mut closest = u64::MAX;
    for pair in by_start.windows(2) {
        let gap = pair[1].started_ms - pair[0].started_ms;
        closest = closest.min(gap);
        if gap < at_least {
            return violated(format!(
                "two runs started {gap} ms apart (at_least {at_least} ms): occurrence {} on \
                 runner {} and occurrence {} on runner {}",
                pair[0].occurrence_ms, pair[0].runner, pair[1].occurrence_ms, pair[1].runner
            ));
        }
    }
    Ok(Runs {
        by_start,
        closest,
        seen,
        first_runs,
    })
}

/// The holds: one runner at a time outside pauses, tokens growing with real time.
fn check_holds(events: &[Event]) -> Check<history::Verdict> {
    let verdict = history::check(
        events,
        &Rules {
            capacity: 1,
            liveness: None,
        },
    );
    if let Some(violation) = verdict.violations.first() {
        let excerpt: Vec<String> = events.iter().map(ToString::to_string).collect();
        return violated(format!(
            "{violation} ({} violations); the history: {}",
            verdict.violations.len(),
            excerpt.join(", ")
        ));
    }
    Ok(verdict)
}

/// How the judged occurrences fell.
struct Occurrences {
    required: usize,
    excused: usize,
    short: usize,
    slow: usize,
    ran: usize,
    allowance_ms: u64,
}

/// Every occurrence with no fault near its window ran.
fn check_occurrences(judged: &Judged, ended: &Ended, runs: &Runs) -> Check<Occurrences> {
    let (events, probes, by_start) = (&ended.events, &ended.probes, &runs.by_start);
    // The wall clock of the recorder's start: events are mapped to wall time through it.
    let wall_at_start = judged
        .until_wall
        .saturating_sub(u64::try_from(judged.until.as_millis()).unwrap_or(0));
    let to_wall = |at: Duration| wall_at_start + u64::try_from(at.as_millis()).unwrap_or(0);
    // How far each fault reaches: a cut-off runner (waiting or holding) keeps the lock
    // until its session expires, a killed one until its session's TTL; a heal or the
    // restarted runner's start (its first lock call) only for the margin.
    let restart = events.iter().find(|event| event.client == RUNNERS + 1);
    let faults: Vec<(u64, Duration)> = events
        .iter()
        .filter(|event| matches!(event.kind, Kind::Cut | Kind::Heal | Kind::Killed))
        .chain(restart)
        .map(|event| {
            let session = match event.kind {
                Kind::Cut => judged.ttl,
                Kind::Killed => judged.holder_ttl,
                _ => Duration::ZERO,
            };
            (to_wall(event.at), session)
        })
        .collect();
    let at_least = u64::try_from(JOB_AT_LEAST.as_millis()).unwrap_or(u64::MAX);
    let interval = u64::try_from(JOB_INTERVAL.as_millis()).unwrap_or(1);
    let grace = u64::try_from(JOB_GRACE.as_millis()).unwrap_or(0);
    let margin = u64::try_from(MARGIN.as_millis()).unwrap_or(0);
    // Judged from the first run; with none, from the recorder's start and a margin for
    // the runners' start-up (their sessions, through their proxies).
    let first_start = by_start
        .first()
        .map_or(wall_at_start + margin, |run| run.started_ms);
    // What a runner needs to start a run once it may (wake up, read the record, lock,
    // claim): an occurrence that `at_least` after the previous start leaves less of its
    // grace than this is excused (its runners may all wake too late, by no fault of
    // the store's).
    let allowance = STALL_FLOOR + judged.lag * 2;
    let allowance_ms = u64::try_from(allowance.as_millis()).unwrap_or(u64::MAX);
    let mut tally = Occurrences {
        required: 0,
        excused: 0,
        short: 0,
        slow: 0,
        ran: 0,
        allowance_ms,
    };
    let mut occurrence = first_start - first_start % interval + interval;
    while occurrence + grace + margin < judged.until_wall {
        let window_end = occurrence + grace;
        let faulted = faults.iter().any(|&(at, session)| {
            let reach = u64::try_from(session.as_millis()).unwrap_or(0) + margin;
            at <= window_end && at + reach >= occurrence
        });
        let previous = by_start
            .iter()
            .filter(|run| run.occurrence_ms < occurrence)
            .map(|run| run.started_ms)
            .max();
        let eligible = previous.map_or(occurrence, |started| occurrence.max(started + at_least));
        let postponed = eligible + allowance_ms > window_end;
        let was_run = ended.runs.iter().any(|run| run.occurrence_ms == occurrence);
        if was_run {
            tally.ran += 1;
        }
        if faulted {
            tally.excused += 1;
        } else if was_run {
            tally.required += 1;
        } else if postponed {
            tally.short += 1;
        } else if slowest_start(probes, occurrence, window_end) > SLOW_START {
            tally.slow += 1;
        } else {
            let window = (occurrence, window_end);
            return violated(missed(judged, ended, window, wall_at_start));
        }
        occurrence += interval;
    }
    if tally.ran == 0 {
        // Every window was excused, so nothing was required: the machine or the store
        // was too slow for the run to say anything of the guarantee.
        return Err(Fail::Starved {
            starved: judged.starved,
            bound: LENGTH,
            why: format!(
                "no occurrence ran in {LENGTH:?}; of the windows, {} were near a fault, {} \
                 left under {} ms of grace by at_least, {} saw a start's calls take over \
                 {SLOW_START:?}",
                tally.excused, tally.short, tally.allowance_ms, tally.slow
            ),
        });
    }
    Ok(tally)
}

/// What a violation says of the occurrence `window` (its start and the end of its
/// grace, wall ms) that nothing ran: the facts first, as a CI summary keeps a
/// violation's first few hundred characters; then each client's last event by the
/// window's end, however long before (what every runner was doing when nothing ran),
/// and the history near it.
fn missed(judged: &Judged, ended: &Ended, window: (u64, u64), wall_at_start: u64) -> String {
    let (occurrence, window_end) = window;
    let to_wall = |at: Duration| wall_at_start + u64::try_from(at.as_millis()).unwrap_or(0);
    let excerpt: Vec<String> = ended
        .events
        .iter()
        .filter(|event| {
            let at = to_wall(event.at);
            at + 3000 >= occurrence && at <= window_end + 1000
        })
        .map(ToString::to_string)
        .collect();
    let mut last: Vec<&Event> = Vec::new();
    for event in ended
        .events
        .iter()
        .filter(|event| to_wall(event.at) <= window_end)
    {
        last.retain(|seen| seen.client != event.client);
        last.push(event);
    }
    let last: Vec<String> = last.iter().map(ToString::to_string).collect();
    format!(
        "the occurrence {occurrence} ({:.3}s) was not run, with a start's calls made \
             in {} ms then (slow over {SLOW_START:?}), the runtime's lag up to {} ms \
             and no fault within a session TTL and {MARGIN:?} of its window (grace \
             {JOB_GRACE:?}); each client's last event by its window's end: [{}]; the \
             history near it: [{}]",
        Duration::from_millis(occurrence.saturating_sub(wall_at_start)).as_secs_f64(),
        slowest_start(&ended.probes, occurrence, window_end).as_millis(),
        judged.lag.as_millis(),
        last.join(", "),
        excerpt.join(", "),
    )
}

/// The slowest of the probe's starts overlapping [from, to] (wall ms).
fn slowest_start(probes: &[Probe], from: u64, to: u64) -> Duration {
    probes
        .iter()
        .filter(|probe| {
            let took = u64::try_from(probe.took.as_millis()).unwrap_or(u64::MAX);
            probe.sent_ms <= to && probe.sent_ms.saturating_add(took) >= from
        })
        .map(|probe| probe.took)
        .max()
        .unwrap_or_default()
}

/// The figure and its detail of a run that holds.
fn figure(
    judged: &Judged,
    ended: &Ended,
    runs: &Runs,
    verdict: &history::Verdict,
    occurrences: &Occurrences,
) -> Holds {
    let Occurrences {
        required,
        excused,
        short,
        slow,
        ran,
        allowance_ms,
    } = occurrences;
    let (seed, ttl, holder_ttl) = (judged.seed, judged.ttl, judged.holder_ttl);
    let (closest, first_runs) = (runs.closest, runs.first_runs);
    let killed_how = ended.killed_how;
    let at_least = u64::try_from(JOB_AT_LEAST.as_millis()).unwrap_or(u64::MAX);
    let mut starts: Vec<Duration> = ended.probes.iter().map(|probe| probe.took).collect();
    starts.sort_unstable();
    let start_median = starts.get(starts.len() / 2).map_or(0, Duration::as_millis);
    let slowest_overall = starts.last().map_or(0, Duration::as_millis);
    let latest = ended
        .runs
        .iter()
        .map(|run| run.started_ms.saturating_sub(run.occurrence_ms))
        .max()
        .unwrap_or(0);
    let lost_after_cut = verdict
        .holds
        .iter()
        .filter(|hold| hold.ended_by == history::Ending::LostAfterFault)
        .count();
    Holds::figure(
        format!(
            "seed {seed}: {} runs, 0 twice, closest starts {closest} ms apart (at_least {} ms); \
             {required} occurrences with no fault near them run, {short} missed with under \
             {allowance_ms} ms of grace left by at_least, {slow} missed while a start's calls \
             took over {SLOW_START:?}; {excused} near a fault excused; {} \
             partitions, 1 runner killed ({killed_how}) and restarted",
            ended.runs.len(),
            at_least,
            judged.partitions,
        ),
        format!(
            "{RUNNERS} runners through their own proxies and 1 external one for {}; every \
             {JOB_INTERVAL:?}, grace {JOB_GRACE:?}, runs of {JOB_WORK:?}; session TTL {ttl:?} \
             (external {holder_ttl:?}); {ran} occurrences run in the judged span; the store \
             counts {first_runs} runs ({} claimed without a run seen); {lost_after_cut} holds \
             ended by lost() after a cut; the latest start {latest} ms after its occurrence; \
             runtime lag up to {} ms; the probe's start made in {start_median} ms (median) \
             and {slowest_overall} ms at the slowest ({} probes)",
            crate::check::secs(LENGTH),
            first_runs - runs.seen,
            judged.lag.as_millis(),
            ended.probes.len()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run of 14 s that ended at wall time 100 s, with a runtime lag of `lag`.
    fn judged(lag: Duration, starved: Duration) -> Judged {
        Judged {
            seed: 1,
            ttl: Duration::from_secs(2),
            holder_ttl: Duration::from_secs(2),
            lag,
            until: LENGTH,
            until_wall: 100_000,
            partitions: 0,
            starved,
        }
    }

    /// No run, no fault, and the store's record read every 100 ms in `took`.
    fn nothing_ran(took: Duration) -> Ended {
        Ended {
            events: Vec::new(),
            runs: Vec::new(),
            record: None,
            probes: (86_000..100_000)
                .step_by(100)
                .map(|sent_ms| Probe { sent_ms, took })
                .collect(),
            killed_how: "SIGKILL",
        }
    }

    fn judge(judged: &Judged, ended: &Ended) -> Check<Occurrences> {
        let runs = check_runs(ended)?;
        check_occurrences(judged, ended, &runs)
    }

    #[test]
    fn no_run_on_a_live_machine_and_store_is_a_violation_at_its_first_occurrence() {
        let ended = nothing_ran(Duration::from_millis(5));
        match judge(&judged(Duration::from_millis(10), Duration::ZERO), &ended) {
            Err(Fail::Violated(evidence)) => {
                assert!(
                    evidence.starts_with("the occurrence 88000 (2.000s) was not run"),
                    "{evidence}"
                );
            }
            other => panic!("expected a violation, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn no_run_while_the_store_read_slowly_throughout_is_inconclusive() {
        let ended = nothing_ran(JOB_GRACE);
        let starved = Duration::from_secs(9);
        match judge(&judged(Duration::from_millis(10), starved), &ended) {
            Err(Fail::Starved {
                starved: measured,
                bound,
                why,
            }) => {
                assert_eq!((measured, bound), (starved, LENGTH));
                assert!(why.contains("no occurrence ran"), "{why}");
            }
            other => panic!("expected an inconclusive run, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn a_run_started_past_its_grace_is_a_violation() {
        let mut ended = nothing_ran(Duration::from_millis(5));
        let grace = u64::try_from(JOB_GRACE.as_millis()).unwrap();
        ended.runs.push(Run {
            runner: 2,
            occurrence_ms: 90_000,
            token: 7,
            started_ms: 90_000 + grace + 1,
        });
        match check_runs(&ended) {
            Err(Fail::Violated(evidence)) => {
                assert!(evidence.contains("past its grace"), "{evidence}");
            }
            other => panic!("expected a violation, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn runs_the_store_did_not_count_are_a_violation() {
        let mut ended = nothing_ran(Duration::from_millis(5));
        ended.runs.push(Run {
            runner: 0,
            occurrence_ms: 90_000,
            token: 7,
            started_ms: 90_010,
        });
        match check_runs(&ended) {
            Err(Fail::Violated(evidence)) => {
                assert!(evidence.contains("1 runs seen"), "{evidence}");
            }
            other => panic!("expected a violation, got {:?}", other.map(|_| ())),
        }
    }
}
