//! The actions: refused without the token, and each one reaching the holder, leader or
//! queue it names, on every store that offers it.

use distsync::queue::ConsumerOptions;
use distsync::store::console::ConsoleOptions;
use distsync::SessionOptions;
use rstest::rstest;
use rstest_reuse::apply;
use serde_json::json;

use crate::support::{
    acting, coordinator, eventually, every_store, get_json, post, prefix, serve, within, TOKEN,
};

fn sessions() -> SessionOptions {
    SessionOptions::default()
}

/// Without the token, or on a console started without one, every action gets 403 and
/// the holder keeps its lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_without_the_token_is_forbidden_and_does_nothing() {
    let coordinator = coordinator("memory").await.unwrap();
    let p = prefix("forbidden");
    let session = coordinator.session_with(sessions()).await.unwrap();
    let lock = format!("{p}lock");
    let guard = coordinator
        .locker(&session, &lock)
        .unwrap()
        .lock()
        .await
        .unwrap();
    let acting = serve(coordinator.clone(), acting(&p)).await;
    let read_only = serve(coordinator.clone(), ConsoleOptions::new().prefix(&p)).await;
    let body = json!({ "name": lock });
    for (served, token) in [
        (&acting, None),
        (&acting, Some("console-test-token-012345678X")),
        (&read_only, Some(TOKEN)),
    ] {
        for path in ["break", "request-release"] {
            let (status, answer) =
                post(served, &format!("api/actions/{path}"), body.clone(), token).await;
            assert_eq!(status, 403, "{path} with {token:?}: {answer}");
            assert_eq!(answer["done"], false);
        }
    }
    assert_eq!(get_json(&read_only, "api/board").await["actions"], false);
    assert!(!session.is_lost(), "a refused break ended the session");
    let board = get_json(&acting, "api/board").await;
    assert_eq!(board["locks"]["total"], 1, "{board}");
    guard.unlock().await.unwrap();
}

/// Breaking a lock ends its holder's session: the holder's `lost()` fires, and the
/// answer names the session.
#[apply(every_store)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_ends_the_holder_and_asking_reaches_it(#[case] store: &str) {
    let Some(coordinator) = coordinator(store).await else {
        return;
    };
    let capabilities = coordinator.capabilities().clone();
    let p = prefix("break");
    let served = serve(coordinator.clone(), acting(&p)).await;
    let session = coordinator.session_with(sessions()).await.unwrap();
    let lock = format!("{p}lock");
    let guard = coordinator
        .locker(&session, &lock)
        .unwrap()
        .lock()
        .await
        .unwrap();

    let (status, answer) = post(
        &served,
        "api/actions/request-release",
        json!({ "name": lock }),
        Some(TOKEN),
    )
    .await;
    if capabilities.release_request {
        assert_eq!((status, &answer["done"]), (200, &json!(true)), "{answer}");
        within("the holder hearing the request", guard.release_requested())
            .await
            .unwrap();
    } else {
        assert_eq!(status, 501, "{answer}");
    }

    let (status, answer) = post(
        &served,
        "api/actions/break",
        json!({ "name": lock }),
        Some(TOKEN),
    )
    .await;
    if capabilities.break_lock {
        assert_eq!((status, &answer["done"]), (200, &json!(true)), "{answer}");
        assert_eq!(answer["session"], session.id().to_string());
        within("the broken holder's loss", guard.lost()).await;
        let (status, again) = post(
            &served,
            "api/actions/break",
            json!({ "name": lock }),
            Some(TOKEN),
        )
        .await;
        assert_eq!((status, &again["done"]), (200, &json!(false)), "{again}");
    } else {
        assert_eq!(status, 501, "{answer}");
        guard.unlock().await.unwrap();
    }
    let (status, answer) = post(
        &served,
        "api/actions/break",
        json!({ "name": "" }),
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 400, "an empty name: {answer}");
}

