//! A case, what it needs and claims, and running it into a [`Report`].

use std::fmt;
use std::time::Duration;

use distsync_core::{Capabilities, Isolation};
use futures::future::BoxFuture;
use serde::Serialize;
use tokio::time::Instant;

use crate::faults::Hook;
use crate::harness::Harness;
use crate::outcome::Outcome;
use crate::profile::Profile;
use crate::slack::{self, Tightest};
use crate::stall::StallMeter;

/// The bound on one whole case run; a case that exceeds it is a violation. It is a
/// backstop against a case that hangs, not a measure: every wait inside a case has its
/// own bound. Five minutes leaves room for the longest cases (MySQL's transaction
/// cases take up to about 155 s when three columns share a two-core runner).
pub const CASE_LIMIT: Duration = Duration::from_secs(300);

/// A matrix row group: the primitive a case exercises, or [`Group::Server`] (the store's
/// server as a whole) or [`Group::Api`] (the contract across every primitive).
/// `#[non_exhaustive]`: a new primitive adds a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Group {
    /// Sessions (leases).
    Session,
    /// [`distsync_core::Locker`].
    Lock,
    /// The unfair lock ([`distsync_core::raw::Primitives::unfair_locker`]).
    UnfairLock,
    /// [`distsync_core::Election`].
    Election,
    /// [`distsync_core::RwLock`].
    RwLock,
    /// [`distsync_core::Queue`].
    Queue,
    /// [`distsync_core::Barrier`].
    Barrier,
    /// [`distsync_core::DoubleBarrier`].
    DoubleBarrier,
    /// [`distsync_core::Semaphore`].
    Semaphore,
    /// [`distsync_core::Stm`].
    Stm,
    /// The store's server as a whole: restarts, cluster members.
    Server,
    /// Names, arguments and capabilities, across every primitive.
    Api,
    /// [`distsync_core::Counter`].
    Counter,
    /// [`distsync_core::CountDownLatch`].
    Latch,
    /// [`distsync_core::RateLimiter`].
    RateLimiter,
    /// Several primitives' clients under a seeded mix of faults, judged from their
    /// recorded history.
    MixedFaults,
    /// [`distsync_core::migrate::migrate`]: a store's durable state copied into another.
    Migrate,
    /// Effects in the caller's own database transaction: a transactional outbox,
    /// acknowledgements that commit with the consumer's writes, writes fenced at the
    /// caller's tables.
    Transactions,
    /// Work across replicas: group membership and shard ownership
    /// (`distsync_core::group`, `distsync_core::shards`).
    Replicas,
}

impl Group {
    /// The group's name in the matrix (its first column).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::Lock => "lock",
            Self::UnfairLock => "unfair_lock",
            Self::Election => "election",
            Self::RwLock => "rwlock",
            Self::Queue => "queue",
            Self::Barrier => "barrier",
            Self::DoubleBarrier => "double_barrier",
            Self::Semaphore => "semaphore",
            Self::Stm => "stm",
            Self::Server => "server",
            Self::Api => "api",
            Self::RateLimiter => "rate_limiter",
            Self::Counter => "counter",
            Self::Latch => "latch",
            Self::MixedFaults => "mixed_faults",
            Self::Migrate => "migrate",
            Self::Transactions => "transactions",
            Self::Replicas => "replicas",
        }
    }
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something a case needs the backend to offer; a case whose needs are not all offered
/// is [`Outcome::Unsupported`] without running. `#[non_exhaustive]`: it grows with
/// [`Capabilities`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Need {
    /// [`Capabilities::lock`].
    Lock,
    /// [`Capabilities::unfair_lock`].
    UnfairLock,
    /// [`Capabilities::election`].
    Election,
    /// [`Capabilities::rwlock`].
    RwLock,
    /// [`Capabilities::queue`].
    Queue,
    /// [`Capabilities::priority_queue`].
    PriorityQueue,
    /// [`Capabilities::barrier`].
    Barrier,
    /// [`Capabilities::double_barrier`].
    DoubleBarrier,
    /// [`Capabilities::semaphore`].
    Semaphore,
    /// [`Capabilities::guarded_writes`].
    GuardedWrites,
    /// [`Capabilities::reliable_delivery`].
    ReliableDelivery,
    /// STM at this level ([`Capabilities::supports_isolation`]).
    Stm(Isolation),
    /// [`Capabilities::rate_limiter`].
    RateLimiter,
    /// [`Capabilities::counter`].
    Counter,
    /// [`Capabilities::latch`].
    Latch,
    /// [`Capabilities::break_lock`].
    BreakLock,
    /// [`Capabilities::queue_age`].
    QueueAge,
    /// [`Capabilities::release_request`].
    ReleaseRequest,
    /// [`Capabilities::hand_over`].
    HandOver,
    /// [`Capabilities::export`].
    Export,
    /// [`Capabilities::caller_transactions`].
    CallerTransactions,
}

