//! The counter and the count-down latch: one key each, changed by compare-and-set on
//! its sequence.
//!
//! A counter `<name>` is the key `counter.<name>`, its value in decimal; a missing key
//! or a tombstone reads 0. A latch is `latch.<name>`, `<initial> <remaining>` in
//! decimal. Every change reads the key's last message and writes the new value with
//! `Nats-Expected-Last-Subject-Sequence` = its sequence (0 where it has none):
//! JetStream stores it only if nobody wrote in between, so concurrent changes are
//! never lost, and a refused compare wrote nothing and is tried again. A write whose
//! answer is lost is never sent again: its error says it may have been applied.
//!
//! A latch's waiters, and a counter's `changed`, watch its key from the sequence they
//! read + 1 and read again on every message. Neither keeps anything of a session.

use distsync_core::raw::Look::{NotYet, Ready};
use distsync_core::raw::Make;
use distsync_core::raw::RetryPolicy;
use std::sync::Arc;

use async_trait::async_trait;
use distsync_core::counter::{checked_add, Counter};
use distsync_core::latch::{check_initial_count, CountDownLatch};
use distsync_core::{Error, Name, Result};
use futures::StreamExt;

use crate::keys::{self, Kind};
use crate::shared::Shared;
use crate::store::Write;
use crate::BACKEND;

/// A key's value as `parse` reads it (`None`: no message, or a tombstone) and the
/// sequence to compare against (0: no message); `what` names the value in the error
/// of a key that holds another.
async fn read<T>(
    shared: &Shared,
    key: &str,
    parse: fn(&[u8]) -> Option<T>,
    what: &str,
) -> Result<(Option<T>, u64)> {
    match shared.store.last(key).await? {
        None => Ok((None, 0)),
        Some(entry) if !entry.live() => Ok((None, entry.seq)),
        Some(entry) => {
            let value = parse(&entry.value)
                .ok_or_else(|| Error::backend(BACKEND, format!("{key} does not hold {what}")))?;
            Ok((Some(value), entry.seq))
        }
    }
}

/// A counter's value as its key holds it (decimal), if it holds one.
pub(crate) fn parse_counter(value: &[u8]) -> Option<i64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

/// A latch's initial and remaining counts as its key holds them
/// (`<initial> <remaining>`), if it holds them.
pub(crate) fn parse_latch(value: &[u8]) -> Option<(u64, u64)> {
    let (initial, remaining) = std::str::from_utf8(value).ok()?.split_once(' ')?;
    Some((initial.parse().ok()?, remaining.parse().ok()?))
}

/// Writes `text` to `key` if it is still at `seq`; `Ok(false)` when it changed.
async fn swap(shared: &Shared, key: &str, seq: u64, text: String) -> Result<bool> {
    let write = Write::put(key, text).if_at(seq);
    Ok(shared.store.publish(write).await?.compared()?.is_some())
}

/// The counter `name`.
pub(crate) struct NatsCounter {
    shared: Arc<Shared>,
    name: Name,
    key: String,
}

impl NatsCounter {
    /// The value and the sequence to compare against.
    async fn current(&self) -> Result<(i64, u64)> {
        let (value, seq) = read(&self.shared, &self.key, parse_counter, "an i64").await?;
        Ok((value.unwrap_or(0), seq))
    }

    /// Replaces the value by `change(current)` atomically; `None` from `change` leaves
    /// it. Returns the value it was replaced by or left at, and whether it changed.
    async fn update(
        &self,
        mut change: impl FnMut(i64) -> Result<Option<i64>> + Send,
    ) -> Result<(i64, bool)> {
        loop {
            let (value, seq) = self.current().await?;
            let Some(new) = change(value)? else {
                return Ok((value, false));
            };
            if swap(&self.shared, &self.key, seq, new.to_string()).await? {
                return Ok((new, true));
            }
        }
    }
}

#[async_trait]
impl Counter for NatsCounter {
    fn name(&self) -> &Name {
        &self.name
    }

    async fn get(&self) -> Result<i64> {
        Ok(self.current().await?.0)
    }

