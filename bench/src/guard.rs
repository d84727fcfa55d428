//! The regression guard: a short run of the cycle case that fails when distsync gets
//! slower *relative to* the raw store commands or a peer library.
//!
//! Absolute latencies on a shared machine move by several times from run to run; the
//! ratio of two implementations measured side by side in one run moves far less. So
//! on etcd, Redis, PostgreSQL and NATS (and MySQL/MariaDB or ZooKeeper when named) it
//! measures distsync, the raw sequence and each peer
//! (etcd's Go `concurrency.Mutex` timed in its own process) in 16 rounds (`--rounds`),
//! taken in turns of [`BATCH`] cycles
//! ([`crate::cycle::run`]). A ratio is the median over the rounds of *distsync p50 ÷
//! the other's p50*, its noise their robust spread (1.4826 × median absolute
//! deviation). It fails above its baseline (`bench/baseline.json`) by more than
//! `max(3 × noise, 20 % of the baseline)` ([`judge`]), noise being the larger of the
//! run's and the baseline's, and only when a second run confirms it ([`confirm`]): a
//! failing CI blocks every change, so noise must not fail it. A baseline ratio that
//! cannot be measured fails too. `scripts/bench-guard.sh` runs it.
//!
//! The unfair lock is judged the same way against the raw sequence and each peer: its
//! ratios are keyed [`UNFAIR_PREFIX`] + the other's label, and divide the unfair lock's
//! p50 (not the fair lock's). A backend without the unfair lock gives one row saying
//! so, which passes unless the baseline has ratios of its unfair lock.
//!
//! Beside the cycle, each backend's contended ratios ([`crate::guard_contended`]):
//! grants per second on one lock at 2, 8 and 64 clients, the other's over distsync's,
//! judged against their baseline entries in the same way.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::args::{Args, Plan};
use crate::contender::{CycleResult, Role};
use crate::cycle;
use crate::markdown::Table;
use crate::stats::Samples;
use crate::target::{BackendKind, Target};

/// Cycles per turn within a round: implementations take turns of this many cycles,
/// so that a round's samples of each span the same stretch of time.
pub const BATCH: usize = 10;
/// A round counts only when both implementations got at least this many cycles in it.
pub const MIN_ROUND_SAMPLES: usize = 5;
/// A ratio needs at least this many rounds that count.
pub const MIN_ROUNDS: usize = 3;
/// A ratio fails when worse than its baseline by more than this many noises...
pub const NOISE_FACTOR: f64 = 3.0;
/// ...and by more than this share of the baseline.
pub const FLOOR: f64 = 0.20;

/// What the key of an unfair-lock ratio starts with (the rest is the other's label).
pub const UNFAIR_PREFIX: &str = "unfair lock: ";

/// The key of the row saying that a backend does not have the unfair lock.
pub const UNFAIR_UNSUPPORTED: &str = "unfair lock";

/// The baseline file used when `--baseline` is not given: `bench/baseline.json`.
pub fn default_baseline_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("baseline.json")
}

/// One ratio measured in one run: distsync's cycle p50 over `against`'s.
#[derive(Clone, Debug, PartialEq)]
pub struct Measured {
    /// Median of the per-round ratios.
    pub ratio: f64,
    /// Robust spread of the per-round ratios (1.4826 × median absolute deviation).
    pub noise: f64,
    /// Rounds that counted.
    pub rounds: usize,
}

/// The committed baseline: ratios measured on this machine, and how.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// The command that wrote it.
    pub command: String,
    /// When (UTC).
    pub written: String,
    /// The commit measured.
    pub commit: String,
    /// The machine and its load.
    pub machine: String,
    /// What the figures are and how they are used.
    pub note: String,
    /// One entry per (backend, implementation).
    pub ratios: Vec<BaselineRatio>,
}

/// One baseline ratio.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BaselineRatio {
    /// `etcd`, `redis` or `postgres`.
    pub backend: String,
    /// The implementation's row label (e.g. `raw: SET NX PX + compare-and-delete script`).
    pub against: String,
    /// distsync p50 ÷ `against`'s p50: the median over the runs written.
    pub ratio: f64,
    /// The noise of the baseline: the larger of the runs' typical own noise (their
    /// median) and the spread between the runs (the standard deviation of their
    /// ratios), since a ratio also moves from run to run.
    pub noise: f64,
    /// Each run's ratio.
    pub runs: Vec<f64>,
}

