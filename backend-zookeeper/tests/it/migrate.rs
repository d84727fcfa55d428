//! `distsync migrate` (the library call) from ZooKeeper to the memory store, etcd,
//! Redis and PostgreSQL, and back to a fresh ZooKeeper root: every queue item (the item
//! of a dequeue that never finished among them), STM key, held barrier, counter and
//! latch arrives exactly once, in order, and live holds stop a
//! migration unless it is forced. Each store runs in a namespace of its own (a ZooKeeper root,
//! an etcd prefix, a Redis prefix, a PostgreSQL schema); the names used are purged at
//! the end, and the ZooKeeper roots removed. A store whose URL is unset is skipped loudly (a failure under `CI=true`).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use distsync::store::raw::{LatchState, QueueItem, Snapshot};
use distsync::store::{migrate, MigrateOptions};
use distsync::{Bytes, Coordinator, Error, Name};
use distsync_conformance::log_capture::LogCapture;

/// The queue items pushed, with their priorities, in push order.
const PUSHED: [(&str, u16); 6] = [
    ("b1", 1),
    ("a1", 0),
    ("c1", 9),
    ("b2", 1),
    ("a2", 0),
    ("with space", 0),
];

/// The item of the dequeue that never finished: a priority-0 item whose node name
/// sorts after the pushed ones, so it is the last of priority 0.
const LOST: &str = "lost";

/// The STM keys written: nested names, and an empty value.
const KEYS: [(&str, &str); 4] = [
    ("acct/alice", "40"),
    ("acct/bob", "60"),
    ("acct", "parent"),
    ("acct/empty", ""),
];

/// The names every store is left holding, purged at the end.
const NAMES: [&str; 3] = ["jobs", "acct", "gate"];

/// A namespace nobody else uses: letters, digits and `_`, valid everywhere.
fn namespace(what: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    format!("m_{what}_{}_{nanos:x}", std::process::id())
}

/// `url` with the store's namespace `ns`.
fn in_namespace(label: &str, url: &str, ns: &str) -> String {
    let base = url.trim_end_matches('/');
    let separator = if base.contains('?') { '&' } else { '?' };
    match label {
        "memory" => format!("memory://{ns}"),
        "zookeeper" | "etcd" => format!("{base}/{ns}"),
        "redis" => format!("{base}{separator}namespace={ns}:"),
        "postgres" => format!("{base}{separator}schema={ns}"),
        other => panic!("no namespaces for {other}"),
    }
}

/// A store on a fresh ZooKeeper root, and that root's path; `None` when the server is
/// unset.
async fn zookeeper(what: &str) -> Option<(Coordinator, String)> {
    let url = distsync_conformance::server_url("DISTSYNC_ZOOKEEPER_URL")?;
    let ns = namespace(what);
    let store = distsync_zookeeper::backend(&in_namespace("zookeeper", &url, &ns))
        .await
        .expect("connecting to zookeeper");
    Some((Coordinator::new(store), format!("/{ns}")))
}

/// A client of the test server with no root of distsync's.
async fn raw_client() -> zookeeper_client::Client {
    let url = distsync_conformance::server_url("DISTSYNC_ZOOKEEPER_URL").expect("zookeeper is set");
    let hosts = url
        .trim_start_matches("zk://")
        .split(['/', '?'])
        .next()
        .unwrap_or_default()
        .to_owned();
    zookeeper_client::Client::connect(&hosts)
        .await
        .expect("connecting to zookeeper")
}

/// Leaves under `root` the receipt of a dequeue of `jobs` whose consumer died after
/// its `multi`: its item ([`LOST`]) is exported as an item, as the source would put it
/// back under its node name once the receipt is stale.
async fn leave_a_dead_dequeues_receipt(root: &str) {
    let client = raw_client().await;
    let options =
        zookeeper_client::CreateMode::Persistent.with_acls(zookeeper_client::Acls::anyone_all());
    let taken = format!("{root}/queue_meta/jobs/%taken");
    client
        .mkdir(&taken, &options)
        .await
        .expect("the receipts' node");
    // The item node's name, a NUL, and its data in Curator's format: the version, the
    // item (opcode, length, bytes), the end.
    let mut receipt = b"queue-1000000000000000099\0\x00\x01\x00\x01\x01".to_vec();
    receipt.extend_from_slice(&u32::try_from(LOST.len()).unwrap().to_be_bytes());
    receipt.extend_from_slice(LOST.as_bytes());
    receipt.push(0x02);
    client
        .create(&format!("{taken}/dead"), &receipt, &options)
        .await
        .expect("a receipt");
}

