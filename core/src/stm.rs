//! Software transactional memory over a key-value space, as etcd's `concurrency.STM`.
//!
//! Users hold an [`Stm`] (from [`Coordinator::stm`](crate::Coordinator::stm)) and run
//! transactions with [`Stm::atomically`]; the body gets an [`StmTx`] to read and
//! buffer writes. Backends implement the engine under it, [`StmEngine`] and
//! [`StmAttempt`] (re-exported in [`crate::raw`]), and signal a conflict with
//! [`StmRetry`]; [`Error::StmConflict`] is only what a user sees when a transaction
//! gave up after its last attempt.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{Error, Result};
use crate::name::Name;
use crate::raw::locked;
use crate::value_size::{self, ValueLimit};

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

/// A backend's STM engine: it begins attempts, and [`Stm`] runs the retry loop around
/// them. Backend authors implement it (see [`crate::raw`]); users hold a [`Stm`].
#[async_trait]
pub trait StmEngine: Send + Sync {
    /// Begins one attempt at `isolation`. `prefetch` lists the keys the previous
    /// attempt read, which a backend may fetch in one round trip.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a level the backend does not offer; an error made
    /// from [`StmRetry`] when a conflict is already visible (the attempt is retried).
    async fn begin(&self, isolation: Isolation, prefetch: &[Name]) -> Result<Box<dyn StmAttempt>>;
}

/// One attempt of a transaction, as a backend runs it. Writes are buffered by
/// [`StmTx`] and handed to [`StmAttempt::commit`].
#[async_trait]
pub trait StmAttempt: Send + Sync {
    /// Reads `key` as the isolation level says. A backend that detects a conflict
    /// while reading returns `Err(StmRetry.into())` ([`StmRetry`]): the attempt is
    /// discarded and retried, whatever the body does with the error.
    async fn get(&mut self, key: &Name) -> Result<Option<Bytes>>;

    /// The keys read so far (for prefetch on retry).
    fn read_keys(&self) -> Vec<Name>;

    /// Applies `writes` atomically if the level's checks pass. `Ok(false)` (or an
    /// error made from [`StmRetry`]) means a conflict: the attempt is discarded and
    /// retried.
    async fn commit(self: Box<Self>, writes: Vec<Write>) -> Result<bool>;
}

/// The signal an [`StmEngine`] gives to have the current attempt retried: converted
/// into an [`Error`] (`StmRetry.into()`), returned from [`StmAttempt::get`],
/// [`StmAttempt::commit`] or [`StmEngine::begin`].
///
/// It exists for backend authors only. Inside a transaction body it reaches the user as
/// an opaque [`Error::Backend`] from [`StmTx::get`], to be propagated with `?`; the
/// transaction remembers the conflict, so it is retried even if the body drops the
/// error. It never leaves [`Stm::atomically`]: a transaction that keeps conflicting
/// ends with [`Error::StmConflict`] (gave up after N attempts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StmRetry;

impl fmt::Display for StmRetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the store changed under this stm attempt; the transaction is retried")
    }
}

impl std::error::Error for StmRetry {}

impl From<StmRetry> for Error {
    fn from(retry: StmRetry) -> Self {
        Error::backend("stm", retry)
    }
}

/// Whether `error` is the [`StmRetry`] signal.
fn is_retry(error: &Error) -> bool {
    matches!(error, Error::Backend { source, .. } if source.is::<StmRetry>())
}

/// Options of [`Stm::atomically_with`]: the defaults, or
/// [`StmOptions::with_max_attempts`].
///
/// ```
/// # use distsync::stm::StmOptions;
/// let options = StmOptions::with_max_attempts(5);
/// assert_eq!(options.max_attempts, 5);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StmOptions {
    /// Attempts before giving up with [`Error::StmConflict`]. Default 100.
    pub max_attempts: u32,
}

impl Default for StmOptions {
    fn default() -> Self {
        Self { max_attempts: 100 }
    }
}

impl StmOptions {
    /// The defaults with at most `max_attempts` attempts (at least 1: `atomically_with`
    /// answers 0 with [`Error::InvalidArgument`]).
    pub fn with_max_attempts(max_attempts: u32) -> Self {
        Self { max_attempts }
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
/// [`Error::InvalidName`], and a value above the store's
/// [`max_value_size`](crate::Capabilities::max_value_size) with [`Error::TooLarge`]
/// (checked at `put`, so the transaction writes nothing and is not retried).
#[derive(Clone)]
pub struct StmTx {
    inner: Arc<TxInner>,
}

impl std::fmt::Debug for StmTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StmTx").finish_non_exhaustive()
    }
}

struct TxInner {
    attempt: tokio::sync::Mutex<Option<Box<dyn StmAttempt>>>,
    /// Set when the engine signalled [`StmRetry`]: the attempt is retried, whatever the
    /// body returns.
    conflicted: AtomicBool,
    writes: Mutex<BTreeMap<Name, Option<Bytes>>>,
    deferred_error: Mutex<Option<Error>>,
    value_limit: Option<ValueLimit>,
}

impl StmTx {
    fn new(attempt: Box<dyn StmAttempt>, value_limit: Option<ValueLimit>) -> Self {
        Self {
            inner: Arc::new(TxInner {
                attempt: tokio::sync::Mutex::new(Some(attempt)),
                conflicted: AtomicBool::new(false),
                writes: Mutex::new(BTreeMap::new()),
                deferred_error: Mutex::new(None),
                value_limit,
            }),
        }
    }

