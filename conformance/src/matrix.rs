//! The guarantee matrix: reports rendered as markdown (guarantees as rows, backends as
//! columns) or JSON (one object per backend and case); [`crate::junit`] renders them
//! for CI.

use std::fmt::Write as _;

use distsync_core::Capabilities;
use serde::Serialize;

use crate::case::{Claim, Report};
use crate::cases::CASES;
use crate::outcome::{stall_words, Outcome, OutcomeKind};
use crate::profile::Profile;
use crate::slack::Tightest;

/// What a run knows beside its reports: the profile it ran and the capabilities of
/// each store (by the reports' backend label), printed with the matrix
/// ([`markdown_run`], [`crate::junit::junit`]).
#[derive(Clone, Debug, Default)]
pub struct RunInfo {
    /// The profile the run used.
    pub profile: Profile,
    /// Each store's label and the capabilities the cases were judged against, in
    /// column order.
    pub stores: Vec<(String, Capabilities)>,
    /// The name prefix every case of the run lived under, if the run had one of its
    /// own ([`crate::run_namespace`]).
    pub namespace: Option<String>,
    /// More facts of a store, by its label, printed after its [`store_facts`]: what
    /// the clean-up of the run's namespace removed and left ([`crate::Cleanup`]).
    pub notes: Vec<(String, String)>,
}

/// A [`Capabilities`] flag: its field name and how to read it.
type Flag = (&'static str, fn(&Capabilities) -> bool);

/// The primitives a store may offer, as [`Capabilities`] names them.
pub(crate) const OFFERS: [Flag; 22] = [
    ("lock", |c| c.lock),
    ("unfair_lock", |c| c.unfair_lock),
    ("election", |c| c.election),
    ("rwlock", |c| c.rwlock),
    ("queue", |c| c.queue),
    ("priority_queue", |c| c.priority_queue),
    ("barrier", |c| c.barrier),
    ("double_barrier", |c| c.double_barrier),
    ("semaphore", |c| c.semaphore),
    ("stm_serializable_snapshot", |c| c.stm_serializable_snapshot),
    ("stm_serializable", |c| c.stm_serializable),
    ("stm_repeatable_reads", |c| c.stm_repeatable_reads),
    ("stm_read_committed", |c| c.stm_read_committed),
    ("counter", |c| c.counter),
    ("latch", |c| c.latch),
    ("rate_limiter", |c| c.rate_limiter),
    ("break_lock", |c| c.break_lock),
    ("queue_age", |c| c.queue_age),
    ("release_request", |c| c.release_request),
    ("hand_over", |c| c.hand_over),
    ("export", |c| c.export),
    ("caller_transactions", |c| c.caller_transactions),
];

/// The guarantees a store may claim, as [`Capabilities`] names them.
const CLAIMS: [Flag; 12] = [
    ("fencing", |c| c.fencing),
    ("fifo_waiters", |c| c.fifo_waiters),
    ("lost_notification", |c| c.lost_notification),
    ("stalled_holder_expires", |c| c.stalled_holder_expires),
    ("guarded_writes", |c| c.guarded_writes),
    ("partition_safe", |c| c.partition_safe),
    ("reliable_delivery", |c| c.reliable_delivery),
    ("survives_restart", |c| c.survives_restart),
    ("exclusive_across_restart", |c| c.exclusive_across_restart),
    ("linearizable", |c| c.linearizable),
    ("survives_failover", |c| c.survives_failover),
    ("gapless_hand_over", |c| c.gapless_hand_over),
];

/// A store's facts in one line: its backend (driver) name, shortest session TTL, the
/// primitives it offers, and the guarantees it claims and does not claim.
///
/// ```
/// use distsync_core::Capabilities;
///
/// let facts = distsync_conformance::matrix::store_facts(
///     &Capabilities::none("mystore").with_survives_restart(true),
/// );
/// assert!(facts.starts_with("backend `mystore`"), "{facts}");
/// assert!(facts.contains("claims `survives_restart`"), "{facts}");
/// ```
pub fn store_facts(capabilities: &Capabilities) -> String {
    let names = |list: &[Flag], want: bool| {
        let named: Vec<String> = list
            .iter()
            .filter(|(_, flag)| flag(capabilities) == want)
            .map(|(name, _)| format!("`{name}`"))
            .collect();
        if named.is_empty() {
            "nothing".to_owned()
        } else {
            named.join(", ")
        }
    };
    format!(
        "backend `{}`, sessions of at least {:?}; offers {}; claims {}; does not claim {}",
        capabilities.backend,
        capabilities.min_session_ttl,
        names(&OFFERS, true),
        names(&CLAIMS, true),
        names(&CLAIMS, false),
    )
}

/// The heading of the store facts section of [`markdown_run`]; [`outline`] stops there.
pub(crate) const FACTS_HEADING: &str = "### Store facts";

/// The start of the profile line of [`markdown_run`]; [`outline`] leaves it out.
const PROFILE_LINE: &str = "Profile: ";

/// [`markdown`] with the run's profile above the table and the stores' facts
/// ([`store_facts`]) below the notes: what the runner prints. [`outline`] drops both,
/// so that a matrix's outline does not depend on them.
pub fn markdown_run(reports: &[Report], info: &RunInfo) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{PROFILE_LINE}`{}` ({}).\n",
        info.profile,
        match info.profile {
            Profile::Full => "every case",
            Profile::Safe => "only cases that need no control over the store server",
        }
    );
    out.push_str(&markdown(reports));
    if !info.stores.is_empty() {
        let _ = writeln!(out, "\n{FACTS_HEADING}\n");
        if let Some(namespace) = &info.namespace {
            let _ = writeln!(
                out,
                "Every case ran under the names `{}/...`.\n",
                escape(namespace)
            );
        }
        for (label, capabilities) in &info.stores {
            let _ = write!(
                out,
                "- **{}**: {}",
                escape(label),
                escape(&store_facts(capabilities))
            );
            for (_, note) in info.notes.iter().filter(|(of, _)| of == label) {
                let _ = write!(out, "; {}", escape(note));
            }
            out.push('\n');
        }
    }
    out
}