/// Asking a leader to hand over reaches it as a preference request for the candidate.
#[apply(every_store)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_over_reaches_the_leader(#[case] store: &str) {
    let Some(coordinator) = coordinator(store).await else {
        return;
    };
    if !coordinator.capabilities().hand_over {
        return;
    }
    let p = prefix("prefer");
    let served = serve(coordinator.clone(), acting(&p)).await;
    let (a, b) = (
        coordinator.session_with(sessions()).await.unwrap(),
        coordinator.session_with(sessions()).await.unwrap(),
    );
    let name = format!("{p}leader");
    let leader = coordinator
        .election(&a, &name)
        .unwrap()
        .campaign("a")
        .await
        .unwrap();
    let election = coordinator.election(&b, &name).unwrap();
    let campaign = tokio::spawn(async move { election.campaign("b").await });
    let candidate = b.id();
    eventually("the candidate in line", || async {
        let line = coordinator.candidates(&name).await.ok()?;
        line.position(candidate).map(|_| ())
    })
    .await;
    let asked = leader.preference_requested();
    let (status, answer) = post(
        &served,
        "api/actions/prefer",
        json!({ "name": name, "candidate": candidate.to_string() }),
        Some(TOKEN),
    )
    .await;
    assert_eq!((status, &answer["done"]), (200, &json!(true)), "{answer}");
    let request = within("the leader hearing the request", asked)
        .await
        .unwrap();
    assert_eq!(request.candidate, candidate);
    let (status, answer) = post(
        &served,
        "api/actions/prefer",
        json!({ "name": name, "candidate": "zz" }),
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    leader.resign().await.unwrap();
    within("the candidate's election", campaign)
        .await
        .unwrap()
        .unwrap()
        .resign()
        .await
        .unwrap();
}

/// A dead letter is listed, requeued to its queue, and dropped, each one by one.
#[apply(every_store)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_requeued_and_dropped(#[case] store: &str) {
    let Some(coordinator) = coordinator(store).await else {
        return;
    };
    if !coordinator.capabilities().reliable_delivery {
        return;
    }
    let p = prefix("dead");
    let served = serve(coordinator.clone(), acting(&p)).await;
    let jobs = format!("{p}jobs");
    let consumer = coordinator
        .consumer(&jobs, ConsumerOptions::default())
        .unwrap();
    consumer.dead_letter_queue().enqueue("first").await.unwrap();
    consumer
        .dead_letter_queue()
        .enqueue("second")
        .await
        .unwrap();
    let listed = get_json(&served, &format!("api/dead-letters?queue={jobs}")).await;
    let items = listed["items"].as_array().unwrap();
    let texts: Vec<_> = items
        .iter()
        .map(|item| item["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["first", "second"]);
    let board = get_json(&served, "api/board").await;
    let queue = crate::support::entry(&board, "queues", &jobs).expect("the queue is listed");
    assert_eq!(
        (queue["ready"].as_u64(), queue["dead_letters"].as_u64()),
        (Some(0), Some(2))
    );

    let body = |item: &serde_json::Value| json!({ "queue": jobs, "item": item["item"] });
    let (status, answer) = post(&served, "api/actions/requeue", body(&items[0]), Some(TOKEN)).await;
    assert_eq!((status, &answer["done"]), (200, &json!(true)), "{answer}");
    assert_eq!(
        consumer.queue().try_dequeue().await.unwrap().as_deref(),
        Some(&b"first"[..])
    );
    let (status, answer) = post(&served, "api/actions/drop", body(&items[1]), Some(TOKEN)).await;
    assert_eq!((status, &answer["done"]), (200, &json!(true)), "{answer}");
    let (status, answer) = post(&served, "api/actions/drop", body(&items[1]), Some(TOKEN)).await;
    assert_eq!(
        (status, &answer["done"]),
        (200, &json!(false)),
        "dropped twice: {answer}"
    );
    assert!(consumer.dead_letters().await.unwrap().is_empty());
    assert_eq!(consumer.queue().len().await.unwrap(), 0);
}

/// A store that does not answer shows as down, with its error, and the board comes
/// back when it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_does_not_answer_shows_as_down_and_comes_back() {
    use distsync::store::memory::{capabilities, FaultyKv, MemoryKv, Partition};
    use distsync::store::raw::recipes::KvBackend;

    let kv = FaultyKv::new(MemoryKv::new());
    let coordinator =
        distsync::Coordinator::new(KvBackend::with_kv(kv.clone(), "", capabilities()));
    let served = serve(coordinator, acting("")).await;
    assert_eq!(get_json(&served, "api/board").await["up"], true);
    kv.partition(Partition::Reset);
    let down = eventually("the store shown down", || async {
        let board = get_json(&served, "api/board").await;
        (board["up"] == false).then_some(board)
    })
    .await;
    assert!(
        down["error"]
            .as_str()
            .is_some_and(|error| !error.is_empty()),
        "{down}"
    );
    let (status, metrics) = crate::support::get(&served, "metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("distsync_store_up{backend=\"memory\"} 0"),
        "{metrics}"
    );
    kv.partition(Partition::Open);
    eventually("the store shown up again", || async {
        (get_json(&served, "api/board").await["up"] == true).then_some(())
    })
    .await;
}
