//! The hand-off table with a peer's rows beside distsync's: each implementation's rows
//! together, labelled, and compared with its own figure at the fewest waiters.

use std::time::Duration;

use clap::Parser;
use distsync_bench::args::{Args, Plan};
use distsync_bench::handoff::HandoffResult;
use distsync_bench::machine::Machine;
use distsync_bench::run::{BackendReport, Report};
use distsync_bench::stats::Samples;
use distsync_bench::target::BackendKind;

fn result(peer: Option<&str>, waiters: usize, micros: u64) -> HandoffResult {
    let mut samples = Samples::new();
    samples.push(Duration::from_micros(micros));
    HandoffResult {
        peer: peer.map(str::to_owned),
        waiters,
        samples,
        error: None,
    }
}

#[test]
fn a_peers_rows_follow_distsyncs_each_compared_with_its_own_first() {
    let report = Report {
        machine: Machine::read(),
        arguments: Vec::new(),
        plan: Plan::from_args(&Args::parse_from(["distsync-bench", "--quick"])),
        backends: vec![BackendReport {
            kind: BackendKind::Memory,
            url: "memory://".into(),
            server: None,
            cycle: Vec::new(),
            // As the run records them: distsync then the peer, waiter count by count.
            handoff: vec![
                result(None, 1, 100),
                result(Some("Peer"), 1, 400),
                result(None, 10, 200),
                result(Some("Peer"), 10, 1200),
            ],
            election: None,
            queue: Vec::new(),
            stm: Vec::new(),
            scale: None,
            aggregate: None,
        }],
        skipped: Vec::new(),
        elapsed: Duration::ZERO,
    };
    let text = distsync_bench::report::text(&report);
    let table = text
        .split("## Contended hand-off")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a hand-off section");
    let rows: Vec<&str> = table
        .lines()
        .filter(|line| line.starts_with("| memory"))
        .collect();
    assert_eq!(rows.len(), 4, "{text}");
    assert!(rows[0].starts_with("| memory | 1 |"), "{text}");
    assert!(
        rows[1].starts_with("| memory | 10 |") && rows[1].ends_with("×2.00 |"),
        "{text}"
    );
    assert!(rows[2].starts_with("| memory: Peer | 1 |"), "{text}");
    assert!(
        rows[3].starts_with("| memory: Peer | 10 |") && rows[3].ends_with("×3.00 |"),
        "{text}"
    );
}
