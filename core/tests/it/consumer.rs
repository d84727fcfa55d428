//! The queue consumer on the memory backend: poison items dead-lettered after exactly
//! `max_deliveries` handler calls, hung handlers dropped at the deadline, delayed
//! nacks, the dead-letter queue's management, and option checks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distsync_core::consumer::ConsumerOptions;
use distsync_core::{Bytes, Coordinator, Error};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long a test waits for something that should happen in milliseconds.
const BOUND: Duration = Duration::from_secs(10);

async fn coordinator() -> Coordinator {
    distsync_kv::memory::connect("memory://")
        .await
        .expect("memory backend")
}

/// Polls `check` every 5 ms until it is true, failing the test after [`BOUND`].
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + BOUND;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {BOUND:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn fast(options: ConsumerOptions) -> ConsumerOptions {
    options.retry(Duration::from_millis(5), Duration::from_millis(20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_is_dead_lettered_after_max_deliveries_and_the_items_behind_it_are_handled() {
    let coordinator = coordinator().await;
    let consumer = Arc::new(
        coordinator
            .consumer("jobs", fast(ConsumerOptions::default().max_deliveries(3)))
            .unwrap(),
    );
    let queue = coordinator.queue("jobs").unwrap();
    for item in ["poison", "good-1", "good-2"] {
        queue.enqueue(item).await.unwrap();
    }
    let calls: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let (done, mut handled) = mpsc::unbounded_channel();
    let session = coordinator.session().await.unwrap();
    let run = {
        let consumer = Arc::clone(&consumer);
        let calls = Arc::clone(&calls);
        tokio::spawn(async move {
            consumer
                .run(&session, move |item: Bytes| {
                    let item = String::from_utf8(item.to_vec()).unwrap();
                    *calls.lock().unwrap().entry(item.clone()).or_default() += 1;
                    let done = done.clone();
                    async move {
                        if item == "poison" {
                            return Err(format!("cannot handle {item}").into());
                        }
                        done.send(item).unwrap();
                        Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
                    }
                })
                .await
        })
    };
    let mut good = Vec::new();
    while good.len() < 2 {
        let item = tokio::time::timeout(BOUND, handled.recv())
            .await
            .expect("good items handled in time")
            .unwrap();
        good.push(item);
    }
    assert_eq!(good, ["good-1", "good-2"]);
    let dead = consumer.dead_letter_queue().clone();
    until("the poison item dead-lettered", || {
        let dead = dead.clone();
        async move { dead.len().await.unwrap() == 1 }
    })
    .await;
    assert_eq!(dead.name().as_str(), "jobs.dead");
    run.abort();
    let _ = run.await;
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.get("poison"), Some(&3), "calls: {calls:?}");
    assert_eq!(calls.get("good-1"), Some(&1), "calls: {calls:?}");
    assert_eq!(calls.get("good-2"), Some(&1), "calls: {calls:?}");
    assert!(queue.is_empty().await.unwrap());
    assert_eq!(
        consumer.dead_letters().await.unwrap(),
        vec![Bytes::from("poison")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_handler_is_dropped_at_the_deadline_and_the_item_handled_again() {
    let coordinator = coordinator().await;
    let deadline = Duration::from_millis(200);
    let consumer = coordinator
        .consumer(
            "hangs",
            fast(ConsumerOptions::default().processing_deadline(deadline)),
        )
        .unwrap();
    let queue = coordinator.queue("hangs").unwrap();
    queue.enqueue("job").await.unwrap();
    let session = coordinator.session().await.unwrap();
    let (done, mut handled) = mpsc::unbounded_channel();
    let (dropped_tx, mut dropped) = mpsc::unbounded_channel::<()>();
    let mut calls = 0u32;
    let started = Instant::now();
    let run = consumer.run(&session, |item| {
        calls += 1;
        let call = calls;
        let done = done.clone();
        let dropped_tx = dropped_tx.clone();
        async move {
            if call == 1 {
                // Reports when the consumer drops this call's future.
                struct OnDrop(mpsc::UnboundedSender<()>);
                impl Drop for OnDrop {
                    fn drop(&mut self) {
                        let _ = self.0.send(());
                    }
                }
                let _guard = OnDrop(dropped_tx);
                std::future::pending::<()>().await;
            }
            done.send((call, item)).unwrap();
            Ok::<(), std::io::Error>(())
        }
    });
    let (call, item) = tokio::select! {
        error = run => panic!("the run ended: {error}"),
        handled = tokio::time::timeout(BOUND, handled.recv()) => handled.expect("handled again in time").unwrap(),
    };
    assert_eq!((call, item), (2, Bytes::from("job")));
    assert!(
        started.elapsed() >= deadline,
        "the hung call was given up before the deadline: {:?}",
        started.elapsed()
    );
    dropped
        .try_recv()
        .expect("the hung handler's future was dropped");
    assert!(queue.is_empty().await.unwrap());
    assert!(consumer.dead_letter_queue().is_empty().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_after_keeps_the_item_away_for_the_delay() {
    let coordinator = coordinator().await;
    let queue = coordinator.queue("delayed").unwrap();
    queue.enqueue("flaky").await.unwrap();
    let session = coordinator.session().await.unwrap();
    let delivery = queue.receive(&session).await.unwrap();
    let delay = Duration::from_millis(300);
    let nacked = Instant::now();
    delivery.nack_after(delay);
    let other = coordinator.session().await.unwrap();
    // Not available to anyone while the delay runs.
    let mut polls = 0;
    while nacked.elapsed() < delay * 2 / 3 {
        assert!(
            queue.try_receive(&other).await.unwrap().is_none(),
            "received {:?} after the delayed nack",
            nacked.elapsed()
        );
        polls += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(polls > 0);
    // Available after it, counted as redelivered.
    let deadline = Instant::now() + BOUND;
    let again = loop {
        if let Some(delivery) = queue.try_receive(&other).await.unwrap() {
            break delivery;
        }
        assert!(Instant::now() < deadline, "not back within {BOUND:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(
        nacked.elapsed() >= delay,
        "back after {:?}",
        nacked.elapsed()
    );
    assert_eq!(again.item(), "flaky");
    assert_eq!(again.redeliveries(), 1);
    again.ack().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_after_returns_the_item_when_the_session_closes_first() {
    let coordinator = coordinator().await;
    let queue = coordinator.queue("closing").unwrap();
    queue.enqueue("item").await.unwrap();
    let session = coordinator.session().await.unwrap();
    queue
        .receive(&session)
        .await
        .unwrap()
        .nack_after(Duration::from_secs(3600));
    session.close().await.unwrap();
    let other = coordinator.session().await.unwrap();
    let again = tokio::time::timeout(BOUND, queue.receive(&other))
        .await
        .expect("back when the session closed")
        .unwrap();
    assert_eq!(again.item(), "item");
    again.ack().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_held_stops_the_work_when_the_session_is_lost() {
    let coordinator = coordinator().await;
    let queue = coordinator.queue("held").unwrap();
    queue.enqueue("item").await.unwrap();
    // A short TTL: the revocation is learnt at the next renewal, a third of it.
    let session = coordinator
        .session_with(distsync_core::SessionOptions::with_ttl(
            Duration::from_millis(600),
        ))
        .await
        .unwrap();
    let delivery = queue.receive(&session).await.unwrap();
    assert_eq!(delivery.while_held(async { 7 }).await.unwrap(), 7);
    coordinator
        .backend()
        .revoke_session(session.id())
        .await
        .unwrap();
    let outcome = tokio::time::timeout(BOUND, delivery.while_held(std::future::pending::<()>()))
        .await
        .expect("while_held returns once the session is lost");
    assert!(matches!(outcome, Err(Error::SessionLost)), "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_redrive_and_purge_count_the_dead_letters() {
    let coordinator = coordinator().await;
    let consumer = coordinator
        .consumer(
            "orders",
            ConsumerOptions::default().dead_letter("orders/failed"),
        )
        .unwrap();
    let dead = coordinator.queue("orders/failed").unwrap();
    let main = coordinator.queue("orders").unwrap();
    assert_eq!(consumer.dead_letters().await.unwrap(), Vec::<Bytes>::new());
    for item in ["a", "b", "c"] {
        dead.enqueue(item).await.unwrap();
    }
    let listed = consumer.dead_letters().await.unwrap();
    assert_eq!(listed, ["a", "b", "c"].map(Bytes::from));
    // Listing leaves them in place, in order.
    assert_eq!(dead.len().await.unwrap(), 3);
    assert_eq!(consumer.dead_letters().await.unwrap(), listed);

    assert_eq!(consumer.redrive().await.unwrap(), 3);
    assert!(dead.is_empty().await.unwrap());
    let mut moved = Vec::new();
    while let Some(item) = main.try_dequeue().await.unwrap() {
        moved.push(item);
    }
    assert_eq!(moved, ["a", "b", "c"].map(Bytes::from));

    for item in ["x", "y"] {
        dead.enqueue(item).await.unwrap();
    }
    assert_eq!(consumer.purge().await.unwrap(), 2);
    assert!(dead.is_empty().await.unwrap());
    assert!(main.is_empty().await.unwrap());
    assert_eq!(consumer.purge().await.unwrap(), 0);
    assert_eq!(consumer.redrive().await.unwrap(), 0);
}

#[tokio::test]
async fn bad_options_are_invalid_arguments() {
    let coordinator = coordinator().await;
    let zero = coordinator.consumer("jobs", ConsumerOptions::default().max_deliveries(0));
    assert!(matches!(zero, Err(Error::InvalidArgument(_))), "{zero:?}");
    let instant = coordinator.consumer(
        "jobs",
        ConsumerOptions::default().processing_deadline(Duration::ZERO),
    );
    assert!(
        matches!(instant, Err(Error::InvalidArgument(_))),
        "{instant:?}"
    );
    let itself = coordinator.consumer("jobs", ConsumerOptions::default().dead_letter("jobs"));
    assert!(
        matches!(itself, Err(Error::InvalidArgument(_))),
        "{itself:?}"
    );
    let bad_dead = coordinator.consumer("jobs", ConsumerOptions::default().dead_letter("a//b"));
    assert!(
        matches!(bad_dead, Err(Error::InvalidName { .. })),
        "{bad_dead:?}"
    );
    let bad_name = coordinator.consumer("/jobs", ConsumerOptions::default());
    assert!(
        matches!(bad_name, Err(Error::InvalidName { .. })),
        "{bad_name:?}"
    );
    let long = "q".repeat(distsync_core::name::MAX_NAME_LEN);
    let too_long = coordinator.consumer(&long, ConsumerOptions::default());
    assert!(
        matches!(too_long, Err(Error::InvalidName { .. })),
        "the default dead-letter name of a 255-byte name is too long: {too_long:?}"
    );
    assert!(
        coordinator
            .consumer(&long, ConsumerOptions::default().dead_letter("dead"))
            .is_ok()
    );
}

#[test]
fn the_retry_delay_doubles_up_to_the_longest() {
    let options =
        ConsumerOptions::default().retry(Duration::from_millis(100), Duration::from_secs(1));
    let delays: Vec<u64> = [0, 1, 2, 3, 4, 40]
        .map(|r| options.retry_delay(r).as_millis() as u64)
        .to_vec();
    assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
    let zero = ConsumerOptions::default().retry(Duration::ZERO, Duration::from_secs(1));
    assert_eq!(zero.retry_delay(5), Duration::ZERO);
    // A `first` above `longest` is cut to `longest`.
    let cut = ConsumerOptions::default().retry(Duration::from_secs(9), Duration::from_secs(2));
    assert_eq!(cut.retry_delay(0), Duration::from_secs(2));
}