impl Baseline {
    /// Reads and parses `path`.
    ///
    /// # Errors
    /// The file cannot be read or is not a baseline.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("reading {}: {error}", path.display()))?;
        serde_json::from_str(&text).map_err(|error| format!("parsing {}: {error}", path.display()))
    }

    /// The entry for `backend` and `against`.
    pub fn find(&self, backend: &str, against: &str) -> Option<&BaselineRatio> {
        self.ratios
            .iter()
            .find(|entry| entry.backend == backend && entry.against == against)
    }
}

/// How far above `baseline` a ratio may go: `max(NOISE_FACTOR × noise, FLOOR × baseline)`.
pub fn allowance(baseline: f64, noise: f64) -> f64 {
    (NOISE_FACTOR * noise).max(FLOOR * baseline)
}

/// The verdict on one ratio.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Within the allowance of the baseline.
    Ok,
    /// Better than the baseline by more than the allowance (passes; the baseline may
    /// be rewritten to keep the gain).
    Faster,
    /// Worse than the baseline by more than the allowance: fails.
    Regressed,
    /// Measured, no baseline to compare with (passes).
    New,
    /// In the baseline but not measured in this run, with the reason: fails.
    Unmeasured(String),
    /// Neither in the baseline nor measured (a contender that could not start): passes.
    Skipped(String),
    /// Written to the baseline (`--write-baseline`).
    Written,
}

impl Verdict {
    /// Whether this verdict fails the guard.
    pub fn fails(&self) -> bool {
        matches!(self, Verdict::Regressed | Verdict::Unmeasured(_))
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Ok => f.write_str("ok"),
            Verdict::Faster => f.write_str("ok, faster than the baseline"),
            Verdict::Regressed => f.write_str("**REGRESSED**"),
            Verdict::New => f.write_str("new (no baseline)"),
            Verdict::Unmeasured(reason) => write!(f, "**NOT MEASURED**: {reason}"),
            Verdict::Skipped(reason) => write!(f, "skipped (no baseline): {reason}"),
            Verdict::Written => f.write_str("written to the baseline"),
        }
    }
}

/// Judges `measured` against `baseline`: returns the ratio above which it fails, and
/// the verdict. The noise allowed for is the larger of the run's and the baseline's.
pub fn judge(baseline: &BaselineRatio, measured: &Measured) -> (f64, Verdict) {
    let noise = measured.noise.max(baseline.noise);
    let allowed = allowance(baseline.ratio, noise);
    let verdict = if measured.ratio > baseline.ratio + allowed {
        Verdict::Regressed
    } else if measured.ratio < baseline.ratio - allowed {
        Verdict::Faster
    } else {
        Verdict::Ok
    };
    (baseline.ratio + allowed, verdict)
}

/// The median of `values` (the mean of the middle two for an even count), or `None`
/// when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    } else {
        sorted[middle]
    })
}

/// The ratio of two implementations from per-round ratios: their median, and their
/// robust spread as noise. `None` with fewer than [`MIN_ROUNDS`] ratios.
pub fn from_round_ratios(ratios: &[f64]) -> Option<Measured> {
    if ratios.len() < MIN_ROUNDS {
        return None;
    }
    let ratio = median(ratios)?;
    let deviations: Vec<f64> = ratios.iter().map(|r| (r - ratio).abs()).collect();
    Some(Measured {
        ratio,
        noise: 1.4826 * median(&deviations)?,
        rounds: ratios.len(),
    })
}

/// distsync's cycle p50 over `other`'s, round by round, then summed up by
/// [`from_round_ratios`]. Rounds where either has fewer than [`MIN_ROUND_SAMPLES`]
/// cycles do not count.
///
/// # Errors
/// Either implementation's error, or too few rounds.
pub fn measure(library: &CycleResult, other: &CycleResult) -> Result<Measured, String> {
    for result in [library, other] {
        if let Some(error) = &result.error {
            return Err(format!("{}: {error}", result.label));
        }
    }
    let p50 = |samples: &Samples| {
        (samples.len() >= MIN_ROUND_SAMPLES)
            .then(|| samples.summary())
            .flatten()
            .map(|summary| summary.p50)
    };
    let ratios: Vec<f64> = library
        .rounds
        .iter()
        .zip(&other.rounds)
        .filter_map(|(mine, theirs)| crate::stats::ratio(p50(mine)?, p50(theirs)?))
        .collect();
    from_round_ratios(&ratios).ok_or_else(|| {
        format!(
            "only {} rounds with {MIN_ROUND_SAMPLES} cycles or more each (at least {MIN_ROUNDS} needed)",
            ratios.len()
        )
    })
}

