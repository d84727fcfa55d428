//! The negative control of the inconclusive verdict: a store that really breaks a
//! timing guarantee is caught as violated, by a live harness, every time, also with two
//! CPU hogs beside the runner.
//!
//! A runner that calls a verdict inconclusive when it stalled could hide a real defect
//! behind that word. The control: a memory store whose lease clock runs four times fast
//! for a holder that stops renewing. A holder paused with two thirds of its two-second
//! lease or more left loses its lock half a second later, while by its own clock the
//! lock is still its own for over a second: the store grants the lock to the next
//! client before the holder's lease (and its safety margin) could have run out, which
//! `lock_holder_pause` must report as a violation. It does, in ten runs of ten, and
//! the same with two threads spinning on the two cores of a small CI machine; a run
//! the harness had called inconclusive would fail the test.
//!
//! The hogs are threads of the test process, not child processes: they end with it
//! whatever happens (a panic, the test runner's timeout), where a child process could
//! outlive it and load the machine for good.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use async_trait::async_trait;
use distsync_conformance::Harness;
use distsync_conformance::{
    find, run_case, ExternalHolder, Faults, HoldKind, HolderSpec, Hook, Outcome, Report, StallMeter,
};
use distsync_core::{
    Backend, Error, FencingToken, LockGuard, Locker, Result, Session, SessionOptions,
};
use distsync_kv::kv::LeaseId;
use distsync_kv::memory::MemoryBackend;

/// How many runs in a row must each be caught.
const RUNS: usize = 10;

/// The case the control breaks: a holder paused past its TTL must not lose the lock
/// before its lease could have run out.
const CASE: &str = "lock_holder_pause";

/// How much faster than its TTL the broken store expires a lease that stops renewing.
const FAST: u32 = 4;

/// Fault hooks over a memory store that expires a paused holder's lease after a
/// quarter of its TTL instead of a whole one: the only hook offered is the paused
/// holder.
struct FastExpiry {
    store: Arc<MemoryBackend>,
}

/// The harness of the control: the memory store behind [`FastExpiry`].
fn fast_expiry() -> Harness {
    let store = Arc::new(MemoryBackend::new());
    Harness::new(Arc::clone(&store) as Arc<dyn Backend>).with_faults(Arc::new(FastExpiry { store }))
}

#[async_trait]
impl Faults for FastExpiry {
    fn describe(&self) -> String {
        format!("memory store whose paused holders' leases expire after 1/{FAST} of their TTL")
    }

    fn offers(&self, hook: Hook) -> std::result::Result<(), String> {
        match hook {
            Hook::PausedHolder => Ok(()),
            hook => Err(format!("{hook}: not offered by the negative control")),
        }
    }

    async fn spawn_holder(
        &self,
        backend: &dyn Backend,
        spec: &HolderSpec,
    ) -> Result<Box<dyn ExternalHolder>> {
        if spec.kind != HoldKind::Lock {
            return Err(Error::unsupported(
                "negative control",
                "holders other than locks",
            ));
        }
        let session = backend.session(SessionOptions::with_ttl(spec.ttl)).await?;
        let locker = backend.locker(&session, spec.name.clone())?;
        let guard = locker.lock().await?;
        Ok(Box::new(EarlyExpiry {
            store: Arc::clone(&self.store),
            session,
            _locker: locker,
            guard,
            expiry: None,
        }))
    }
}

/// An in-process lock holder whose pause freezes its lease, as the memory store's own
/// paused holder does, and then has the store end the lease a quarter of its TTL later.
struct EarlyExpiry {
    store: Arc<MemoryBackend>,
    session: Session,
    _locker: Box<dyn Locker>,
    guard: LockGuard,
    /// The store's early expiry, once paused.
    expiry: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for EarlyExpiry {
    fn drop(&mut self) {
        if let Some(expiry) = &self.expiry {
            expiry.abort();
        }
    }
}

#[async_trait]
impl ExternalHolder for EarlyExpiry {
    fn token(&self) -> FencingToken {
        self.guard.token()
    }

