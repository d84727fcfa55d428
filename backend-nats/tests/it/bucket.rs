//! The bucket check: a bucket without what the backend relies on is refused with a
//! typed error naming what it lacks, and nothing is written to it.

use async_nats::jetstream::stream::Config;
use distsync_core::Error;

/// Makes the stream of `bucket` as the `nats` CLI makes a key-value bucket by default:
/// no per-message TTLs, no delete markers, no atomic batches.
async fn cli_like_bucket(server: &str, bucket: &str) -> async_nats::jetstream::Context {
    let client = async_nats::connect(server).await.expect("connecting");
    let jetstream = async_nats::jetstream::new(client);
    let _ = jetstream.delete_stream(format!("KV_{bucket}")).await;
    jetstream
        .create_stream(Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            allow_direct: true,
            allow_rollup: true,
            deny_delete: true,
            ..Config::default()
        })
        .await
        .expect("making the bucket");
    jetstream
}

#[tokio::test]
async fn a_bucket_without_ttls_or_atomic_batches_is_refused() {
    let Some(url) = crate::common::url("it-cli-made") else {
        return;
    };
    let server = url
        .split_once("/?")
        .map_or(url.as_str(), |(server, _)| server);
    let jetstream = cli_like_bucket(server, "it-cli-made").await;
    match distsync_nats::backend(&url).await {
        Err(Error::InvalidArgument(reason)) => {
            for lacking in ["allow_msg_ttl", "subject_delete_marker_ttl", "allow_atomic"] {
                assert!(reason.contains(lacking), "{reason}");
            }
            assert!(!reason.contains("allow_direct"), "{reason}");
        }
        other => panic!("a bucket without ttls was accepted: {other:?}"),
    }
    let stream = crate::common::bucket_stream(&jetstream, "it-cli-made").await;
    let state = crate::common::stream_state(&stream).await;
    assert_eq!(state.messages, 0, "the refused bucket was written to");
    jetstream
        .delete_stream("KV_it-cli-made")
        .await
        .expect("deleting the bucket");
}

/// A bucket with everything but one message per key: nats-server 2.15 does not expire
/// rewritten keys' TTLs in it (see `src/bucket.rs`), so it is refused.
#[tokio::test]
async fn a_bucket_keeping_history_is_refused() {
    let Some(url) = crate::common::url("it-history") else {
        return;
    };
    let server = url
        .split_once("/?")
        .map_or(url.as_str(), |(server, _)| server);
    let client = async_nats::connect(server).await.expect("connecting");
    let jetstream = async_nats::jetstream::new(client);
    let _ = jetstream.delete_stream("KV_it-history").await;
    jetstream
        .create_stream(Config {
            name: "KV_it-history".to_owned(),
            subjects: vec!["$KV.it-history.>".to_owned()],
            max_messages_per_subject: 16,
            allow_direct: true,
            allow_rollup: true,
            allow_message_ttl: true,
            subject_delete_marker_ttl: Some(std::time::Duration::from_secs(60)),
            allow_atomic_publish: true,
            ..Config::default()
        })
        .await
        .expect("making the bucket");
    match distsync_nats::backend(&url).await {
        Err(Error::InvalidArgument(reason)) => {
            assert!(reason.contains("max_msgs_per_subject"), "{reason}");
            assert!(!reason.contains("allow_atomic"), "{reason}");
        }
        other => panic!("a bucket keeping 16 messages per key was accepted: {other:?}"),
    }
    jetstream
        .delete_stream("KV_it-history")
        .await
        .expect("deleting the bucket");
}

#[tokio::test]
async fn a_bucket_made_by_the_backend_is_accepted_again() {
    let Some(url) = crate::common::url("it-made") else {
        return;
    };
    let first = distsync_nats::backend(&url)
        .await
        .expect("making the bucket");
    drop(first);
    let again = distsync_nats::backend(&url)
        .await
        .expect("checking the bucket");
    assert_eq!(again.config().bucket(), "it-made");
}
