//! `rslock` (Redlock) on the one Redis server.
//!
//! rslock has no wait line: `lock` makes a few tries (3 by default) with a random
//! sleep between them (up to 200 ms by default), then gives up, and `acquire` repeats
//! `lock` until it wins. The uncontended cycle uses `lock`; the contended case
//! ([`crate::contended`]) uses `acquire`, once with rslock's default retry delay and
//! once with a short one, to show what the sleep costs a waiter and what a short one
//! costs the server.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use rslock::LockManager;

use crate::contender::{started, Cycler, Role, Started};
use crate::Result;

/// The lock TTL, etcd's `concurrency` default: far longer than a hold, which lasts one
/// cycle.
const TTL: Duration = Duration::from_secs(60);

/// The label of this row.
pub const LABEL: &str = "rslock 0.10 (lock + unlock)";

/// The label of the contended row with rslock's default retry delay.
pub const ACQUIRE_LABEL: &str =
    "rslock 0.10, default retry (acquire + unlock; a retry sleeps 0–200 ms)";

/// The label of the contended row with [`SHORT_RETRY_DELAY`].
pub const ACQUIRE_SHORT_LABEL: &str =
    "rslock 0.10, 10 ms retry (acquire + unlock; a retry sleeps 0–10 ms, set_retry)";

/// The retry delay of the second contended row: rslock sleeps a random time below it
/// between tries.
pub const SHORT_RETRY_DELAY: Duration = Duration::from_millis(10);

/// How many tries one `lock` makes in the contended rows, rslock's default (`acquire`
/// repeats `lock` anyway).
const RETRY_COUNT: u32 = 3;

/// `LockManager::lock(resource, ttl)` (or `acquire`, which retries until it wins)
/// then `LockManager::unlock(&lock)`.
struct Rslock {
    manager: LockManager,
    resource: Vec<u8>,
    /// Whether to wait (`acquire`) rather than fail when the lock is taken.
    waiting: bool,
    /// How long the last acquisition took, when waiting.
    wait: Option<Duration>,
}

/// A lock manager for the server of the distsync URL `url`.
pub async fn start(url: &str, name: &str) -> Started {
    let made = crate::raw::redis::server_url(url).map(|server| Rslock {
        manager: LockManager::new(vec![server]),
        resource: name.as_bytes().to_vec(),
        waiting: false,
        wait: None,
    });
    started(LABEL, Role::Peer, made)
}

/// A lock manager for the server of the distsync URL `url` whose cycle waits for the
/// lock (`acquire`), retrying with rslock's default delay or, with `short`, with
/// [`SHORT_RETRY_DELAY`].
pub async fn start_waiting(url: &str, name: &str, short: bool) -> Started {
    let made = crate::raw::redis::server_url(url).map(|server| {
        let mut manager = LockManager::new(vec![server]);
        if short {
            manager.set_retry(RETRY_COUNT, SHORT_RETRY_DELAY);
        }
        Rslock {
            manager,
            resource: name.as_bytes().to_vec(),
            waiting: true,
            wait: None,
        }
    });
    let label = if short {
        ACQUIRE_SHORT_LABEL
    } else {
        ACQUIRE_LABEL
    };
    started(label, Role::Peer, made)
}

#[async_trait]
impl Cycler for Rslock {
    async fn cycle(&mut self) -> Result<()> {
        let resource = self.resource.as_slice();
        let lock = if self.waiting {
            self.wait = None;
            let asked = Instant::now();
            let lock = self.manager.acquire_no_guard(resource, TTL).await;
            self.wait = Some(asked.elapsed());
            lock
        } else {
            self.manager.lock(resource, TTL).await
        }
        .map_err(|error| format!("rslock: {error:?}"))?;
        self.manager.unlock(&lock).await;
        Ok(())
    }

    fn last_wait(&self) -> Option<Duration> {
        self.wait
    }
}
