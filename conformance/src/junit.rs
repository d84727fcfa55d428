//! The matrix as JUnit XML, for CI systems that show test reports (GitHub Actions
//! through a report action, GitLab's `artifacts:reports:junit`, Jenkins).
//!
//! One `<testsuite>` per backend (in order of first appearance), one `<testcase>` per
//! matrix cell (`classname` the backend's label, `name` the case id), with the cell's
//! figure and detail in `<system-out>`. How outcomes map:
//!
//! | outcome | JUnit |
//! |---|---|
//! | holds | a passing `<testcase>` |
//! | violated, claimed or part of the contract | `<failure>` with the evidence |
//! | violated, not claimed (as the capabilities admit) | `<skipped>`: not a claim of the store |
//! | unsupported | `<skipped>` with the reason |
//! | not run (left out by the profile) | `<skipped>` with the reason |
//! | error (the harness could not finish it) | `<error>` with the message |
//! | unreachable (the store could not be reached) | `<error type="unreachable">` with the message |
//! | inconclusive (the runner itself stalled, twice) | `<skipped>` with the stall and the detail |
//!
//! An inconclusive cell is skipped rather than an error: it says nothing about the
//! store, and one such cell does not fail a run; a run with too many of them fails by
//! its exit status ([`crate::ExitStatus::Starved`]), and its skipped cells say which.
//!
//! A case that ran carries its tightest bounded wait ([`crate::slack`]) as a line of
//! its `<system-out>`, `tightest wait: WHAT: TOOK ms of its BOUND ms bound`, which
//! `scripts/slack.py` reads (the JUnit schema CI reporters follow has no properties on
//! a `<testcase>`); `time` is the whole case, bounded by [`crate::CASE_LIMIT`].
//!
//! The run's profile and each store's facts ([`crate::matrix::store_facts`]) are the
//! suites' `<properties>`.

use std::fmt::Write as _;
use std::time::Duration;

use crate::case::Report;
use crate::matrix::{store_facts, RunInfo};
use crate::outcome::{stall_words, Outcome};

/// `text` with the five XML special characters escaped, and characters XML 1.0 does
/// not allow (most control characters) replaced by `?`, so that any evidence text
/// makes a well-formed document.
///
/// ```
/// use distsync_conformance::junit::escape;
///
/// assert_eq!(escape(r#"a<b & "c" 'd'>"#), "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;");
/// ```
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

fn seconds(elapsed: Duration) -> String {
    format!("{:.3}", elapsed.as_secs_f64())
}

