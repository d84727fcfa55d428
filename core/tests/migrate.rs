//! `migrate` between two memory backends.

use bytes::Bytes;
use distsync_core::migrate::*;
use distsync_core::Coordinator;
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