impl Need {
    /// Whether `capabilities` offer it.
    pub fn offered(self, capabilities: &Capabilities) -> bool {
        match self {
            Self::Lock => capabilities.lock,
            Self::UnfairLock => capabilities.unfair_lock,
            Self::Election => capabilities.election,
            Self::RwLock => capabilities.rwlock,
            Self::Queue => capabilities.queue,
            Self::PriorityQueue => capabilities.priority_queue,
            Self::Barrier => capabilities.barrier,
            Self::DoubleBarrier => capabilities.double_barrier,
            Self::Semaphore => capabilities.semaphore,
            Self::GuardedWrites => capabilities.guarded_writes,
            Self::ReliableDelivery => capabilities.reliable_delivery,
            Self::Stm(isolation) => capabilities.supports_isolation(isolation),
            Self::RateLimiter => capabilities.rate_limiter,
            Self::Counter => capabilities.counter,
            Self::Latch => capabilities.latch,
            Self::BreakLock => capabilities.break_lock,
            Self::QueueAge => capabilities.queue_age,
            Self::ReleaseRequest => capabilities.release_request,
            Self::HandOver => capabilities.hand_over,
            Self::Export => capabilities.export,
            Self::CallerTransactions => capabilities.caller_transactions,
        }
    }

    /// The capability flag, as written in [`Capabilities`].
    pub fn flag(self) -> &'static str {
        match self {
            Self::Lock => "lock",
            Self::UnfairLock => "unfair_lock",
            Self::Election => "election",
            Self::RwLock => "rwlock",
            Self::Queue => "queue",
            Self::PriorityQueue => "priority_queue",
            Self::Barrier => "barrier",
            Self::DoubleBarrier => "double_barrier",
            Self::Semaphore => "semaphore",
            Self::GuardedWrites => "guarded_writes",
            Self::ReliableDelivery => "reliable_delivery",
            Self::Stm(Isolation::SerializableSnapshot) => "stm_serializable_snapshot",
            Self::Stm(Isolation::Serializable) => "stm_serializable",
            Self::Stm(Isolation::RepeatableReads) => "stm_repeatable_reads",
            Self::Stm(Isolation::ReadCommitted) => "stm_read_committed",
            Self::RateLimiter => "rate_limiter",
            Self::Counter => "counter",
            Self::Latch => "latch",
            Self::BreakLock => "break_lock",
            Self::QueueAge => "queue_age",
            Self::ReleaseRequest => "release_request",
            Self::HandOver => "hand_over",
            Self::Export => "export",
            Self::CallerTransactions => "caller_transactions",
        }
    }
}

/// What the backend's capabilities claim about a case's guarantee.
#[derive(Clone, Copy)]
pub enum Claim {
    /// Every backend must give it (names, arguments): no capability flag; `declared`
    /// is reported as null.
    Contract,
    /// Offering the case's [`Need`]s is the claim (a lock that offers mutual
    /// exclusion); `declared` is `true` whenever the case runs.
    Offered,
    /// A guarantee flag of [`Capabilities`], named as in the struct. A case measures
    /// it whether claimed or not: measured to hold while not claimed is fine, measured
    /// violated while claimed is a failure, measured violated while not claimed is
    /// reported as such and is not a failure.
    Flag(&'static str, fn(&Capabilities) -> bool),
}

impl fmt::Debug for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Contract => f.write_str("Contract"),
            Self::Offered => f.write_str("Offered"),
            Self::Flag(flag, _) => write!(f, "Flag({flag})"),
        }
    }
}

/// One conformance case: a guarantee of a primitive, measured against a backend.
#[derive(Clone, Copy)]
pub struct Case {
    /// The case's id, a Rust identifier (also the test function's name).
    pub id: &'static str,
    /// Its matrix row group (the primitive it exercises, or server or API).
    pub group: Group,
    /// The guarantee it checks, in a few words (a matrix row).
    pub guarantee: &'static str,
    /// What the backend must offer for the case to run.
    pub needs: &'static [Need],
    /// What the capabilities claim about the guarantee.
    pub claim: Claim,
    /// The fault hooks it needs; a case whose hooks the harness does not offer is
    /// [`Outcome::Unsupported`] with the hooks' reason (not a failure).
    pub hooks: &'static [Hook],
    /// The case body. Called with a harness of its own ([`Harness::for_case`]).
    pub run: fn(Harness) -> BoxFuture<'static, Outcome>,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case")
            .field("id", &self.id)
            .field("group", &self.group)
            .field("guarantee", &self.guarantee)
            .field("needs", &self.needs)
            .field("claim", &self.claim)
            .field("hooks", &self.hooks)
            .finish()
    }
}