/// What one backend gave in one guard run.
#[derive(Debug)]
pub struct BackendOutcome {
    /// Which backend.
    pub kind: BackendKind,
    /// Why nothing was measured on it, if so.
    pub error: Option<String>,
    /// Each implementation compared with distsync, by row label (and with the unfair
    /// lock, keyed [`UNFAIR_PREFIX`] + row label).
    pub ratios: Vec<(String, Result<Measured, String>)>,
    /// What this backend does not have (the unfair lock), by key, with the reason:
    /// not measured, and not a failure unless the baseline has its ratios.
    pub unsupported: Vec<(String, String)>,
    /// How long the backend took.
    pub elapsed: Duration,
}

/// The plan of a guard run: the cycle case only, in turns of [`BATCH`] cycles (its
/// rounds, cycles, warm-up and cap have the guard's defaults, see [`Plan`]).
pub fn plan(args: &Args) -> Plan {
    let batch = Some(BATCH);
    Plan {
        batch,
        ..Plan::from_args(args)
    }
}

/// Measures the ratios on one backend: the cycle's, then the contended ones.
async fn backend(kind: BackendKind, url: String, run_id: &str, plan: &Plan) -> BackendOutcome {
    let started = Instant::now();
    let mut outcome = BackendOutcome {
        kind,
        error: None,
        ratios: Vec::new(),
        unsupported: Vec::new(),
        elapsed: Duration::ZERO,
    };
    let target = match Target::connect(kind, url).await {
        Ok(target) => target,
        Err(error) => {
            outcome.error = Some(format!("could not connect: {error}"));
            return outcome;
        }
    };
    let (ready, failed) = cycle::contenders(&target, run_id, plan).await;
    let results = cycle::run(ready, plan).await;
    let find = |role| {
        results
            .iter()
            .chain(&failed)
            .find(|result| result.role == role)
    };
    let (library, unfair) = (find(Role::Library), find(Role::Unfair));
    let unfair = match unfair {
        Some(unfair) if unfair.unsupported => {
            let reason = unfair.error.clone().unwrap_or_default();
            outcome
                .unsupported
                .push((UNFAIR_UNSUPPORTED.to_owned(), reason));
            None
        }
        unfair => unfair,
    };
    for other in results.iter().chain(&failed) {
        if matches!(other.role, Role::Library | Role::Unfair) {
            continue;
        }
        let measured = match library {
            Some(library) => measure(library, other),
            None => Err("distsync did not run".to_owned()),
        };
        outcome.ratios.push((other.label.clone(), measured));
        if let Some(unfair) = unfair {
            let key = format!("{UNFAIR_PREFIX}{}", other.label);
            outcome.ratios.push((key, measure(unfair, other)));
        }
    }
    let contended = crate::guard_contended::measure(&target, run_id, plan).await;
    outcome.ratios.extend(contended.ratios);
    if let Some(reason) = contended.unfair_unsupported {
        if !outcome
            .unsupported
            .iter()
            .any(|(key, _)| key == UNFAIR_UNSUPPORTED)
        {
            outcome
                .unsupported
                .push((UNFAIR_UNSUPPORTED.to_owned(), reason));
        }
    }
    outcome.elapsed = started.elapsed();
    outcome
}

/// Runs the guard's measurement once on every selected backend but memory (which has
/// no raw sequence or peer) and, unless `--backends` names it, ZooKeeper (see
/// [`guarded_by_default`]).
pub async fn measure_all(args: &Args, plan: &Plan, run_id: &str) -> Vec<BackendOutcome> {
    let mut outcomes = Vec::new();
    for (kind, url) in args.selected() {
        let named = args.backends.contains(&kind);
        if kind == BackendKind::Memory || !(guarded_by_default(kind) || named) {
            continue;
        }
        let outcome = match url {
            Ok(url) => {
                tracing::info!(backend = %kind, "guard: cycle ratios");
                backend(kind, url, &format!("{run_id}/{kind}"), plan).await
            }
            Err(reason) => BackendOutcome {
                kind,
                error: Some(reason),
                ratios: Vec::new(),
                unsupported: Vec::new(),
                elapsed: Duration::ZERO,
            },
        };
        outcomes.push(outcome);
    }
    outcomes
}

