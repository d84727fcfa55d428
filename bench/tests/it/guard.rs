//! The regression guard's arithmetic and verdicts, without a server.

use std::time::Duration;

use distsync_bench::contender::{self, CycleResult, Role};
use distsync_bench::guard::*;
use distsync_bench::stats::Samples;
use distsync_bench::target::BackendKind;

fn entry(ratio: f64, noise: f64) -> BaselineRatio {
    BaselineRatio {
        backend: "redis".into(),
        against: "raw".into(),
        ratio,
        noise,
        runs: vec![ratio],
    }
}

fn measured(ratio: f64, noise: f64) -> Measured {
    Measured {
        ratio,
        noise,
        rounds: 12,
    }
}

#[test]
fn the_allowance_is_three_noises_or_a_fifth_of_the_baseline() {
    assert!((allowance(1.0, 0.01) - 0.2).abs() < 1e-12);
    assert!((allowance(1.0, 0.1) - 0.3).abs() < 1e-12);
    assert!((allowance(2.0, 0.1) - 0.4).abs() < 1e-12);
}

#[test]
fn within_the_floor_passes_and_beyond_it_fails() {
    // Quiet run: the 20 % floor rules (1.35 + 0.27 = 1.62).
    let base = entry(1.35, 0.02);
    assert_eq!(judge(&base, &measured(1.60, 0.02)).1, Verdict::Ok);
    let (above, verdict) = judge(&base, &measured(1.63, 0.02));
    assert!((above - 1.62).abs() < 1e-9, "{above}");
    assert_eq!(verdict, Verdict::Regressed);
    assert_eq!(judge(&base, &measured(1.05, 0.02)).1, Verdict::Faster);
    assert_eq!(judge(&base, &measured(1.20, 0.02)).1, Verdict::Ok);
}

#[test]
fn noise_widens_the_allowance_from_either_side() {
    // A noisy run (±0.15): 3 × 0.15 = 0.45 > 0.27, so 1.70 passes...
    let base = entry(1.35, 0.02);
    assert_eq!(judge(&base, &measured(1.70, 0.15)).1, Verdict::Ok);
    // ...but not 1.81.
    assert_eq!(judge(&base, &measured(1.81, 0.15)).1, Verdict::Regressed);
    // A noisy baseline widens it the same way for a quiet run.
    assert_eq!(
        judge(&entry(1.35, 0.15), &measured(1.70, 0.01)).1,
        Verdict::Ok
    );
}

#[test]
fn the_baseline_noise_covers_the_spread_between_runs() {
    let quiet = [
        measured(1.0, 0.01),
        measured(1.0, 0.02),
        measured(1.0, 0.09),
    ];
    assert!(
        (baseline_noise(&quiet) - 0.02).abs() < 1e-12,
        "the median run's"
    );
    // Runs at 1.0, 1.2 and 1.4: standard deviation 0.2 beats their own.
    let apart = [
        measured(1.0, 0.05),
        measured(1.2, 0.01),
        measured(1.4, 0.01),
    ];
    assert!((baseline_noise(&apart) - 0.2).abs() < 1e-9);
    assert!((baseline_noise(&[measured(1.0, 0.03)]) - 0.03).abs() < 1e-12);
}

#[test]
fn the_ratio_is_the_median_round_and_noise_its_robust_spread() {
    let measured = from_round_ratios(&[1.0, 1.1, 1.2, 1.3, 9.0]).unwrap();
    assert!((measured.ratio - 1.2).abs() < 1e-12);
    // Deviations 0.2, 0.1, 0, 0.1, 7.8: median 0.1, one wild round ignored.
    assert!(
        (measured.noise - 0.14826).abs() < 1e-9,
        "{}",
        measured.noise
    );
    assert_eq!(measured.rounds, 5);
    assert!(from_round_ratios(&[1.0, 1.1]).is_none());
    assert_eq!(median(&[3.0, 1.0, 2.0, 4.0]), Some(2.5));
}

fn result(label: &str, role: Role, rounds: &[&[u64]]) -> CycleResult {
    let mut all = Samples::new();
    let rounds: Vec<Samples> = rounds
        .iter()
        .map(|micros| {
            let mut samples = Samples::new();
            for &m in *micros {
                samples.push(Duration::from_micros(m));
            }
            all.extend(&samples);
            samples
        })
        .collect();
    CycleResult {
        label: label.into(),
        role,
        samples: all,
        rounds,
        error: None,
        unsupported: false,
    }
}

#[test]
fn measures_round_by_round_and_skips_thin_rounds() {
    let five = |m: u64| vec![m; MIN_ROUND_SAMPLES];
    let (a, b, c, d) = (five(200), five(220), five(100), five(110));
    let library = result("distsync", Role::Library, &[&a, &b, &[300], &a]);
    let raw = result("raw", Role::Raw, &[&c, &d, &c, &c]);
    let measured = measure(&library, &raw).unwrap();
    assert_eq!(
        measured.rounds, 3,
        "the round with one cycle does not count"
    );
    assert!((measured.ratio - 2.0).abs() < 1e-12);
    let too_few = result("raw", Role::Raw, &[&c]);
    assert!(measure(&library, &too_few).is_err());
    let broken = contender::failure("raw", Role::Raw, &"refused");
    assert_eq!(measure(&library, &broken).unwrap_err(), "raw: refused");
}