/// Deletes the ZooKeeper node `root` and everything under it, children first.
async fn remove_root(root: &str) {
    let client = raw_client().await;
    let mut stack = vec![(root.to_owned(), false)];
    while let Some((node, listed)) = stack.pop() {
        if listed {
            match client.delete(&node, None).await {
                Ok(()) | Err(zookeeper_client::Error::NoNode) => {}
                Err(error) => panic!("deleting {node}: {error}"),
            }
            continue;
        }
        match client.list_children(&node).await {
            Ok(children) => {
                stack.push((node.clone(), true));
                stack.extend(
                    children
                        .into_iter()
                        .map(|child| (format!("{node}/{child}"), false)),
                );
            }
            Err(zookeeper_client::Error::NoNode) => {}
            Err(error) => panic!("listing {node}: {error}"),
        }
    }
}

/// What the source is filled with, as its export must read it.
fn expected() -> Snapshot {
    let mut snapshot = Snapshot::default();
    let mut items: Vec<QueueItem> = PUSHED
        .iter()
        .chain([(LOST, 0)].iter())
        .map(|(item, priority)| QueueItem {
            priority: *priority,
            item: Bytes::from(*item),
        })
        .collect();
    // Dequeue order: lower priority first, FIFO within one (a stable sort).
    items.sort_by_key(|item| item.priority);
    snapshot.queues.insert(Name::new("jobs").unwrap(), items);
    snapshot.stm = KEYS
        .iter()
        .map(|(key, value)| (Name::new(*key).unwrap(), Bytes::from(*value)))
        .collect::<BTreeMap<_, _>>();
    snapshot.barriers = vec![Name::new("gate/deploy").unwrap()];
    snapshot
        .counters
        .insert(Name::new("acct/visits").unwrap(), -41);
    snapshot.latches.insert(
        Name::new("gate/ready").unwrap(),
        LatchState {
            initial: 3,
            remaining: 1,
        },
    );
    snapshot
}

/// Fills `store` with the queue items, the STM keys and the barrier.
async fn fill(store: &Coordinator) {
    let queue = store.queue("jobs").unwrap();
    for (item, priority) in PUSHED {
        queue
            .enqueue_with_priority(Bytes::from(item), priority)
            .await
            .unwrap();
    }
    store
        .stm()
        .unwrap()
        .atomically(distsync::stm::Isolation::default(), |tx| async move {
            for (key, value) in KEYS {
                tx.put(key, value);
            }
            Ok(())
        })
        .await
        .unwrap();
    store.barrier("gate/deploy").unwrap().hold().await.unwrap();
    store
        .counter("acct/visits")
        .unwrap()
        .add(-41)
        .await
        .unwrap();
    let ready = store.latch("gate/ready", 3).unwrap();
    ready.count_down().await.unwrap();
    ready.count_down().await.unwrap();
}

/// Removes the test's names from `store`.
async fn purge(store: &Coordinator) {
    for name in NAMES {
        match store
            .backend()
            .purge_prefix(&Name::new(name).unwrap())
            .await
        {
            Ok(_) | Err(Error::Unsupported { .. }) => {}
            Err(error) => panic!("purging {name}: {error}"),
        }
    }
}

