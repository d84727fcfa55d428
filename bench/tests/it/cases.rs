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

mod contended {
    use clap::Parser;
    use distsync::lock::Fairness;
    use distsync_bench::args::{Args, Plan};
    use distsync_bench::contended::*;
    use distsync_bench::contender::Role;
    use distsync_bench::target::{BackendKind, Target};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_client_count_cycles_one_lock_fair_and_unfair() {
        let plan = Plan::from_args(&Args::parse_from([
            "distsync-bench",
            "--quick",
            "--contended-clients",
            "4,2",
            "--contended-ms",
            "150",
        ]));
        let target = Target::connect(BackendKind::Memory, "memory://".into())
            .await
            .unwrap();
        let results = run(&target, "t", &plan).await;
        let rows: Vec<(Option<Role>, usize)> =
            results.iter().map(|r| (r.role, r.clients)).collect();
        assert_eq!(
            rows,
            vec![
                (Some(Role::Library), 2),
                (Some(Role::Library), 4),
                (Some(Role::Unfair), 2),
                (Some(Role::Unfair), 4),
            ]
        );
        for result in &results {
            if result.unsupported {
                // The backend has no unfair lock yet: said so, never a failure.
                assert_eq!(result.role, Some(Role::Unfair));
                continue;
            }
            assert!(result.error.is_none(), "{:?}", result.error);
            assert!(result.grants > 0 && result.rate() > 0.0, "{result:?}");
            assert_eq!(result.per_client.len(), result.clients);
            assert_eq!(result.per_client.iter().sum::<usize>(), result.grants);
            assert_eq!(result.waits.len(), result.grants);
            assert!(!result.whole_cycles);
            assert!(result.releases >= result.grants);
            // Wake-ups are counted for the unfair lock only.
            assert_eq!(result.wakeups.is_some(), result.role == Some(Role::Unfair));
        }
        // Every client let go: the lock is free.
        let session = target.coordinator.session().await.unwrap();
        for (what, fairness) in [("fair", Fairness::Fair), ("unfair", Fairness::Unfair)] {
            let name = format!("t/contended/{what}/4");
            let options = distsync_bench::cycle::options(fairness);
            if let Ok(locker) = target.coordinator.locker_with(&session, &name, options) {
                let guard = locker.try_lock().await.unwrap();
                assert!(guard.is_some(), "{name} is still held");
            }
        }
    }

    #[tokio::test]
    async fn the_unfair_hand_off_counts_its_wake_ups_or_says_it_is_unsupported() {
        let plan = Plan::from_args(&Args::parse_from([
            "distsync-bench",
            "--quick",
            "--handoffs",
            "6",
        ]));
        let target = Target::connect(BackendKind::Memory, "memory://".into())
            .await
            .unwrap();
        let result =
            distsync_bench::handoff::run_with(&target, "t", 3, &plan, Fairness::Unfair).await;
        assert!(result.unfair);
        if result.unsupported {
            assert!(result.error.is_some());
            return;
        }
        assert!(result.error.is_none(), "{:?}", result.error);
        assert_eq!(result.samples.len(), 6);
        assert!(result.releases >= 6 + 4, "{}", result.releases);
        assert!(result.wakeups.is_some());
    }
}
