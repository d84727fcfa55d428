//! Scheduled singleton jobs over the memory backend: one run per occurrence across
//! replicas, `at_least` across a restart, catch-up versus skip, `at_most`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use distsync_core::coordinator::Coordinator;
use distsync_core::error::Error;
use distsync_core::schedule::Schedule;
use distsync_core::scheduled_job::{JobOptions, JobStatus, Missed, Occurrence, ScheduledJob};
use distsync_kv::memory::MemoryBackend;

const DEADLINE: Duration = Duration::from_secs(20);

fn millis(at: SystemTime) -> u64 {
    u64::try_from(at.duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

/// What a run reports: (replica, occurrence ms, previous occurrence ms, started ms,
/// token).
type Ran = (usize, u64, Option<u64>, u64, u64);

/// Runs `job` as replica `replica`, reporting every run on `ran`.
fn replica(
    mut job: ScheduledJob,
    replica: usize,
    ran: mpsc::UnboundedSender<Ran>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let outcome = job
            .run(move |occurrence: Occurrence| {
                let ran = ran.clone();
                async move {
                    let _ = ran.send((
                        replica,
                        millis(occurrence.time()),
                        occurrence.previous().map(millis),
                        millis(occurrence.started()),
                        occurrence.token().get(),
                    ));
                }
            })
            .await;
        panic!("the loop ended: {outcome:?}");
    })
}

/// `job`'s next occurrence, within [`DEADLINE`].
async fn next_in_time(job: &mut ScheduledJob) -> Occurrence {
    tokio::time::timeout(DEADLINE, job.next())
        .await
        .expect("no occurrence within the deadline")
        .unwrap()
}