/// One row of the JSON matrix.
#[derive(Clone, Debug, Serialize)]
pub struct JsonRow<'a> {
    /// The backend's label.
    pub backend: &'a str,
    /// The case id.
    pub case: &'static str,
    /// The case's matrix row group ([`crate::Group`]: a primitive, `server` or `api`).
    pub group: &'static str,
    /// The guarantee checked.
    pub guarantee: &'static str,
    /// `holds`, `violated`, `unsupported`, `not_run` (left out by the run's profile),
    /// `error` (the harness could not finish the case), `unreachable` (the store could
    /// not be reached) or `inconclusive` (the harness itself stalled, twice).
    pub outcome: OutcomeKind,
    /// What the capabilities claimed: `true`, `false`, or `null` where there is no
    /// claim (a contract every backend keeps).
    pub declared: Option<bool>,
    /// The capability flag behind `declared`, when the claim is a guarantee flag.
    pub capability: Option<&'static str>,
    /// The measured figure, if any.
    pub figure: Option<&'a str>,
    /// The detail (holds, inconclusive), evidence (violated), reason (unsupported, not
    /// run) or message (error, unreachable).
    pub detail: &'a str,
    /// How long the harness stalled, in milliseconds, for an inconclusive cell (the
    /// longer of its two runs' stalls); `null` otherwise.
    pub stalled_ms: Option<u64>,
    /// Whether this result fails the run (see [`Report::is_failure`]).
    pub failure: bool,
    /// Whether declared and measured disagree (see [`Report::disagrees`]).
    pub disagrees: bool,
    /// How long the case took, in milliseconds.
    pub elapsed_ms: u64,
    /// The run's bounded wait that used the largest share of its bound (see
    /// [`crate::slack`]); `null` for a case that did not run.
    pub tightest: Option<&'a Tightest>,
}

impl<'a> From<&'a Report> for JsonRow<'a> {
    fn from(report: &'a Report) -> Self {
        Self {
            backend: &report.backend,
            case: report.case.id,
            group: report.case.group.as_str(),
            guarantee: report.case.guarantee,
            outcome: report.outcome.kind(),
            declared: report.declared,
            capability: capability(report),
            figure: report.outcome.figure(),
            detail: report.outcome.detail(),
            stalled_ms: report
                .outcome
                .stalled()
                .map(|stalled| u64::try_from(stalled.as_millis()).unwrap_or(u64::MAX)),
            failure: report.is_failure(),
            disagrees: report.disagrees(),
            elapsed_ms: u64::try_from(report.elapsed.as_millis()).unwrap_or(u64::MAX),
            tightest: report.tightest.as_ref(),
        }
    }
}

