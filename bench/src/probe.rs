//! Evidence for the analysis: how fast etcd delivers an event to a watch, depending on
//! the revision the watch starts from.
//!
//! etcd serves a watch whose start revision is already in the past ("unsynced") from a
//! background loop that catches such watches up every 100 ms; a watch from the next
//! revision is served as writes happen. Each probe opens a watch on a fresh key from
//! the revision after a read, makes one unrelated write first (unsynced) or not
//! (synced), then puts the key and times the event.

use crate::stats::Samples;

/// Watch delivery latencies, started from the next revision and from a past one.
#[derive(Debug, Default)]
pub struct WatchDelivery {
    /// Watch from the revision after the current one: put → event.
    pub synced: Samples,
    /// Watch from a revision already written when the watch is created: put → event.
    pub unsynced: Samples,
    /// Why the probe stopped early, if it did.
    pub error: Option<String>,
}

/// Runs `count` probes of each kind against the etcd of the distsync URL `url`.
#[cfg(feature = "etcd")]
pub async fn etcd_watch_delivery(url: &str, name: &str, count: usize) -> WatchDelivery {
    let mut result = WatchDelivery::default();
    if let Err(error) = probe(url, name, count, &mut result).await {
        result.error = Some(error.to_string());
    }
    result
}

#[cfg(feature = "etcd")]
async fn probe(
    url: &str,
    name: &str,
    count: usize,
    result: &mut WatchDelivery,
) -> crate::Result<()> {
    use std::time::{Duration, Instant};

    use etcd_client::{GetOptions, WatchOptions};

    let mut client = crate::raw::etcd::client(url).await?;
    let wait = Duration::from_secs(2);
    for round in 0..count {
        for unsynced in [false, true] {
            let key = format!("{name}/{round}-{unsynced}");
            let read = client
                .get(key.as_str(), Some(GetOptions::new().with_count_only()))
                .await?;
            let revision = read.header().ok_or("no header")?.revision();
            if unsynced {
                client.put(format!("{name}/other"), "", None).await?;
            }
            let mut watch = client
                .watch_client()
                .watch(
                    key.as_str(),
                    Some(WatchOptions::new().with_start_revision(revision + 1)),
                )
                .await?;
            // Put only once etcd has created the watch, so the put cannot precede it.
            let created = tokio::time::timeout(wait, watch.message())
                .await
                .map_err(|_| "the watch was not created within 2 s")??
                .ok_or("the watch ended")?;
            if !created.created() {
                return Err("the first watch answer was not its creation".into());
            }
            let start = Instant::now();
            client.put(key.as_str(), "x", None).await?;
            let deadline = start + wait;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let message = tokio::time::timeout(left, watch.message())
                    .await
                    .map_err(|_| "no watch event within 2 s")??
                    .ok_or("the watch ended")?;
                if !message.events().is_empty() {
                    break;
                }
            }
            let elapsed = start.elapsed();
            if unsynced {
                result.unsynced.push(elapsed);
            } else {
                result.synced.push(elapsed);
            }
            client.delete(key.as_str(), None).await?;
        }
    }
    client.delete(format!("{name}/other"), None).await?;
    Ok(())
}
