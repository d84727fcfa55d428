//! `distsync-conformance`: runs the conformance suite against backends given by URL
//! (or `--all`: memory and the `DISTSYNC_*_URL` servers) and prints the guarantee
//! matrix (markdown, JSON or JUnit XML: `--format`) on stdout; `--junit FILE` writes
//! JUnit XML beside it, for CI. Progress goes to stderr, one line per finished case:
//! `[12/96] redis election_one_leader: holds (1.2 s)`. docs/CONFORMANCE.md is the guide
//! for running it against your own store.
//!
//! Exit statuses ([`ExitStatus`]), the first that applies in this order:
//! - 1 (violated): a case failed (a violated guarantee that is claimed or part of the
//!   contract, or a contradiction between capabilities and behaviour), or a safe run
//!   left entries behind; the matrix is printed;
//! - 3 (unreachable): a store could not be reached or refused more clients (too many
//!   connections): at connect (no matrix), or while cases ran, whose cells are then
//!   `**UNREACHABLE**` (JUnit `<error type="unreachable">`) rather than violations
//!   ([`distsync_conformance::reachability`]); the matrix is printed;
//! - 4 (timeout): `--timeout` passed before every case finished (those cases are
//!   `**ERROR**` cells, JUnit `<error>`s); the matrix is printed;
//! - 5 (starved): more than a tenth of the fault cells are `inconclusive`: the runner
//!   itself stalled past the slack the cases judge with, in a case's run and in its
//!   second run ([`distsync_conformance::Starvation`]); the matrix is printed, the
//!   inconclusive cells are JUnit `<skipped>`s and are listed on stderr;
//! - 0: every claimed guarantee (and every contract) that ran held, with a tenth of
//!   the fault cells or fewer inconclusive;
//! - 2 (bad arguments): checked before anything runs (no matrix).
//!
//! Profiles (`--profile`): `full` (the default) runs every case; `safe` runs only the
//! cases that need no control over the store server, and reports the others `not run`
//! (distinct from `unsupported`: it says nothing about the store). Left out by `safe`:
//! the cases needing a private server to restart (`Hook::PrivateServer`), a cluster
//! member to kill (`Hook::Cluster`), a primary to kill after its replica lagged
//! (`Hook::Failover`), a server configured to evict keys (`Hook::EvictingServer`), or
//! etcd's Go recipes (`Hook::GoPeer`, a locally built Go program). Kept: holders in
//! child processes killed or paused (`ChildHolder`, `PausedHolder`,
//! `AnyExternalHolder`), the partition proxy between one client and the store
//! (`Partition`), a second client (`SecondClient`), and the run's own session ended
//! or taken over with the store's client tool (`KillSession`, `SessionTakeover`).
//! Every case runs under a name prefix of its own, `<namespace>/<case>/<unique id>`,
//! the namespace being the run's own (`--namespace`, by default a fresh
//! `conf/run-<unique id>`). At the end of a `safe` run (also after a failure, an
//! unreachable standby or `--timeout`) the runner removes the namespace from every
//! store ([`Backend::purge_prefix`]) and counts what is left ([`Backend::count_prefix`]):
//! both figures are in the store facts below the matrix, and anything left, or a
//! purge that failed, fails the run (exit status 1); a backend without the calls
//! (`Unsupported`, e.g. on a Redis Cluster) is named in the store facts instead.
//! Sessions belong to no name: they end with their cases or expire.
//!
//! Fault hooks: `memory://` runs with the memory store's hooks (frozen leases); a
//! server URL with [`ServerFaults`], whose child-process holders are this binary
//! re-executed with the hidden `--child` flag, whose etcd cluster is
//! `DISTSYNC_ETCD_CLUSTER_URL` and whose ZooKeeper ensemble is
//! `DISTSYNC_ZOOKEEPER_ENSEMBLE_URL` (for `zk://` URLs); a `redis+sentinel://` URL with the Sentinel group's
//! hooks ([`Harness::connect_sentinel`]: its primary killed after its replica lagged),
//! in a matrix column of its own, `redis-sentinel`; a `redis+cluster://` URL with the
//! Redis Cluster's hooks ([`Harness::connect_redis_cluster`]: the master serving the
//! contended lock killed after its replica lagged), in the column `redis-cluster`.
//!
//! Under `--all`, the Sentinel group (`DISTSYNC_REDIS_SENTINEL_URL`) runs a subset of
//! the suite ([`SENTINEL_SUBSET`]: the failover cases and the lock, election and queue
//! basics), to keep CI within its budget: its other cells are `–` (not run); a
//! `--backend redis+sentinel://...` runs the whole suite there. PostgreSQL with
//! unflushed grants (`DISTSYNC_POSTGRES_UNFLUSHED_URL`, `grants=unflushed`, a schema
//! of its own on the `postgres` column's server) runs a subset too, in the column
//! `postgres-unflushed` ([`UNFLUSHED_SUBSET`]: the lock basics, and the restarts and
//! power losses of its private servers, which carry the mode). The Redis Cluster
//! (`DISTSYNC_REDIS_CLUSTER_URL`) runs the whole suite (its cases that need a single
//! server's hooks, private servers to restart or evict, are `unsupported` there). So
//! does the NATS cluster (`DISTSYNC_NATS_CLUSTER_URL`, a URL naming its three servers,
//! buckets of three replicas), in the column `nats-cluster`; a partition proxy fronts
//! one server, so its partition cases are `unsupported` there.
//!
//! On a PostgreSQL or MySQL server the runner manages (one whose [`ServerFaults`] it
//! has), the row `server_primary_failover_promoted` runs on a private primary with a
//! *synchronous* streaming standby, or a MariaDB primary with a *semi-synchronous*
//! (`AFTER_SYNC`) replica ([`Harness::connect_promoted_pair`]), the settings
//! docs/HIGH_AVAILABILITY.md and docs/GUARANTEES.md recommend; the asynchronous pairs
//! are measured by `backend-postgres/tests/it/failover.rs` and
//! `backend-mysql/tests/it/failover.rs` (what they lose depends on timing, so it is no
//! fixed matrix cell).
//!
//! `--outline` reads a markdown matrix on stdin and prints it without figures (what
//! `scripts/check-matrix.sh` compares).