fn capability(report: &Report) -> Option<&'static str> {
    match report.case.claim {
        Claim::Flag(flag, _) => Some(flag),
        Claim::Offered => report.case.needs.first().map(|need| need.flag()),
        Claim::Contract => None,
    }
}

/// The reports as a JSON array of [`JsonRow`]s, pretty-printed.
pub fn json(reports: &[Report]) -> String {
    let rows: Vec<JsonRow<'_>> = reports.iter().map(JsonRow::from).collect();
    serde_json::to_string_pretty(&rows)
        .unwrap_or_else(|error| format!("[] // serialising failed: {error}"))
}

/// The reports as a markdown table: one row per case (in suite order), one column per
/// backend (in order of first appearance), then notes for every violation and every
/// disagreement between declared and measured.
pub fn markdown(reports: &[Report]) -> String {
    let mut backends: Vec<&str> = Vec::new();
    for report in reports {
        if !backends.contains(&report.backend.as_str()) {
            backends.push(&report.backend);
        }
    }
    let mut out = String::new();
    let _ = write!(out, "| primitive | guarantee |");
    for backend in &backends {
        let _ = write!(out, " {} |", escape(backend));
    }
    out.push('\n');
    out.push_str("|---|---|");
    for _ in &backends {
        out.push_str("---|");
    }
    out.push('\n');
    for case in CASES {
        if !reports.iter().any(|report| report.case.id == case.id) {
            continue;
        }
        let _ = write!(out, "| {} | {} |", case.group, escape(case.guarantee));
        for backend in &backends {
            let cell = reports
                .iter()
                .find(|report| report.case.id == case.id && report.backend == *backend)
                .map_or_else(|| "–".to_owned(), cell);
            let _ = write!(out, " {} |", escape(&cell));
        }
        out.push('\n');
    }
    out.push_str(
        "\n`holds (figure)`: measured to hold. `unsupported`: the backend declares it does not offer it, \
         or the fault cannot be injected there (the notes say why). \
         `**VIOLATED**`: measured not to hold although claimed (or part of every backend's contract). \
         `violated (not declared)`: measured not to hold, as the backend's capabilities admit. \
         ⚠ marks a disagreement between declared and measured.\n",
    );
    let has = |kind: OutcomeKind| reports.iter().any(|report| report.outcome.kind() == kind);
    if has(OutcomeKind::NotRun) {
        out.push_str(
            "`not run`: the run's profile leaves the case out (it needs control over the store \
             server); it says nothing about the store.\n",
        );
    }
    if has(OutcomeKind::Error) {
        out.push_str(
            "`**ERROR**`: the harness could not finish the case (the run's deadline passed); \
             nothing was measured.\n",
        );
    }
    if has(OutcomeKind::Unreachable) {
        out.push_str(
            "`**UNREACHABLE**`: the store could not be reached or refused more clients (too \
             many connections) while the case ran; nothing was measured.\n",
        );
    }
    if has(OutcomeKind::Inconclusive) {
        let _ = writeln!(
            out,
            "{INCONCLUSIVE_LEGEND} the runner itself stalled past the slack the case judges \
             with, in the case's run and in its second run; nothing was measured. More than \
             a tenth of the fault cells inconclusive fails the run (exit status 5)."
        );
    }
    let notes: Vec<&Report> = reports
        .iter()
        .filter(|report| !matches!(report.outcome, Outcome::Holds { .. }) || report.disagrees())
        .collect();
    if !notes.is_empty() {
        let _ = write!(out, "\n{NOTES_HEADING}\n\n");
        for report in notes {
            let declared = match (report.declared, capability(report)) {
                (Some(value), Some(flag)) => format!("declares `{flag}` = {value}"),
                (Some(value), None) => format!("declared {value}"),
                (None, _) => "contract".to_owned(),
            };
            let _ = writeln!(
                out,
                "- **{} / {}** ({declared}): {} — {}",
                report.backend,
                report.case.id,
                kind(report),
                escape(report.outcome.detail())
            );
        }
    }
    out
}