impl Case {
    /// The first need `capabilities` do not offer, if any.
    pub fn missing(&self, capabilities: &Capabilities) -> Option<Need> {
        self.needs
            .iter()
            .copied()
            .find(|need| !need.offered(capabilities))
    }

    /// Why the harness cannot run this case's fault hooks, if it cannot.
    pub fn missing_hook(&self, harness: &Harness) -> Option<String> {
        self.hooks
            .iter()
            .find_map(|&hook| harness.offers(hook).err())
    }

    /// Whether this is a fault case that mostly waits (for TTLs, processes, servers):
    /// [`crate::run_suite`] runs those concurrently, after the others (those that
    /// [start servers](Case::starts_servers) in a wave of their own, last). A case on a store
    /// of its own ([`Hook::FreshStore`]) runs with the others, one at a time: it starts
    /// servers and copies whole stores, work that would starve the short sessions of the
    /// cases that wait.
    pub fn waits_on_faults(&self) -> bool {
        if self.hooks.contains(&Hook::FreshStore) {
            return false;
        }
        self.hooks.iter().any(|hook| {
            matches!(
                hook,
                Hook::ChildHolder
                    | Hook::PausedHolder
                    | Hook::PrivateServer
                    | Hook::Cluster
                    | Hook::Partition
            )
        })
    }

    /// Whether this fault case starts or restarts store servers while it runs (a
    /// private server of its own, a cluster member): [`crate::run_suite`] runs those
    /// after the other fault cases, as many at once among themselves. Starting a server is
    /// the heaviest work of a run (a ZooKeeper server is a JVM, its start takes the
    /// machine's cores for seconds), and on a small machine it would starve the short
    /// sessions the partition cases open before their fault, which then end in set-up
    /// and measure nothing.
    pub fn starts_servers(&self) -> bool {
        self.hooks
            .iter()
            .any(|hook| matches!(hook, Hook::PrivateServer | Hook::Cluster))
    }

    /// Whether the case breaks a store that other cases of the same process share
    /// (the etcd cluster, the Sentinel group): such cases take turns
    /// ([`run_case_as`] holds a process-wide lock around them), since one case's
    /// killed leader would be another's unexplained fault.
    pub fn breaks_shared_topology(&self) -> bool {
        self.hooks
            .iter()
            .any(|hook| matches!(hook, Hook::Cluster | Hook::Failover))
    }

    /// What `capabilities` claim about this case's guarantee: `None` where there is no
    /// claim (a contract every backend must keep).
    pub fn declared(&self, capabilities: &Capabilities) -> Option<bool> {
        match self.claim {
            Claim::Contract => None,
            Claim::Offered => Some(self.missing(capabilities).is_none()),
            Claim::Flag(_, flag) => Some(flag(capabilities)),
        }
    }
}

/// One case's result against one backend.
#[derive(Clone, Debug)]
pub struct Report {
    /// The backend's label (its capabilities' name, or the URL when one backend kind
    /// appears twice in a run).
    pub backend: String,
    /// The case.
    pub case: &'static Case,
    /// What the capabilities claimed ([`Case::declared`]).
    pub declared: Option<bool>,
    /// What was measured.
    pub outcome: Outcome,
    /// How long the case took.
    pub elapsed: Duration,
    /// The bounded wait of the run whose verdict stands that used the largest share
    /// of its bound (see [`crate::slack`]); `None` for a case that did not run.
    pub tightest: Option<Tightest>,
}

#[cfg(test)]
impl Report {
    /// A report of the case `id` on `backend`, for the tests of what renders reports.
    pub(crate) fn of(
        backend: &str,
        id: &str,
        declared: Option<bool>,
        outcome: Outcome,
        elapsed: Duration,
    ) -> Self {
        Self {
            backend: backend.to_owned(),
            case: crate::cases::find(id).expect("a case of the suite"),
            declared,
            outcome,
            elapsed,
            tightest: None,
        }
    }
}

impl Report {
    /// Whether this result fails the suite: a violation of a guarantee that is claimed
    /// or part of the contract. (A violation of a guarantee the backend declares it
    /// does not give is reported, not failed; contradictions between capabilities and
    /// behaviour are already violations, see [`run_case`].)
    ///
    /// A case the harness could not finish ([`Outcome::Error`]) or that could not reach
    /// the store ([`Outcome::Unreachable`]) also fails the run: it showed nothing, so
    /// the claims it measures are not shown to hold. An [`Outcome::Inconclusive`] case
    /// does not by itself: the run fails when more than a tenth of its fault cells are
    /// ([`crate::Starvation`]).
    pub fn is_failure(&self) -> bool {
        match self.outcome {
            Outcome::Violated { .. } => self.declared != Some(false),
            Outcome::Error { .. } | Outcome::Unreachable { .. } => true,
            _ => false,
        }
    }