/// Whether the guard measures `kind` without `--backends` naming it: etcd, Redis,
/// PostgreSQL and NATS. Memory has nothing to compare with (never measured);
/// ZooKeeper's row pair (the raw sequence and the Curator peer, whose JVM takes seconds
/// to start and warm up) would lengthen every run and has no baseline. MySQL/MariaDB's
/// floors, `GET_LOCK` and `RELEASE_LOCK` (raw, and `distributed-lock`'s), answer within
/// tens of microseconds, where the machine's scheduling decides their p50: it moves
/// between runs by up to three times while distsync's stays, so a ratio to them would
/// fail unchanged code or pass a real regression (docs/BENCHMARKS.md, "Regression
/// guard").
pub fn guarded_by_default(kind: BackendKind) -> bool {
    matches!(
        kind,
        BackendKind::Etcd | BackendKind::Redis | BackendKind::Postgres | BackendKind::Nats
    )
}

/// One line of the guard's table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The backend.
    pub backend: String,
    /// The implementation distsync is divided by.
    pub against: String,
    /// This run's ratio, if measured.
    pub measured: Option<Measured>,
    /// The baseline's ratio, if any.
    pub baseline: Option<f64>,
    /// The ratio above which it fails, when there is a baseline and a measurement.
    pub fails_above: Option<f64>,
    /// The verdict.
    pub verdict: Verdict,
    /// Whether the figures are a second run's, taken because the first regressed.
    pub second_run: bool,
}

/// Compares a run's outcomes with `baseline`: a row per measured ratio and per
/// baseline ratio of a backend in `outcomes` that this run did not measure.
pub fn compare(baseline: &Baseline, outcomes: &[BackendOutcome]) -> Vec<Row> {
    let mut rows = Vec::new();
    for outcome in outcomes {
        let backend = outcome.kind.as_str();
        for (against, measured) in &outcome.ratios {
            let expected = baseline.find(backend, against);
            let (measured, fails_above, verdict) = match (expected, measured) {
                (Some(expected), Ok(measured)) => {
                    let (above, verdict) = judge(expected, measured);
                    (Some(measured.clone()), Some(above), verdict)
                }
                (None, Ok(measured)) => (Some(measured.clone()), None, Verdict::New),
                (Some(_), Err(reason)) => (None, None, Verdict::Unmeasured(reason.clone())),
                (None, Err(reason)) => (None, None, Verdict::Skipped(reason.clone())),
            };
            rows.push(Row {
                backend: backend.to_owned(),
                against: against.clone(),
                measured,
                baseline: expected.map(|entry| entry.ratio),
                fails_above,
                verdict,
                second_run: false,
            });
        }
        for (against, reason) in &outcome.unsupported {
            if baseline.ratios.iter().any(|entry| {
                entry.backend == backend && entry.against.starts_with(against.as_str())
            }) {
                // The baseline's ratios of it are reported unmeasured below.
                continue;
            }
            rows.push(Row {
                backend: backend.to_owned(),
                against: against.clone(),
                measured: None,
                baseline: None,
                fails_above: None,
                verdict: Verdict::Skipped(format!("unsupported: {reason}")),
                second_run: false,
            });
        }
        for entry in baseline
            .ratios
            .iter()
            .filter(|entry| entry.backend == backend)
        {
            if outcome
                .ratios
                .iter()
                .any(|(against, _)| *against == entry.against)
            {
                continue;
            }
            let reason = outcome
                .error
                .clone()
                .unwrap_or_else(|| "no such implementation in this run".to_owned());
            rows.push(Row {
                backend: backend.to_owned(),
                against: entry.against.clone(),
                measured: None,
                baseline: Some(entry.ratio),
                fails_above: None,
                verdict: Verdict::Unmeasured(reason),
                second_run: false,
            });
        }
    }
    rows
}

/// The table of `rows`, in markdown.
pub fn table(rows: &[Row]) -> String {
    let mut table = Table::new(&[
        "backend",
        "distsync p50 ÷",
        ">ratio",
        ">baseline",
        ">noise",
        ">fails above",
        "verdict",
    ]);
    let figure = |value: Option<f64>| value.map_or("—".to_owned(), |v| format!("×{v:.3}"));
    for row in rows {
        let noise = row.measured.as_ref().map_or("—".to_owned(), |measured| {
            format!("±{:.3} ({} rounds)", measured.noise, measured.rounds)
        });
        let second = if row.second_run { " (second run)" } else { "" };
        table.row([
            row.backend.clone(),
            row.against.clone(),
            figure(row.measured.as_ref().map(|measured| measured.ratio)),
            figure(row.baseline),
            noise,
            figure(row.fails_above),
            format!("{}{second}", row.verdict),
        ]);
    }
    table.render()
}

