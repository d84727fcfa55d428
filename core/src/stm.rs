//! Software transactional memory over a key-value space, as etcd's `concurrency.STM`.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{Error, Result};
use crate::name::Name;

/// How much an STM transaction is protected from concurrent ones, with etcd's levels.
///
/// | level | reads see | commit fails (and retries) when |
/// |---|---|---|
/// | `SerializableSnapshot` | one snapshot, taken at the first read | a key read or written changed after the snapshot |
/// | `Serializable` | one snapshot, taken at the first read | a key read changed |
/// | `RepeatableReads` | the latest value, then the same value on every re-read | a key read changed |
/// | `ReadCommitted` | the latest committed value | never: lost updates are possible |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Isolation {
    /// Snapshot reads and a write-set check: the strongest level, and the default.
    #[default]
    SerializableSnapshot,
    /// Snapshot reads; commit checks the read set.
    Serializable,
    /// Cached latest reads; commit checks the read set.
    RepeatableReads,
    /// Latest reads, no check at commit.
    ReadCommitted,
}

impl Isolation {
    /// Every level, strongest first.
    pub const ALL: [Isolation; 4] = [
        Isolation::SerializableSnapshot,
        Isolation::Serializable,
        Isolation::RepeatableReads,
        Isolation::ReadCommitted,
    ];

    /// The level's name as in etcd's Go package.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::SerializableSnapshot => "SerializableSnapshot",
            Isolation::Serializable => "Serializable",
            Isolation::RepeatableReads => "RepeatableReads",
            Isolation::ReadCommitted => "ReadCommitted",
        }
    }
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One write of a transaction: a value to put, or `None` to delete.
pub type Write = (Name, Option<Bytes>);

/// A backend's STM: begins attempts; the retry loop is [`atomically`](crate::stm::Stm#method.atomically)'s.
#[async_trait]
pub trait Stm: Send + Sync {
    /// Begins one attempt at `isolation`. `prefetch` lists the keys the previous
    /// attempt read, which a backend may fetch in one round trip.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a level the backend does not offer.
    async fn begin(&self, isolation: Isolation, prefetch: &[Name]) -> Result<Box<dyn StmAttempt>>;
}

/// One attempt of a transaction, as a backend runs it. Writes are buffered by
/// [`StmTx`] and handed to [`StmAttempt::commit`].
#[async_trait]
pub trait StmAttempt: Send + Sync {
    /// Reads `key` as the isolation level says. A backend that detects a conflict
    /// while reading returns [`Error::StmConflict`] (with `attempts: 0`) to retry.
    async fn get(&mut self, key: &Name) -> Result<Option<Bytes>>;

    /// The keys read so far (for prefetch on retry).
    fn read_keys(&self) -> Vec<Name>;

    /// Applies `writes` atomically if the level's checks pass. `Ok(false)` means a
    /// conflict: the attempt is discarded and retried.
    async fn commit(self: Box<Self>, writes: Vec<Write>) -> Result<bool>;
}

/// Options of [`atomically_with`](crate::stm::Stm#method.atomically_with).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StmOptions {
    /// Attempts before giving up with [`Error::StmConflict`]. Default 100.
    pub max_attempts: u32,
}

impl Default for StmOptions {
    fn default() -> Self {
        Self { max_attempts: 100 }
    }
}

/// The result of a committed transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed<T> {
    /// What the transaction body returned.
    pub value: T,
    /// How many attempts it took (1 when there was no conflict).
    pub attempts: u32,
}

/// The transaction handle given to an STM body: cheap to clone, so the body can be an
/// `async move` block.
///
/// Reads see the transaction's own earlier writes. `put` and `delete` are buffered and
/// applied at commit; an invalid key there makes the commit fail with
/// [`Error::InvalidName`].
#[derive(Clone)]
pub struct StmTx {
    inner: Arc<TxInner>,
}

struct TxInner {
    attempt: tokio::sync::Mutex<Option<Box<dyn StmAttempt>>>,
    writes: Mutex<BTreeMap<Name, Option<Bytes>>>,
    deferred_error: Mutex<Option<Error>>,
}

impl StmTx {
    fn new(attempt: Box<dyn StmAttempt>) -> Self {
        Self {
            inner: Arc::new(TxInner {
                attempt: tokio::sync::Mutex::new(Some(attempt)),
                writes: Mutex::new(BTreeMap::new()),
                deferred_error: Mutex::new(None),
            }),
        }
    }

