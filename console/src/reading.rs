//! The console's one read of the store, shared by every viewer and every scrape.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use distsync_core::scheduled_job::JobStatus;
use distsync_core::status::StatusReport;
use distsync_core::{Coordinator, Error};
use futures::future::join_all;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// How long a read of the store may take before the console shows the store as down:
/// a store that does not answer must not hold every page's request.
const READ_BOUND: Duration = Duration::from_secs(5);

/// What one read found: the status report and each listed queue's oldest item age, or
/// why the store did not answer.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// When the read began, by the wall clock the page counts from.
    pub(crate) read_at: SystemTime,
    /// How long the read took.
    pub(crate) took: Duration,
    /// The report, or the store's error as the page shows it.
    pub(crate) outcome: Result<Store, String>,
    /// When the read ended, by the clock that says whether it is still fresh.
    fresh_from: Instant,
}

/// The store's state in one read.
#[derive(Debug)]
pub(crate) struct Store {
    /// Who holds and waits for what, and the queues' lengths.
    pub(crate) report: StatusReport,
    /// Each listed queue's oldest item age, where the backend records enqueue times.
    pub(crate) oldest: BTreeMap<String, Duration>,
    /// The scheduled jobs the store lists, with their last runs (none where the
    /// backend has no serializable STM, which jobs need).
    pub(crate) jobs: Vec<JobStatus>,
}

/// The last read of the store under the console's prefix, read again when a viewer
/// asks after it is older than the refresh interval. Requests that arrive while a read
/// is under way wait for it rather than starting their own: however many pages are
/// open, the store sees one read per interval.
#[derive(Debug)]
pub(crate) struct Reading {
    coordinator: Coordinator,
    prefix: String,
    refresh: Duration,
    last: Mutex<Option<Arc<Snapshot>>>,
}

impl Reading {
    /// Reads through `coordinator` the names under `prefix`, at most once per `refresh`.
    pub(crate) fn new(coordinator: Coordinator, prefix: String, refresh: Duration) -> Self {
        Self {
            coordinator,
            prefix,
            refresh,
            last: Mutex::new(None),
        }
    }

    /// The coordinator it reads through.
    pub(crate) fn coordinator(&self) -> &Coordinator {
        &self.coordinator
    }

    /// The prefix every name it shows starts with.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The last read if it is fresh, else a new one.
    ///
    /// Cancel-safe: a caller dropped while it reads leaves the previous read in place.
    pub(crate) async fn latest(&self) -> Arc<Snapshot> {
        let mut last = self.last.lock().await;
        if let Some(snapshot) = last.as_ref() {
            if snapshot.fresh_from.elapsed() < self.refresh {
                return Arc::clone(snapshot);
            }
        }
        let snapshot = Arc::new(self.read().await);
        *last = Some(Arc::clone(&snapshot));
        snapshot
    }

    /// Makes the next [`Reading::latest`] read the store: after an action, so that the
    /// page shows its effect at once.
    pub(crate) async fn forget(&self) {
        *self.last.lock().await = None;
    }

    async fn read(&self) -> Snapshot {
        let read_at = SystemTime::now();
        let started = Instant::now();
        let outcome = match tokio::time::timeout(READ_BOUND, self.read_store()).await {
            Ok(Ok(store)) => Ok(store),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!(
                "the store did not answer within {} s",
                READ_BOUND.as_secs()
            )),
        };
        if let Err(error) = &outcome {
            tracing::warn!(%error, "console: reading the store failed");
        }
        Snapshot {
            read_at,
            took: started.elapsed(),
            outcome,
            fresh_from: Instant::now(),
        }
    }

    async fn read_store(&self) -> Result<Store, Error> {
        let report = self.coordinator.status(&self.prefix).await?;
        let ages = join_all(report.queues.iter().map(|queue| async {
            let age = match self.coordinator.queue(&queue.name) {
                Ok(handle) => handle.oldest_age().await,
                Err(error) => Err(error),
            };
            (queue.name.clone(), age)
        }))
        .await;
        let mut oldest = BTreeMap::new();
        for (name, age) in ages {
            match age {
                Ok(Some(age)) => {
                    oldest.insert(name, age);
                }
                Ok(None) | Err(Error::Unsupported { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        let jobs = match self.coordinator.scheduled_jobs(&self.prefix).await {
            Ok(jobs) => jobs,
            Err(Error::Unsupported { .. }) => Vec::new(),
            Err(error) => return Err(error),
        };
        Ok(Store {
            report,
            oldest,
            jobs,
        })
    }
}
