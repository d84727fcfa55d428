//! Each case on `memory://` with tiny counts (no server needed).

mod election {
    use clap::Parser;
    use distsync_bench::args::{Args, Plan};
    use distsync_bench::election::*;
    use distsync_bench::target::{BackendKind, Target};

    #[tokio::test]
    async fn measures_leader_changes_on_memory() {
        let plan = Plan::from_args(&Args::parse_from([
            "distsync-bench",
            "--quick",
            "--elections",
            "4",
        ]));
        let target = Target::connect(BackendKind::Memory, "memory://".into())
            .await
            .unwrap();
        let result = run(&target, "t", &plan).await;
        assert!(result.error.is_none(), "{:?}", result.error);
        assert_eq!(result.samples.len(), 4);
    }
}

mod queue {
    use clap::Parser;
    use distsync_bench::args::{Args, Plan};
    use distsync_bench::queue::*;
    use distsync_bench::target::{BackendKind, Target};

    #[tokio::test]
    async fn moves_every_item_through_with_several_clients() {
        let plan = Plan::from_args(&Args::parse_from([
            "distsync-bench",
            "--quick",
            "--queue-items",
            "40",
        ]));
        let target = Target::connect(BackendKind::Memory, "memory://".into())
            .await
            .unwrap();
        let result = run(&target, "t", 8, &plan).await;
        assert!(result.error.is_none(), "{:?}", result.error);
        assert_eq!(result.enqueued.0, 40);
        assert_eq!(result.dequeued.0, 40);
        assert!(result.enqueue_rate() > 0.0);
        assert!(target
            .coordinator
            .queue("t/queue/8")
            .unwrap()
            .is_empty()
            .await
            .unwrap());
    }
}

mod stm {
    use clap::Parser;
    use distsync_bench::args::{Args, Plan};
    use distsync_bench::stm::*;
    use distsync_bench::target::{BackendKind, Target};

    #[tokio::test]
    async fn transfers_keep_the_sum_and_count_attempts() {
        let plan = Plan::from_args(&Args::parse_from([
            "distsync-bench",
            "--quick",
            "--stm-transfers",
            "40",
        ]));
        let target = Target::connect(BackendKind::Memory, "memory://".into())
            .await
            .unwrap();
        let result = run(&target, "t", 8, &plan).await;
        assert!(result.error.is_none(), "{:?}", result.error);
        assert_eq!(result.commits, 40);
        assert!(result.attempts >= 40);
        assert!(result.retries_per_commit() >= 0.0);
    }
}

mod handoff {
    use clap::Parser;
    use distsync_bench::args::{Args, Plan};
    use distsync_bench::handoff::*;
    use distsync_bench::target::{BackendKind, Target};

    #[tokio::test]
    async fn measures_handoffs_on_memory_and_leaves_the_lock_free() {
        let plan = Plan::from_args(&Args::parse_from([
            "distsync-bench",
            "--quick",
            "--handoffs",
            "6",
        ]));
        let target = Target::connect(BackendKind::Memory, "memory://".into())
            .await
            .unwrap();
        let result = run(&target, "t", 3, &plan).await;
        assert!(result.error.is_none(), "{:?}", result.error);
        assert_eq!(result.samples.len(), 6);
        let session = target.coordinator.session().await.unwrap();
        let locker = target.coordinator.locker(&session, "t/handoff/3").unwrap();
        assert!(locker.try_lock().await.unwrap().is_some());
    }
}

mod aggregate {
    use distsync_bench::aggregate::*;
    use std::time::Duration;

    #[test]
    fn postgres_hold_connections_fit_the_free_connections() {
        assert_eq!(postgres_hold_connections(64, 300), 64);
        assert_eq!(postgres_hold_connections(64, 40), 32);
        assert_eq!(postgres_hold_connections(64, 8), 1);
        assert_eq!(postgres_hold_connections(64, 0), 1);
        assert_eq!(postgres_hold_connections(2, 300), 2);
    }

    #[test]
    fn ratio_of_the_sides() {
        let side = |cycles, rates: &[f64]| Throughput {
            label: "x".into(),
            clients: 2,
            cycles,
            elapsed: Duration::from_secs(2),
            round_rates: rates.to_vec(),
            error: None,
        };
        let result = AggregateResult {
            library: Some(side(90, &[40.0, 50.0])),
            raw: Some(side(100, &[50.0, 50.0])),
            ..AggregateResult::default()
        };
        assert!((result.ratio().unwrap() - 0.9).abs() < 1e-9);
        let memory = AggregateResult {
            library: Some(side(90, &[45.0])),
            ..AggregateResult::default()
        };
        assert_eq!(memory.ratio(), None);
    }
}
