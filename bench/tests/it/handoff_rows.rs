//! The hand-off table with the unfair lock's and a peer's rows beside distsync's: each
//! implementation's rows together, labelled, and compared with its own figure at the
//! fewest waiters; the unfair lock's wake-ups per release; a backend without the
//! unfair lock shown as unsupported, in every table, rather than failing.

use std::time::Duration;

use distsync_bench::contended::ContendedResult;
use distsync_bench::contender::{self, CycleResult, Role};
use distsync_bench::handoff::HandoffResult;
use distsync_bench::stats::Samples;
use distsync_bench::target::BackendKind;

use crate::common::{report, rows};

fn result(peer: Option<&str>, waiters: usize, micros: u64) -> HandoffResult {
    let mut samples = Samples::new();
    samples.push(Duration::from_micros(micros));
    HandoffResult {
        samples,
        ..HandoffResult::new(peer.map(str::to_owned), waiters)
    }
}

fn unfair(waiters: usize, micros: u64, wakeups: u64, releases: usize) -> HandoffResult {
    HandoffResult {
        unfair: true,
        wakeups: Some(wakeups),
        releases,
        ..result(None, waiters, micros)
    }
}

#[test]
fn a_peers_rows_follow_distsyncs_each_compared_with_its_own_first() {
    let report = report(BackendKind::Memory, |backend| {
        // As the run records them: distsync, its unfair lock, then the peer, waiter
        // count by count.
        backend.handoff = vec![
            result(None, 1, 100),
            unfair(1, 50, 40, 40),
            result(Some("Peer"), 1, 400),
            result(None, 10, 200),
            unfair(10, 150, 90, 60),
            result(Some("Peer"), 10, 1200),
        ];
    });
    let text = distsync_bench::report::text(&report);
    let rows = rows(&text, "Contended hand-off", "| memory");
    assert_eq!(rows.len(), 6, "{text}");
    assert!(rows[0].starts_with("| memory | 1 |"), "{text}");
    assert!(
        rows[1].starts_with("| memory | 10 |") && rows[1].ends_with("×2.00 | — |"),
        "{text}"
    );
    assert!(
        rows[2].starts_with("| memory: distsync, unfair | 1 |") && rows[2].ends_with("| 1.00 |"),
        "{text}"
    );
    assert!(
        rows[3].starts_with("| memory: distsync, unfair | 10 |")
            && rows[3].ends_with("×3.00 | 1.50 |"),
        "{text}"
    );
    assert!(rows[4].starts_with("| memory: Peer | 1 |"), "{text}");
    assert!(
        rows[5].starts_with("| memory: Peer | 10 |") && rows[5].ends_with("×3.00 | — |"),
        "{text}"
    );
}

#[test]
fn a_backend_without_the_unfair_lock_shows_it_unsupported_in_every_table() {
    let why: distsync_bench::BoxError =
        Box::new(distsync::Error::unsupported("redis", "the unfair lock"));
    let report = report(BackendKind::Redis, |backend| {
        let mut fair = CycleResult::new("distsync", Role::Library);
        fair.samples.push(Duration::from_micros(100));
        backend.cycle = vec![
            fair,
            contender::not_started("distsync, unfair", Role::Unfair, &why),
            contender::not_started("rslock", Role::Peer, &"refused".into()),
        ];
        backend.handoff = vec![
            result(None, 1, 100),
            HandoffResult {
                unfair: true,
                unsupported: true,
                error: Some(why.to_string()),
                ..HandoffResult::new(None, 1)
            },
        ];
        backend.contended = vec![ContendedResult {
            label: "distsync, unfair".into(),
            role: Some(Role::Unfair),
            clients: 2,
            unsupported: true,
            error: Some(why.to_string()),
            ..ContendedResult::default()
        }];
    });
    let text = distsync_bench::report::text(&report);
    let cycle = rows(&text, "Uncontended lock+unlock cycle", "| redis");
    assert_eq!(cycle.len(), 3, "{text}");
    assert!(
        cycle[1].starts_with("| redis | **distsync, unfair** | unsupported | — |"),
        "{text}"
    );
    assert!(cycle[2].starts_with("| redis | rslock | — |"), "{text}");
    assert!(
        text.contains("redis / distsync, unfair: unsupported: "),
        "{text}"
    );
    assert!(
        text.contains("redis / rslock: not measured: refused"),
        "{text}"
    );
    let handoff = rows(&text, "Contended hand-off", "| redis");
    assert!(
        handoff[1].starts_with("| redis: distsync, unfair | 1 | unsupported |"),
        "{text}"
    );
    let targets = rows(&text, "Targets by guarantee class", "| redis");
    assert!(
        targets[0].contains(concat!(
            "rslock cycle p50 ÷ the unfair lock's ≥ ×1.00 | — | ",
            "not measured: unsupported by this backend |"
        )),
        "{text}"
    );
    assert!(
        targets
            .last()
            .unwrap()
            .contains("| not measured: no hand-off with 100 waiters in this run |"),
        "{text}"
    );
    let contended = rows(&text, "Contended throughput", "| redis");
    assert!(
        contended[0].starts_with("| redis | **distsync, unfair** | 2 | unsupported |"),
        "{text}"
    );
}