#[test]
fn compare_fails_regressions_and_unmeasured_baseline_rows_only() {
    let baseline = Baseline {
        ratios: vec![
            BaselineRatio {
                backend: "redis".into(),
                against: "raw".into(),
                ratio: 1.3,
                noise: 0.02,
                runs: vec![1.3],
            },
            BaselineRatio {
                backend: "redis".into(),
                against: "rslock".into(),
                ratio: 1.4,
                noise: 0.02,
                runs: vec![1.4],
            },
            BaselineRatio {
                backend: "etcd".into(),
                against: "raw".into(),
                ratio: 1.2,
                noise: 0.02,
                runs: vec![1.2],
            },
        ],
        ..Baseline::default()
    };
    let outcomes = vec![
        BackendOutcome {
            kind: BackendKind::Redis,
            error: None,
            ratios: vec![
                ("raw".into(), Ok(measured(2.0, 0.05))),
                ("new peer".into(), Ok(measured(0.9, 0.05))),
                ("broken peer".into(), Err("no such command".into())),
            ],
            unsupported: Vec::new(),
            elapsed: Duration::ZERO,
        },
        BackendOutcome {
            kind: BackendKind::Etcd,
            error: Some("could not connect: refused".into()),
            ratios: Vec::new(),
            unsupported: Vec::new(),
            elapsed: Duration::ZERO,
        },
    ];
    let rows = compare(&baseline, &outcomes);
    let verdicts: Vec<(&str, &str, bool)> = rows
        .iter()
        .map(|row| {
            (
                row.backend.as_str(),
                row.against.as_str(),
                row.verdict.fails(),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        vec![
            ("redis", "raw", true),
            ("redis", "new peer", false),
            ("redis", "broken peer", false),
            ("redis", "rslock", true),
            ("etcd", "raw", true),
        ]
    );
    assert_eq!(rows[0].verdict, Verdict::Regressed);
    assert_eq!(
        rows[4].verdict,
        Verdict::Unmeasured("could not connect: refused".into())
    );
    let table = table(&rows);
    assert!(
        table.contains(
            "| redis | raw | ×2.000 | ×1.300 | ±0.050 (12 rounds) | ×1.560 | **REGRESSED** |"
        ),
        "{table}"
    );
}

#[test]
fn a_regression_stands_only_when_the_second_run_confirms_it() {
    let row = |against: &str, verdict: Verdict| Row {
        backend: "redis".into(),
        against: against.into(),
        measured: Some(measured(1.0, 0.01)),
        baseline: Some(1.0),
        fails_above: Some(1.2),
        verdict,
        second_run: false,
    };
    let first = vec![
        row("raw", Verdict::Regressed),
        row("rslock", Verdict::Regressed),
        row("peer", Verdict::Ok),
        row("gone", Verdict::Regressed),
    ];
    let second = vec![
        row("raw", Verdict::Ok),
        row("rslock", Verdict::Regressed),
        row("peer", Verdict::Regressed),
    ];
    let rows = confirm(first, second);
    let verdicts: Vec<(bool, bool)> = rows
        .iter()
        .map(|row| (row.verdict.fails(), row.second_run))
        .collect();
    assert_eq!(
        verdicts,
        vec![(false, true), (true, true), (false, false), (true, true)],
        "noise once passes, twice fails; a first run that passed is kept"
    );
    assert!(table(&rows).contains("| ok (second run) |"));
}

#[test]
fn the_baseline_file_round_trips() {
    let baseline = Baseline {
        command: "distsync-bench --write-baseline".into(),
        ratios: vec![entry(1.25, 0.03)],
        ..Baseline::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baseline.json");
    std::fs::write(&path, serde_json::to_string(&baseline).unwrap()).unwrap();
    assert_eq!(Baseline::read(&path).unwrap(), baseline);
    std::fs::write(&path, "{ not json").unwrap();
    assert!(Baseline::read(&path).unwrap_err().contains("parsing"));
    assert!(Baseline::read(&dir.path().join("missing.json")).is_err());
}

#[test]
fn zookeeper_and_mysql_are_guarded_only_when_named() {
    use distsync_bench::target::BackendKind;
    for kind in [
        BackendKind::Etcd,
        BackendKind::Redis,
        BackendKind::Postgres,
        BackendKind::Nats,
    ] {
        assert!(guarded_by_default(kind), "{kind}");
    }
    assert!(!guarded_by_default(BackendKind::Mysql));
    assert!(!guarded_by_default(BackendKind::Zookeeper));
    assert!(!guarded_by_default(BackendKind::Memory));
}

#[test]
fn a_backend_without_the_unfair_lock_passes_unless_the_baseline_has_its_ratios() {
    let outcome = || BackendOutcome {
        kind: BackendKind::Redis,
        error: None,
        ratios: vec![("raw".into(), Ok(measured(1.3, 0.02)))],
        unsupported: vec![(UNFAIR_UNSUPPORTED.into(), "not yet".into())],
        elapsed: Duration::ZERO,
    };
    let mut baseline = Baseline {
        ratios: vec![entry(1.3, 0.02)],
        ..Baseline::default()
    };
    let rows = compare(&baseline, &[outcome()]);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].against, UNFAIR_UNSUPPORTED);
    assert_eq!(
        rows[1].verdict,
        Verdict::Skipped("unsupported: not yet".into())
    );
    assert!(rows.iter().all(|row| !row.verdict.fails()));

    baseline.ratios.push(BaselineRatio {
        against: format!("{UNFAIR_PREFIX}raw"),
        ..entry(1.0, 0.02)
    });
    let rows = compare(&baseline, &[outcome()]);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].against, format!("{UNFAIR_PREFIX}raw"));
    assert!(rows[1].verdict.fails());
}