use std::cell::RefCell;
use std::io::Read as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::builder::TypedValueParser as _;
use clap::{Parser, ValueEnum};
use distsync_conformance::faults::child::{self, ChildSpec, Launcher};
use distsync_conformance::faults::effects_worker::WorkerSpec;
use distsync_conformance::faults::nats_cluster::{
    names_cluster, NATS_CLUSTER_COLUMN, NATS_CLUSTER_VAR,
};
use distsync_conformance::faults::private::unflushed_grants;
use distsync_conformance::faults::redis_cluster::{REDIS_CLUSTER_SCHEME, REDIS_CLUSTER_VAR};
use distsync_conformance::matrix::RunInfo;
use distsync_conformance::{
    gaps, junit, matrix, run_suite_bounded, run_suite_in, Case, Connect, ExitStatus, Harness, Hook,
    Outcome, Profile, PromotedStore, Report, ServerFaults, Starvation, StoreTrouble, CASES,
    FAULT_CASES_AT_ONCE,
};
use distsync_core::{Backend, Capabilities, Name};
use futures::StreamExt as _;
use tokio::time::Instant;

#[cfg(feature = "mysql")]
mod mysql_transactions;
#[cfg(feature = "postgres")]
mod postgres_transactions;

/// The environment variables `--all` reads, in matrix order (after memory://).
const SERVER_VARS: [&str; 10] = [
    "DISTSYNC_ETCD_URL",
    "DISTSYNC_REDIS_URL",
    "DISTSYNC_POSTGRES_URL",
    UNFLUSHED_VAR,
    "DISTSYNC_REDIS_SENTINEL_URL",
    REDIS_CLUSTER_VAR,
    "DISTSYNC_ZOOKEEPER_URL",
    "DISTSYNC_MYSQL_URL",
    "DISTSYNC_NATS_URL",
    NATS_CLUSTER_VAR,
];

/// The PostgreSQL server with unflushed grants (`grants=unflushed`), whose column is
/// labelled [`UNFLUSHED_COLUMN`].
const UNFLUSHED_VAR: &str = "DISTSYNC_POSTGRES_UNFLUSHED_URL";

/// The column of a PostgreSQL URL with `grants=unflushed`.
const UNFLUSHED_COLUMN: &str = "postgres-unflushed";

/// The cases `--all` runs with unflushed grants: the lock basics, and the crashes,
/// restarts and power losses of private servers in the mode (the `postgres` column runs
/// everything else on the same server). `server_crash_after_release` is left out: it
/// holds a session longer than any bound a private server's lock-delay may take, so it
/// cannot run under the bound the mode requires (the release it checks commits as in
/// the `postgres` column).
const UNFLUSHED_SUBSET: [&str; 13] = [
    "lock_mutual_exclusion",
    "lock_fencing_tokens",
    "lock_try_lock",
    "lock_session_end_frees_lock",
    "lock_holder_crash",
    "unfair_lock_mutual_exclusion",
    "unfair_lock_fencing_tokens",
    "election_one_leader",
    "server_restart_live_clients",
    "server_restart_fencing_tokens",
    "server_power_loss_default_durability",
    "server_power_loss_synchronous",
    "api_capabilities_match",
];

/// The scheme of Redis Sentinel URLs, whose column is labelled `redis-sentinel`.
const SENTINEL_SCHEME: &str = "redis+sentinel://";

/// The cases `--all` runs on the Sentinel group: the failover cases, and the lock,
/// election and queue basics (through a primary found by the Sentinels, with
/// replica acknowledgement).
const SENTINEL_SUBSET: [&str; 11] = [
    "lock_mutual_exclusion",
    "lock_fencing_tokens",
    "lock_try_lock",
    "lock_session_end_frees_lock",
    "election_one_leader",
    "queue_fifo",
    "server_primary_kill_acknowledged",
    "server_primary_kill_unacknowledged",
    "server_primary_kill_unacknowledged_lock_delay",
    "server_primary_failover_promoted",
    "api_capabilities_match",
];

/// How many fault cases a safe run starts at once unless `--parallel` says: each may
/// open a second client, a client behind the partition proxy and child-process
/// holders, so on a shared store this bounds the run's connections (measured in
/// docs/CONFORMANCE.md, "Connections a run needs").
const SAFE_PARALLEL: usize = 4;

/// The case run on a private primary with a synchronous standby or a semi-synchronous
/// replica.
const PROMOTED_FAILOVER: &str = "server_primary_failover_promoted";

/// The columns of `--all`, longest first: the order they start in when several run at
/// once (`--columns`), so that the short ones fill the slots the long ones leave at the
/// end instead of a long one starting last and running alone. Measured in CI's
/// conformance step on a two-core machine, three columns at once, the mean of three
/// fresh-clone runs: mysql 335 s, nats 296, etcd 280, redis 246, postgres 239,
/// nats-cluster 234, redis-cluster 210, zookeeper 186, redis-sentinel 84,
/// postgres-unflushed 61, memory 50. Columns not listed start after these, in their
/// order; the matrix keeps its column order whatever the start order.
const LONGEST_FIRST: [&str; 11] = [
    "mysql",
    "nats",
    "etcd",
    "redis",
    "postgres",
    NATS_CLUSTER_COLUMN,
    "redis-cluster",
    "zookeeper",
    "redis-sentinel",
    UNFLUSHED_COLUMN,
    "memory",
];

/// Runs the distsync conformance suite and prints the guarantee matrix.
#[derive(Parser, Debug)]
#[command(
    name = "distsync-conformance",
    version,
    after_help = "Exit status: 0 every claimed guarantee that ran held; 1 a claimed guarantee \
                  (or a contract) violated; 2 bad arguments; 3 a store could not be reached or \
                  refused more clients (too many connections); 4 --timeout passed (or a \
                  case's set-up lapsed); 5 the runner starved: more than a tenth of the fault \
                  cells inconclusive (the runner itself stalled past the cases' slack, twice). \
                  See docs/CONFORMANCE.md."
)]
struct Args {
    /// A backend URL (memory://, etcd://..., redis://..., postgres://..., mysql://...); repeat for
    /// several backends, one matrix column each. Default: memory://.
    #[arg(long = "backend", value_name = "URL")]
    backends: Vec<String>,

