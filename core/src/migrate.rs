//! Copying the durable state of one backend into another.
//!
//! Durable state is what outlives every session: queue items (with their priorities,
//! in dequeue order), STM keys, and held barriers. Locks, leadership, read/write holds
//! and double-barrier entries belong to live sessions and are not copied; a source
//! that still has some is refused unless forced, since its owners would keep working
//! against the old store.
//!
//! [`migrate`] copies (the source is left as it was), appending each queue's items to
//! the destination queue of the same name in the source's dequeue order, writing STM
//! keys in transactions, and holding the same barriers; then it exports the
//! destination again and verifies that every queue ends with the copied items, in
//! order, and that every key and barrier arrived.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync_core::Result<()> {
//! use distsync_core::migrate::{migrate, MigrateOptions};
//! use distsync_kv::memory::MemoryBackend;
//! use distsync_core::Coordinator;
//! let (from, to) = (Coordinator::new(MemoryBackend::new()), Coordinator::new(MemoryBackend::new()));
//! from.queue("jobs")?.enqueue_with_priority("urgent", 0).await?;
//! let report = migrate(&**from.backend(), &**to.backend(), &MigrateOptions::default()).await?;
//! assert_eq!(report.queue_items, 1);
//! assert_eq!(to.queue("jobs")?.dequeue().await?, "urgent");
//! # Ok(()) }
//! ```

use bytes::Bytes;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::name::Name;
pub use crate::snapshot::{QueueItem, Snapshot};
use crate::stm::Isolation;

/// How [`migrate`] runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigrateOptions {
    /// Export and report only; write nothing.
    pub dry_run: bool,
    /// Copy even while the source has active holds.
    pub force: bool,
}

/// What [`migrate`] copied (or, in a dry run, would copy).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Queues copied.
    pub queues: usize,
    /// Queue items copied.
    pub queue_items: usize,
    /// STM keys copied.
    pub stm_keys: usize,
    /// Barriers held in the destination.
    pub barriers: usize,
    /// Live holds found in the source (not copied).
    pub active_holds: usize,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

/// STM keys written per transaction.
const STM_BATCH: usize = 64;

/// Copies the durable state of `from` into `to` and verifies it arrived.
///
/// # Errors
/// [`Error::ActiveHolders`] when the source has live holds and `force` is off;
/// [`Error::Unsupported`] when either backend cannot export; the stores' errors; and
/// [`Error::MigrationMismatch`] naming what differs if the verification fails.
///
/// # Cancel safety
///
/// Not cancel safe: a dropped future may leave part of the state copied. Re-running
/// appends the queues again; check the destination first.
pub async fn migrate(
    from: &dyn Backend,
    to: &dyn Backend,
    options: &MigrateOptions,
) -> Result<MigrationReport> {
    let source = from.export().await?;
    let report = MigrationReport {
        queues: source.queues.len(),
        queue_items: source.queue_items(),
        stm_keys: source.stm.len(),
        barriers: source.barriers.len(),
        active_holds: source.active_holds.len(),
        dry_run: options.dry_run,
    };
    if !source.active_holds.is_empty() && !options.force {
        return Err(Error::ActiveHolders {
            count: source.active_holds.len(),
            example: source.active_holds[0].clone(),
        });
    }
    let before = to.export().await?;
    if options.dry_run {
        return Ok(report);
    }
    for (name, items) in &source.queues {
        let queue = to.queue(name.clone())?;
        for item in items {
            queue
                .enqueue_with_priority(item.item.clone(), item.priority)
                .await?;
        }
    }
    if !source.stm.is_empty() {
        let stm = to.stm()?;
        let keys: Vec<(&Name, &Bytes)> = source.stm.iter().collect();
        for batch in keys.chunks(STM_BATCH) {
            stm.atomically(Isolation::default(), |tx| async move {
                for (key, value) in batch {
                    tx.put(key.as_str(), (*value).clone());
                }
                Ok(())
            })
            .await?;
        }
    }
    for name in &source.barriers {
        to.barrier(name.clone())?.hold().await?;
    }
    verify(&source, &before, &to.export().await?)?;
    tracing::info!(?report, "migration copied and verified");
    Ok(report)
}

/// Checks that `after` (the destination now) is `before` plus `source`.
fn verify(source: &Snapshot, before: &Snapshot, after: &Snapshot) -> Result<()> {
    let mismatch = |what: String| Err(Error::MigrationMismatch(what));
    for (name, items) in &source.queues {
        let had = before.queues.get(name).map_or(0, Vec::len);
        let has = after
            .queues
            .get(name)
            .map(Vec::as_slice)
            .unwrap_or_default();
        if has.len() != had + items.len() {
            return mismatch(format!(
                "queue {name:?} holds {} items, expected {} + {}",
                has.len(),
                had,
                items.len()
            ));
        }
        // Within each priority, the destination holds what it had, then the copies.
        for priority in items.iter().map(|item| item.priority) {
            let expected: Vec<&Bytes> = before
                .queues
                .get(name)
                .into_iter()
                .flatten()
                .chain(items)
                .filter(|item| item.priority == priority)
                .map(|item| &item.item)
                .collect();
            let found: Vec<&Bytes> = has
                .iter()
                .filter(|item| item.priority == priority)
                .map(|item| &item.item)
                .collect();
            if found != expected {
                return mismatch(format!(
                    "queue {name:?} priority {priority}: order differs from the source"
                ));
            }
        }
    }
    for (key, value) in &source.stm {
        if after.stm.get(key) != Some(value) {
            return mismatch(format!("stm key {key:?} did not arrive"));
        }
    }
    for name in &source.barriers {
        if !after.barriers.contains(name) {
            return mismatch(format!("barrier {name:?} is not held"));
        }
    }
    Ok(())
}