/// What `--guard` or `--write-baseline` produced: text for standard output and
/// whether it passed.
#[derive(Debug)]
pub struct GuardRun {
    /// The table and a summary line.
    pub text: String,
    /// Whether every verdict passed (or the baseline was written).
    pub passed: bool,
}

/// Runs `--guard` (compare with the baseline) or `--write-baseline` as `args` say.
///
/// # Errors
/// The baseline cannot be read (guard) or written (write-baseline), or nothing could
/// be measured: a message for standard error.
pub async fn run(args: &Args) -> Result<GuardRun, String> {
    let path = args.baseline.clone().unwrap_or_else(default_baseline_path);
    let plan = plan(args);
    let run_id = crate::run_id("distsync-bench/guard");
    if args.write_baseline {
        return write_baseline(args, &plan, &run_id, &path).await;
    }
    let baseline = Baseline::read(&path)?;
    let started = Instant::now();
    let outcomes = measure_all(args, &plan, &run_id).await;
    if outcomes.is_empty() {
        return Err(
            "no backend selected: the guard measures etcd, redis, postgres and nats".into(),
        );
    }
    let mut rows = compare(&baseline, &outcomes);
    let mut timing = timings(&outcomes);
    // A regression must show twice: the backends with a regressed ratio are measured
    // once more, and only what regresses again fails.
    let mut regressed: Vec<BackendKind> = outcomes
        .iter()
        .map(|outcome| outcome.kind)
        .filter(|kind| {
            rows.iter()
                .any(|row| row.backend == kind.as_str() && row.verdict == Verdict::Regressed)
        })
        .collect();
    regressed.dedup();
    if !regressed.is_empty() {
        let again_args = Args {
            backends: regressed,
            ..args.clone()
        };
        let again = measure_all(&again_args, &plan, &format!("{run_id}/again")).await;
        let _ = write!(timing, "; second run: {}", timings(&again));
        rows = confirm(rows, compare(&baseline, &again));
    }
    let failed = rows.iter().filter(|row| row.verdict.fails()).count();
    let mut text = table(&rows);
    let _ = writeln!(
        text,
        "\nbench guard: {} ratios, {failed} failing, in {:.1} s ({}; baseline {} of {}, commit {}; \
         a ratio fails above baseline + max({NOISE_FACTOR} × noise, {:.0} % of baseline) in \
         two runs)",
        rows.len(),
        started.elapsed().as_secs_f64(),
        timing,
        path.display(),
        baseline.written,
        baseline.commit,
        FLOOR * 100.0,
    );
    Ok(GuardRun {
        text,
        passed: failed == 0,
    })
}

/// The rows of a first run, with each regressed one replaced by its second run's row
/// (`second`, the same backends measured again): a regression stands only when the
/// second run regresses too (or cannot measure the ratio).
pub fn confirm(first: Vec<Row>, second: Vec<Row>) -> Vec<Row> {
    first
        .into_iter()
        .map(|row| {
            if row.verdict != Verdict::Regressed {
                return row;
            }
            let again = second
                .iter()
                .find(|again| again.backend == row.backend && again.against == row.against);
            match again {
                Some(again) => Row {
                    second_run: true,
                    ..again.clone()
                },
                None => Row {
                    second_run: true,
                    verdict: Verdict::Unmeasured("not measured on the second run".into()),
                    ..row
                },
            }
        })
        .collect()
}

