//! The index of a store's scheduled jobs: every job that has looked for an occurrence
//! on the store, with its schedule, so that an operator's view
//! ([`Coordinator::scheduled_jobs`](crate::Coordinator::scheduled_jobs)) lists a job
//! whether or not it holds its lock or has ever run. A job that never runs is the one
//! an operator looks for first, and nothing else in the store names it: its record is
//! written by its first run, and its lock is held only while it runs.
//!
//! The index is one STM key, `distsync-scheduled-jobs`: for each job its name and its schedule, as
//! `<name>\0<schedule>\0`, sorted by name (a name holds no NUL byte). A job adds or
//! updates its entry when it first looks for an occurrence, in a serializable
//! transaction that writes only when the entry differs, so replicas starting together
//! write it once. It does so in a task of its own ([`Indexing`]), retried with a
//! backoff until it is done or the job is dropped: the index serves operators, and
//! neither its round trips nor its conflicts between replicas starting at once may
//! delay or stop a run. A job removed from the code keeps its entry (and its record),
//! shown with its last run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::AbortHandle;

use crate::backend::Backend;
use crate::backoff::Backoff;
use crate::error::Result;
use crate::layers;
use crate::name::Name;
use crate::schedule::Schedule;
use crate::stm::{Isolation, StmTx};

/// The STM key of the index.
pub(crate) const INDEX_KEY: &str = "distsync-scheduled-jobs";

/// The index's entries: job name to schedule. An entry whose schedule does not read
/// back is left out.
pub(crate) type Entries = BTreeMap<String, Schedule>;

fn decode(bytes: &[u8]) -> Entries {
    let text = String::from_utf8_lossy(bytes);
    let mut fields = text.split('\0');
    let mut entries = Entries::new();
    while let (Some(name), Some(schedule)) = (fields.next(), fields.next()) {
        if let Some(schedule) = Schedule::from_stored(schedule) {
            entries.insert(name.to_owned(), schedule);
        }
    }
    entries
}

fn encode(entries: &Entries) -> String {
    entries
        .iter()
        .map(|(name, schedule)| format!("{name}\0{}\0", schedule.stored()))
        .collect()
}

/// Reads the index inside `tx`.
///
/// # Errors
/// The store's error.
pub(crate) async fn read(tx: &StmTx) -> Result<Entries> {
    Ok(tx
        .get(INDEX_KEY)
        .await?
        .map(|bytes| decode(&bytes))
        .unwrap_or_default())
}

/// The task that lists a job in the index ([`Indexing::start`]), stopped when this
/// is dropped (with the job).
#[derive(Debug)]
pub(crate) struct Indexing(AbortHandle);

impl Indexing {
    /// Lists the job `name` with `schedule` in `backend`'s index in the background,
    /// trying again after a failure (pauses from 100 ms doubling to 30 s) until done.
    pub(crate) fn start(backend: &Arc<dyn Backend>, name: &Name, schedule: &Schedule) -> Self {
        let (backend, name, schedule) = (Arc::clone(backend), name.clone(), schedule.clone());
        let task = tokio::spawn(async move {
            let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
            while let Err(error) = register(backend.as_ref(), &name, &schedule).await {
                let pause = backoff.next_pause();
                tracing::warn!(
                    job = name.as_str(),
                    %error,
                    ?pause,
                    "listing the job in the store's index of jobs failed; trying again"
                );
                tokio::time::sleep(pause).await;
            }
        });
        Self(task.abort_handle())
    }
}

impl Drop for Indexing {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Adds the job `name` with `schedule` to the index, or updates its schedule; writes
/// nothing when the entry is already there. An index that would outgrow the store's
/// largest value is left as it is, with a warning.
///
/// # Errors
/// The store's error.
async fn register(backend: &dyn Backend, name: &Name, schedule: &Schedule) -> Result<()> {
    let limit = backend.capabilities().max_value_size;
    let name = name.as_str().to_owned();
    let schedule = schedule.clone();
    layers::stm(backend)?
        .atomically(Isolation::SerializableSnapshot, move |tx| {
            let (name, schedule) = (name.clone(), schedule.clone());
            async move {
                let mut entries = read(&tx).await?;
                if entries.get(&name) == Some(&schedule) {
                    return Ok(());
                }
                entries.insert(name.clone(), schedule);
                let value = encode(&entries);
                if value.len() > limit {
                    tracing::warn!(
                        job = %name,
                        bytes = value.len(),
                        limit,
                        "the scheduled jobs' index is full: this job is not listed"
                    );
                    return Ok(());
                }
                tx.put(INDEX_KEY, value);
                Ok(())
            }
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn entries_round_trip_and_unknown_schedules_are_left_out() {
        let mut entries = Entries::new();
        entries.insert(
            "jobs/a\nb".to_owned(),
            Schedule::every(Duration::from_secs(10)).unwrap(),
        );
        entries.insert("jobs/c".to_owned(), Schedule::cron("0 2 * * *").unwrap());
        assert_eq!(decode(encode(&entries).as_bytes()), entries);
        assert_eq!(decode(b"jobs/x\0hourly\0jobs/y\0every 5\0").len(), 1);
        assert!(decode(b"").is_empty());
    }
}
