//! Idempotent enqueues: a lost reply to an enqueue, retried by the library under the
//! call's own key or by the caller under a key of its own, never duplicates the item;
//! and one key enqueued by several producers at once appends one item.

use std::sync::Arc;

use distsync_core::queue::{Enqueued, IdempotencyKey};
use distsync_core::{Bytes, Queue};

use super::{summary, tally};
use crate::check::{
    ensure, proxied_client, within_check, Bounded, Check, Context, Holds, LONG, PROMPT,
};
use crate::faults::PartitionMode;
use crate::harness::Harness;

/// Items enqueued through the lossy path.
const ITEMS: usize = 30;

/// How many times the caller repeats one keyed enqueue before the case gives up.
const CALLER_ATTEMPTS: usize = 20;

/// Lost replies to enqueues: a producer reaches the store through the partition proxy,
/// which, before each enqueue, is set to drop the store's answer after 0, 1 or 2
/// answers and reset that connection (the request reached the store whole, so it may
/// be applied). Even items go through `enqueue_once`, which the caller repeats with the
/// same key until it answers; odd items through a plain `enqueue`, not repeated by the
/// caller (its own retries reuse the key it drew). A direct client then drains the
/// queue: every keyed item is there exactly once, and every plain item at most once,
/// exactly once when its `enqueue` answered `Ok`.
pub(super) async fn lost_replies_to_enqueues(h: Harness) -> Check {
    let name = h.name("idempotent").ctx("naming the queue")?;
    let partition = proxied_client(h.faults(), h.backend().as_ref(), "", "the producer").await?;
    let producer = partition
        .backend()
        .queue(name.clone())
        .ctx("making the producer")?;
    let mut must = Vec::new();
    let mut may = Vec::new();
    let (mut caller_retries, mut plain_failures) = (0usize, 0usize);
    for i in 0..ITEMS {
        let item = Bytes::from(format!("item-{i:03}"));
        let after = u8::try_from(i / 2 % 3).unwrap_or(0);
        if i % 2 == 0 {
            let key = IdempotencyKey::new(format!("item-{i:03}")).ctx("making a key")?;
            let mut attempts = 0;
            loop {
                attempts += 1;
                // Only the first attempt of each item loses a reply.
                partition.set(if attempts == 1 {
                    PartitionMode::LoseReply { after }
                } else {
                    PartitionMode::Forward
                });
                let call = producer.enqueue_once(&key, item.clone(), 0);
                match tokio::time::timeout(PROMPT, call).await {
                    Ok(Ok(_)) => break,
                    Ok(Err(error)) if error.is_transient() => {}
                    Ok(Err(error)) => {
                        return Err(crate::check::Fail::Violated(format!(
                            "enqueue_once of {key} failed: {error}"
                        )))
                    }
                    Err(_) => {}
                }
                caller_retries += 1;
                ensure!(
                    attempts < CALLER_ATTEMPTS,
                    "enqueue_once of {key} did not succeed in {CALLER_ATTEMPTS} attempts"
                );
            }
            must.push(item);
        } else {
            partition.set(PartitionMode::LoseReply { after });
            match tokio::time::timeout(PROMPT, producer.enqueue(item.clone())).await {
                Ok(Ok(())) => must.push(item),
                _ => {
                    plain_failures += 1;
                    may.push(item);
                }
            }
        }
    }
    partition.set(PartitionMode::Forward);
    let drain = h.backend().queue(name).ctx("making the draining client")?;
    let mut delivered = Vec::new();
    while let Some(item) = drain.try_dequeue().bounded("draining").await? {
        delivered.push(item);
    }
    let (counts, twice) = tally(&delivered);
    ensure!(twice.is_empty(), "enqueued twice: {}", summary(&twice));
    let missing: Vec<String> = must
        .iter()
        .filter(|item| !counts.contains_key(*item))
        .map(|item| String::from_utf8_lossy(item).into_owned())
        .collect();
    ensure!(
        missing.is_empty(),
        "acknowledged enqueues missing: {}",
        summary(&missing)
    );
    let strangers = counts
        .keys()
        .filter(|item| !must.contains(item) && !may.contains(item))
        .count();
    ensure!(strangers == 0, "{strangers} items nobody enqueued came out");
    drop(partition);
    Ok(Holds::figure(
        format!(
            "{} items once each ({caller_retries} caller retries under the same key, \
             {plain_failures} plain enqueues failed)",
            delivered.len()
        ),
        "enqueues whose replies were lost were retried under their keys without a duplicate",
    ))
}

/// Producers sharing keys: every key is enqueued once by each of several producers
/// (each its own queue handle) at the same time, in different orders; the queue then
/// holds one item per key, and exactly one producer was told `Enqueued::New` for each.
pub(super) async fn one_key_from_many_producers(h: Harness) -> Check {
    const PRODUCERS: usize = 4;
    const KEYS: usize = 12;
    let name = h.name("shared-keys").ctx("naming the queue")?;
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let queue: Arc<dyn Queue> =
            Arc::from(h.backend().queue(name.clone()).ctx("making a producer")?);
        producers.push(async move {
            let mut new = Vec::new();
            for k in 0..KEYS {
                // Each producer starts elsewhere in the keys.
                let k = (k + p * KEYS / PRODUCERS) % KEYS;
                let key = IdempotencyKey::new(format!("order-{k}")).ctx("making a key")?;
                let item = Bytes::from(format!("order-{k} from {p}"));
                let enqueued = queue
                    .enqueue_once(&key, item, 0)
                    .bounded("enqueue_once")
                    .await?;
                if enqueued == Enqueued::New {
                    new.push(k);
                }
            }
            Ok(new)
        });
    }
    let producing = futures::future::try_join_all(producers);
    let answers: Vec<Vec<usize>> = within_check(LONG, "the producers", producing).await?;
    let mut told_new = vec![0usize; KEYS];
    for new in &answers {
        for &k in new {
            told_new[k] += 1;
        }
    }
    ensure!(
        told_new.iter().all(|&n| n == 1),
        "producers told Enqueued::New per key: {told_new:?} (want one each)"
    );
    let queue = h.backend().queue(name).ctx("making the draining client")?;
    let mut delivered = Vec::new();
    while let Some(item) = queue.try_dequeue().bounded("draining").await? {
        delivered.push(String::from_utf8_lossy(&item).into_owned());
    }
    let mut orders: Vec<&str> = delivered
        .iter()
        .filter_map(|item| item.split(' ').next())
        .collect();
    orders.sort_unstable();
    orders.dedup();
    ensure!(
        delivered.len() == KEYS && orders.len() == KEYS,
        "{} items for {KEYS} keys: {}",
        delivered.len(),
        summary(&delivered)
    );
    let again = IdempotencyKey::new("order-0").ctx("making a key")?;
    let repeated = queue
        .enqueue_once(&again, Bytes::from_static(b"late"), 0)
        .bounded("enqueue_once after the items were consumed")
        .await?;
    ensure!(
        repeated == Enqueued::Duplicate,
        "a key consumed within the window enqueued again ({repeated:?})"
    );
    Ok(Holds::figure(
        format!("{KEYS} items from {PRODUCERS} producers x {KEYS} keys"),
        "one item and one Enqueued::New per key; a consumed key is still a duplicate",
    ))
}
