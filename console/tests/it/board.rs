//! The board shows who holds and waits for what, on every store.

use distsync::SessionOptions;
use rstest::rstest;

use crate::support::{acting, coordinator, entry, eventually, get_json, prefix, serve};

/// A lock's holder with its token and its waiter, an election's leader and candidate,
/// a group's member, a queue's length and a session's holds all show, and the filter
/// and the pages cut the board.
#[rstest]
#[case::memory("memory")]
#[case::etcd("DISTSYNC_ETCD_URL")]
#[case::redis("DISTSYNC_REDIS_URL")]
#[case::postgres("DISTSYNC_POSTGRES_URL")]
#[case::zookeeper("DISTSYNC_ZOOKEEPER_URL")]
#[case::mysql("DISTSYNC_MYSQL_URL")]
#[case::nats("DISTSYNC_NATS_URL")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shows_holders_waiters_leaders_members_and_queues(#[case] store: &str) {
    let Some(coordinator) = coordinator(store).await else {
        return;
    };
    let p = prefix("board");
    let options = SessionOptions::default();
    let (a, b) = (
        coordinator.session_with(options.clone()).await.unwrap(),
        coordinator.session_with(options).await.unwrap(),
    );
    let lock = format!("{p}lock");
    let guard = coordinator.locker(&a, &lock).unwrap().lock().await.unwrap();
    let waiter = coordinator.locker(&b, &lock).unwrap();
    let waiting = tokio::spawn(async move { waiter.lock().await });
    let election = format!("{p}leader");
    let leading = coordinator
        .election(&a, &election)
        .unwrap()
        .campaign("node-a")
        .await
        .unwrap();
    let group = coordinator.group(&format!("{p}web")).unwrap();
    let member = group.join(&b, "m1", "meta-1").await.unwrap();
    let queue = coordinator.queue(&format!("{p}jobs")).unwrap();
    queue.enqueue("one").await.unwrap();
    queue.enqueue("two").await.unwrap();

    let served = serve(coordinator.clone(), acting(&p)).await;
    let (a_id, b_id) = (a.id().to_string(), b.id().to_string());
    let board = eventually("the lock's waiter on the board", || async {
        let board = get_json(&served, "api/board").await;
        let waiters = entry(&board, "locks", &lock)?["waiters"].as_array()?.len();
        (waiters == 1).then_some(board)
    })
    .await;
    assert_eq!(board["up"], true);
    assert_eq!(board["backend"], coordinator.capabilities().backend);
    assert_eq!(board["actions"], true);
    let line = entry(&board, "locks", &lock).unwrap();
    assert_eq!(line["holders"][0]["session"], a_id.as_str());
    assert_eq!(line["holders"][0]["token"], guard.token().0);
    assert_eq!(line["waiters"][0]["session"], b_id.as_str());
    // The session's time left, by the store's count, on every store but ZooKeeper
    // (whose sessions' timeouts only the server knows).
    let left = &line["holders"][0]["expires_in_ms"];
    let ttl = SessionOptions::default().ttl().as_millis();
    if coordinator.capabilities().backend == "zookeeper" {
        assert!(left.is_null(), "{left}");
    } else {
        let left = left.as_u64().expect("the holder's session time left");
        assert!(
            left > 0 && u128::from(left) <= ttl + 1000,
            "{left} ms of {ttl} ms"
        );
    }
    let elected = entry(&board, "elections", &election).expect("the election is listed");
    assert_eq!(elected["value"], "node-a");
    assert_eq!(elected["term"], leading.term().0);
    let web = entry(&board, "groups", &format!("{p}web")).expect("the group is listed");
    assert_eq!(web["members"][0]["id"], "m1");
    assert_eq!(web["members"][0]["metadata"], "meta-1");
    let jobs = entry(&board, "queues", &format!("{p}jobs")).expect("the queue is listed");
    assert_eq!(jobs["ready"], 2);
    let holds = board["sessions"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|session| session["id"] == a_id.as_str())
        .expect("the holder's session is listed");
    assert_eq!(
        holds["expires_in_ms"].is_null(),
        line["holders"][0]["expires_in_ms"].is_null()
    );
    let holds = holds["holds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|hold| hold["name"].as_str().unwrap().to_owned())
        .collect::<Vec<_>>();
    assert!(
        holds.contains(&lock) && holds.contains(&election),
        "{holds:?}"
    );
    // No URL, and so no password, on the board.
    assert!(!board.to_string().contains("://"), "{board}");

    let filtered = get_json(&served, &format!("api/board?filter={p}lo")).await;
    assert_eq!(filtered["locks"]["total"], 1);
    assert_eq!(filtered["elections"]["total"], 0);
    assert_eq!(filtered["queues"]["total"], 0);
    let paged = get_json(&served, "api/board?per_page=1&page=1").await;
    assert_eq!(paged["locks"]["items"].as_array().unwrap().len(), 0);
    assert!(paged["pages"].as_u64().unwrap() >= 2, "{paged}");

    drop(guard);
    let next = waiting.await.unwrap().unwrap();
    next.unlock().await.unwrap();
    leading.resign().await.unwrap();
    member.leave().await.unwrap();
    while queue.try_dequeue().await.unwrap().is_some() {}
    a.close().await.unwrap();
    b.close().await.unwrap();
}
