//! What each store does not build, read from a matrix's store facts: the list that
//! README, docs/GUARANTEES.md and each backend crate's header show between
//! `gaps:begin` and `gaps:end` markers.
//!
//! The facts are the [`Capabilities`](distsync_core::Capabilities) each column's
//! backend declared in the run ([`crate::matrix::store_facts`]), and a primitive a
//! backend does not offer answers [`Error::Unsupported`](distsync_core::Error). The
//! lists are written by `scripts/update-matrix.sh` from the committed run and compared
//! by `scripts/check-matrix.sh` with a fresh one, so prose that names a store's gaps by
//! hand cannot drift from what the code declares.

use std::fmt::Write as _;

use crate::matrix::{FACTS_HEADING, OFFERS};

/// What a user calls a primitive a store does not offer, by its
/// [`Capabilities`](distsync_core::Capabilities) field; the matrix's own name where
/// it needs no words.
fn called(offer: &str) -> &str {
    match offer {
        "unfair_lock" => "unfair lock",
        "rwlock" => "read-write lock",
        "queue" => "queue",
        "priority_queue" => "priority queue",
        "double_barrier" => "double barrier",
        "stm_serializable_snapshot" => "STM (serializable snapshot)",
        "stm_serializable" => "STM (serializable)",
        "stm_repeatable_reads" => "STM (repeatable reads)",
        "stm_read_committed" => "STM (read committed)",
        "rate_limiter" => "rate limiter",
        "break_lock" => "lock break",
        "queue_age" => "queue age",
        "release_request" => "release requests",
        "hand_over" => "leadership hand-over",
        "export" => "export (migration), group membership and shards",
        "caller_transactions" => "outbox and exactly-once in the caller's transaction",
        GUARDED_WRITES => "writes guarded by a hold (`put_if_held`, guarded scripts)",
        other => other,
    }
}

/// The one claim whose absence is an API that answers `Unsupported`, not a weaker
/// guarantee: a store without it refuses the guarded writes themselves.
const GUARDED_WRITES: &str = "guarded_writes";

/// One column's store facts line, as [`crate::matrix::markdown_run`] writes it.
struct Facts<'a> {
    column: &'a str,
    backend: &'a str,
    offers: Vec<&'a str>,
    claims: Vec<&'a str>,
}

impl<'a> Facts<'a> {
    /// Reads `- **column**: backend `name`, ...; offers `a`, `b`; claims `c`; does not
    /// claim ...`; `None` for any other line.
    fn parse(line: &'a str) -> Option<Self> {
        let names = |list: &'a str| -> Vec<&'a str> {
            list.split(", ")
                .filter_map(|name| name.strip_prefix('`')?.strip_suffix('`'))
                .collect()
        };
        let rest = line.strip_prefix("- **")?;
        let (column, rest) = rest.split_once("**: backend `")?;
        let (backend, rest) = rest.split_once('`')?;
        let (_, rest) = rest.split_once("; offers ")?;
        let (offers, rest) = rest.split_once("; claims ")?;
        let (claims, _) = rest.split_once("; does not claim ")?;
        Some(Self {
            column,
            backend,
            offers: names(offers),
            claims: names(claims),
        })
    }
}

/// The gaps of every column of `markdown` (a matrix as the runner prints it) whose
/// backend is `backend`, or of every column with `None`: one markdown list item per
/// column, `- **column**: nothing` or `- **column**: a; b`, in column order. Empty
/// when the matrix has no store facts (or no column of that backend).
///
/// ```
/// let matrix = "| a | b |\n\n### Store facts\n\n\
///     - **redis-cluster**: backend `redis`, sessions of at least 100ms; offers `lock`; \
///     claims `fencing`; does not claim `guarded_writes`\n";
/// let gaps = distsync_conformance::gaps::gaps(matrix, Some("redis"));
/// assert!(gaps.starts_with("- **redis-cluster**: unfair lock; election"), "{gaps}");
/// assert!(distsync_conformance::gaps::gaps(matrix, Some("etcd")).is_empty());
/// ```
pub fn gaps(markdown: &str, backend: Option<&str>) -> String {
    let Some((_, facts)) = markdown.split_once(&format!("\n{FACTS_HEADING}\n")) else {
        return String::new();
    };
    let mut out = String::new();
    for facts in facts.lines().filter_map(Facts::parse) {
        if backend.is_some_and(|backend| backend != facts.backend) {
            continue;
        }
        let mut missing: Vec<&str> = OFFERS
            .iter()
            .map(|(name, _)| *name)
            .filter(|name| !facts.offers.contains(name))
            .map(called)
            .collect();
        if !facts.claims.contains(&GUARDED_WRITES) {
            missing.push(called(GUARDED_WRITES));
        }
        let list = if missing.is_empty() {
            "nothing".to_owned()
        } else {
            missing.join("; ")
        };
        out.push_str(&wrapped(&format!("- **{}**: {list}", facts.column)));
    }
    out
}

/// How wide a list line may be: with a crate header's `//! ` in front, it stays
/// inside the 100 columns rustfmt keeps code to.
const WIDTH: usize = 88;

/// `item` as lines of at most [`WIDTH`] characters (a longer word stays whole), each
/// after the first indented as a markdown list item's continuation.
fn wrapped(item: &str) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in item.split(' ') {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > WIDTH {
            let _ = writeln!(out, "{line}");
            line = "  ".to_owned();
        } else if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    let _ = writeln!(out, "{line}");
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use distsync_core::Capabilities;

    use super::*;
    use crate::matrix::store_facts;

    fn matrix(stores: &[(&str, Capabilities)]) -> String {
        let mut text = format!("| x |\n\n{FACTS_HEADING}\n\n");
        for (column, capabilities) in stores {
            let _ = writeln!(text, "- **{column}**: {}", store_facts(capabilities));
        }
        text
    }

    #[test]
    fn a_column_lists_exactly_what_its_backend_does_not_offer() {
        let everything = Capabilities::all("full", Duration::from_secs(1));
        let text = matrix(&[
            ("all", everything.clone()),
            ("no-limiter", everything.clone().with_rate_limiter(false)),
            (
                "other",
                Capabilities::none("other")
                    .with_lock(true)
                    .with_export(true),
            ),
        ]);
        assert_eq!(
            gaps(&text, Some("full")),
            "- **all**: nothing\n- **no-limiter**: rate limiter\n"
        );
        let other = gaps(&text, Some("other"));
        assert!(
            other.starts_with("- **other**: unfair lock; election"),
            "{other}"
        );
        assert!(!other.contains("export"), "{other}");
        assert!(other.contains("caller's transaction"), "{other}");
        assert!(other.ends_with("guarded scripts)\n"), "{other}");
        assert!(other.lines().count() > 1, "{other}");
        assert!(
            other.lines().all(|line| line.chars().count() <= WIDTH),
            "{other}"
        );
        assert!(
            other.lines().skip(1).all(|line| line.starts_with("  ")),
            "{other}"
        );
        let items = gaps(&text, None);
        assert_eq!(
            items.lines().filter(|line| line.starts_with("- ")).count(),
            3
        );
    }

    #[test]
    fn a_matrix_without_facts_has_no_gaps() {
        assert_eq!(gaps("| x |\n", None), "");
    }
}