/// Receives `count` runs, within [`DEADLINE`].
async fn runs(ran: &mut mpsc::UnboundedReceiver<Ran>, count: usize) -> Vec<Ran> {
    let mut runs = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        while runs.len() < count {
            runs.push(ran.recv().await.expect("a replica ended"));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {count} runs in {DEADLINE:?}", runs.len()));
    runs
}

/// Each occurrence once, tokens growing with the occurrences.
fn assert_once_each(runs: &[Ran]) {
    let occurrences: BTreeSet<u64> = runs.iter().map(|run| run.1).collect();
    assert_eq!(
        occurrences.len(),
        runs.len(),
        "an occurrence ran twice: {runs:?}"
    );
    for pair in runs.windows(2) {
        assert!(pair[0].1 < pair[1].1, "occurrences out of order: {runs:?}");
        assert!(pair[0].4 < pair[1].4, "tokens did not grow: {runs:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_run_each_occurrence_once_and_catch_up_chains_them() {
    let coordinator = Coordinator::new(MemoryBackend::new());
    let schedule = Schedule::every(Duration::from_millis(100)).unwrap();
    let options = JobOptions::default().with_missed(Missed::CatchUp);
    let (ran, mut runs_rx) = mpsc::unbounded_channel();
    let replicas: Vec<_> = (0..3)
        .map(|index| {
            let job = coordinator
                .scheduled_job("jobs/every-100ms", schedule.clone(), options.clone())
                .unwrap();
            replica(job, index, ran.clone())
        })
        .collect();
    let runs = runs(&mut runs_rx, 12).await;
    for replica in &replicas {
        replica.abort();
    }
    assert_once_each(&runs);
    // Under CatchUp every run names the one before it: no occurrence was lost between.
    for pair in runs.windows(2) {
        assert_eq!(
            pair[1].2,
            Some(pair[0].1),
            "a run did not follow the previous: {runs:?}"
        );
    }
    let replicas_that_ran: BTreeSet<usize> = runs.iter().map(|run| run.0).collect();
    assert!(!replicas_that_ran.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_holds_across_a_restart_of_every_replica() {
    let backend = std::sync::Arc::new(MemoryBackend::new());
    let at_least = Duration::from_millis(450);
    let schedule = Schedule::every(Duration::from_millis(100)).unwrap();
    let options = JobOptions::default()
        .with_at_least(at_least)
        .with_missed(Missed::CatchUp);
    let (ran, mut runs_rx) = mpsc::unbounded_channel();
    let mut all = Vec::new();
    for generation in 0..2 {
        // A new coordinator per generation: nothing is kept in memory across it.
        let coordinator = Coordinator::from_arc(backend.clone());
        let replicas: Vec<_> = (0..2)
            .map(|index| {
                let job = coordinator
                    .scheduled_job("jobs/spaced", schedule.clone(), options.clone())
                    .unwrap();
                replica(job, generation * 2 + index, ran.clone())
            })
            .collect();
        all.extend(runs(&mut runs_rx, 3).await);
        for replica in replicas {
            replica.abort();
            let _ = replica.await;
        }
    }
    assert_once_each(&all);
    for pair in all.windows(2) {
        let apart = pair[1].3 - pair[0].3;
        assert!(
            apart >= u64::try_from(at_least.as_millis()).unwrap(),
            "two starts {apart} ms apart: {all:?}"
        );
    }
    let job = Coordinator::from_arc(backend)
        .scheduled_job("jobs/spaced", schedule, options)
        .unwrap();
    let last = job.last_run().await.unwrap().expect("recorded");
    assert_eq!(last.runs, 6);
    assert_eq!(millis(last.occurrence), all[5].1);
}

/// Waits until the clock is at least `phase` into a period of `period`.
async fn wait_for_phase(period: u64, phase: u64) {
    loop {
        let now = millis(SystemTime::now()) % period;
        if now >= phase {
            return;
        }
        tokio::time::sleep(Duration::from_millis(phase - now)).await;
    }
}

/// Runs one occurrence of a fresh job, then leaves a gap of three occurrences with no
/// replica, and returns the first occurrence after it, with when `next` was called.
async fn after_a_gap(missed: Missed) -> (Occurrence, Option<u64>, SystemTime) {
    let backend = std::sync::Arc::new(MemoryBackend::new());
    let schedule = Schedule::every(Duration::from_secs(1)).unwrap();
    let options = JobOptions::default().with_missed(missed);
    let first = {
        let mut job = Coordinator::from_arc(backend.clone())
            .scheduled_job("jobs/gap", schedule.clone(), options.clone())
            .unwrap();
        let occurrence = next_in_time(&mut job).await;
        let first = millis(occurrence.time());
        occurrence.finish().await.unwrap();
        first
    };
    // Nobody runs the job for three occurrences, then a replica starts at least 600 ms
    // into a period: past the default grace (half the 1 s interval) of its occurrence.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    wait_for_phase(1000, 600).await;
    let called = SystemTime::now();
    let mut job = Coordinator::from_arc(backend)
        .scheduled_job("jobs/gap", schedule, options)
        .unwrap();
    let occurrence = next_in_time(&mut job).await;
    (occurrence, Some(first), called)
}

#[tokio::test]
async fn catch_up_runs_once_at_once_for_the_missed_occurrences() {
    let (occurrence, first, called) = after_a_gap(Missed::CatchUp).await;
    assert_eq!(occurrence.previous().map(millis), first);
    assert!(
        occurrence.time() < called,
        "{occurrence:?} not the missed one"
    );
    assert!(
        millis(occurrence.time()) >= first.unwrap() + 3000,
        "{occurrence:?}"
    );
    // The start is kept to the millisecond: one within the millisecond of the call
    // reads as before it.
    let waited = occurrence
        .started()
        .duration_since(called)
        .unwrap_or_default();
    assert!(
        waited < Duration::from_millis(400),
        "caught up after {waited:?}"
    );
    occurrence.finish().await.unwrap();
}

#[tokio::test]
async fn skip_waits_for_the_next_occurrence_after_a_gap() {
    let (occurrence, first, called) = after_a_gap(Missed::Skip).await;
    assert_eq!(occurrence.previous().map(millis), first);
    assert!(
        occurrence.time() > called,
        "{occurrence:?} was stale at {called:?}"
    );
    let late = occurrence
        .started()
        .duration_since(occurrence.time())
        .unwrap();
    assert!(late <= Duration::from_millis(500), "started {late:?} late");
    occurrence.finish().await.unwrap();
}

#[tokio::test]
async fn a_run_is_stopped_at_at_most_and_the_lock_released() {
    let coordinator = Coordinator::new(MemoryBackend::new());
    let at_most = Duration::from_millis(300);
    let mut job = coordinator
        .scheduled_job(
            "jobs/slow",
            Schedule::every(Duration::from_millis(50)).unwrap(),
            JobOptions::default().with_at_most(at_most),
        )
        .unwrap();
    let occurrence = next_in_time(&mut job).await;
    let started = Instant::now();
    let outcome = occurrence.while_held(std::future::pending::<()>()).await;
    assert!(
        matches!(outcome, Err(Error::Timeout(d)) if d == at_most),
        "{outcome:?}"
    );
    assert!(started.elapsed() < at_most + Duration::from_secs(1));
    assert!(occurrence.is_lost());
    let token = occurrence.token();
    occurrence.finish().await.unwrap();
    // The lock is free again: the next occurrence runs with a greater token.
    let next = next_in_time(&mut job).await;
    assert!(next.token() > token);
    next.finish().await.unwrap();
}

#[tokio::test]
async fn names_and_options_are_checked_before_any_io() {
    let coordinator = Coordinator::new(MemoryBackend::new());
    let every = Schedule::every(Duration::from_secs(1)).unwrap();
    let long = "j".repeat(240);
    assert!(matches!(
        coordinator.scheduled_job(&long, every.clone(), JobOptions::default()),
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        coordinator.scheduled_job("a//b", every.clone(), JobOptions::default()),
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        coordinator.scheduled_job(
            "jobs/x",
            every,
            JobOptions::default().with_at_most(Duration::ZERO)
        ),
        Err(Error::InvalidArgument(_))
    ));
}

/// Reads the store's jobs under `prefix` until `done` accepts them, within [`DEADLINE`].
async fn jobs_until(
    coordinator: &Coordinator,
    prefix: &str,
    done: impl Fn(&[JobStatus]) -> bool,
) -> Vec<JobStatus> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let jobs = coordinator.scheduled_jobs(prefix).await.unwrap();
        if done(&jobs) {
            return jobs;
        }
        assert!(
            Instant::now() < deadline,
            "not within {DEADLINE:?}: {jobs:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A job is listed from its first look for an occurrence, with its schedule and no run
/// (a job that never runs is what an operator looks for), and with its last run once
/// it runs; the prefix filters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_lists_its_jobs_before_and_after_they_run() {
    let coordinator = Coordinator::new(MemoryBackend::new());
    assert!(coordinator.scheduled_jobs("").await.unwrap().is_empty());
    let nightly = Schedule::cron("0 3 * * *").unwrap();
    let mut waiting = coordinator
        .scheduled_job("jobs/nightly", nightly.clone(), JobOptions::default())
        .unwrap();
    let waiting = tokio::spawn(async move { waiting.next().await });
    let listed = jobs_until(&coordinator, "jobs/", |jobs| !jobs.is_empty()).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let job = &listed[0];
    assert_eq!(
        (job.name.as_str(), &job.schedule),
        ("jobs/nightly", &nightly)
    );
    assert_eq!(job.last_run, None);
    let now = SystemTime::now();
    assert!(
        job.next
            .is_some_and(|next| next > now - Duration::from_secs(1)),
        "{job:?}"
    );
    assert!(job.due.is_some_and(|due| due <= now), "{job:?}");

    let often = Schedule::every(Duration::from_millis(100)).unwrap();
    let (ran, mut ran_rx) = mpsc::unbounded_channel();
    let running = replica(
        coordinator
            .scheduled_job("jobs/often", often.clone(), JobOptions::default())
            .unwrap(),
        0,
        ran,
    );
    let first = runs(&mut ran_rx, 1).await[0];
    let listed = jobs_until(&coordinator, "jobs/o", |jobs| {
        jobs.iter().any(|job| job.last_run.is_some())
    })
    .await;
    running.abort();
    waiting.abort();
    assert_eq!(listed.len(), 1, "the prefix lets one through: {listed:?}");
    let last = listed[0].last_run.expect("the run is recorded");
    assert!(
        millis(last.occurrence) >= first.1 && last.runs >= 1,
        "{last:?}"
    );
    assert_eq!(listed[0].schedule, often);
    assert_eq!(coordinator.scheduled_jobs("").await.unwrap().len(), 2);
}

/// A replica whose store failed long enough for its retry pauses to grow past the
/// job's interval runs the first occurrence after the store answers again: no pause
/// carries it past an occurrence it could run.
#[tokio::test]
async fn a_replica_runs_the_first_occurrence_after_an_outage() {
    use distsync_kv::memory::{FaultyKv, MemoryKv, Partition, capabilities};
    use distsync_kv::recipes::KvBackend;

    /// Long enough for pauses of 100 ms doubling to pass a second many times over.
    const OUTAGE: Duration = Duration::from_secs(7);
    let kv = FaultyKv::new(MemoryKv::new());
    let backend = std::sync::Arc::new(KvBackend::with_kv(kv.clone(), "", capabilities()));
    let options = JobOptions::default()
        .with_missed(Missed::Skip)
        .with_grace(Duration::from_millis(900));
    let mut job = Coordinator::from_arc(backend)
        .scheduled_job(
            "jobs/outage",
            Schedule::every(Duration::from_secs(1)).unwrap(),
            options,
        )
        .unwrap();
    let first = next_in_time(&mut job).await;
    let first_ms = millis(first.time());
    first.finish().await.unwrap();
    kv.partition(Partition::Reset);
    let next = tokio::spawn(async move { job.next().await });
    tokio::time::sleep(OUTAGE).await;
    let healed = millis(SystemTime::now());
    kv.partition(Partition::Open);
    let occurrence = tokio::time::timeout(DEADLINE, next)
        .await
        .expect("no occurrence after the outage")
        .unwrap()
        .unwrap();
    let ran = millis(occurrence.time());
    assert!(
        ran > first_ms && ran <= healed - healed % 1000 + 1000,
        "after an outage healed at {healed}, the replica ran the occurrence {ran}, not the \
         first one after the heal ({})",
        healed - healed % 1000 + 1000
    );
}

/// A replica whose grant is read only after its occurrence's grace (the replica was
/// slowed past it, here by blocking its only thread) hands the lock back and runs
/// nothing late: its first run is a later occurrence, started within the grace.
#[tokio::test(flavor = "current_thread")]
async fn a_grant_read_after_the_grace_starts_no_late_run() {
    let coordinator = Coordinator::new(MemoryBackend::new());
    let grace = Duration::from_millis(300);
    let mut job = coordinator
        .scheduled_job(
            "jobs/late",
            Schedule::every(Duration::from_secs(1)).unwrap(),
            JobOptions::default().with_grace(grace),
        )
        .unwrap();
    // Another session holds the job's lock across the next occurrence's grace.
    let session = coordinator.session().await.unwrap();
    let guard = coordinator
        .locker(&session, "jobs/late")
        .unwrap()
        .lock()
        .await
        .unwrap();
    wait_for_phase(1000, 900).await;
    let held = millis(SystemTime::now()).div_ceil(1000) * 1000;
    let replica = tokio::spawn(async move {
        let occurrence = next_in_time(&mut job).await;
        let run = (
            millis(occurrence.time()),
            millis(occurrence.started()) - millis(occurrence.time()),
        );
        occurrence.finish().await.unwrap();
        run
    });
    // The replica waits in line from the occurrence on. The holder lets go 200 ms into
    // the grace, and the replica's thread is blocked until 200 ms past the grace's end,
    // before the replica can read its grant.
    tokio::time::sleep(Duration::from_millis(
        (held + 200).saturating_sub(millis(SystemTime::now())),
    ))
    .await;
    guard.unlock().await.unwrap();
    std::thread::sleep(Duration::from_millis(
        (held + 500).saturating_sub(millis(SystemTime::now())),
    ));
    let (occurrence, late) = replica.await.unwrap();
    assert!(
        occurrence > held,
        "the occurrence {held} ran {late} ms late, past its grace of {grace:?}"
    );
    assert!(
        late <= 300,
        "started {late} ms late, past the grace of {grace:?}"
    );
}