/// The start of the legend line of inconclusive cells in [`markdown`]; [`outline`]
/// leaves it out, as it leaves out what makes a cell inconclusive.
const INCONCLUSIVE_LEGEND: &str = "`inconclusive (the runner stalled N ms)`:";

/// The start of an inconclusive cell ([`cell`]).
const INCONCLUSIVE_CELL: &str = "inconclusive (";

/// The words of an inconclusive cell whose guarantee the store does not claim.
const INCONCLUSIVE_NOT_DECLARED: &str = "not declared; ";

/// The heading of the notes of [`markdown`].
const NOTES_HEADING: &str = "### Notes";

/// `holds (figure)`, `VIOLATED`, `violated (not declared)` (as the backend's
/// capabilities admit, the same words as its cell), `unsupported`, `not run`, `ERROR`,
/// `UNREACHABLE` or `inconclusive`.
fn kind(report: &Report) -> String {
    match &report.outcome {
        Outcome::Holds {
            figure: Some(figure),
            ..
        } => format!("holds ({figure})"),
        Outcome::Holds { figure: None, .. } => "holds".to_owned(),
        Outcome::Violated { .. } if report.declared == Some(false) => {
            "violated (not declared)".to_owned()
        }
        Outcome::Violated { .. } => "VIOLATED".to_owned(),
        Outcome::Unsupported { .. } => "unsupported".to_owned(),
        Outcome::NotRun { .. } => "not run".to_owned(),
        Outcome::Error { .. } => "ERROR".to_owned(),
        Outcome::Unreachable { .. } => "UNREACHABLE".to_owned(),
        Outcome::Inconclusive { .. } => "inconclusive".to_owned(),
    }
}

/// The figure-free outline of a markdown matrix (as [`markdown`] renders it): every
/// measured figure and every note's detail removed, so that two runs that measured
/// the same outcomes have the same outline. What `scripts/check-matrix.sh`
/// compares between README.md and a fresh run. The profile line and the store facts of
/// [`markdown_run`] are left out (the cells say what ran).
///
/// An inconclusive cell measured nothing, so its outline is its claim: the outline of
/// a cell that held (`holds`, and no note) where the store claims the guarantee or every
/// store must keep it, `violated (not declared)` (and its note) where the store does
/// not claim it. A run with a few inconclusive cells then has the outline of a run
/// that measured what the store declares, and its comparison with a committed matrix
/// fails on what was measured, not on the runner's stalls; how many cells were
/// inconclusive is the run's exit status to judge ([`crate::Starvation`]).
pub fn outline(markdown: &str) -> String {
    let mut lines: Vec<String> = Vec::new();
    let text = markdown.trim();
    let text = match text.strip_prefix(PROFILE_LINE) {
        Some(rest) => rest.split_once('\n').map_or("", |(_, table)| table).trim(),
        None => text,
    };
    let text = match text.find(&format!("\n{FACTS_HEADING}\n")) {
        Some(at) => text[..at].trim_end(),
        None => text,
    };
    // The notes heading waits for its first note: a matrix whose notes are all of
    // inconclusive cells that held by their claim has none.
    let mut notes_heading: Option<usize> = None;
    for line in text.lines() {
        let line = line.trim_end();
        if line.starts_with('|') {
            let cells: Vec<String> = split_cells(line).iter().map(|c| outline_cell(c)).collect();
            lines.push(format!("| {} |", cells.join(" | ")));
        } else if line.starts_with("- **") {
            let head = line.split(" — ").next().unwrap_or(line);
            let note = match head.split_once("): ") {
                Some((who, what)) if what.starts_with("inconclusive") => {
                    let unclaimed = who.ends_with("= false") || who.ends_with("declared false");
                    if !unclaimed {
                        continue;
                    }
                    format!("{who}): violated (not declared)")
                }
                Some((who, what)) => format!("{who}): {}", strip_figure(what)),
                None => head.to_owned(),
            };
            if let Some(at) = notes_heading.take() {
                lines.insert(at, NOTES_HEADING.to_owned());
            }
            lines.push(note);
        } else if line == NOTES_HEADING {
            notes_heading = Some(lines.len());
        } else if !line.starts_with(INCONCLUSIVE_LEGEND) {
            lines.push(line.to_owned());
        }
    }
    if notes_heading.is_some() {
        // No note after the heading: drop the blank lines around where it was.
        while lines.last().is_some_and(String::is_empty) {
            lines.pop();
        }
    }
    let mut out = String::new();
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    out
}