    fn describe(&self) -> String {
        format!(
            "in-process holder with memory lease {}, expired early when paused",
            self.session.id()
        )
    }

    async fn kill(&mut self) -> Result<()> {
        Err(Error::unsupported("negative control", "killing a holder"))
    }

    async fn pause(&mut self) -> Result<()> {
        let lease = LeaseId::try_from(self.session.id().0)
            .map_err(|_| Error::InvalidArgument(format!("no lease {}", self.session.id())))?;
        if !self.store.kv().freeze_lease(lease) {
            return Err(Error::SessionLost);
        }
        let store = Arc::clone(&self.store);
        let id = self.session.id();
        let early = self.session.ttl() / FAST;
        self.expiry = Some(tokio::spawn(async move {
            tokio::time::sleep(early).await;
            // The defect under test: the store drops a lease its holder still holds.
            let _ = store.revoke_session(id).await;
        }));
        Ok(())
    }

    async fn resume(&mut self) -> Result<()> {
        Ok(())
    }

    async fn write(&mut self) -> Result<FencingToken> {
        Ok(self.guard.token())
    }

    async fn lost(&mut self) -> Result<()> {
        self.guard.lost().await;
        Ok(())
    }
}

/// Threads that spin on every core they get until dropped, also when the test panics.
struct CpuHogs {
    stop: Arc<AtomicBool>,
    spins: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl CpuHogs {
    fn start(count: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let spins = Arc::new(AtomicU64::new(0));
        let threads = (0..count)
            .map(|_| {
                let (stop, spins) = (Arc::clone(&stop), Arc::clone(&spins));
                std::thread::spawn(move || {
                    let mut mine = 0_u64;
                    while !stop.load(Ordering::Relaxed) {
                        mine = mine.wrapping_add(1);
                        std::hint::spin_loop();
                    }
                    spins.fetch_add(mine, Ordering::Relaxed);
                })
            })
            .collect();
        Self {
            stop,
            spins,
            threads,
        }
    }
}

impl Drop for CpuHogs {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        eprintln!(
            "the CPU hogs spun {} times",
            self.spins.load(Ordering::Relaxed)
        );
    }
}

/// Runs the case [`RUNS`] times in a row, each against a fresh broken store, and
/// asserts that every run was caught as a violation of the claim (not inconclusive).
async fn caught_every_time() {
    let case = find(CASE).expect("a case of the suite");
    assert!(case.waits_on_faults(), "{CASE} is a fault cell");
    let meter = StallMeter::start();
    let mut reports: Vec<Report> = Vec::new();
    for _ in 0..RUNS {
        let report = run_case(case, &fast_expiry()).await;
        eprintln!("{report}");
        reports.push(report);
    }
    eprintln!(
        "the test's runtime stalled at most {:?} over the {RUNS} runs",
        meter.stop()
    );
    let caught = reports
        .iter()
        .filter(|report| {
            matches!(report.outcome, Outcome::Violated { .. })
                && report.outcome.detail().contains("before its lease")
                && report.is_failure()
        })
        .count();
    let outcomes: Vec<String> = reports.iter().map(ToString::to_string).collect();
    assert_eq!(caught, RUNS, "caught {caught} of {RUNS}: {outcomes:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_early_grant_is_violated_ten_times_in_ten() {
    caught_every_time().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_early_grant_is_violated_ten_times_in_ten_beside_two_cpu_hogs() {
    let _hogs = CpuHogs::start(2);
    caught_every_time().await;
}

/// The control's defect is what is caught: the same case on the honest memory store
/// holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_case_holds_on_the_honest_store() {
    let report = run_case(find(CASE).expect("a case of the suite"), &Harness::memory()).await;
    eprintln!("{report}");
    assert!(matches!(report.outcome, Outcome::Holds { .. }), "{report}");
}
