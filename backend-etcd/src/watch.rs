//! Watches: one gRPC watch stream per watch, so that dropping it cancels it.

use distsync_core::kv::{EventKind, Revision, WatchEvent, WatchResponse};
use distsync_core::Result;
use etcd_client::{EventType, WatchOptions, WatchStream};
use futures::stream::{self, BoxStream, StreamExt};

use crate::error::{protocol, to_error, BACKEND};
use crate::kv::key_value;
use crate::retry::{Idempotence, RetryPolicy};

/// Opens a watch on `key` (a prefix when `prefix`) from `start_revision` and waits
/// until etcd has created it, so that a watch etcd refuses is an error here rather than
/// an empty stream.
///
/// The stream yields events in revision order, [`WatchResponse::Compacted`] (then ends)
/// when `start_revision` was compacted away, and ends without an item when etcd cancels
/// the watch or the connection to the member serving it breaks: callers re-read and
/// watch again, which reaches a live member. Dropping the stream closes its gRPC
/// stream, and etcd then cancels the watch.
pub(crate) async fn open(
    client: &etcd_client::Client,
    retry: &RetryPolicy,
    key: &str,
    prefix: bool,
    start_revision: Revision,
) -> Result<BoxStream<'static, Result<WatchResponse>>> {
    let mut options = WatchOptions::new().with_start_revision(start_revision);
    if prefix {
        options = options.with_prefix();
    }
    let created = retry
        .run("watch", Idempotence::Idempotent, || {
            let mut watch_client = client.watch_client();
            let options = options.clone();
            let key = key.to_owned();
            async move {
                let mut watch = watch_client.watch(key, Some(options)).await?;
                // The first answer on a fresh stream says whether the watch was created.
                match watch.message().await? {
                    Some(created) if created.created() && !created.canceled() => Ok(Ok(watch)),
                    Some(refused) => Ok(Err(refused.cancel_reason().to_owned())),
                    None => Err(etcd_client::Error::WatchError(
                        "the watch stream closed before the watch was created".into(),
                    )),
                }
            }
        })
        .await
        .map_err(to_error)?;
    let watch = created.map_err(|reason| protocol(format!("etcd refused the watch: {reason}")))?;
    Ok(events(watch))
}

/// What the adapter does after one message.
enum Next {
    Yield(WatchResponse),
    Skip,
    End,
}

fn events(watch: WatchStream) -> BoxStream<'static, Result<WatchResponse>> {
    stream::unfold(Some(watch), |watch| async move {
        let mut watch = watch?;
        loop {
            let next = match watch.message().await {
                Ok(Some(response)) => translate(&response),
                Ok(None) => {
                    tracing::debug!(backend = BACKEND, "watch stream closed by the server");
                    Next::End
                }
                Err(error) => {
                    tracing::debug!(backend = BACKEND, %error, "watch stream broke");
                    Next::End
                }
            };
            match next {
                Next::Yield(item @ WatchResponse::Compacted(_)) => return Some((Ok(item), None)),
                Next::Yield(item) => return Some((Ok(item), Some(watch))),
                Next::Skip => continue,
                Next::End => return None,
            }
        }
    })
    .boxed()
}

fn translate(response: &etcd_client::WatchResponse) -> Next {
    if response.canceled() {
        if response.compact_revision() > 0 {
            return Next::Yield(WatchResponse::Compacted(response.compact_revision()));
        }
        tracing::debug!(
            backend = BACKEND,
            reason = response.cancel_reason(),
            "etcd cancelled the watch"
        );
        return Next::End;
    }
    if response.compact_revision() > 0 {
        // etcd sets `canceled` with a compact revision; should it not, the watch is
        // dead all the same.
        return Next::Yield(WatchResponse::Compacted(response.compact_revision()));
    }
    let events: Vec<WatchEvent> = response
        .events()
        .iter()
        .filter_map(|event| {
            let kv = event.kv()?;
            let kind = match event.event_type() {
                EventType::Put => EventKind::Put,
                EventType::Delete => EventKind::Delete,
            };
            Some(WatchEvent {
                kind,
                kv: key_value(kv),
            })
        })
        .collect();
    if events.is_empty() {
        // Progress notifications and the like.
        Next::Skip
    } else {
        Next::Yield(WatchResponse::Events(events))
    }
}