/// A cell of [`outline`]: its outcome without its figure, an inconclusive cell as its
/// claim (see [`outline`]).
fn outline_cell(cell: &str) -> String {
    let cell = cell.trim();
    match cell.strip_prefix(INCONCLUSIVE_CELL) {
        Some(rest) if rest.starts_with(INCONCLUSIVE_NOT_DECLARED) => {
            "violated (not declared)".to_owned()
        }
        Some(_) => "holds".to_owned(),
        None => strip_figure(cell),
    }
}

/// The rows of [`summary`]: a case and what its row says to a reader choosing a store.
const SUMMARY: [(&str, &str); 11] = [
    ("lock_mutual_exclusion", "one lock holder at a time"),
    ("lock_fencing_tokens", "fencing tokens only grow"),
    (
        "lock_holder_crash",
        "a crashed holder's lock frees by itself",
    ),
    (
        "lock_holder_pause",
        "a holder paused past its lease is fenced off",
    ),
    (
        "lock_partition_silent",
        "a holder cut off stops before anyone else is granted",
    ),
    ("election_one_leader", "one leader at a time"),
    (
        "queue_no_loss_no_duplicate",
        "queue items never lost or delivered twice",
    ),
    (
        "stm_bank_serializable_snapshot",
        "serializable transactions (STM)",
    ),
    (
        "server_restart_durable_state",
        "state survives a server restart",
    ),
    (
        "server_power_loss_default_durability",
        "acknowledged writes survive a power loss (default settings)",
    ),
    ("lock_interop_go", "shared with etcd's Go programs"),
];

/// What each store gives you, in eleven rows: eleven chosen rows of a markdown matrix
/// (as [`markdown`] renders it: one lock holder at a time, fencing, crash, pause and
/// partition safety, one leader, no lost queue item, serializable STM, durability
/// across a restart and a power loss, sharing with etcd's Go programs), each cell
/// reduced to `yes`, `no` (measured not to hold, as the store declares),
/// `**VIOLATED**`, `n/a` (not offered by the store, or its fault cannot be injected
/// there) or `–` (not run on that column). README's summary table, regenerated and
/// checked with the matrix. An inconclusive cell reads as its claim, as in [`outline`]:
/// `yes` where the store claims the guarantee, `no` where it does not.
pub fn summary(markdown: &str) -> String {
    let mut lines = markdown.lines().filter(|line| line.starts_with('|'));
    let Some(header) = lines.next() else {
        return String::new();
    };
    let columns: Vec<String> = split_cells(header).into_iter().skip(2).collect();
    let rows: Vec<Vec<String>> = lines.map(split_cells).collect();
    let mut out = String::new();
    let _ = writeln!(out, "| | {} |", columns.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(columns.len()));
    for (id, label) in SUMMARY {
        let Some(case) = crate::cases::find(id) else {
            continue;
        };
        let (group, guarantee) = (case.group.as_str(), escape(case.guarantee));
        let Some(row) = rows
            .iter()
            .find(|row| row.len() >= 2 && row[0] == group && row[1] == guarantee)
        else {
            continue;
        };
        let cells: Vec<&str> = row.iter().skip(2).map(|cell| verdict(cell)).collect();
        let _ = writeln!(out, "| {label} | {} |", cells.join(" | "));
    }
    out
}

/// A matrix cell as one word (see [`summary`]).
fn verdict(cell: &str) -> &'static str {
    match cell.trim() {
        "–" => "–",
        "unsupported" => "n/a",
        "not run" => "–",
        "**ERROR**" => "error",
        "**UNREACHABLE**" => "unreachable",
        "violated (not declared)" => "no",
        cell if cell.starts_with("holds") => "yes",
        cell if cell.starts_with(INCONCLUSIVE_CELL) => match outline_cell(cell).as_str() {
            "holds" => "yes",
            _ => "no",
        },
        _ => "**VIOLATED**",
    }
}

