//! The command line's plan, the statistics and the machine facts.

mod args {
    use std::time::Duration;

    use clap::{Parser, ValueEnum};
    use distsync_bench::args::*;
    use distsync_bench::target::BackendKind;

    #[test]
    fn quick_is_small_and_flags_override() {
        let args = Args::parse_from(["distsync-bench", "--quick", "--cycles", "7"]);
        let plan = Plan::from_args(&args);
        assert_eq!(plan.cycles, 7);
        assert_eq!(plan.waiters, vec![1, 3]);
        assert_eq!(plan.cases, Case::value_variants().to_vec());
        let full = Plan::from_args(&Args::parse_from([
            "distsync-bench",
            "--cases",
            "stm,cycle",
            "--waiters",
            "100,1,0",
        ]));
        assert_eq!(full.cases, vec![Case::Cycle, Case::Stm]);
        assert_eq!(full.waiters, vec![1, 100]);
        assert!(full.cycles > plan.cycles);
    }

    #[test]
    fn scale_sizes_grow_to_the_holds() {
        let quick = Plan::from_args(&Args::parse_from(["distsync-bench", "--quick"]));
        assert_eq!(quick.scale_sizes, vec![2, 20, 200]);
        assert_eq!(quick.scale_holds, Some(200));
        let full = Plan::from_args(&Args::parse_from(["distsync-bench"]));
        assert_eq!(full.scale_sizes, vec![100, 1_000, 10_000]);
        assert_eq!(full.scale_ttl, Duration::from_secs(15));
        let given = Plan::from_args(&Args::parse_from([
            "distsync-bench",
            "--scale-sizes",
            "500,50,0",
        ]));
        assert_eq!(given.scale_sizes, vec![50, 500]);
        assert_eq!(given.scale_holds, Some(500));
        let capped = Plan::from_args(&Args::parse_from([
            "distsync-bench",
            "--scale-holds",
            "300",
            "--scale-sizes",
            "10,1000",
        ]));
        assert_eq!(capped.scale_sizes, vec![10, 300]);
    }

    #[test]
    fn a_backend_without_url_or_feature_is_skipped_with_the_reason() {
        let args = Args::parse_from(["distsync-bench", "--backends", "postgres,memory,etcd"]);
        let selected = Args {
            etcd_url: None,
            ..args
        }
        .selected();
        assert_eq!(selected[0], (BackendKind::Memory, Ok("memory://".into())));
        let (kind, etcd) = &selected[1];
        assert_eq!(*kind, BackendKind::Etcd);
        let reason = etcd.as_ref().unwrap_err();
        if cfg!(feature = "etcd") {
            assert!(reason.contains("DISTSYNC_ETCD_URL"), "{reason}");
        } else {
            assert!(reason.contains("--features etcd"), "{reason}");
        }
        assert_eq!(selected[2].0, BackendKind::Postgres);
    }
}

mod stats {
    use std::time::Duration;

    use distsync_bench::stats::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut samples = Samples::new();
        for n in (1..=100).rev() {
            samples.push(ms(n));
        }
        let summary = samples.summary().unwrap();
        assert_eq!(summary.count, 100);
        assert_eq!(summary.p50, ms(50));
        assert_eq!(summary.p99, ms(99));
        assert!((summary.ops_per_sec - 100.0 / 5.05).abs() < 1e-9);
    }

    #[test]
    fn a_single_sample_is_every_percentile() {
        let mut samples = Samples::new();
        samples.push(ms(7));
        let summary = samples.summary().unwrap();
        assert_eq!((summary.p50, summary.p99), (ms(7), ms(7)));
        assert!(Samples::new().summary().is_none());
    }

    #[test]
    fn shares_add_up() {
        assert_eq!((0..8).map(|i| share(500, 8, i)).sum::<usize>(), 500);
        assert_eq!(share(500, 8, 0), 63);
        assert_eq!(share(500, 8, 7), 62);
        assert_eq!(share(3, 1, 0), 3);
    }

    #[test]
    fn formats() {
        assert_eq!(fmt_duration(Duration::from_nanos(12_345)), "12.3 µs");
        assert_eq!(fmt_duration(ms(3)), "3.00 ms");
        assert_eq!(fmt_duration(Duration::from_secs(12)), "12.0 s");
        assert_eq!(fmt_rate(1_234_567.4), "1\u{2009}234\u{2009}567");
        assert_eq!(fmt_rate(12.34), "12.3");
        assert_eq!(fmt_ratio(ms(3), ms(2)), "×1.50");
        assert_eq!(fmt_ratio(ms(3), Duration::ZERO), "n/a");
    }
}

mod machine {
    use distsync_bench::machine::*;

    #[test]
    fn reads_the_cpu_count() {
        assert!(Machine::read().cpus >= 1);
    }
}