    /// Reads `key`: the transaction's own write if it made one, else the store's value
    /// as the isolation level says.
    ///
    /// # Errors
    /// [`Error::InvalidName`] for an invalid key; [`Error::StmConflict`] asks
    /// `atomically` to retry (propagate it with `?`).
    ///
    /// Cancel-safety: a read; dropping it leaves the transaction as it was.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let key = Name::new(key)?;
        if let Some(written) = lock(&self.inner.writes).get(&key) {
            return Ok(written.clone());
        }
        let mut attempt = self.inner.attempt.lock().await;
        match attempt.as_mut() {
            Some(attempt) => attempt.get(&key).await,
            None => Err(Error::InvalidArgument(
                "the transaction has already finished".into(),
            )),
        }
    }

    /// Buffers a write of `value` to `key`.
    pub fn put(&self, key: &str, value: impl Into<Bytes>) {
        self.write(key, Some(value.into()));
    }

    /// Buffers a deletion of `key`.
    pub fn delete(&self, key: &str) {
        self.write(key, None);
    }

    fn write(&self, key: &str, value: Option<Bytes>) {
        match Name::new(key) {
            Ok(key) => {
                lock(&self.inner.writes).insert(key, value);
            }
            Err(error) => {
                lock(&self.inner.deferred_error).get_or_insert(error);
            }
        }
    }

    async fn finish(self) -> Result<bool> {
        if let Some(error) = lock(&self.inner.deferred_error).take() {
            return Err(error);
        }
        let writes: Vec<Write> = std::mem::take(&mut *lock(&self.inner.writes))
            .into_iter()
            .collect();
        let attempt = self.inner.attempt.lock().await.take();
        match attempt {
            Some(attempt) => attempt.commit(writes).await,
            None => Err(Error::InvalidArgument(
                "the transaction has already finished".into(),
            )),
        }
    }

    async fn read_keys(&self) -> Vec<Name> {
        self.inner
            .attempt
            .lock()
            .await
            .as_ref()
            .map(|attempt| attempt.read_keys())
            .unwrap_or_default()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl dyn Stm + '_ {
    /// Runs `body` as one transaction at `isolation`, retrying on conflict (up to 100
    /// attempts), and returns what it returned.
    ///
    /// The body may run several times: keep side effects out of it. An error from the
    /// body other than [`Error::StmConflict`] aborts the transaction without writing.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync_core::Result<()> {
    /// use distsync_core::{memory::MemoryBackend, Coordinator, Isolation};
    /// let stm = Coordinator::new(MemoryBackend::new()).stm()?;
    /// stm.atomically(Isolation::Serializable, |tx| async move {
    ///     let n: u64 = match tx.get("counter").await? {
    ///         Some(v) => String::from_utf8_lossy(&v).parse().unwrap_or(0),
    ///         None => 0,
    ///     };
    ///     tx.put("counter", (n + 1).to_string());
    ///     Ok(())
    /// }).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::StmConflict`] after the last attempt, [`Error::Unsupported`] for a
    /// level the backend does not offer, or the body's error.
    ///
    /// Cancel-safety: dropping the future before the commit writes nothing; dropped
    /// during the commit, the transaction is either wholly applied or not at all.
    pub async fn atomically<T, F, Fut>(&self, isolation: Isolation, body: F) -> Result<T>
    where
        F: FnMut(StmTx) -> Fut + Send,
        Fut: Future<Output = Result<T>> + Send,
        T: Send,
    {
        Ok(self
            .atomically_with(isolation, &StmOptions::default(), body)
            .await?
            .value)
    }

    /// As [`atomically`](crate::stm::Stm#method.atomically), with options, reporting
    /// the number of attempts.
    ///
    /// # Errors
    /// As [`atomically`](crate::stm::Stm#method.atomically).
    ///
    /// Cancel-safety: as `atomically`.
    pub async fn atomically_with<T, F, Fut>(
        &self,
        isolation: Isolation,
        options: &StmOptions,
        mut body: F,
    ) -> Result<Committed<T>>
    where
        F: FnMut(StmTx) -> Fut + Send,
        Fut: Future<Output = Result<T>> + Send,
        T: Send,
    {
        if options.max_attempts == 0 {
            return Err(Error::InvalidArgument(
                "max_attempts must be at least 1".into(),
            ));
        }
        let mut prefetch: Vec<Name> = Vec::new();
        for attempt in 1..=options.max_attempts {
            let tx = match self.begin(isolation, &prefetch).await {
                Ok(attempt) => StmTx::new(attempt),
                // A conflict while beginning (e.g. during the prefetch) is retried too.
                Err(Error::StmConflict { .. }) => {
                    tracing::debug!(attempt, %isolation, "stm conflict while beginning; retrying");
                    metrics::counter!("distsync_stm_retries_total", "isolation" => isolation.as_str())
                        .increment(1);
                    tokio::task::yield_now().await;
                    continue;
                }
                Err(error) => return Err(error),
            };
            let outcome = body(tx.clone()).await;
            prefetch = tx.read_keys().await;
            match outcome {
                Ok(value) => match tx.finish().await {
                    Ok(true) => {
                        metrics::counter!("distsync_stm_commits_total", "isolation" => isolation.as_str())
                            .increment(1);
                        return Ok(Committed {
                            value,
                            attempts: attempt,
                        });
                    }
                    Ok(false) | Err(Error::StmConflict { .. }) => {}
                    Err(error) => return Err(error),
                },
                Err(Error::StmConflict { .. }) => {}
                Err(error) => return Err(error),
            }
            tracing::debug!(attempt, %isolation, "stm conflict; retrying");
            metrics::counter!("distsync_stm_retries_total", "isolation" => isolation.as_str())
                .increment(1);
            tokio::task::yield_now().await;
        }
        Err(Error::StmConflict {
            attempts: options.max_attempts,
        })
    }
}