fn timings(outcomes: &[BackendOutcome]) -> String {
    outcomes
        .iter()
        .map(|outcome| format!("{} {:.1} s", outcome.kind, outcome.elapsed.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Measures `args.repeat` times and writes the baseline: per ratio, the median of the
/// runs and [`baseline_noise`]. Writes nothing if any ratio failed to measure.
async fn write_baseline(
    args: &Args,
    plan: &Plan,
    run_id: &str,
    path: &Path,
) -> Result<GuardRun, String> {
    let machine = crate::machine::Machine::read();
    let mut runs: BTreeMap<(String, String), Vec<Measured>> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut text = String::new();
    for repeat in 0..args.repeat.max(1) {
        let outcomes = measure_all(args, plan, &format!("{run_id}/{repeat}")).await;
        let _ = writeln!(text, "run {}: {}", repeat + 1, timings(&outcomes));
        for outcome in &outcomes {
            if let Some(error) = &outcome.error {
                problems.push(format!("{}: {error}", outcome.kind));
            }
            for (against, measured) in &outcome.ratios {
                match measured {
                    Ok(measured) => runs
                        .entry((outcome.kind.as_str().to_owned(), against.clone()))
                        .or_default()
                        .push(measured.clone()),
                    Err(reason) => problems.push(format!("{} / {against}: {reason}", outcome.kind)),
                }
            }
        }
    }
    if runs.is_empty() {
        problems.push("nothing measured".into());
    }
    if !problems.is_empty() {
        return Err(format!(
            "not writing {}: {}",
            path.display(),
            problems.join("; ")
        ));
    }
    let baseline = baseline_of(runs, plan, &machine);
    let json = serde_json::to_string_pretty(&baseline).map_err(|error| error.to_string())?;
    std::fs::write(path, json + "\n")
        .map_err(|error| format!("writing {}: {error}", path.display()))?;
    let rows: Vec<Row> = baseline
        .ratios
        .iter()
        .map(|entry| Row {
            backend: entry.backend.clone(),
            against: entry.against.clone(),
            measured: Some(Measured {
                ratio: entry.ratio,
                noise: entry.noise,
                rounds: plan.rounds,
            }),
            baseline: Some(entry.ratio),
            fails_above: Some(entry.ratio + allowance(entry.ratio, entry.noise)),
            verdict: Verdict::Written,
            second_run: false,
        })
        .collect();
    text.push_str(&table(&rows));
    let _ = writeln!(text, "\nbench guard: wrote {}", path.display());
    Ok(GuardRun { text, passed: true })
}

/// The baseline of `runs` (each ratio's measurements over the runs): per ratio, the
/// median of the runs and [`baseline_noise`], with how and where it was measured.
fn baseline_of(
    runs: BTreeMap<(String, String), Vec<Measured>>,
    plan: &Plan,
    machine: &crate::machine::Machine,
) -> Baseline {
    let mut machine_line = format!("{} CPUs", machine.cpus);
    if let Some(model) = &machine.cpu_model {
        let _ = write!(machine_line, ", {model}");
    }
    if let Some(load) = &machine.load_start {
        let _ = write!(machine_line, "; load average {load} at start");
    }
    Baseline {
        command: format!(
            "distsync-bench {} (release build, --features full: scripts/bench-guard.sh)",
            std::env::args().skip(1).collect::<Vec<_>>().join(" ")
        ),
        written: machine.started.clone(),
        commit: machine.commit.clone().unwrap_or_default(),
        machine: machine_line,
        note: format!(
            "ratio = distsync lock-cycle p50 / the other's, median of {} interleaved rounds, \
             median over the runs; noise = the larger of the runs' median 1.4826 x MAD of the \
             rounds' ratios and the standard deviation of the runs' ratios. \
             The guard fails a ratio above ratio + max({NOISE_FACTOR} x noise, {:.0} % of ratio).",
            plan.rounds,
            FLOOR * 100.0
        ),
        ratios: runs
            .into_iter()
            .map(|((backend, against), measured)| {
                let values: Vec<f64> = measured.iter().map(|m| m.ratio).collect();
                BaselineRatio {
                    backend,
                    against,
                    ratio: round3(median(&values).unwrap_or(f64::NAN)),
                    noise: round3(baseline_noise(&measured)),
                    runs: values.into_iter().map(round3).collect(),
                }
            })
            .collect(),
    }
}

/// The noise a baseline records for a ratio measured in `runs`: the larger of the
/// median of their own noises and the standard deviation of their ratios.
pub fn baseline_noise(runs: &[Measured]) -> f64 {
    let noises: Vec<f64> = runs.iter().map(|m| m.noise).collect();
    let within = median(&noises).unwrap_or(0.0);
    if runs.len() < 2 {
        return within;
    }
    let n = runs.len() as f64;
    let mean = runs.iter().map(|m| m.ratio).sum::<f64>() / n;
    let variance = runs.iter().map(|m| (m.ratio - mean).powi(2)).sum::<f64>() / (n - 1.0);
    within.max(variance.sqrt())
}

/// `value` rounded to 3 decimals (the baseline file stays readable).
fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}