    /// A backend whose URL is in the environment variable VAR, so a password in it
    /// stays out of the command line (which other users of the machine can read);
    /// repeat for several. Columns follow every `--backend`, then every
    /// `--backend-env`.
    #[arg(long = "backend-env", value_name = "VAR", conflicts_with = "all")]
    backend_vars: Vec<String>,

    /// Every backend: memory://, then each of DISTSYNC_ETCD_URL, DISTSYNC_REDIS_URL,
    /// DISTSYNC_POSTGRES_URL, DISTSYNC_POSTGRES_UNFLUSHED_URL (a subset of the cases),
    /// DISTSYNC_REDIS_SENTINEL_URL (a subset too), DISTSYNC_REDIS_CLUSTER_URL,
    /// DISTSYNC_ZOOKEEPER_URL, DISTSYNC_MYSQL_URL, DISTSYNC_NATS_URL and
    /// DISTSYNC_NATS_CLUSTER_URL that is set (under CI=true, all must be).
    #[arg(long, conflicts_with = "backends")]
    all: bool,

    /// Output format of the matrix on stdout (junit: JUnit XML, one testsuite per
    /// backend, one testcase per cell).
    #[arg(long, value_enum, default_value_t = Format::Markdown)]
    format: Format,

    /// Also write the matrix as JUnit XML to FILE (beside the --format output on
    /// stdout), for CI test reports.
    #[arg(long, value_name = "FILE")]
    junit: Option<std::path::PathBuf>,

    /// Which cases run: full (every case) or safe (only cases that need no control over
    /// the store server: no restarts, cluster kills, failovers, eviction or Go peer;
    /// the others are reported "not run").
    #[arg(
        long,
        default_value = "full",
        value_parser = clap::builder::PossibleValuesParser::new(["safe", "full"])
            .map(|text| if text == "safe" { Profile::Safe } else { Profile::Full })
    )]
    profile: Profile,

    /// A deadline for the whole run (e.g. 90s, 15m, 1h; the unit is required): the
    /// cases not finished by then are reported as errors, the matrix is still printed,
    /// and the exit status is 4 (unless a case failed: 1).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<Duration>,

    /// The name prefix every case runs under (default: a fresh conf/run-<unique id>).
    /// A safe run removes everything under it at the end: give a prefix nothing else
    /// uses.
    #[arg(long, value_name = "NAME", value_parser = parse_namespace)]
    namespace: Option<Name>,

    /// How many fault cases (those that wait on TTLs, child processes and proxies) run
    /// at once. Each opens clients of its own, so this bounds the run's connections to
    /// the store (see docs/CONFORMANCE.md, "Connections a run needs"). Default:
    /// 4 in the safe profile (a shared store), 12 in the full profile
    /// (`FAULT_CASES_AT_ONCE`: what a two-core machine carries with its stores).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    parallel: Option<u16>,

    /// How many columns (backends) run at once. Default 1: each column has the machine
    /// to itself. More shortens a run over several stores, each on servers of its own,
    /// as most cases wait on leases and servers; the stall meter keeps a starved runner
    /// from reading as a store's violation (see docs/CONFORMANCE.md, "What the runner
    /// needs from a CI machine").
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    columns: u16,

    /// Run only cases whose id contains this text; repeat to widen.
    #[arg(long = "case", value_name = "TEXT")]
    cases: Vec<String>,

    /// List the case ids and exit.
    #[arg(long)]
    list: bool,

    /// Read a markdown matrix on stdin, print its figure-free outline, and exit.
    #[arg(long)]
    outline: bool,

    /// Read a markdown matrix on stdin, print its ten-row summary (what each store
    /// gives you, one word a cell), and exit.
    #[arg(long)]
    summary: bool,

    /// Read a markdown matrix on stdin, print what the columns of backend BACKEND
    /// (`all`: every column) do not offer, one list item a column, and exit.
    #[arg(long, value_name = "BACKEND")]
    gaps: Option<String>,

    /// Run as a child-process holder of the fault cases (spec in the environment).
    #[arg(long, hide = true)]
    child: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Markdown,
    Json,
    Junit,
}

/// Connects by URL through the facade (with the backends this build's features bring).
fn facade() -> Connect {
    Arc::new(|url: String| {
        Box::pin(async move {
            let coordinator = distsync::connect(&url).await?;
            Ok(Arc::clone(coordinator.backend()) as Arc<dyn Backend>)
        })
    })
}

/// The matrix column of a backend: its capabilities' name, `redis-sentinel` for a
/// Redis Sentinel group, `redis-cluster` for a Redis Cluster, `nats-cluster` for a
/// NATS URL naming more than one server, `postgres-unflushed` for PostgreSQL with
/// unflushed grants.
fn column(url: &str, harness: &Harness) -> &'static str {
    if harness.capabilities().backend == "postgres" && unflushed_grants(url) {
        UNFLUSHED_COLUMN
    } else if url.starts_with(SENTINEL_SCHEME) {
        "redis-sentinel"
    } else if url.starts_with(REDIS_CLUSTER_SCHEME) {
        "redis-cluster"
    } else if names_cluster(url) {
        NATS_CLUSTER_COLUMN
    } else {
        harness.capabilities().backend
    }
}

/// The backends of `--all`, or why not.
fn all_backends() -> Result<Vec<String>, String> {
    let ci = std::env::var("CI").is_ok_and(|value| value.eq_ignore_ascii_case("true"));
    let mut urls = vec!["memory://".to_owned()];
    for var in SERVER_VARS {
        match std::env::var(var) {
            Ok(url) if !url.trim().is_empty() => urls.push(url),
            _ if ci => return Err(format!("CI=true but {var} is not set")),
            _ => eprintln!("!!! {var} is not set: --all runs without that backend"),
        }
    }
    Ok(urls)
}

