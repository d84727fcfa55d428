//! Queue items survive replies lost to connection resets on a real etcd
//! (`DISTSYNC_ETCD_URL`): a consumer reaches etcd through a partition proxy that
//! resets every connection every few milliseconds, so claims whose transaction was
//! applied lose their reply, and dequeues are dropped by their timeout mid-claim.
//! Every item must still be delivered exactly once (to that consumer, or afterwards,
//! by a direct client draining what was put back), and every in-flight record is
//! acknowledged or put back. (A typical run sees
//! claims found after a lost reply, retried acknowledgements and a dozen put-backs.)

use crate::common;
use distsync_core::Primitives;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use distsync_conformance::faults::proxy::{PartitionMode, Proxy};
use distsync_core::{Backend, Name};
use tokio::time::Instant;

use common::{etcd_url, unique};

const ITEMS: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_survive_lost_claim_replies() {
    let Some(url) = etcd_url() else {
        return;
    };
    let url = format!("{url}/{}/", unique("distsync-test/queue-faults"));
    let direct = distsync_etcd::backend(&url).await.unwrap();
    let (proxy, proxied_url) = Proxy::front(&url).await.unwrap();
    let proxied = distsync_etcd::backend(&proxied_url).await.unwrap();
    let name = Name::new("jobs").unwrap();
    let producer = direct.queue(name.clone()).unwrap();
    for i in 0..ITEMS {
        producer.enqueue(format!("item-{i:03}")).await.unwrap();
    }

    let consumer = proxied.queue(name.clone()).unwrap();
    // The faults go on for at least FAULTS, and until an item has got through the proxy
    // (a loaded machine may let none through in the first seconds), within DEADLINE.
    const FAULTS: Duration = Duration::from_secs(4);
    const DEADLINE: Duration = Duration::from_secs(60);
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let faults = tokio::spawn(async move {
        let mut round = 0u64;
        while !*stopped.borrow_and_update() {
            round += 1;
            tokio::time::sleep(Duration::from_millis(15 + round * 7 % 20)).await;
            proxy.set(PartitionMode::Reset);
            tokio::time::sleep(Duration::from_millis(5 + round * 3 % 10)).await;
            proxy.heal();
        }
        proxy
    });
    let started = Instant::now();
    let mut delivered: Vec<Bytes> = Vec::new();
    let mut limits = [1u64, 3, 10, 50, 200].into_iter().cycle();
    let mut failed = 0usize;
    while (started.elapsed() < FAULTS || delivered.is_empty()) && started.elapsed() < DEADLINE {
        let limit = Duration::from_millis(limits.next().unwrap_or(10));
        match tokio::time::timeout(limit, consumer.try_dequeue()).await {
            Ok(Ok(Some(item))) => delivered.push(item),
            Ok(Err(_)) => failed += 1,
            Ok(Ok(None)) | Err(_) => {}
        }
        // Spread the dequeues over the whole fault period.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    stop.send_replace(true);
    assert!(
        !delivered.is_empty(),
        "no item got through the proxy in {DEADLINE:?} of faults ({failed} dequeues failed)"
    );
    let proxy = faults.await.unwrap();
    proxy.heal();

    // What was not delivered is in the queue, or on its way back (claims and put-backs
    // finish in the background): drain it through a direct client.
    let drain = direct.queue(name).unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    while delivered.len() < ITEMS && Instant::now() < deadline {
        match drain.try_dequeue().await.unwrap() {
            Some(item) => delivered.push(item),
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let mut counts = BTreeMap::<Bytes, usize>::new();
    for item in &delivered {
        *counts.entry(item.clone()).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    assert_eq!(
        counts.len(),
        ITEMS,
        "items lost: {} of {ITEMS} seen",
        counts.len()
    );
    assert_eq!(drain.try_dequeue().await.unwrap(), None);
    // A delivered item's in-flight record is deleted in the background, and an
    // acknowledgement whose reply the proxy reset waits out its backoff before it
    // repeats: every record goes within the deadline.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let snapshot = direct.export().await.unwrap();
        if snapshot.queue_items() == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "in-flight records left: {snapshot:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
