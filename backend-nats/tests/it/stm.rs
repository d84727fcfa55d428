//! STM on the NATS backend against a real nats-server: what a transaction body reads
//! at its snapshot.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use distsync_core::stm::StmOptions;
use distsync_core::{Coordinator, Isolation};

/// Commits `key = value` through `coordinator`.
async fn put(coordinator: &Coordinator, key: &'static str, value: &'static str) {
    coordinator
        .stm()
        .expect("stm")
        .atomically(Isolation::SerializableSnapshot, move |tx| async move {
            tx.put(key, value);
            Ok(())
        })
        .await
        .expect("a transaction");
}

/// A key another client rewrites after a transaction took its snapshot is never read
/// as missing by the body. The bucket keeps one message a key, so the key's message
/// at the snapshot is gone once it is rewritten: the attempt is retried on a newer
/// snapshot instead, where the body reads the new value.
#[tokio::test]
async fn a_key_rewritten_after_the_snapshot_is_never_read_as_missing() {
    let bucket = crate::common::unique_name("it-stm-snapshot");
    let Some(url) = crate::common::url(bucket.as_str()) else {
        return;
    };
    let reader = distsync::connect(&url).await.expect("connecting");
    let writer = distsync::connect(&url).await.expect("connecting");
    put(&writer, "a", "1").await;
    put(&writer, "b", "1").await;

    let seen: Arc<Mutex<Vec<Option<Bytes>>>> = Arc::default();
    let rewritten = Arc::new(AtomicBool::new(false));
    let committed = reader
        .stm()
        .expect("stm")
        .atomically_with(
            Isolation::SerializableSnapshot,
            &StmOptions::with_max_attempts(5),
            |tx| {
                let (writer, seen) = (writer.clone(), Arc::clone(&seen));
                let rewritten = Arc::clone(&rewritten);
                async move {
                    // The first read takes the snapshot.
                    tx.get("a").await?;
                    if !rewritten.swap(true, Ordering::SeqCst) {
                        put(&writer, "b", "2").await;
                    }
                    let b = tx.get("b").await?;
                    seen.lock().unwrap().push(b.clone());
                    Ok(b)
                }
            },
        )
        .await
        .expect("the transaction commits");

    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(Option::is_some),
        "the body read b, which existed at every snapshot, as missing: {seen:?}"
    );
    assert_eq!(committed.value, Some(Bytes::from_static(b"2")));
    assert!(
        committed.attempts >= 2,
        "the rewrite after the first attempt's snapshot did not make it retry \
         ({} attempt)",
        committed.attempts
    );

    let server = url
        .split_once("/?")
        .map_or(url.as_str(), |(server, _)| server);
    let client = async_nats::connect(server).await.expect("a raw client");
    async_nats::jetstream::new(client)
        .delete_stream(format!("KV_{}", bucket.as_str()))
        .await
        .expect("deleting the bucket");
}