/// A worker of the transaction cases
/// ([`effects_worker`](distsync_conformance::faults::effects_worker)): on the PostgreSQL
/// or MySQL database its spec names.
async fn run_worker(spec: Result<WorkerSpec, String>) -> ExitCode {
    let spec = match spec {
        Ok(spec) => spec,
        Err(error) => {
            println!("{}error {error}", child::MARKER);
            return ExitCode::from(2);
        }
    };
    #[cfg(feature = "postgres")]
    let status = match worker_database(&spec.url).await {
        Ok(transactions) => {
            distsync_conformance::faults::effects_worker::work(transactions, spec).await
        }
        Err(error) => {
            println!(
                "{}error connecting to {}: {error}",
                child::MARKER,
                distsync::store::redact_url(&spec.url)
            );
            1
        }
    };
    #[cfg(not(feature = "postgres"))]
    let status = {
        println!(
            "{}error this runner is built without PostgreSQL (the `postgres` feature)",
            child::MARKER
        );
        drop(spec);
        1
    };
    // Not a return: the runtime's shutdown would wait for the blocking read of stdin.
    std::process::exit(status)
}

/// The database of a worker whose spec names `url`: MySQL's for a `mysql://` URL (no
/// fenced writes: workers place and apply), PostgreSQL's otherwise.
#[cfg(feature = "postgres")]
async fn worker_database(
    url: &str,
) -> distsync_core::Result<Arc<dyn distsync_conformance::faults::CallerTransactions>> {
    #[cfg(feature = "mysql")]
    if is_mysql(url) {
        return Ok(Arc::new(
            mysql_transactions::MysqlTransactions::connect(url, None).await?,
        ));
    }
    Ok(Arc::new(
        postgres_transactions::PostgresTransactions::connect(url).await?,
    ))
}

/// Whether `url` is the MySQL backend's.
#[cfg(feature = "mysql")]
fn is_mysql(url: &str) -> bool {
    distsync::store::driver_for(url)
        .is_ok_and(|driver| driver.name == distsync::store::mysql::BACKEND)
}

/// The database of the caller's a column's cases write in (see
/// `postgres_transactions`): a PostgreSQL column's own; a MySQL column's own (see
/// `mysql_transactions`), with the run's PostgreSQL beside it for fenced writes; for
/// another store, the run's PostgreSQL beside it (a column of the run, or
/// `DISTSYNC_POSTGRES_URL`'s), connected once into `beside`; none without one, and the
/// cases that need it are then unsupported, saying why.
#[cfg(feature = "postgres")]
async fn caller_database(
    url: &str,
    urls: &[String],
    beside: &mut Option<Option<Arc<dyn distsync_conformance::faults::CallerTransactions>>>,
) -> Option<Arc<dyn distsync_conformance::faults::CallerTransactions>> {
    use postgres_transactions::PostgresTransactions;
    let is_postgres = |url: &str| {
        distsync::store::driver_for(url)
            .is_ok_and(|driver| driver.name == distsync::store::postgres::BACKEND)
    };
    let connect =
        |url: String| async move {
            match PostgresTransactions::connect(&url).await {
                Ok(transactions) => Some(Arc::new(transactions)
                    as Arc<dyn distsync_conformance::faults::CallerTransactions>),
                Err(error) => {
                    eprintln!(
                        "!!! no database of the caller's at {}: {error}",
                        distsync::store::redact_url(&url)
                    );
                    None
                }
            }
        };
    if is_postgres(url) {
        return connect(url.to_owned()).await;
    }
    if beside.is_none() {
        let found = urls
            .iter()
            .find(|url| is_postgres(url))
            .cloned()
            .or_else(|| std::env::var("DISTSYNC_POSTGRES_URL").ok())
            .filter(|url| !url.trim().is_empty());
        *beside = Some(match found {
            Some(url) => connect(url).await,
            None => None,
        });
    }
    let beside = beside.clone().flatten();
    #[cfg(feature = "mysql")]
    if is_mysql(url) {
        return match mysql_transactions::MysqlTransactions::connect(url, beside).await {
            Ok(transactions) => Some(Arc::new(transactions)),
            Err(error) => {
                eprintln!(
                    "!!! no database of the caller's at {}: {error}",
                    distsync::store::redact_url(url)
                );
                None
            }
        };
    }
    beside
}

async fn run_child() -> ExitCode {
    if let Some(spec) = WorkerSpec::from_env() {
        return run_worker(spec).await;
    }
    let spec = match ChildSpec::from_env() {
        Some(Ok(spec)) => spec,
        Some(Err(error)) => {
            eprintln!("--child: {error}");
            return ExitCode::from(2);
        }
        None => {
            eprintln!("--child: {} is not set", child::SPEC_VAR);
            return ExitCode::from(2);
        }
    };
    let backend = match distsync::connect(&spec.url).await {
        Ok(coordinator) => Arc::clone(coordinator.backend()),
        Err(error) => {
            println!(
                "{}error connecting to {}: {error}",
                child::MARKER,
                distsync::store::redact_url(&spec.url)
            );
            return ExitCode::from(1);
        }
    };
    let status = child::serve(backend, spec).await;
    // Not a return: the runtime's shutdown would wait for the blocking read of stdin.
    std::process::exit(status)
}

/// Parses `--timeout`: a number with `ms`, `s`, `m` or `h` (a bare number is refused,
/// as everywhere in distsync).
fn parse_duration(text: &str) -> Result<Duration, String> {
    distsync_core::raw::parse_duration(text.trim())
}

/// Parses `--namespace`: a valid name.
fn parse_namespace(text: &str) -> Result<Name, String> {
    Name::new(text).map_err(|error| error.to_string())
}