/// The reports as a JUnit XML document (see the module docs for the mapping).
///
/// ```
/// use distsync_conformance::{junit, matrix::RunInfo};
///
/// let xml = junit::junit(&[], &RunInfo::default());
/// assert!(xml.starts_with("<?xml"));
/// assert!(xml.contains("<testsuites name=\"distsync-conformance\""));
/// ```
pub fn junit(reports: &[Report], info: &RunInfo) -> String {
    let mut backends: Vec<&str> = Vec::new();
    for report in reports {
        if !backends.contains(&report.backend.as_str()) {
            backends.push(&report.backend);
        }
    }
    let count = |of: &[&Report], what: fn(&Report) -> bool| of.iter().filter(|r| what(r)).count();
    let total_time: Duration = reports.iter().map(|report| report.elapsed).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let all: Vec<&Report> = reports.iter().collect();
    let _ = writeln!(
        out,
        "<testsuites name=\"distsync-conformance\" tests=\"{}\" failures=\"{}\" errors=\"{}\" \
         skipped=\"{}\" time=\"{}\">",
        all.len(),
        count(&all, is_failure),
        count(&all, is_error),
        count(&all, is_skipped),
        seconds(total_time)
    );
    for backend in backends {
        let suite: Vec<&Report> = reports
            .iter()
            .filter(|report| report.backend == backend)
            .collect();
        let time: Duration = suite.iter().map(|report| report.elapsed).sum();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" \
             time=\"{}\">",
            escape(backend),
            suite.len(),
            count(&suite, is_failure),
            count(&suite, is_error),
            count(&suite, is_skipped),
            seconds(time)
        );
        out.push_str("    <properties>\n");
        let _ = writeln!(
            out,
            "      <property name=\"profile\" value=\"{}\"/>",
            info.profile
        );
        if let Some((_, capabilities)) = info.stores.iter().find(|(label, _)| label == backend) {
            let _ = writeln!(
                out,
                "      <property name=\"store\" value=\"{}\"/>",
                escape(&store_facts(capabilities))
            );
        }
        if let Some(namespace) = &info.namespace {
            let _ = writeln!(
                out,
                "      <property name=\"namespace\" value=\"{}\"/>",
                escape(namespace)
            );
        }
        for (_, note) in info.notes.iter().filter(|(label, _)| label == backend) {
            let _ = writeln!(
                out,
                "      <property name=\"note\" value=\"{}\"/>",
                escape(note)
            );
        }
        out.push_str("    </properties>\n");
        for report in suite {
            testcase(&mut out, report);
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

fn is_failure(report: &Report) -> bool {
    matches!(report.outcome, Outcome::Violated { .. }) && report.is_failure()
}

fn is_error(report: &Report) -> bool {
    matches!(
        report.outcome,
        Outcome::Error { .. } | Outcome::Unreachable { .. }
    )
}

fn is_skipped(report: &Report) -> bool {
    !is_failure(report) && !is_error(report) && !matches!(report.outcome, Outcome::Holds { .. })
}

/// One `<testcase>` element.
fn testcase(out: &mut String, report: &Report) {
    let _ = write!(
        out,
        "    <testcase classname=\"{}\" name=\"{}\" time=\"{}\">",
        escape(&report.backend),
        escape(report.case.id),
        seconds(report.elapsed)
    );
    let detail = escape(report.outcome.detail());
    match &report.outcome {
        Outcome::Violated { .. } if report.is_failure() => {
            let message = if report.declared == Some(true) {
                "violated, although the store claims it"
            } else {
                "violated, although every store must keep it"
            };
            let _ = write!(
                out,
                "\n      <failure message=\"{message}: {}\" type=\"violated\">{detail}</failure>",
                escape(report.case.guarantee)
            );
        }
        Outcome::Violated { .. } => {
            let _ = write!(
                out,
                "\n      <skipped message=\"violated, as the store's capabilities declare (not \
                 claimed)\"/>"
            );
        }
        Outcome::Unsupported { .. } => {
            let _ = write!(out, "\n      <skipped message=\"unsupported: {detail}\"/>");
        }
        Outcome::NotRun { .. } => {
            // The reason starts with the words "not run in the ... profile".
            let _ = write!(out, "\n      <skipped message=\"{detail}\"/>");
        }
        Outcome::Error { .. } => {
            let _ = write!(
                out,
                "\n      <error message=\"the harness could not finish the case\" \
                 type=\"error\">{detail}</error>"
            );
        }
        Outcome::Unreachable { .. } => {
            let _ = write!(
                out,
                "\n      <error message=\"the store could not be reached or refused more \
                 clients\" type=\"unreachable\">{detail}</error>"
            );
        }
        Outcome::Inconclusive { stalled, slack, .. } => {
            let _ = write!(
                out,
                "\n      <skipped message=\"inconclusive: {} (slack {} ms) in both runs; nothing \
                 measured: {detail}\"/>",
                stall_words(*stalled),
                slack.as_millis()
            );
        }
        Outcome::Holds { .. } => {}
    }
    let mut figure = report
        .outcome
        .figure()
        .map(|figure| format!("figure: {figure}\n"))
        .unwrap_or_default();
    if let Some(tightest) = &report.tightest {
        let _ = writeln!(
            figure,
            "tightest wait: {}: {} ms of its {} ms bound",
            tightest.what,
            tightest.took.as_millis(),
            tightest.bound.as_millis()
        );
    }
    let _ = write!(
        out,
        "\n      <system-out>{}guarantee: {}\n{}: {detail}</system-out>\n    </testcase>\n",
        escape(&figure),
        escape(report.case.guarantee),
        report.outcome.kind()
    );
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use distsync_core::Capabilities;

    use super::*;
    use crate::profile::Profile;

    fn report(backend: &str, case: &str, declared: Option<bool>, outcome: Outcome) -> Report {
        Report::of(
            backend,
            case,
            declared,
            outcome,
            Duration::from_millis(1200),
        )
    }

    /// The elements of a document, checked for nesting and escaping: each start tag's
    /// name, in order, or an error saying what is malformed. Enough XML for the
    /// renderer's output (no CDATA, comments or DTDs), so the test needs no XML crate.
    fn elements(xml: &str) -> Result<Vec<String>, String> {
        let body = xml
            .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")
            .ok_or("no declaration")?;
        let mut open: Vec<String> = Vec::new();
        let mut seen = Vec::new();
        let mut rest = body;
        while let Some(at) = rest.find('<') {
            check_text(&rest[..at])?;
            let end = rest[at..].find('>').ok_or("an unclosed tag")? + at;
            let tag = &rest[at + 1..end];
            rest = &rest[end + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                let top = open.pop().ok_or(format!("</{name}> closes nothing"))?;
                if top != name {
                    return Err(format!("</{name}> closes <{top}>"));
                }
                continue;
            }
            let (tag, closed) = match tag.strip_suffix('/') {
                Some(tag) => (tag, true),
                None => (tag, false),
            };
            let name = tag.split_whitespace().next().ok_or("an empty tag")?;
            let attributes = &tag[name.len()..];
            if attributes.matches('"').count() % 2 != 0 {
                return Err(format!("unbalanced quotes in <{tag}>"));
            }
            for value in attributes.split('"').skip(1).step_by(2) {
                check_text(value)?;
            }
            if open.is_empty() && !seen.is_empty() {
                return Err("two root elements".to_owned());
            }
            seen.push(name.to_owned());
            if !closed {
                open.push(name.to_owned());
            }
        }
        check_text(rest)?;
        match open.last() {
            Some(name) => Err(format!("<{name}> is not closed")),
            None => Ok(seen),
        }
    }

    /// Text (or an attribute value) with only the five entities and no raw `<`.
    fn check_text(text: &str) -> Result<(), String> {
        if text.contains('<') {
            return Err(format!("a raw < in {text:?}"));
        }
        let mut parts = text.split('&');
        parts.next();
        for part in parts {
            let entity = ["amp;", "lt;", "gt;", "quot;", "apos;"]
                .iter()
                .any(|entity| part.starts_with(entity));
            if !entity {
                return Err(format!("a raw & in {text:?}"));
            }
        }
        Ok(())
    }

    #[test]
    fn one_suite_per_backend_and_one_testcase_per_cell() {
        let reports = vec![
            report(
                "memory",
                "lock_mutual_exclusion",
                Some(true),
                Outcome::Holds {
                    figure: Some("400 grants <fast> & \"sure\"".into()),
                    detail: "ok 'quoted'".into(),
                },
            ),
            report(
                "memory",
                "server_restart_durable_state",
                Some(true),
                Outcome::NotRun {
                    reason: "not run in the safe profile".into(),
                },
            ),
            report(
                "redis",
                "lock_mutual_exclusion",
                Some(true),
                Outcome::violated("two holders at <once> & \u{1} more"),
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
            report(
                "redis",
                "lock_try_lock",
                None,
                Outcome::Error {
                    message: "not finished within the run's --timeout".into(),
                },
            ),
            report(
                "redis",
                "lock_holder_pause",
                Some(true),
                Outcome::Inconclusive {
                    stalled: Duration::from_millis(412),
                    slack: Duration::from_millis(250),
                    detail: "first run: <VIOLATED>".into(),
                },
            ),
        ];
        let info = RunInfo {
            profile: Profile::Safe,
            stores: vec![("redis".to_owned(), Capabilities::none("redis"))],
            ..RunInfo::default()
        };
        let xml = junit(&reports, &info);
        let elements = elements(&xml).unwrap_or_else(|error| panic!("{error}:\n{xml}"));
        let count = |name: &str| elements.iter().filter(|element| *element == name).count();
        assert_eq!(count("testsuites"), 1, "{xml}");
        assert_eq!(count("testsuite"), 2, "{xml}");
        assert_eq!(count("testcase"), 7, "{xml}");
        assert_eq!(count("failure"), 1, "{xml}");
        assert_eq!(count("skipped"), 4, "{xml}");
        assert_eq!(count("error"), 1, "{xml}");
        assert_eq!(count("system-out"), 7, "{xml}");
        assert!(
            xml.contains(
                "<testsuite name=\"redis\" tests=\"5\" failures=\"1\" errors=\"1\" skipped=\"3\""
            ),
            "{xml}"
        );
        assert!(
            xml.contains("<testsuites name=\"distsync-conformance\" tests=\"7\" failures=\"1\""),
            "{xml}"
        );
        assert!(
            xml.contains(
                "<skipped message=\"inconclusive: the runner stalled 412 ms (slack 250 ms) in both \
                 runs; nothing measured: first run: &lt;VIOLATED&gt;\"/>"
            ),
            "{xml}"
        );
        assert!(
            xml.contains(
                "<testcase classname=\"memory\" name=\"lock_mutual_exclusion\" time=\"1.200\">"
            ),
            "{xml}"
        );
        assert!(
            xml.contains("figure: 400 grants &lt;fast&gt; &amp; &quot;sure&quot;"),
            "{xml}"
        );
        assert!(
            xml.contains("two holders at &lt;once&gt; &amp; ? more"),
            "{xml}"
        );
        assert!(
            xml.contains("<skipped message=\"not run in the safe profile\"/>"),
            "{xml}"
        );
        assert!(
            xml.contains("<property name=\"profile\" value=\"safe\"/>"),
            "{xml}"
        );
        assert!(xml.contains("backend `redis`"), "{xml}");
    }

    #[test]
    fn a_run_case_carries_its_tightest_wait_and_slack() {
        let mut held = report(
            "memory",
            "lock_mutual_exclusion",
            Some(true),
            Outcome::Holds {
                figure: None,
                detail: String::new(),
            },
        );
        held.tightest = Some(crate::slack::Tightest {
            what: "waiting for <the grant>".into(),
            took: Duration::from_millis(4_500),
            bound: Duration::from_secs(5),
        });
        let xml = junit(&[held], &RunInfo::default());
        elements(&xml).unwrap_or_else(|error| panic!("{error}:\n{xml}"));
        assert!(
            xml.contains(
                "<system-out>tightest wait: waiting for &lt;the grant&gt;: 4500 ms of its 5000 ms \
                 bound\n"
            ),
            "{xml}"
        );
    }

    #[test]
    fn the_checker_rejects_malformed_documents() {
        let head = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
        assert!(elements(&format!("{head}<a><b></a></b>")).is_err());
        assert!(elements(&format!("{head}<a>x & y</a>")).is_err());
        assert!(elements(&format!("{head}<a v=\"<\"/>")).is_err());
        assert!(elements(&format!("{head}<a>")).is_err());
        assert_eq!(
            elements(&format!("{head}<a><b/>&amp;</a>")),
            Ok(vec!["a".to_owned(), "b".to_owned()])
        );
    }
}