    /// Whether measured and declared disagree (either way).
    pub fn disagrees(&self) -> bool {
        matches!(
            (&self.outcome, self.declared),
            (Outcome::Holds { .. }, Some(false)) | (Outcome::Violated { .. }, Some(true))
        )
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let declared = match self.declared {
            Some(true) => "claimed",
            Some(false) => "not claimed",
            None => "contract",
        };
        write!(
            f,
            "[{}] {} ({declared}, {:.2} s): {}",
            self.backend,
            self.case.id,
            self.elapsed.as_secs_f64(),
            self.outcome
        )
    }
}

/// The turn of the cases that break a store other cases share
/// ([`Case::breaks_shared_topology`]): held while one of them runs.
static SHARED_TOPOLOGY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `case` against the harness's backend, under a fresh prefix, bounded by
/// [`CASE_LIMIT`].
///
/// A case whose [`Need`]s the capabilities do not offer, or whose fault [`Hook`]s the
/// harness does not offer, is `Unsupported` without running (see [`run_case_in`] for
/// cases a profile leaves out). A case that runs and meets
/// [`distsync_core::Error::Unsupported`] from the backend has found a contradiction (the
/// capabilities offered what the backend refuses): that is reported as `Violated`. A
/// panic in the case body is `Violated`.
///
/// Cancel-safety: the case body runs in a spawned task; dropping this future leaves
/// it running until it finishes (every wait in it is bounded).
pub async fn run_case(case: &'static Case, harness: &Harness) -> Report {
    run_case_as(case, harness, harness.capabilities().backend).await
}

/// As [`run_case`], labelling the report's backend `label`.
///
/// Cancel-safety: as [`run_case`].
pub async fn run_case_as(case: &'static Case, harness: &Harness, label: &str) -> Report {
    run_case_in(case, harness, label, Profile::Full).await
}

/// As [`run_case_as`], under `profile`: a case the profile leaves out
/// ([`Profile::leaves_out`]) is [`Outcome::NotRun`] without running, whatever the
/// capabilities and hooks offer.
///
/// While the case body runs, a [`StallMeter`] measures how long the harness's own
/// runtime stalled. Only a verdict reached with a live harness can be violated: when a
/// run's verdict is `Violated`, or the harness could not finish it ([`Outcome::Error`]:
/// its set-up lapsed in every try), and the harness stalled during it for longer than
/// [`Harness::stall_slack`], the verdict is not trusted and the case runs once more,
/// under a fresh prefix. The second run's verdict stands if the harness stayed live
/// through it, whatever it is; if it stalled too, a second run that held stands and
/// any other verdict makes the case [`Outcome::Inconclusive`]. A set-up that lapsed
/// in every try with a live harness runs once more too (it measured nothing, and what
/// starved it, the child processes or the store, is out of the meter's sight); its
/// error stands if the second run fails as well. So does a body that found the
/// machine starved through the window its verdict needed ([`Outcome::Inconclusive`]
/// from the body itself): the second run's verdict stands. A stall during a run that
/// held changes nothing: the rule keeps a starved machine from making a store look
/// broken, and a verdict that the store kept its promise stands as measured.
///
/// Cancel-safety: as [`run_case`].
pub async fn run_case_in(
    case: &'static Case,
    harness: &Harness,
    label: &str,
    profile: Profile,
) -> Report {
    let capabilities = harness.capabilities().clone();
    let declared = case.declared(&capabilities);
    let started = Instant::now();
    let left_out = profile.leaves_out(case.hooks);
    let (outcome, tightest) = match (
        left_out,
        case.missing(&capabilities),
        case.missing_hook(harness),
    ) {
        (Some(reason), _, _) => (Outcome::NotRun { reason }, None),
        (None, Some(need), _) => (
            Outcome::Unsupported {
                reason: format!("capabilities declare {} = false", need.flag()),
            },
            None,
        ),
        (None, None, Some(reason)) => (Outcome::Unsupported { reason }, None),
        (None, None, None) => {
            // Cases that kill members of a shared cluster take turns.
            let _turn = if case.breaks_shared_topology() {
                Some(SHARED_TOPOLOGY.lock().await)
            } else {
                None
            };
            judged_run(case, harness).await
        }
    };
    Report {
        backend: label.to_owned(),
        case,
        declared,
        outcome,
        elapsed: started.elapsed(),
        tightest,
    }
}