/// Removes the run's namespace from every store and counts what is left: one
/// `(label, note)` per store for the matrix, and whether anything is left (or could
/// not be checked).
async fn clean_up_all(
    stores: &[(String, Arc<dyn Backend>)],
    namespace: &Name,
) -> (Vec<(String, String)>, bool) {
    let mut notes = Vec::new();
    let mut dirty = false;
    for (label, backend) in stores {
        let note = match distsync_conformance::clean_up(&**backend, namespace).await {
            Ok(cleanup) => {
                dirty |= cleanup.left > 0;
                format!("clean-up of `{namespace}`: {cleanup}")
            }
            // A backend without the calls (a Redis Cluster, a backend crate that has
            // not implemented them) is said, not failed: the run could not do better.
            Err(error @ distsync_core::Error::Unsupported { .. }) => {
                format!("no clean-up of `{namespace}`: {error}; drop what is left by hand")
            }
            Err(error) => {
                dirty = true;
                format!("clean-up of `{namespace}` failed: {error}")
            }
        };
        eprintln!("{label}: {note}");
        notes.push((label.clone(), note));
    }
    (notes, dirty)
}

/// What each store says of its server ([`Backend::describe_store`]), as one note per
/// store: its version and the settings its guarantees depend on.
async fn describe_all(stores: &[(String, Arc<dyn Backend>)]) -> Vec<(String, String)> {
    let mut notes = Vec::new();
    for (label, backend) in stores {
        let read = tokio::time::timeout(Duration::from_secs(10), backend.describe_store()).await;
        let note = match read {
            Ok(Ok(facts)) if facts.is_empty() => continue,
            Ok(Ok(facts)) => {
                let facts: Vec<String> = facts
                    .iter()
                    .map(|(name, value)| format!("`{name}` = {value}"))
                    .collect();
                format!("server: {}", facts.join(", "))
            }
            Ok(Err(distsync_core::Error::Unsupported { .. })) => continue,
            Ok(Err(error)) => format!("server settings not read: {error}"),
            Err(_) => "server settings not read within 10 s".to_owned(),
        };
        eprintln!("{label}: {note}");
        notes.push((label.clone(), note));
    }
    notes
}

/// The exit status of a failure to connect with `error`: a URL the build cannot use is
/// a bad argument; anything else means the store could not be reached.
fn connect_status(error: &distsync_core::Error) -> ExitStatus {
    match error {
        distsync_core::Error::InvalidUrl { .. }
        | distsync_core::Error::FeatureDisabled { .. }
        | distsync_core::Error::InvalidArgument(_) => ExitStatus::BadArguments,
        _ => ExitStatus::Unreachable,
    }
}

/// The stderr line of a failure to connect to `url`: what kind of trouble, the URL
/// without its password, and the error.
fn connect_failure(url: &str, error: &distsync_core::Error) -> String {
    let url = distsync::store::redact_url(url);
    match connect_status(error) {
        ExitStatus::Unreachable => {
            let trouble = StoreTrouble::of_error(error).unwrap_or(StoreTrouble::Unreachable);
            format!("{trouble}: cannot connect to {url}: {error}")
        }
        _ => format!("cannot use {url}: {error}"),
    }
}

fn exit(status: ExitStatus) -> ExitCode {
    ExitCode::from(status.code())
}

/// One backend of the run: where it is, its harness and which cases run on it.
struct Plan {
    url: String,
    label: String,
    harness: Harness,
    /// `--all` runs a subset on the Sentinel group (see [`SENTINEL_SUBSET`]) and with
    /// unflushed grants (see [`UNFLUSHED_SUBSET`]).
    subset: Option<&'static [&'static str]>,
    /// A PostgreSQL or MySQL server the runner manages: [`PROMOTED_FAILOVER`] runs on a
    /// private pair of that store, replicating synchronously (semi-synchronously).
    pair: Option<PromotedStore>,
}

impl Plan {
    /// Whether the plan's main harness runs `case` (given the `--case` filter).
    fn runs(&self, case: &Case, selected: &impl Fn(&str) -> bool) -> bool {
        selected(case.id)
            && self.subset.is_none_or(|subset| subset.contains(&case.id))
            && !(self.pair.is_some() && case.id == PROMOTED_FAILOVER)
    }

    /// Every case the plan runs, the pair's included, in suite order.
    fn cases(&self, selected: &impl Fn(&str) -> bool) -> Vec<&'static Case> {
        CASES
            .iter()
            .filter(|case| {
                self.runs(case, selected)
                    || (self.pair.is_some() && case.id == PROMOTED_FAILOVER && selected(case.id))
            })
            .collect()
    }
}

/// The primary/replica pair the runner starts for a column's [`PROMOTED_FAILOVER`].
fn promoted_store(column: &str) -> Option<PromotedStore> {
    match column {
        "postgres" => Some(PromotedStore::Postgres),
        "mysql" => Some(PromotedStore::Mariadb),
        _ => None,
    }
}

/// One stderr line per finished case: `[12/96] redis election_one_leader: holds (1.2 s)`.
fn progress(done: usize, total: usize, report: &Report) {
    let word = match &report.outcome {
        Outcome::Holds { .. } => "holds",
        Outcome::Violated { .. } if report.declared == Some(false) => "violated (not declared)",
        Outcome::Violated { .. } => "VIOLATED",
        Outcome::Unsupported { .. } => "unsupported",
        Outcome::NotRun { .. } => "not run",
        Outcome::Unreachable { .. } => "UNREACHABLE",
        Outcome::Inconclusive { .. } => "inconclusive",
        _ => "ERROR",
    };
    let detail = match &report.outcome {
        Outcome::Holds { .. } | Outcome::NotRun { .. } => String::new(),
        outcome => format!(": {}", outcome.detail()),
    };
    eprintln!(
        "[{done}/{total}] {} {}: {word} ({:.1} s){detail}",
        report.backend,
        report.case.id,
        report.elapsed.as_secs_f64()
    );
}

/// Runs every plan, `columns` of them at once (the longest first: [`LONGEST_FIRST`]),
/// handing each report to `finished` as it completes.
///
/// Cancel-safety: dropping the future (at `--timeout`) stops starting cases; the
/// reports already in `finished` stay, and cases in flight are abandoned (their
/// spawned bodies end with the process).
async fn run_plans(
    mut plans: Vec<Plan>,
    profile: Profile,
    parallel: usize,
    columns: usize,
    selected: &impl Fn(&str) -> bool,
    total: usize,
    finished: &RefCell<Vec<Report>>,
) -> Result<(), ExitStatus> {
    if columns > 1 {
        plans.sort_by_key(|plan| start_rank(&plan.label));
    }
    let runs = plans
        .into_iter()
        .map(|plan| run_plan(plan, profile, parallel, selected, total, finished));
    let mut runs = futures::stream::iter(runs).buffer_unordered(columns.max(1));
    while let Some(ran) = runs.next().await {
        ran?;
    }
    Ok(())
}

