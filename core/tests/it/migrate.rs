//! `migrate` between two memory backends.

use bytes::Bytes;
use distsync_core::Coordinator;
use distsync_core::migrate::*;
use distsync_core::{Error, Isolation, Name};
use distsync_kv::memory::MemoryBackend;

fn memory() -> Coordinator {
    Coordinator::new(MemoryBackend::new())
}

async fn fill(source: &Coordinator) {
    let jobs = source.queue("jobs").unwrap();
    for (item, priority) in [("b1", 1), ("a1", 0), ("b2", 1), ("a2", 0)] {
        jobs.enqueue_with_priority(item, priority).await.unwrap();
    }
    source.queue("mail").unwrap().enqueue("m").await.unwrap();
    source.barrier("gate").unwrap().hold().await.unwrap();
    source
        .stm()
        .unwrap()
        .atomically(Isolation::default(), |tx| async move {
            tx.put("accounts/a", "100");
            tx.put("accounts/b", "7");
            Ok(())
        })
        .await
        .unwrap();
}

async fn drain(queue: &Coordinator, name: &str) -> Vec<Bytes> {
    let queue = queue.queue(name).unwrap();
    let mut items = Vec::new();
    while let Some(item) = queue.try_dequeue().await.unwrap() {
        items.push(item);
    }
    items
}

#[tokio::test]
async fn copies_queues_in_order_keys_and_barriers_and_leaves_the_source() {
    let (from, to) = (memory(), memory());
    fill(&from).await;
    to.queue("jobs")
        .unwrap()
        .enqueue_with_priority("old", 1)
        .await
        .unwrap();
    let report = migrate(
        &**from.backend(),
        &**to.backend(),
        &MigrateOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        report,
        MigrationReport {
            queues: 2,
            queue_items: 5,
            stm_keys: 2,
            barriers: 1,
            counters: 0,
            latches: 0,
            active_holds: 0,
            dry_run: false
        }
    );
    assert_eq!(drain(&to, "jobs").await, ["a1", "a2", "old", "b1", "b2"]);
    assert_eq!(drain(&to, "mail").await, ["m"]);
    let copied = to.backend().export().await.unwrap();
    assert_eq!(
        copied.stm.get(&Name::new("accounts/a").unwrap()).unwrap(),
        "100"
    );
    assert_eq!(copied.barriers, [Name::new("gate").unwrap()]);
    assert_eq!(from.backend().export().await.unwrap().queue_items(), 5);
}