/// Runs the case body (twice when the first run's violation came with a stalled
/// harness) and returns the verdict to report, with the tightest wait of the run whose
/// verdict it is (of both runs, for an inconclusive one): see [`run_case_in`].
async fn judged_run(case: &'static Case, harness: &Harness) -> (Outcome, Option<Tightest>) {
    let slack = harness.stall_slack();
    let (first, stalled, first_tightest) = run_body(case, harness).await;
    tracing::debug!(case = case.id, ?stalled, outcome = %first.kind(), "case run");
    // A set-up that lapsed in every try measured nothing, and the runner's meter does
    // not see what starved it when that was the child processes or the store (a
    // column's fault cases all start their children at once): it runs once more, as
    // one measured while the runner stalled does.
    let lapsed_live = matches!(first, Outcome::Error { .. }) && stalled <= slack;
    // A body that found the machine starved through the window its verdict needed
    // ([`crate::check::Fail::Starved`]) measured nothing either: it runs once more too.
    let starved = matches!(first, Outcome::Inconclusive { .. });
    if !lapsed_live && !starved && (!untrusted_when_stalled(&first) || stalled <= slack) {
        return (first, first_tightest);
    }
    tracing::info!(
        case = case.id,
        ?stalled,
        ?slack,
        outcome = %first.kind(),
        "a failure measured while the harness stalled, a set-up that lapsed or a starved verdict; \
         the case runs again"
    );
    let (second, stalled_again, second_tightest) = run_body(case, harness).await;
    // A second run that held stands however the harness stalled through it, as a first
    // run that held does: a stall cannot make a store keep a promise it breaks.
    if stalled_again <= slack || matches!(second, Outcome::Holds { .. }) {
        return (second, second_tightest);
    }
    // The first run's set-up lapsed with a live harness: that error stands against a
    // second failure the harness stalled through; a second run that held stands too.
    if lapsed_live {
        return if untrusted_when_stalled(&second) {
            (first, first_tightest)
        } else {
            (second, second_tightest)
        };
    }
    let tightest = match (first_tightest, second_tightest) {
        (Some(first), second) => Some(first.tighter(second)),
        (None, second) => second,
    };
    let outcome = Outcome::Inconclusive {
        stalled: stalled.max(stalled_again),
        slack,
        detail: format!(
            "the runner stalled {} ms in the first run and {} ms in the second, past the {} ms \
             slack the case judges with; first run: {first}; second run: {second}",
            stalled.as_millis(),
            stalled_again.as_millis(),
            slack.as_millis(),
        ),
    };
    (outcome, tightest)
}

/// Whether `outcome`, reached while the harness stalled past its slack, is not to be
/// trusted: a violation (a case that ran past its deadline among them), or an error
/// (its set-up lapsed in every try). Both are what a starved runner produces by
/// itself: sessions whose renewals run late lapse before the fault, and a waiter
/// stamped late reads as out of order. A holding verdict stands as measured.
fn untrusted_when_stalled(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Violated { .. } | Outcome::Error { .. })
}

/// One run of the case body under a fresh prefix, bounded by [`CASE_LIMIT`]: its
/// outcome, how long the harness stalled meanwhile ([`StallMeter`]), and its tightest
/// bounded wait ([`crate::slack`]; the whole run against [`CASE_LIMIT`] is one).
async fn run_body(case: &'static Case, harness: &Harness) -> (Outcome, Duration, Option<Tightest>) {
    let meter = StallMeter::start();
    let started = Instant::now();
    let body = tokio::spawn(slack::measured((case.run)(harness.for_case(case.id))));
    let abort = body.abort_handle();
    let mut tightest = None;
    let outcome = match tokio::time::timeout(CASE_LIMIT, body).await {
        Ok(Ok((Outcome::Unsupported { reason }, _))) => Outcome::Violated {
            evidence: format!(
                "capabilities offer what the case needs ({}), but the backend refused: {reason}",
                needs_list(case)
            ),
        },
        Ok(Ok((outcome, measured))) => {
            tightest = measured;
            outcome
        }
        Ok(Err(error)) => Outcome::Violated {
            evidence: format!("the case panicked: {error}"),
        },
        Err(_) => {
            abort.abort();
            Outcome::Violated {
                evidence: format!("the case did not finish within {CASE_LIMIT:?}"),
            }
        }
    };
    let whole = Tightest {
        what: "the whole case".to_owned(),
        took: started.elapsed().min(CASE_LIMIT),
        bound: CASE_LIMIT,
    };
    (outcome, meter.stop(), Some(whole.tighter(tightest)))
}

