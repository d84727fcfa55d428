//! Work spread across replicas: three workers share the 64 shards of a work table
//! (`Coordinator::shards`). Each works only on the shards it owns, one transaction per
//! item, writing with the shard's fencing token; half-way through, one worker is killed
//! (its session ended from the store side, as a crash or a partition would end it, and
//! its loop stopped), and the other two take its shards. At the end every item is done
//! exactly once.
//!
//! Each transaction runs under a pin (`Shards::pin`), not inside `while_owned`: a
//! transaction must not be cut part-way (sqlx's `begin()` dropped mid-flight leaves its
//! connection inside a transaction the pool hands to the next caller), so it runs to its
//! end, a rebalance waits for it, and the worker looks at `ShardPin::is_ended` between
//! transactions. Shards move at every join and leave: a shard that has moved away is an
//! expected event, logged at debug level, so a run in which nothing goes wrong logs no
//! error (`RUST_LOG=debug` shows the moves).
//!
//! ```text
//! cargo run --example shards                               # memory://
//! cargo run --example shards --features etcd -- etcd://127.0.0.1:2379
//! cargo run --example shards --features nats -- nats://127.0.0.1:4222
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distsync::replicas::{ShardOptions, Shards};
use distsync::{Error, FencingToken, Result};

const SHARDS: u32 = 64;
const ITEMS_PER_SHARD: u32 = 10;

/// The work table, as a database would keep it: per shard, the next item to do and the
/// highest fencing token seen (a write with a lower one is refused); per item, who did
/// it.
#[derive(Default)]
struct Table {
    next: BTreeMap<u32, u32>,
    fence: BTreeMap<u32, FencingToken>,
    done: BTreeMap<(u32, u32), Vec<&'static str>>,
    refused: u32,
}

impl Table {
    /// The next item of `shard` still to do, if any (a read).
    fn next_item(&self, shard: u32) -> Option<u32> {
        let next = self.next.get(&shard).copied().unwrap_or(0);
        (next < ITEMS_PER_SHARD).then_some(next)
    }

    /// Marks `item` of `shard` done by `worker`, if `token` is not stale (a write).
    fn finish(&mut self, shard: u32, item: u32, token: FencingToken, worker: &'static str) {
        let fence = self.fence.entry(shard).or_insert(token);
        if token < *fence {
            self.refused += 1;
            return;
        }
        *fence = token;
        self.done.entry((shard, item)).or_default().push(worker);
        self.next.insert(shard, item + 1);
    }

    fn all_done(&self) -> bool {
        (0..SHARDS).all(|shard| self.next_item(shard).is_none())
    }
}

/// One item's transaction on `shard`: reads the next item, does it, and writes it done
/// with `token`; false when the shard has nothing left. With a database this is
/// `pool.begin()`, the reads, the write fenced by the token, and `commit()`.
async fn transaction(
    table: &Mutex<Table>,
    shard: u32,
    token: FencingToken,
    worker: &'static str,
) -> bool {
    let Some(item) = table.lock().unwrap().next_item(shard) else {
        return false;
    };
    tokio::time::sleep(Duration::from_millis(2)).await;
    table.lock().unwrap().finish(shard, item, token, worker);
    true
}

/// One worker: the shards it owns, one transaction at a time, each under a pin.
async fn work(shards: Arc<Shards>, table: Arc<Mutex<Table>>, worker: &'static str) {
    let mut changes = shards.changes();
    loop {
        let owned = changes.borrow_and_update().clone();
        let mut idle = true;
        for shard in owned.shards() {
            if table.lock().unwrap().next_item(shard).is_none() {
                continue;
            }
            let pin = match shards.pin(shard).await {
                Ok(pin) => pin,
                // Given to another member since `owned` was read: a rebalance, not a
                // failure.
                Err(Error::NotHeld) => {
                    tracing::debug!(worker, shard, "the shard moved away before its transaction");
                    continue;
                }
                Err(error) => {
                    tracing::error!(worker, shard, %error, "pinning a shard failed");
                    continue;
                }
            };
            // Never cut: the shard stays with this worker until the pin is dropped
            // (after a loss, the token makes the table refuse the write instead).
            if transaction(&table, shard, pin.token(), worker).await {
                idle = false;
            }
            if pin.is_ended() {
                tracing::debug!(
                    worker,
                    shard,
                    "the shard is moving away; its transaction finished first"
                );
            }
        }
        if idle && changes.changed().await.is_err() {
            return;
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let url = std::env::args().nth(1);
    run(url.as_deref().unwrap_or("memory://")).await
}

/// The whole run on the store `url`: the workers, the kill, the check that every item
/// was done once.
pub(crate) async fn run(url: &str) -> Result<()> {
    let coordinator = distsync::connect(url).await?;
    let table = Arc::new(Mutex::new(Table::default()));
    let options = ShardOptions::default()
        .with_ttl(Duration::from_secs(5))
        .with_poll(Duration::from_millis(200));
    let mut workers = Vec::new();
    for worker in ["worker-a", "worker-b", "worker-c"] {
        let shards =
            Arc::new(coordinator.shards("examples/table", worker, SHARDS, options.clone())?);
        let task = tokio::spawn(work(shards.clone(), table.clone(), worker));
        workers.push((worker, shards, task));
    }

    // Half-way, kill worker-b: its session ends in the store and its loop stops.
    while table.lock().unwrap().done.len() < (SHARDS * ITEMS_PER_SHARD / 2) as usize {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (victim, shards, task) = workers.remove(1);
    println!("{victim} owned {} shards; killing it", shards.owned().len());
    task.abort();
    let _ = task.await;
    if let Some(session) = shards.session() {
        coordinator.backend().revoke_session(session.id()).await?;
    }
    drop(shards);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !table.lock().unwrap().all_done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the table was not finished"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (worker, shards, _) in &workers {
        let counts = shards.counts();
        println!(
            "{worker} owns {} shards (acquired {}, released {})",
            shards.owned().len(),
            counts.acquired,
            counts.released
        );
    }
    {
        let table = table.lock().unwrap();
        let twice: Vec<_> = table.done.iter().filter(|(_, by)| by.len() > 1).collect();
        assert!(twice.is_empty(), "items done twice: {twice:?}");
        assert_eq!(table.done.len(), (SHARDS * ITEMS_PER_SHARD) as usize);
        println!(
            "{} items done, each once; {} stale writes refused",
            table.done.len(),
            table.refused
        );
    }
    for (_, shards, task) in workers {
        task.abort();
        let _ = task.await;
        Arc::into_inner(shards)
            .expect("the worker has stopped")
            .stop()
            .await;
    }
    Ok(())
}