#[tokio::test]
async fn refuses_a_source_with_live_holds_unless_forced() {
    let (from, to) = (memory(), memory());
    fill(&from).await;
    let session = from.session().await.unwrap();
    let _guard = from.locker(&session, "busy").unwrap().lock().await.unwrap();
    match migrate(
        &**from.backend(),
        &**to.backend(),
        &MigrateOptions::default(),
    )
    .await
    {
        Err(Error::ActiveHolders { count: 1, example }) => {
            assert!(example.starts_with("busy/"))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(to.backend().export().await.unwrap(), Snapshot::default());
    let forced = MigrateOptions {
        force: true,
        ..MigrateOptions::default()
    };
    let report = migrate(&**from.backend(), &**to.backend(), &forced)
        .await
        .unwrap();
    assert_eq!((report.active_holds, report.queue_items), (1, 5));
}

#[tokio::test]
async fn a_dry_run_writes_nothing() {
    let (from, to) = (memory(), memory());
    fill(&from).await;
    let dry = MigrateOptions {
        dry_run: true,
        ..MigrateOptions::default()
    };
    let report = migrate(&**from.backend(), &**to.backend(), &dry)
        .await
        .unwrap();
    assert!(report.dry_run);
    assert_eq!(report.queue_items, 5);
    assert_eq!(to.backend().export().await.unwrap(), Snapshot::default());
}

#[tokio::test]
async fn counters_and_latches_arrive_with_their_values() {
    let (from, to) = (memory(), memory());
    from.counter("site/visits").unwrap().add(41).await.unwrap();
    from.counter("site/debt").unwrap().add(-7).await.unwrap();
    let ready = from.latch("deploy/ready", 3).unwrap();
    ready.count_down().await.unwrap();
    let open = from.latch("deploy/done", 2).unwrap();
    open.count_down().await.unwrap();
    open.count_down().await.unwrap();
    // Already at the source's value in the destination: left as it is.
    to.counter("site/debt").unwrap().add(-7).await.unwrap();

    let report = migrate(
        &**from.backend(),
        &**to.backend(),
        &MigrateOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!((report.counters, report.latches), (2, 2));
    assert_eq!(to.counter("site/visits").unwrap().get().await.unwrap(), 41);
    assert_eq!(to.counter("site/debt").unwrap().get().await.unwrap(), -7);
    let copied = to.latch("deploy/ready", 3).unwrap();
    assert_eq!(copied.count().await.unwrap(), 2);
    assert_eq!(copied.count_down().await.unwrap(), 1);
    // The open latch arrived open: a waiter passes at once.
    distsync_core::timeout(
        std::time::Duration::from_secs(5),
        to.latch("deploy/done", 2).unwrap().wait(),
    )
    .await
    .unwrap();
    // Handles of another initial count are refused, as on the source.
    assert!(matches!(
        to.latch("deploy/ready", 4).unwrap().count().await,
        Err(Error::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn a_destination_counter_or_latch_that_differs_stops_the_migration_before_any_write() {
    let (from, to) = (memory(), memory());
    fill(&from).await;
    from.counter("site/visits").unwrap().add(41).await.unwrap();
    to.counter("site/visits").unwrap().add(5).await.unwrap();
    let dry = MigrateOptions {
        dry_run: true,
        ..MigrateOptions::default()
    };
    for options in [dry, MigrateOptions::default()] {
        match migrate(&**from.backend(), &**to.backend(), &options).await {
            Err(Error::MigrationMismatch(why)) => assert!(why.contains("site/visits"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
    let untouched = to.backend().export().await.unwrap();
    assert_eq!(untouched.queue_items(), 0, "nothing was written");
    assert_eq!(to.counter("site/visits").unwrap().get().await.unwrap(), 5);

    // A latch nearer to open in the destination cannot be counted back up.
    let (from, to) = (memory(), memory());
    from.latch("gate", 3).unwrap().count_down().await.unwrap();
    let there = to.latch("gate", 3).unwrap();
    there.count_down().await.unwrap();
    there.count_down().await.unwrap();
    assert!(matches!(
        migrate(
            &**from.backend(),
            &**to.backend(),
            &MigrateOptions::default()
        )
        .await,
        Err(Error::MigrationMismatch(_))
    ));
    assert_eq!(there.count().await.unwrap(), 1);
}

#[tokio::test]
async fn a_value_the_destination_does_not_take_stops_the_migration_before_any_write() {
    let from = memory();
    fill(&from).await;
    from.queue("big")
        .unwrap()
        .enqueue("0123456789")
        .await
        .unwrap();
    // A destination that takes values of up to 9 bytes.
    let capabilities = distsync_kv::memory::capabilities().with_max_value_size(9);
    let to = Coordinator::new(distsync_kv::recipes::KvBackend::with_kv(
        distsync_kv::memory::MemoryKv::new(),
        "",
        capabilities,
    ));
    let refused = migrate(
        &**from.backend(),
        &**to.backend(),
        &MigrateOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            refused,
            Error::TooLarge {
                size: 10,
                limit: 9,
                ..
            }
        ),
        "{refused:?}"
    );
    assert!(drain(&to, "jobs").await.is_empty(), "nothing was copied");
}

#[tokio::test]
async fn a_destination_without_queues_refuses_before_any_write_a_dry_run_too() {
    let from = memory();
    fill(&from).await;
    let mut capabilities = distsync_kv::memory::capabilities();
    capabilities.queue = false;
    let to = Coordinator::new(distsync_kv::recipes::KvBackend::with_kv(
        distsync_kv::memory::MemoryKv::new(),
        "",
        capabilities,
    ));
    let dry = MigrateOptions {
        dry_run: true,
        ..MigrateOptions::default()
    };
    for options in [dry, MigrateOptions::default()] {
        let refused = migrate(&**from.backend(), &**to.backend(), &options)
            .await
            .unwrap_err();
        assert!(matches!(refused, Error::Unsupported { .. }), "{refused:?}");
    }
    let written = to.backend().export().await.unwrap();
    assert!(
        written.stm.is_empty() && written.barriers.is_empty(),
        "nothing was copied: {written:?}"
    );
}