fn needs_list(case: &Case) -> String {
    if case.needs.is_empty() {
        return "nothing".to_owned();
    }
    case.needs
        .iter()
        .map(|need| format!("{} = true", need.flag()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn the_safe_profile_keeps_some_cases_and_leaves_out_others() {
        let cases = crate::cases::CASES;
        let kept = cases
            .iter()
            .filter(|case| Profile::Safe.leaves_out(case.hooks).is_none())
            .count();
        assert!(kept > 0 && kept < cases.len(), "{kept} of {}", cases.len());
        assert!(cases
            .iter()
            .all(|case| Profile::Full.leaves_out(case.hooks).is_none()));
    }

    fn fencing(capabilities: &Capabilities) -> bool {
        capabilities.fencing
    }

    fn case(claim: Claim) -> &'static Case {
        Box::leak(Box::new(Case {
            id: "test_case",
            group: Group::Lock,
            guarantee: "test",
            needs: &[Need::Lock],
            claim,
            hooks: &[],
            run: |_| Box::pin(async { Outcome::holds("ok") }),
        }))
    }

    fn report(claim: Claim, declared: Option<bool>, outcome: Outcome) -> Report {
        Report {
            backend: "memory".into(),
            case: case(claim),
            declared,
            outcome,
            elapsed: Duration::ZERO,
            tightest: None,
        }
    }

    #[test]
    fn declared_follows_the_claim() {
        let mut capabilities = Capabilities::none("test");
        assert_eq!(case(Claim::Contract).declared(&capabilities), None);
        assert_eq!(case(Claim::Offered).declared(&capabilities), Some(false));
        assert_eq!(
            case(Claim::Flag("fencing", fencing)).declared(&capabilities),
            Some(false)
        );
        capabilities.lock = true;
        capabilities.fencing = true;
        assert_eq!(case(Claim::Offered).declared(&capabilities), Some(true));
        assert_eq!(
            case(Claim::Flag("fencing", fencing)).declared(&capabilities),
            Some(true)
        );
        assert_eq!(case(Claim::Offered).missing(&capabilities), None);
    }

    #[test]
    fn failures_are_violations_of_what_is_claimed_or_contracted() {
        let claim = Claim::Flag("fencing", fencing);
        assert!(report(claim, Some(true), Outcome::violated("x")).is_failure());
        assert!(report(claim, None, Outcome::violated("x")).is_failure());
        assert!(!report(claim, Some(false), Outcome::violated("x")).is_failure());
        assert!(!report(claim, Some(false), Outcome::holds("x")).is_failure());
        assert!(report(claim, Some(false), Outcome::holds("x")).disagrees());
        assert!(report(claim, Some(true), Outcome::violated("x")).disagrees());
        assert!(!report(claim, Some(true), Outcome::holds("x")).disagrees());
    }

    #[tokio::test]
    async fn cases_whose_hooks_are_missing_are_unsupported_not_failed() {
        use distsync_kv::memory::MemoryBackend;
        use std::sync::Arc;

        let needs_a_cluster: &'static Case = Box::leak(Box::new(Case {
            id: "needs_a_cluster",
            group: Group::Server,
            guarantee: "test",
            needs: &[],
            claim: Claim::Contract,
            hooks: &[Hook::Cluster],
            run: |_| Box::pin(async { Outcome::violated("must not run") }),
        }));
        assert!(needs_a_cluster.waits_on_faults());
        let plain = Harness::new(Arc::new(MemoryBackend::new()));
        let report = run_case(needs_a_cluster, &plain).await;
        assert!(
            matches!(report.outcome, Outcome::Unsupported { .. }),
            "{report}"
        );
        assert!(!report.is_failure());
        let memory = Harness::memory();
        let report = run_case(needs_a_cluster, &memory).await;
        assert!(report.outcome.detail().contains("no cluster"), "{report}");
    }

    #[tokio::test]
    async fn the_safe_profile_reports_server_cases_not_run_without_running_them() {
        let restarts: &'static Case = Box::leak(Box::new(Case {
            id: "restarts_the_server",
            group: Group::Server,
            guarantee: "test",
            needs: &[],
            claim: Claim::Contract,
            hooks: &[Hook::PrivateServer],
            run: |_| Box::pin(async { Outcome::violated("must not run") }),
        }));
        let memory = Harness::memory();
        let report = run_case_in(restarts, &memory, "memory", Profile::Safe).await;
        assert!(matches!(report.outcome, Outcome::NotRun { .. }), "{report}");
        assert!(report.outcome.detail().contains("safe profile"), "{report}");
        assert!(!report.is_failure());
        let report = run_case_in(restarts, &memory, "memory", Profile::Full).await;
        assert!(
            matches!(report.outcome, Outcome::Unsupported { .. }),
            "the full profile asks the hooks: {report}"
        );
        let plain = case(Claim::Contract);
        let report = run_case_in(plain, &memory, "memory", Profile::Safe).await;
        assert!(matches!(report.outcome, Outcome::Holds { .. }), "{report}");
    }

    #[test]
    fn cases_that_start_servers_wait_in_a_wave_of_their_own() {
        let starting: Vec<&str> = crate::cases::CASES
            .iter()
            .filter(|case| case.starts_servers())
            .map(|case| case.id)
            .collect();
        assert!(
            starting.contains(&"server_restart_live_clients"),
            "{starting:?}"
        );
        assert!(
            starting.contains(&"server_cluster_leader_kill"),
            "{starting:?}"
        );
        for case in crate::cases::CASES {
            if case.starts_servers() {
                assert!(case.waits_on_faults(), "{}", case.id);
            }
            if case.hooks == [Hook::Partition] {
                assert!(!case.starts_servers(), "{}", case.id);
            }
        }
    }

    /// How many times the body of [`stalling`] has run.
    static STALLING_RUNS: AtomicUsize = AtomicUsize::new(0);
    /// Which runs of [`stalling`] block the runtime: bit `i` for run `i` (from 0).
    static STALLING_MASK: AtomicUsize = AtomicUsize::new(0);
    /// What the runs of [`stalling`] report, in order (the last one for later runs).
    static STALLING_VERDICTS: std::sync::Mutex<Vec<Outcome>> = std::sync::Mutex::new(Vec::new());

    /// A case whose runs block the runtime's thread for 400 ms where `mask` says (bit
    /// `i` for run `i`), then report `verdicts` in order. Run on a current-thread
    /// runtime, whose only thread the block takes, so that the stall meter sees it.
    fn stalling(mask: usize, verdicts: Vec<Outcome>) -> &'static Case {
        STALLING_RUNS.store(0, Ordering::SeqCst);
        STALLING_MASK.store(mask, Ordering::SeqCst);
        *STALLING_VERDICTS.lock().unwrap() = verdicts;
        Box::leak(Box::new(Case {
            id: "stalling",
            group: Group::Lock,
            guarantee: "test",
            needs: &[],
            claim: Claim::Contract,
            hooks: &[],
            run: |_| {
                Box::pin(async move {
                    let run = STALLING_RUNS.fetch_add(1, Ordering::SeqCst);
                    // The stall meter ticks once before the block.
                    tokio::time::sleep(crate::stall::STALL_TICK * 2).await;
                    if STALLING_MASK.load(Ordering::SeqCst) & (1 << run) != 0 {
                        std::thread::sleep(Duration::from_millis(400));
                    }
                    let verdicts = STALLING_VERDICTS.lock().unwrap();
                    verdicts[run.min(verdicts.len() - 1)].clone()
                })
            },
        }))
    }

    fn runs() -> usize {
        STALLING_RUNS.load(Ordering::SeqCst)
    }

    // The statics of `stalling` are shared: one test, its steps in order.
    #[tokio::test(flavor = "current_thread")]
    async fn only_a_verdict_reached_with_a_live_harness_can_be_violated() {
        let harness = Harness::memory();
        assert_eq!(harness.stall_slack(), crate::stall::STALL_FLOOR);
        let violated = || Outcome::violated("two holders");

        // Violated with a stalled harness, twice: inconclusive, not a failure.
        let report = run_case(stalling(0b11, vec![violated()]), &harness).await;
        assert_eq!(runs(), 2, "{report}");
        let Outcome::Inconclusive {
            stalled,
            slack,
            detail,
        } = &report.outcome
        else {
            panic!("not inconclusive: {report}");
        };
        assert!(*stalled >= Duration::from_millis(350), "{report}");
        assert_eq!(*slack, crate::stall::STALL_FLOOR);
        assert!(
            detail.contains("first run: VIOLATED: two holders"),
            "{report}"
        );
        assert!(!report.is_failure() && !report.disagrees(), "{report}");
        assert!(
            report
                .to_string()
                .contains("inconclusive (the runner stalled"),
            "{report}"
        );

        // Violated with a stalled harness, then violated with a live one: violated.
        let report = run_case(stalling(0b01, vec![violated()]), &harness).await;
        assert_eq!(runs(), 2, "{report}");
        assert_eq!(report.outcome, violated());
        assert!(report.is_failure());

        // Violated with a stalled harness, then held with a live one: holds.
        let verdicts = vec![Outcome::violated("late"), Outcome::holds("on time")];
        let report = run_case(stalling(0b01, verdicts), &harness).await;
        assert_eq!(runs(), 2, "{report}");
        assert_eq!(report.outcome, Outcome::holds("on time"));

        // Violated with a stalled harness, then held with a stalled one: holds.
        let verdicts = vec![Outcome::violated("late"), Outcome::holds("on time")];
        let report = run_case(stalling(0b11, verdicts), &harness).await;
        assert_eq!(runs(), 2, "{report}");
        assert_eq!(report.outcome, Outcome::holds("on time"));

        // Held with a stalled harness: held, not run again.
        let report = run_case(stalling(0b01, vec![Outcome::holds("ok")]), &harness).await;
        assert_eq!(runs(), 1, "{report}");
        assert_eq!(report.outcome, Outcome::holds("ok"));

        // Violated with a live harness: violated, not run again.
        let report = run_case(stalling(0, vec![violated()]), &harness).await;
        assert_eq!(runs(), 1, "{report}");
        assert_eq!(report.outcome, violated());

        // A set-up that lapsed in every try while the harness stalled: run again, and
        // inconclusive when it stalls again; an error with a live harness stands.
        let lapsed = || Outcome::Error {
            message: "the set-up before the fault did not complete: 3 tries, the last: lapsed"
                .into(),
        };
        let report = run_case(stalling(0b11, vec![lapsed()]), &harness).await;
        assert_eq!(runs(), 2, "{report}");
        assert_eq!(
            report.outcome.kind(),
            crate::OutcomeKind::Inconclusive,
            "{report}"
        );
        let report = run_case(
            stalling(0b01, vec![lapsed(), Outcome::holds("ok")]),
            &harness,
        )
        .await;
        assert_eq!(runs(), 2, "{report}");
        assert_eq!(report.outcome, Outcome::holds("ok"));
        // A set-up that lapsed with a live harness: run again; the second run's
        // verdict stands, and an error in both runs is the error.
        let report = run_case(stalling(0, vec![lapsed(), Outcome::holds("ok")]), &harness).await;
        assert_eq!(runs(), 2, "{report}");
        assert_eq!(report.outcome, Outcome::holds("ok"));
        let report = run_case(stalling(0, vec![lapsed()]), &harness).await;
        assert_eq!(runs(), 2, "{report}");
        assert_eq!(report.outcome, lapsed());
        assert!(report.is_failure());
        // ... and against a second failure measured while the harness stalled.
        let report = run_case(stalling(0b10, vec![lapsed(), violated()]), &harness).await;
        assert_eq!(runs(), 2, "{report}");
        assert_eq!(report.outcome, lapsed());

        // A body that found the machine starved through its verdict's window, with a
        // live harness: run again; the second run's verdict stands, whatever it is.
        let starved = || {
            Outcome::from(Err(crate::check::Fail::Starved {
                starved: Duration::from_millis(2_500),
                bound: Duration::from_secs(5),
                why: "shard 1 was never owned".into(),
            }))
        };
        let report = run_case(stalling(0, vec![starved(), Outcome::holds("ok")]), &harness).await;
        assert_eq!(runs(), 2, "{report}");
        assert_eq!(report.outcome, Outcome::holds("ok"));
        let report = run_case(stalling(0, vec![starved(), violated()]), &harness).await;
        assert_eq!(runs(), 2, "{report}");
        assert_eq!(report.outcome, violated());
        let report = run_case(stalling(0, vec![starved()]), &harness).await;
        assert_eq!(runs(), 2, "{report}");
        assert_eq!(report.outcome, starved());
        assert!(!report.is_failure(), "{report}");
        assert!(
            report.to_string().contains("machine starved 2500 ms"),
            "{report}"
        );
    }

    #[test]
    fn harness_errors_fail_the_run() {
        let error = Outcome::Error {
            message: "deadline".into(),
        };
        assert!(report(Claim::Contract, Some(false), error).is_failure());
        let not_run = Outcome::NotRun {
            reason: "safe".into(),
        };
        assert!(!report(Claim::Contract, None, not_run).is_failure());
    }

    #[tokio::test]
    async fn unoffered_needs_are_unsupported_and_refusals_are_contradictions() {
        use distsync_kv::memory::MemoryBackend;
        use std::sync::Arc;

        let harness = Harness::new(Arc::new(MemoryBackend::new()));
        let plain = case(Claim::Offered);
        if !harness.capabilities().lock {
            let report = run_case(plain, &harness).await;
            assert!(
                matches!(report.outcome, Outcome::Unsupported { .. }),
                "{report}"
            );
            assert!(!report.is_failure());
        }

        let refusing: &'static Case = Box::leak(Box::new(Case {
            id: "refusing",
            group: Group::Api,
            guarantee: "test",
            needs: &[],
            claim: Claim::Contract,
            hooks: &[],
            run: |_| {
                Box::pin(async {
                    Outcome::Unsupported {
                        reason: "refused".into(),
                    }
                })
            },
        }));
        let report = run_case(refusing, &harness).await;
        assert!(
            matches!(report.outcome, Outcome::Violated { .. }),
            "{report}"
        );
        assert!(report.is_failure());

        let panicking: &'static Case = Box::leak(Box::new(Case {
            id: "panicking",
            group: Group::Api,
            guarantee: "test",
            needs: &[],
            claim: Claim::Contract,
            hooks: &[],
            run: |_| Box::pin(async { panic!("boom") }),
        }));
        let report = run_case(panicking, &harness).await;
        assert!(report.outcome.detail().contains("panicked"), "{report}");
    }
}