    async fn add(&self, delta: i64) -> Result<i64> {
        let name = self.name.clone();
        Ok(self
            .update(|value| checked_add(&name, value, delta).map(Some))
            .await?
            .0)
    }

    async fn compare_and_set(&self, expected: i64, new: i64) -> Result<bool> {
        let (_, changed) = self
            .update(|value| Ok((value == expected).then_some(new)))
            .await?;
        Ok(changed)
    }

    async fn set(&self, value: i64) -> Result<()> {
        let write = Write::put(self.key.as_str(), value.to_string());
        self.shared.store.publish(write).await?.compared().map(drop)
    }

    /// Watches the key from the sequence after the value read, as a latch's waiters do,
    /// rather than reading every poll period: what a standby candidate of a hand-over
    /// waits on (see `distsync_core::hand_over`).
    async fn changed(&self, seen: i64) -> Result<i64> {
        watch_until(&self.shared, &self.key, "a counter change", || async {
            let (value, seq) = self.current().await?;
            Ok(((value != seen).then_some(value), seq))
        })
        .await
    }
}

/// Waits until `look` (a read of `key`, answering what it waits for, if there, and the
/// sequence it read the key at) answers `Some`, watching `key` from the sequence after
/// each read, so that no change after the read is missed; `what` names the wait in an
/// outage's log lines.
///
/// # Cancel safety
/// Cancel-safe: it only reads and watches, and a dropped watch deletes its consumer.
pub(crate) async fn watch_until<T, F, Fut>(
    shared: &Shared,
    key: &str,
    what: &'static str,
    look: F,
) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(Option<T>, u64)>>,
{
    RetryPolicy::default()
        .wait_until(what, None, || async {
            Ok(match look().await? {
                (Some(found), _) => Ready(found),
                (None, seq) => NotYet(async move {
                    let mut events = shared.store.watch(key, seq + 1).await?;
                    events.next().await.transpose().map(drop)
                }),
            })
        })
        .await
}

/// The count-down latch `name`.
pub(crate) struct NatsLatch {
    shared: Arc<Shared>,
    name: Name,
    key: String,
    initial: u64,
}

impl NatsLatch {
    /// The remaining count and the sequence to compare against; a missing latch is
    /// at this handle's initial count.
    async fn current(&self) -> Result<(u64, u64)> {
        let (latch, seq) = read(&self.shared, &self.key, parse_latch, "a latch").await?;
        let Some((initial, remaining)) = latch else {
            return Ok((self.initial, seq));
        };
        check_initial_count(&self.name, self.initial, initial)?;
        Ok((remaining, seq))
    }
}

#[async_trait]
impl CountDownLatch for NatsLatch {
    fn name(&self) -> &Name {
        &self.name
    }

    fn initial_count(&self) -> u64 {
        self.initial
    }

    async fn count(&self) -> Result<u64> {
        Ok(self.current().await?.0)
    }

    async fn count_down(&self) -> Result<u64> {
        loop {
            let (remaining, seq) = self.current().await?;
            if remaining == 0 {
                return Ok(0);
            }
            let left = remaining - 1;
            let text = format!("{} {left}", self.initial);
            if swap(&self.shared, &self.key, seq, text).await? {
                return Ok(left);
            }
        }
    }

    async fn wait(&self) -> Result<()> {
        watch_until(&self.shared, &self.key, "a latch", || async {
            let (remaining, seq) = self.current().await?;
            Ok(((remaining == 0).then_some(()), seq))
        })
        .await
    }
}

impl Make<Arc<Shared>, Name> for NatsCounter {
    fn make(context: &Arc<Shared>, name: Name) -> Result<Self> {
        Ok(Self {
            key: keys::key(Kind::Counter, &name),
            shared: Arc::clone(context),
            name,
        })
    }
}

impl Make<Arc<Shared>, (Name, u64)> for NatsLatch {
    fn make(context: &Arc<Shared>, (name, initial): (Name, u64)) -> Result<Self> {
        Ok(Self {
            key: keys::key(Kind::Latch, &name),
            shared: Arc::clone(context),
            name,
            initial,
        })
    }
}