/// Where a column of this label starts among several run at once: its place in
/// [`LONGEST_FIRST`], after every listed one if it is not there.
fn start_rank(label: &str) -> usize {
    LONGEST_FIRST
        .iter()
        .position(|longest| *longest == label)
        .unwrap_or(LONGEST_FIRST.len())
}

/// Runs one plan (a column), handing each report to `finished` as it completes.
///
/// Cancel-safety: as [`run_plans`].
async fn run_plan(
    plan: Plan,
    profile: Profile,
    parallel: usize,
    selected: &impl Fn(&str) -> bool,
    total: usize,
    finished: &RefCell<Vec<Report>>,
) -> Result<(), ExitStatus> {
    let started = tokio::time::Instant::now();
    let harness = plan.harness.clone().calibrate().await;
    eprintln!(
        "running the suite against {} ({}), profile {profile}, settle {:?}, faults: {}",
        plan.label,
        distsync::store::redact_url(&plan.url),
        harness.settle(),
        harness.faults().describe()
    );
    // The cases that fail the store over run last: the harness's own backend meets
    // the failover as a transient error on its next command, which the other cases
    // do not retry.
    for fails_over in [false, true] {
        run_suite_bounded(
            &harness,
            &plan.label,
            profile,
            parallel,
            |case| plan.runs(case, selected) && case.hooks.contains(&Hook::Failover) == fails_over,
            |report| {
                let mut finished = finished.borrow_mut();
                finished.push(report.clone());
                progress(finished.len(), total, report);
            },
        )
        .await;
    }
    if let Some(store) = plan.pair.filter(|_| selected(PROMOTED_FAILOVER)) {
        let left_out = distsync_conformance::find(PROMOTED_FAILOVER)
            .is_some_and(|case| profile.leaves_out(case.hooks).is_some());
        let pair = if left_out {
            // Not connected: the safe profile starts no private server.
            harness.clone()
        } else {
            match Harness::connect_promoted_pair(store, &plan.url, facade(), true).await {
                Ok(pair) => pair,
                Err(error) => {
                    eprintln!("{}", connect_failure(&plan.url, &error));
                    return Err(connect_status(&error));
                }
            }
        };
        run_suite_in(
            &pair,
            &plan.label,
            profile,
            |case| case.id == PROMOTED_FAILOVER,
            |report| {
                let mut finished = finished.borrow_mut();
                finished.push(report.clone());
                progress(finished.len(), total, report);
            },
        )
        .await;
    }
    eprintln!(
        "{}: every case finished, {:.0} s after the column started",
        plan.label,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing();
    if args.child {
        return run_child().await;
    }
    if args.outline || args.summary || args.gaps.is_some() {
        return reduce_stdin(&args);
    }
    if args.list {
        for case in CASES {
            println!("{}\t{}\t{}", case.id, case.group, case.guarantee);
        }
        return ExitCode::SUCCESS;
    }
    let selected = |id: &str| {
        args.cases.is_empty() || args.cases.iter().any(|filter| id.contains(filter.as_str()))
    };
    let urls = match checked_urls(&args, &selected) {
        Ok(urls) => urls,
        Err(status) => return exit(status),
    };
    match Launcher::current_exe(["--child".to_owned()]) {
        Ok(launcher) => {
            child::register(launcher);
        }
        Err(error) => eprintln!("no child-process holders: {error}"),
    }
    let started = Instant::now();
    let harnesses = match connect_all(&urls).await {
        Ok(harnesses) => harnesses,
        Err(status) => return exit(status),
    };
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(distsync_conformance::run_namespace);
    eprintln!("every case runs under {namespace}/");
    let (plans, stores) = plan_columns(&args, harnesses, &namespace);
    let planned: Vec<Planned> = plans
        .iter()
        .map(|plan| {
            (
                plan.label.clone(),
                plan.harness.capabilities().clone(),
                plan.cases(&selected),
            )
        })
        .collect();
    let total = planned.iter().map(|(_, _, cases)| cases.len()).sum();
    let mut info = RunInfo {
        profile: args.profile,
        stores: planned
            .iter()
            .map(|(label, capabilities, _)| (label.clone(), capabilities.clone()))
            .collect(),
        // Only where it matters to the reader: a fresh name in every full run would
        // change the committed matrix (docs/GUARANTEES.md) at each regeneration.
        namespace: (args.profile == Profile::Safe || args.namespace.is_some())
            .then(|| namespace.to_string()),
        notes: describe_all(&stores).await,
    };

    let reports: RefCell<Vec<Report>> = RefCell::new(Vec::new());
    let parallel = match (args.parallel, args.profile) {
        (Some(n), _) => usize::from(n),
        (None, Profile::Safe) => SAFE_PARALLEL,
        (None, Profile::Full) => FAULT_CASES_AT_ONCE,
    };
    let running = run_plans(
        plans,
        args.profile,
        parallel,
        usize::from(args.columns),
        &selected,
        total,
        &reports,
    );
    let ran = match args.timeout {
        Some(limit) => tokio::time::timeout_at(started + limit, running)
            .await
            .map_err(|_| limit),
        None => Ok(running.await),
    };
    let mut reports = reports.into_inner();
    // A safe run leaves nothing behind, whatever happened to it.
    let dirty = if args.profile == Profile::Safe {
        let (notes, dirty) = clean_up_all(&stores, &namespace).await;
        info.notes.extend(notes);
        dirty
    } else {
        false
    };
    match ran {
        Ok(Ok(())) => {}
        Ok(Err(status)) => return exit(status),
        Err(limit) => report_unfinished(&mut reports, &planned, limit),
    }
    sort_in_suite_order(&mut reports, &planned);
    report(&args, &reports, &info, dirty, &namespace)
}

/// Each store of the run by its column's label.
type Stores = Vec<(String, Arc<dyn Backend>)>;

/// A column as planned: its label, its store's capabilities and the cases it runs.
type Planned = (String, Capabilities, Vec<&'static Case>);

/// `--outline`, `--summary` and `--gaps`: reduces the matrix read from stdin.
fn reduce_stdin(args: &Args) -> ExitCode {
    let mut text = String::new();
    if let Err(error) = std::io::stdin().read_to_string(&mut text) {
        eprintln!("reading stdin: {error}");
        return exit(ExitStatus::BadArguments);
    }
    let reduced = if let Some(backend) = &args.gaps {
        gaps::gaps(&text, (backend != "all").then_some(backend.as_str()))
    } else if args.summary {
        matrix::summary(&text)
    } else {
        matrix::outline(&text)
    };
    print!("{reduced}");
    ExitCode::SUCCESS
}

/// Checks the run's arguments before anything connects (a case selected, the JUnit
/// path writable) and returns the URLs of the stores to run against.
fn checked_urls(args: &Args, selected: &impl Fn(&str) -> bool) -> Result<Vec<String>, ExitStatus> {
    if !CASES.iter().any(|case| selected(case.id)) {
        eprintln!("no case matches {:?}; see --list", args.cases);
        return Err(ExitStatus::BadArguments);
    }
    if let Some(path) = &args.junit {
        // Found out before the run, not after it: an unwritable report path is a bad
        // argument.
        if let Err(error) = std::fs::write(path, "") {
            eprintln!("--junit {}: {error}", path.display());
            return Err(ExitStatus::BadArguments);
        }
    }
    if args.all {
        return all_backends().map_err(|error| {
            eprintln!("--all: {error}");
            ExitStatus::BadArguments
        });
    }
    if args.backends.is_empty() && args.backend_vars.is_empty() {
        return Ok(vec!["memory://".to_owned()]);
    }
    let mut urls = args.backends.clone();
    for var in &args.backend_vars {
        match std::env::var(var) {
            Ok(url) if !url.trim().is_empty() => urls.push(url),
            _ => {
                eprintln!("--backend-env {var}: the variable is not set");
                return Err(ExitStatus::BadArguments);
            }
        }
    }
    Ok(urls)
}

/// Connects a harness to every store, in order; the first that fails ends the run.
async fn connect_all(urls: &[String]) -> Result<Vec<(String, Harness)>, ExitStatus> {
    let mut harnesses = Vec::new();
    #[cfg(feature = "postgres")]
    let mut beside = None;
    for url in urls {
        eprintln!("connecting to {}", distsync::store::redact_url(url));
        let backend = distsync::store::driver_for(url).map(|driver| driver.name);
        let harness = if backend
            .as_ref()
            .is_ok_and(|name| *name == distsync::store::memory::BACKEND)
        {
            Ok(Harness::memory())
        } else if url.starts_with(SENTINEL_SCHEME) {
            Harness::connect_sentinel(url, facade()).await
        } else if url.starts_with(REDIS_CLUSTER_SCHEME) {
            Harness::connect_redis_cluster(url, facade()).await
        } else if ServerFaults::new(url, facade()).is_ok() {
            Harness::connect(url, facade()).await
        } else {
            distsync::connect(url).await.map(Harness::from)
        };
        #[cfg(feature = "postgres")]
        let harness = match harness {
            Ok(harness) => match caller_database(url, urls, &mut beside).await {
                Some(transactions) => Ok(harness.with_caller_transactions(transactions)),
                None => Ok(harness),
            },
            failed => failed,
        };
        match harness {
            Ok(harness) => harnesses.push((url.clone(), harness)),
            Err(error) => {
                eprintln!("{}", connect_failure(url, &error));
                return Err(connect_status(&error));
            }
        }
    }
    Ok(harnesses)
}

/// A plan per connected store, under the run's namespace, and each store by its
/// column's label (for the store facts and the clean-up).
fn plan_columns(
    args: &Args,
    harnesses: Vec<(String, Harness)>,
    namespace: &Name,
) -> (Vec<Plan>, Stores) {
    let kinds: Vec<&'static str> = harnesses
        .iter()
        .map(|(url, harness)| column(url, harness))
        .collect();
    let mut plans = Vec::new();
    let mut stores: Stores = Vec::new();
    for (url, harness) in harnesses {
        let harness = harness.with_namespace(namespace);
        let name = column(&url, &harness);
        let same_kind = kinds.iter().filter(|kind| **kind == name).count();
        let label = if same_kind > 1 {
            distsync::store::redact_url(&url)
        } else {
            name.to_owned()
        };
        stores.push((label.clone(), Arc::clone(harness.backend())));
        plans.push(Plan {
            subset: match name {
                "redis-sentinel" if args.all => Some(&SENTINEL_SUBSET[..]),
                UNFLUSHED_COLUMN if args.all => Some(&UNFLUSHED_SUBSET[..]),
                _ => None,
            },
            pair: promoted_store(name).filter(|_| ServerFaults::new(&url, facade()).is_ok()),
            url,
            label,
            harness,
        });
    }
    (plans, stores)
}

/// Past `--timeout`: every planned case with no report gets an error.
fn report_unfinished(reports: &mut Vec<Report>, planned: &[Planned], limit: Duration) {
    eprintln!("--timeout {limit:?} passed: the cases not finished are reported as errors");
    for (label, capabilities, cases) in planned {
        for case in cases {
            let done = reports
                .iter()
                .any(|report| report.backend == *label && report.case.id == case.id);
            if !done {
                reports.push(Report {
                    backend: label.clone(),
                    case,
                    declared: case.declared(capabilities),
                    outcome: Outcome::Error {
                        message: format!("not finished within the run's --timeout of {limit:?}"),
                    },
                    elapsed: Duration::ZERO,
                    tightest: None,
                });
            }
        }
    }
}

/// Suite order within each backend, backends in column order (cases finish out of
/// order: the fault cases run concurrently).
fn sort_in_suite_order(reports: &mut [Report], planned: &[Planned]) {
    let position = |report: &Report| {
        let column = planned
            .iter()
            .position(|(label, _, _)| *label == report.backend)
            .unwrap_or(usize::MAX);
        let row = CASES
            .iter()
            .position(|case| case.id == report.case.id)
            .unwrap_or(usize::MAX);
        (column, row)
    };
    reports.sort_by_key(position);
}

/// Prints the matrix in `--format` (and to `--junit`), what stderr's reader needs to
/// know of it, and returns the run's exit status.
fn report(
    args: &Args,
    reports: &[Report],
    info: &RunInfo,
    dirty: bool,
    namespace: &Name,
) -> ExitCode {
    match args.format {
        Format::Markdown => println!("{}", matrix::markdown_run(reports, info)),
        Format::Json => println!("{}", matrix::json(reports)),
        Format::Junit => print!("{}", junit::junit(reports, info)),
    }
    if let Some(path) = &args.junit {
        if let Err(error) = std::fs::write(path, junit::junit(reports, info)) {
            eprintln!("--junit {}: {error}", path.display());
            return exit(ExitStatus::BadArguments);
        }
    }
    let mut status = ExitStatus::of(reports);
    if dirty {
        eprintln!("the run left entries under {namespace}/ (see the store facts)");
        if status == ExitStatus::Held {
            status = ExitStatus::Failed;
        }
    }
    let failures = reports.iter().filter(|report| report.is_failure()).count();
    let unreachable = reports
        .iter()
        .filter(|report| matches!(report.outcome, Outcome::Unreachable { .. }))
        .count();
    if unreachable > 0 {
        eprintln!(
            "{unreachable} case(s) could not reach the store or were refused as one client too \
             many: nothing measured there (see the notes)"
        );
    }
    let starvation = Starvation::of(reports);
    if starvation.inconclusive > 0 {
        eprintln!(
            "{starvation} (the runner itself stalled past the cases' slack; nothing measured \
             there):"
        );
        for report in reports
            .iter()
            .filter(|report| matches!(report.outcome, Outcome::Inconclusive { .. }))
        {
            eprintln!(
                "  {} {}: {}",
                report.backend, report.case.id, report.outcome
            );
        }
    }
    if status == ExitStatus::Starved {
        eprintln!(
            "the run is starved: the machine gave the runner too little CPU to judge the \
             stores (see docs/CONFORMANCE.md, \"Reading a starved run\")"
        );
    }
    if failures > 0 {
        eprintln!("{failures} case(s) failed");
    } else {
        eprintln!("all {} case run(s) passed", reports.len());
    }
    exit(status)
}

/// Logs of the backends and the cases on stderr, when `RUST_LOG` asks for them (e.g.
/// `RUST_LOG=distsync_zookeeper=debug`): a run is silent otherwise, so that its stderr
/// stays the progress lines.
fn init_tracing() {
    let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() else {
        return;
    };
    // A second subscriber cannot be installed; there is none before this one.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sentinel_subset_names_existing_cases_and_the_failover_cases() {
        for (group, subset) in [
            ("the Sentinel group", &SENTINEL_SUBSET[..]),
            ("unflushed grants", &UNFLUSHED_SUBSET[..]),
        ] {
            for (i, id) in subset.iter().enumerate() {
                assert!(
                    CASES.iter().any(|case| case.id == *id),
                    "{id} is not a case"
                );
                assert!(!subset[..i].contains(id), "{id} twice in {group}'s subset");
            }
            for case in CASES {
                if group == "the Sentinel group" && case.hooks.contains(&Hook::Failover) {
                    assert!(
                        subset.contains(&case.id),
                        "{} needs {group} but is not in its subset",
                        case.id
                    );
                }
            }
        }
    }

    #[test]
    fn every_column_of_all_has_a_start_rank_of_its_own() {
        // memory:// and one column per server variable.
        assert_eq!(LONGEST_FIRST.len(), SERVER_VARS.len() + 1);
        for (i, label) in LONGEST_FIRST.iter().enumerate() {
            assert!(!LONGEST_FIRST[..i].contains(label), "{label} twice");
            assert_eq!(start_rank(label), i);
        }
        for label in ["memory", "redis-sentinel", "redis-cluster"] {
            assert!(LONGEST_FIRST.contains(&label), "{label}");
        }
        assert_eq!(start_rank("redis://127.0.0.1:6379"), LONGEST_FIRST.len());
    }

    #[test]
    fn timeouts_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in [
            "",
            "90",
            "0s",
            "s",
            "2x",
            "-1s",
            "2.5",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn connection_errors_map_to_bad_arguments_or_unreachable() {
        let bad_url = distsync_core::Error::InvalidUrl {
            url: "bogus://x".into(),
            reason: "unknown scheme".into(),
        };
        assert_eq!(connect_status(&bad_url), ExitStatus::BadArguments);
        assert_eq!(
            connect_status(&distsync_core::Error::Timeout(Duration::from_secs(1))),
            ExitStatus::Unreachable
        );
        assert_eq!(ExitStatus::Unreachable.code(), 3);
    }

    #[test]
    fn redis_cluster_urls_get_their_own_column_and_variable() {
        let harness = Harness::memory();
        assert_eq!(
            column("redis+cluster://127.0.0.1:1,127.0.0.1:2", &harness),
            "redis-cluster"
        );
        assert_eq!(column("redis+sentinel://h/s", &harness), "redis-sentinel");
        assert_eq!(column("memory://", &harness), "memory");
        assert_eq!(
            column("nats://u:p@127.0.0.1:1,127.0.0.1:2?replicas=3", &harness),
            "nats-cluster"
        );
        assert_eq!(column("nats://127.0.0.1:1", &harness), "memory");
        let sentinel = SERVER_VARS
            .iter()
            .position(|var| *var == "DISTSYNC_REDIS_SENTINEL_URL");
        let cluster = SERVER_VARS.iter().position(|var| *var == REDIS_CLUSTER_VAR);
        assert_eq!(
            cluster,
            sentinel.map(|at| at + 1),
            "the cluster after Sentinel"
        );
    }
}
