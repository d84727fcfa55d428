//! Queue ages on the server's clock: an enqueue dates its item with the server's time,
//! two clients read one age, and held and acknowledged items have none.

use std::time::Duration;

use distsync_kv::kv::{Kv, Range};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oldest_age_is_on_the_servers_clock_for_every_client() {
    let Some((kv, url, a, b)) = two_clients().await else {
        return;
    };
    let producer = a.queue("jobs").unwrap();
    let observer = b.queue("jobs").unwrap();
    assert_eq!(observer.oldest_age().await.unwrap(), None);

    let before = kv.clock().await.unwrap().unwrap();
    producer.enqueue("first").await.unwrap();
    let after = kv.clock().await.unwrap().unwrap();
    // The item's time key holds the server's time of the enqueue, in nanoseconds.
    let times = kv.range(Range::prefix("/queue/jobs/t/")).await.unwrap();
    assert_eq!(times.kvs.len(), 1, "{times:?}");
    let dated = std::str::from_utf8(&times.kvs[0].value).unwrap();
    let dated = Duration::from_nanos(dated.parse().unwrap());
    assert!(
        before <= dated && dated <= after,
        "dated {dated:?}, not within {before:?}..{after:?}"
    );

    // Both clients read the same age: the server's time less that date.
    let from_a = producer.oldest_age().await.unwrap().unwrap();
    let from_b = observer.oldest_age().await.unwrap().unwrap();
    let since = kv.clock().await.unwrap().unwrap() - dated;
    assert!(
        from_a <= from_b && from_b <= since,
        "{from_a:?} {from_b:?} {since:?}"
    );
    assert!(since < PATIENCE, "{since:?}");

    // A held item has no age; put back, it has its first date again; acknowledged,
    // none.
    let session = b.session().await.unwrap();
    let delivery = observer.receive(&session).await.unwrap();
    assert_eq!(producer.oldest_age().await.unwrap(), None);
    delivery.nack().await.unwrap();
    let back = producer.oldest_age().await.unwrap().unwrap();
    assert!(back >= from_b, "{back:?} after {from_b:?}");
    observer
        .receive(&session)
        .await
        .unwrap()
        .ack()
        .await
        .unwrap();
    assert_eq!(producer.oldest_age().await.unwrap(), None);
    assert!(kv
        .range(Range::prefix("/queue/jobs/t/"))
        .await
        .unwrap()
        .kvs
        .is_empty());
    session.close().await.unwrap();
    drop_tables(&kv, &url).await;
}