/// The cells of a table row, split on `|` but not on an escaped `\|`.
fn split_cells(row: &str) -> Vec<String> {
    let inner = row.trim().trim_start_matches('|');
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    let mut cells = vec![String::new()];
    let mut escaped = false;
    for c in inner.chars() {
        match c {
            '|' if !escaped => cells.push(String::new()),
            _ => {
                if let Some(cell) = cells.last_mut() {
                    cell.push(c);
                }
            }
        }
        escaped = c == '\\' && !escaped;
    }
    cells
        .into_iter()
        .map(|cell| cell.trim().to_owned())
        .collect()
}

/// `holds (figure)...` without the figure; anything else as it is.
fn strip_figure(cell: &str) -> String {
    let cell = cell.trim();
    match cell.strip_prefix("holds (") {
        Some(rest) => match rest.rfind(')') {
            Some(end) => format!("holds{}", &rest[end + 1..]),
            None => cell.to_owned(),
        },
        None => cell.to_owned(),
    }
}

/// The text of one matrix cell.
fn cell(report: &Report) -> String {
    let figure = report
        .outcome
        .figure()
        .map(|figure| format!(" ({figure})"))
        .unwrap_or_default();
    match (&report.outcome, report.declared) {
        (Outcome::Holds { .. }, Some(false)) => format!("holds{figure} ⚠ not declared"),
        (Outcome::Holds { .. }, _) => format!("holds{figure}"),
        (Outcome::Violated { .. }, Some(false)) => "violated (not declared)".to_owned(),
        (Outcome::Violated { .. }, Some(true)) => "**VIOLATED** ⚠ declared".to_owned(),
        (Outcome::Violated { .. }, None) => "**VIOLATED**".to_owned(),
        (Outcome::Unsupported { .. }, _) => "unsupported".to_owned(),
        (Outcome::NotRun { .. }, _) => "not run".to_owned(),
        (Outcome::Error { .. }, _) => "**ERROR**".to_owned(),
        (Outcome::Unreachable { .. }, _) => "**UNREACHABLE**".to_owned(),
        (Outcome::Inconclusive { stalled, .. }, Some(false)) => format!(
            "{INCONCLUSIVE_CELL}{INCONCLUSIVE_NOT_DECLARED}{})",
            stall_words(*stalled)
        ),
        (Outcome::Inconclusive { stalled, .. }, _) => {
            format!("{INCONCLUSIVE_CELL}{})", stall_words(*stalled))
        }
    }
}