    /// Reads `key`: the transaction's own write if it made one, else the store's value
    /// as the isolation level says.
    ///
    /// # Errors
    /// [`Error::InvalidName`] for an invalid key. When the store changed under the
    /// transaction, an error that ends this attempt: propagate it with `?` and
    /// [`Stm::atomically`] runs the body again (it does so even if the body drops the
    /// error, since what the attempt read is no longer consistent).
    ///
    /// # Cancel safety
    /// A read; dropping it leaves the transaction as it was.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let key = Name::new(key)?;
        if let Some(written) = locked(&self.inner.writes).get(&key) {
            return Ok(written.clone());
        }
        let mut attempt = self.inner.attempt.lock().await;
        let attempt = attempt.as_mut().ok_or_else(finished)?;
        let read = attempt.get(&key).await;
        if matches!(&read, Err(error) if is_retry(error)) {
            self.inner.conflicted.store(true, Ordering::SeqCst);
        }
        read
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
        let size = value.as_ref().map_or(0, Bytes::len);
        let checked = Name::new(key).and_then(|key| {
            value_size::check(self.inner.value_limit, "stm value", size).map(|()| key)
        });
        match checked {
            Ok(key) => {
                locked(&self.inner.writes).insert(key, value);
            }
            Err(error) => {
                locked(&self.inner.deferred_error).get_or_insert(error);
            }
        }
    }

    async fn finish(self) -> Result<bool> {
        if let Some(error) = locked(&self.inner.deferred_error).take() {
            return Err(error);
        }
        let writes: Vec<Write> = std::mem::take(&mut *locked(&self.inner.writes))
            .into_iter()
            .collect();
        let attempt = self.inner.attempt.lock().await.take();
        attempt.ok_or_else(finished)?.commit(writes).await
    }

    fn conflicted(&self) -> bool {
        self.inner.conflicted.load(Ordering::SeqCst)
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

/// The error of a call on a transaction whose attempt has ended.
fn finished() -> Error {
    Error::InvalidArgument("the transaction has already finished".into())
}

/// Software transactional memory over a backend's key-value space: run a
/// transaction with [`atomically`](Stm::atomically).
///
/// This is the user's handle, from [`Coordinator::stm`](crate::Coordinator::stm): cheap
/// to clone (one `Arc`) and shared across tasks. The backend's side is an
/// [`StmEngine`] (see [`crate::raw`]); the name follows etcd's `concurrency.STM`.
///
/// Keys are [`Name`]s in their own space: an STM key `a` is not the lock or queue `a`.
#[derive(Clone)]
pub struct Stm {
    engine: Arc<dyn StmEngine>,
    /// The store's limit on a written value, where a [`Coordinator`](crate::Coordinator)
    /// handed this handle out (see [`crate::value_size`]).
    value_limit: Option<ValueLimit>,
}

impl fmt::Debug for Stm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stm").finish_non_exhaustive()
    }
}

impl Stm {
    /// The handle over a backend's engine, for [`Primitives::stm`](crate::raw::Primitives::stm)
    /// (backend authors; see [`crate::raw`]).
    #[doc(hidden)]
    pub fn new(engine: Arc<dyn StmEngine>) -> Self {
        Self {
            engine,
            value_limit: None,
        }
    }

    /// This handle, its transactions refusing a value above `limit` at `put`.
    pub(crate) fn with_value_limit(mut self, limit: ValueLimit) -> Self {
        self.value_limit = Some(limit);
        self
    }

    /// Runs `body` as one transaction at `isolation`, retrying on conflict (up to 100
    /// attempts), and returns what it returned.
    ///
    /// The body may run several times: keep side effects out of it. An error from the
    /// body aborts the transaction without writing, unless the attempt conflicted (a
    /// read of [`StmTx::get`] failed because the store changed): then it is retried.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
    /// use distsync::store::memory::MemoryBackend;
    /// use distsync::{stm::Isolation, Coordinator};
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
    /// [`Error::StmConflict`] when the last attempt conflicted too (it is the only
    /// meaning of that error), [`Error::Unsupported`] for a level the backend does
    /// not offer, [`Error::InvalidName`] or [`Error::TooLarge`] for a write the body
    /// made (nothing is written), or the body's error.
    ///
    /// # Cancel safety
    /// Dropping the future before the commit writes nothing; dropped during the
    /// commit, the transaction is either wholly applied or not at all.
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

    /// As [`atomically`](Stm::atomically), with options, reporting the number of
    /// attempts.
    ///
    /// # Errors
    /// As [`atomically`](Stm::atomically); [`Error::InvalidArgument`] for
    /// `max_attempts == 0`.
    ///
    /// # Cancel safety
    /// As [`atomically`](Stm::atomically).
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
            let begun = match self.engine.begin(isolation, &prefetch).await {
                Ok(begun) => Some(StmTx::new(begun, self.value_limit)),
                // A conflict while beginning (e.g. during the prefetch) is retried too.
                Err(error) if is_retry(&error) => None,
                Err(error) => return Err(error),
            };
            if let Some(tx) = begun {
                let outcome = body(tx.clone()).await;
                prefetch = tx.read_keys().await;
                match outcome {
                    _ if tx.conflicted() => {}
                    Ok(value) => match tx.finish().await {
                        Ok(true) => {
                            metrics::counter!("distsync_stm_commits_total", "isolation" => isolation.as_str())
                                .increment(1);
                            return Ok(Committed {
                                value,
                                attempts: attempt,
                            });
                        }
                        Ok(false) => {}
                        Err(error) if is_retry(&error) => {}
                        Err(error) => return Err(error),
                    },
                    Err(error) if is_retry(&error) => {}
                    Err(error) => return Err(error),
                }
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