/// Drops the PostgreSQL schema `ns` with `psql`, where it is installed (a note
/// otherwise: the schema is left, empty).
fn drop_schema(server: &str, ns: &str) {
    let dropped = std::process::Command::new("psql")
        .args([
            server,
            "-qc",
            &format!("DROP SCHEMA IF EXISTS \"{ns}\" CASCADE"),
        ])
        .stdin(std::process::Stdio::null())
        .output();
    match dropped {
        Ok(output) if output.status.success() => {}
        Ok(output) => eprintln!(
            "note: could not drop the test schema {ns}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(error) => eprintln!("note: could not drop the test schema {ns}: {error}"),
    }
}

/// The durable part of `store`'s export (live holds aside).
async fn durable(store: &Coordinator) -> Snapshot {
    let mut snapshot = store.backend().export().await.expect("export");
    snapshot.active_holds.clear();
    snapshot
}

/// Copies `from` into the empty `to` and checks that `to` holds exactly `expected`.
async fn copy_and_check(from: &Coordinator, to: &Coordinator, label: &str) {
    let report = migrate(
        &**from.backend(),
        &**to.backend(),
        &MigrateOptions::default(),
    )
    .await
    .unwrap_or_else(|error| panic!("{label}: {error}"));
    assert_eq!(report.queues, 1, "{label}");
    assert_eq!(report.queue_items, PUSHED.len() + 1, "{label}");
    assert_eq!(report.stm_keys, KEYS.len(), "{label}");
    assert_eq!(report.barriers, 1, "{label}");
    assert_eq!((report.counters, report.latches), (1, 1), "{label}");
    assert_eq!(
        durable(to).await,
        expected(),
        "{label}: every item and key once"
    );
}

/// ZooKeeper to `label` and back to a fresh ZooKeeper root.
async fn round_trip(label: &'static str, var: Option<&str>) {
    let Some((source, source_root)) = zookeeper("src").await else {
        return;
    };
    let url = match var {
        Some(var) => match distsync_conformance::server_url(var) {
            Some(url) => url,
            None => return,
        },
        None => String::new(),
    };
    let other_ns = namespace(label);
    let other = distsync::connect(&in_namespace(label, &url, &other_ns))
        .await
        .unwrap_or_else(|error| panic!("connecting to {label}: {error}"));
    let (back, back_root) = zookeeper("back").await.expect("zookeeper is set");
    fill(&source).await;
    leave_a_dead_dequeues_receipt(&source_root).await;
    // The export runs on this thread, whose events the capture holds.
    let logs = LogCapture::start();
    assert_eq!(durable(&source).await, expected(), "the source's export");
    let named = ["exported as items", "count=1", "%taken/dead"];
    assert_eq!(
        logs.count(&named),
        1,
        "the receipt's item is not logged: {}",
        logs.text()
    );
    drop(logs);

    copy_and_check(&source, &other, &format!("zookeeper -> {label}")).await;
    copy_and_check(&other, &back, &format!("{label} -> zookeeper")).await;
    // The copies were reads of the source: it holds what it held.
    assert_eq!(
        durable(&source).await,
        expected(),
        "the source is unchanged"
    );
    // The items arrived as items: a dequeue gets the first.
    assert_eq!(back.queue("jobs").unwrap().dequeue().await.unwrap(), "a1");

    purge(&other).await;
    // The pool's connections go first: the drop waits for none of them.
    drop(other);
    if label == "postgres" {
        drop_schema(&url, &other_ns);
    }
    remove_root(&source_root).await;
    remove_root(&back_root).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_memory_and_back() {
    round_trip("memory", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_etcd_and_back() {
    round_trip("etcd", Some("DISTSYNC_ETCD_URL")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_redis_and_back() {
    round_trip("redis", Some("DISTSYNC_REDIS_URL")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_postgres_and_back() {
    round_trip("postgres", Some("DISTSYNC_POSTGRES_URL")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_holds_stop_a_migration_unless_forced() {
    let Some((source, source_root)) = zookeeper("held").await else {
        return;
    };
    let target = distsync::connect(&format!("memory://{}", namespace("held")))
        .await
        .unwrap();
    let session = source.session().await.unwrap();
    let guard = source
        .locker(&session, "jobs/lock")
        .unwrap()
        .lock()
        .await
        .unwrap();
    guard.put_if_held("acct/alice", "40").await.unwrap();

    let refused = migrate(
        &**source.backend(),
        &**target.backend(),
        &MigrateOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(refused, Error::ActiveHolders { count: 1, .. }),
        "{refused}"
    );
    assert!(durable(&target).await.stm.is_empty(), "nothing copied");

    let forced = MigrateOptions {
        force: true,
        ..MigrateOptions::default()
    };
    let report = migrate(&**source.backend(), &**target.backend(), &forced)
        .await
        .unwrap();
    assert_eq!((report.active_holds, report.stm_keys), (1, 1));
    let copied = durable(&target).await;
    assert_eq!(
        copied
            .stm
            .get(&Name::new("acct/alice").unwrap())
            .map(|v| &v[..]),
        Some(&b"40"[..])
    );
    // The hold itself is not copied: the lock is free on the target.
    let target_session = target.session().await.unwrap();
    assert!(target
        .locker(&target_session, "jobs/lock")
        .unwrap()
        .try_lock()
        .await
        .unwrap()
        .is_some());

    guard.unlock().await.unwrap();
    remove_root(&source_root).await;
}