fn escape(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cases::find;

    fn report(backend: &str, case: &str, declared: Option<bool>, outcome: Outcome) -> Report {
        Report::of(backend, case, declared, outcome, Duration::from_millis(12))
    }

    fn sample() -> Vec<Report> {
        vec![
            report(
                "memory",
                "lock_mutual_exclusion",
                Some(true),
                Outcome::Holds {
                    figure: Some("400 grants | fast".into()),
                    detail: "ok".into(),
                },
            ),
            report(
                "memory",
                "lock_fifo_waiters",
                Some(false),
                Outcome::holds("in order"),
            ),
            report(
                "redis",
                "lock_mutual_exclusion",
                Some(true),
                Outcome::violated("two holders"),
            ),
            report(
                "redis",
                "lock_fifo_waiters",
                Some(false),
                Outcome::violated("out of order"),
            ),
            report(
                "redis",
                "stm_bank_serializable",
                Some(false),
                Outcome::Unsupported {
                    reason: "capabilities declare stm_serializable = false".into(),
                },
            ),
        ]
    }

    #[test]
    fn markdown_has_backends_as_columns_and_flags_disagreements() {
        let text = markdown(&sample());
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("| primitive | guarantee | memory | redis |")
        );
        assert_eq!(lines.next(), Some("|---|---|---|---|"));
        assert!(
            text.contains(
                "| lock | mutual exclusion under contention | holds (400 grants \
                 \\| fast) | **VIOLATED** ⚠ declared |"
            ),
            "{text}"
        );
        assert!(
            text.contains("holds ⚠ not declared | violated (not declared) |"),
            "{text}"
        );
        assert!(
            text.contains("| stm | bank total kept at Serializable | – | unsupported |"),
            "{text}"
        );
        assert!(
            text.contains(
                "**redis / lock_mutual_exclusion** (declares `lock` = true): VIOLATED — two holders"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "**redis / stm_bank_serializable** (declares `stm_serializable` = \
                 false): unsupported — capabilities declare"
            ),
            "{text}"
        );
        assert!(
            text.contains("**memory / lock_fifo_waiters** (declares `fifo_waiters` = false)"),
            "{text}"
        );
    }

    #[test]
    fn the_summary_reduces_chosen_rows_to_one_word_per_store() {
        let guarantee = |id: &str| escape(find(id).unwrap().guarantee);
        let matrix = format!(
            "| primitive | guarantee | a | b | c |\n|---|---|---|---|---|\n\
             | lock | {} | holds (3 grants) | violated (not declared) | unsupported |\n\
             | lock | {} | **VIOLATED** ⚠ declared | holds ⚠ not declared | – |\n\
             | lock | {} | holds | holds | holds |\n",
            guarantee("lock_mutual_exclusion"),
            guarantee("lock_holder_crash"),
            guarantee("lock_try_lock"),
        );
        assert_eq!(
            summary(&matrix),
            "| | a | b | c |\n|---|---|---|---|\n\
             | one lock holder at a time | yes | no | n/a |\n\
             | a crashed holder's lock frees by itself | **VIOLATED** | yes | – |\n"
        );
        for (id, _) in SUMMARY {
            assert!(find(id).is_some(), "{id} is not a case");
        }
    }

    #[test]
    fn outlines_drop_figures_and_details_only() {
        let mut other = sample();
        other[0].outcome = Outcome::Holds {
            figure: Some("12 grants (slow) | very".into()),
            detail: "other".into(),
        };
        other[1].outcome = Outcome::Holds {
            figure: Some("x".into()),
            detail: "other".into(),
        };
        other[2].outcome = Outcome::violated("three holders");
        let (a, b) = (markdown(&sample()), markdown(&other));
        assert_ne!(a, b);
        assert_eq!(outline(&a), outline(&b), "{a}\n{b}");
        let outline = outline(&a);
        assert!(
            outline.contains(
                "| lock | mutual exclusion under contention | holds | **VIOLATED** ⚠ declared |"
            ),
            "{outline}"
        );
        assert!(
            outline.contains("| holds ⚠ not declared | violated (not declared) |"),
            "{outline}"
        );
        assert!(
            outline.contains(
                "- **redis / lock_mutual_exclusion** (declares `lock` = true): VIOLATED\n"
            ),
            "{outline}"
        );
        // A different outcome is a different outline.
        let mut changed = sample();
        changed[3].outcome = Outcome::holds("in order after all");
        assert_ne!(super::outline(&markdown(&changed)), outline);
        // Surrounding blank lines do not matter.
        assert_eq!(super::outline(&format!("\n{a}\n\n")), outline);
    }

    #[test]
    fn the_run_matrix_names_its_profile_and_stores_outside_the_outline() {
        let mut reports = sample();
        reports.push(report(
            "memory",
            "server_restart_durable_state",
            Some(false),
            Outcome::NotRun {
                reason: "not run in the safe profile".into(),
            },
        ));
        let info = RunInfo {
            profile: Profile::Safe,
            stores: vec![("memory".to_owned(), Capabilities::none("memory"))],
            namespace: Some("conf/run-1".to_owned()),
            notes: vec![(
                "memory".to_owned(),
                "clean-up: 3 entries removed, 0 left".to_owned(),
            )],
        };
        let text = markdown_run(&reports, &info);
        assert!(text.starts_with("Profile: `safe`"), "{text}");
        assert!(text.contains("| not run |"), "{text}");
        assert!(text.contains("`not run`: the run's profile"), "{text}");
        assert!(text.contains("- **memory**: backend `memory`"), "{text}");
        assert!(
            text.contains("; clean-up: 3 entries removed, 0 left\n"),
            "{text}"
        );
        assert!(text.contains("under the names `conf/run-1/...`"), "{text}");
        let outline = outline(&text);
        assert!(!outline.contains("Profile:"), "{outline}");
        assert!(!outline.contains("Store facts"), "{outline}");
        assert!(outline.contains("| not run |"), "{outline}");
        // The full profile's run matrix has the plain matrix's outline, store facts or
        // not.
        let plain = super::outline(&markdown(&sample()));
        assert_eq!(
            super::outline(&markdown_run(&sample(), &RunInfo::default())),
            plain
        );
        let full = RunInfo {
            profile: Profile::Full,
            stores: info.stores.clone(),
            ..RunInfo::default()
        };
        assert_eq!(super::outline(&markdown_run(&sample(), &full)), plain);
        assert_eq!(verdict("not run"), "–");
        assert_eq!(verdict("**ERROR**"), "error");
        assert_eq!(verdict("**UNREACHABLE**"), "unreachable");
    }

    fn inconclusive(stalled_ms: u64) -> Outcome {
        Outcome::Inconclusive {
            stalled: Duration::from_millis(stalled_ms),
            slack: Duration::from_millis(250),
            detail: "the runner stalled twice".into(),
        }
    }

    #[test]
    fn inconclusive_cells_are_printed_and_outlined_as_their_claim() {
        // Inconclusive where the held or unclaimed outcomes of `sample` are.
        let mut stalled = sample();
        stalled[0].outcome = inconclusive(412);
        stalled[3].outcome = inconclusive(380);
        let text = markdown(&stalled);
        assert!(
            text.contains(
                "| lock | mutual exclusion under contention | inconclusive (the runner stalled 412 ms) |"
            ),
            "{text}"
        );
        assert!(
            text.contains("| inconclusive (not declared; the runner stalled 380 ms) |"),
            "{text}"
        );
        assert!(text.contains(INCONCLUSIVE_LEGEND), "{text}");
        assert!(
            text.contains(
                "- **memory / lock_mutual_exclusion** (declares `lock` = true): inconclusive — \
                 the runner stalled twice"
            ),
            "{text}"
        );
        // The claimed cell outlines as held, the unclaimed one as violated (not declared),
        // with the notes of those outcomes: the outline of `sample`.
        let plain = outline(&markdown(&sample()));
        assert_eq!(outline(&text), plain, "{text}");
        let summary_of = |reports: &[Report]| summary(&markdown(reports));
        assert_eq!(summary_of(&stalled), summary_of(&sample()));
        assert!(summary_of(&stalled).contains("| one lock holder at a time | yes | **VIOLATED** |"));
        assert_eq!(
            verdict("inconclusive (not declared; the runner stalled 1 ms)"),
            "no"
        );
        assert_eq!(verdict("inconclusive (the runner stalled 1 ms)"), "yes");

        // A matrix whose only note is a claimed inconclusive cell has no notes in its
        // outline, as the matrix of that cell held.
        let held = vec![report(
            "memory",
            "lock_mutual_exclusion",
            Some(true),
            Outcome::holds("ok"),
        )];
        let mut one = held.clone();
        one[0].outcome = inconclusive(300);
        assert!(markdown(&one).contains(NOTES_HEADING));
        assert!(!markdown(&held).contains(NOTES_HEADING));
        assert_eq!(outline(&markdown(&one)), outline(&markdown(&held)));

        // The JSON row says how long the runner stalled.
        let value: serde_json::Value = serde_json::from_str(&json(&stalled)).unwrap();
        assert_eq!(value[0]["outcome"], "inconclusive");
        assert_eq!(value[0]["stalled_ms"], 412);
        assert_eq!(value[0]["failure"], false);
        assert_eq!(value[1]["stalled_ms"], serde_json::Value::Null);
    }

    #[test]
    fn json_rows_carry_the_required_fields() {
        let value: serde_json::Value = serde_json::from_str(&json(&sample())).unwrap();
        let rows = value.as_array().unwrap();
        assert_eq!(rows.len(), 5);
        let row = &rows[2];
        assert_eq!(row["backend"], "redis");
        assert_eq!(row["case"], "lock_mutual_exclusion");
        assert_eq!(row["group"], "lock");
        assert_eq!(row["guarantee"], "mutual exclusion under contention");
        assert_eq!(row["outcome"], "violated");
        assert_eq!(row["declared"], true);
        assert_eq!(row["figure"], serde_json::Value::Null);
        assert_eq!(row["detail"], "two holders");
        assert_eq!(row["failure"], true);
        assert_eq!(rows[3]["failure"], false);
        assert_eq!(rows[4]["outcome"], "unsupported");
        assert_eq!(rows[0]["figure"], "400 grants | fast");
    }
}
