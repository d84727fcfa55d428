//! The board shows who holds and waits for what, on every store.

use std::time::Duration;

use distsync::replicas::{JobOptions, Schedule};
use distsync::SessionOptions;
use rstest::rstest;
use rstest_reuse::apply;

use crate::support::{
    acting, coordinator, entry, eventually, every_store, get, get_json, prefix, serve, within,
};

/// A lock's holder with its token and its waiter, an election's leader and candidate,
/// a group's member, a queue's length and a session's holds all show, and the filter
/// and the pages cut the board.
#[apply(every_store)]
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
    let ttl = SessionOptions::default().ttl.as_millis();
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

/// Scheduled jobs show with their schedules: one that has never run, and one with its
/// last run's token and run count, which the metrics carry too.
#[apply(every_store)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shows_scheduled_jobs_with_their_last_runs(#[case] store: &str) {
    let Some(coordinator) = coordinator(store).await else {
        return;
    };
    let p = prefix("jobs");
    let (nightly, often) = (format!("{p}nightly"), format!("{p}often"));
    let mut never = coordinator
        .scheduled_job(
            &nightly,
            Schedule::cron("0 3 * * *").unwrap(),
            JobOptions::default(),
        )
        .unwrap();
    let waiting = tokio::spawn(async move { never.next().await });
    let mut job = coordinator
        .scheduled_job(
            &often,
            Schedule::every(Duration::from_millis(500)).unwrap(),
            JobOptions::default(),
        )
        .unwrap();
    let occurrence = within("a run of the frequent job", job.next())
        .await
        .unwrap();
    let token = occurrence.token().get();
    occurrence.finish().await.unwrap();

    let served = serve(coordinator.clone(), acting(&p)).await;
    let board = eventually("both jobs on the board", || async {
        let board = get_json(&served, "api/board").await;
        entry(&board, "jobs", &nightly)?;
        let ran = !entry(&board, "jobs", &often)?["last_occurrence_ms"].is_null();
        ran.then_some(board)
    })
    .await;
    waiting.abort();
    let never = entry(&board, "jobs", &nightly).unwrap();
    assert!(never["last_occurrence_ms"].is_null(), "{never}");
    assert_eq!(never["runs"], 0);
    assert!(
        never["schedule"].as_str().unwrap().contains("0 3 * * *"),
        "{never}"
    );
    assert!(never["next_ms"].as_u64().unwrap() > never["due_ms"].as_u64().unwrap());
    let ran = entry(&board, "jobs", &often).unwrap();
    assert_eq!(ran["last_token"], token);
    assert!(ran["runs"].as_u64().unwrap() >= 1, "{ran}");

    let (status, text) = get(&served, "metrics").await;
    assert_eq!(status, 200);
    let runs = text
        .lines()
        .find(|line| {
            line.starts_with("distsync_store_job_runs{")
                && line.contains(&format!("job=\"{often}\""))
        })
        .unwrap_or_else(|| panic!("no run count for {often}: {text}"));
    let count: f64 = runs.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 1.0, "{runs}");
}
