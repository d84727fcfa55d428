//! Staying leader: [`Coordinator::lead`] runs work while this process leads an
//! election, and campaigns again, on a fresh session, after every loss, until the work
//! is done or the caller stops it.
//!
//! It is the shape of Curator's `LeaderSelector` with `autoRequeue` and of client-go's
//! `OnStartedLeading`/`OnStoppedLeading`, in async Rust: the work is a future, started
//! on every new term and dropped the moment the term is lost (its `Drop`s run, so a
//! `CancellationToken` or a guard in it fires); the call itself is the loop, and
//! dropping it stops everything and resigns.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::backend::Coordinator;
use crate::backoff::Backoff;
use crate::election::Leadership;
use crate::error::{Error, Result};
use crate::session::SessionOptions;

/// How [`Coordinator::lead_with`] campaigns: the session every campaign runs on, and
/// the pauses between attempts after a loss or while the store cannot be reached.
///
/// ```
/// use std::time::Duration;
/// use distsync_core::LeadOptions;
///
/// let options = LeadOptions::default()
///     .with_ttl(Duration::from_secs(15))
///     .with_retry(Duration::from_millis(200), Duration::from_secs(10));
/// assert_eq!(options.session().ttl, Duration::from_secs(15));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeadOptions {
    session: SessionOptions,
    first_retry: Duration,
    longest_retry: Duration,
}

impl Default for LeadOptions {
    /// Sessions with the default options; retries after 100 ms, doubling up to 5 s.
    fn default() -> Self {
        Self {
            session: SessionOptions::default(),
            first_retry: Duration::from_millis(100),
            longest_retry: Duration::from_secs(5),
        }
    }
}

impl LeadOptions {
    /// The same options with every campaign's session made with `session`.
    #[must_use]
    pub fn with_session(mut self, session: SessionOptions) -> Self {
        self.session = session;
        self
    }

    /// The same options with sessions of `ttl` (the rest of the session options
    /// default): how long a crashed leader blocks its successor.
    #[must_use]
    pub fn with_ttl(self, ttl: Duration) -> Self {
        self.with_session(SessionOptions::with_ttl(ttl))
    }

    /// The same options pausing `first` before the first retry, doubling up to
    /// `longest`.
    #[must_use]
    pub fn with_retry(mut self, first: Duration, longest: Duration) -> Self {
        self.first_retry = first;
        self.longest_retry = longest;
        self
    }

    /// The options of every campaign's session.
    pub fn session(&self) -> &SessionOptions {
        &self.session
    }
}

/// Whether `lead` campaigns again after `error`: a lost session or leadership, or a
/// store that did not answer. Anything else (a bad name, an unsupported election) is
/// returned to the caller.
fn campaigns_again(error: &Error) -> bool {
    error.is_transient() || matches!(error, Error::SessionLost | Error::NotLeader)
}

impl Coordinator {
    /// Runs `work` while this process leads the election `name` with `value`, and
    /// keeps campaigning, with the default [`LeadOptions`], until `work` returns; see
    /// [`Coordinator::lead_with`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync_core::Result<()> {
    /// let coordinator = distsync_core::memory::connect("memory://").await?;
    /// coordinator
    ///     .lead("scheduler", "node-1", |leadership| async move {
    ///         // Runs only while leader; pass the term to what it writes.
    ///         println!("leading in term {}", leadership.term());
    ///         Ok(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Coordinator::lead_with`].
    ///
    /// # Cancel safety
    /// As [`Coordinator::lead_with`].
    pub async fn lead<F, Fut>(&self, name: &str, value: impl Into<Bytes>, work: F) -> Result<()>
    where
        F: FnMut(Arc<Leadership>) -> Fut + Send,
        Fut: Future<Output = Result<()>> + Send,
    {
        self.lead_with(name, value, &LeadOptions::default(), work)
            .await
    }

    /// Runs `work` while this process leads the election `name` with `value`: opens a
    /// session, campaigns, and on every win calls `work` with the leadership (its
    /// [`Leadership::term`] is the fencing token to pass to what the work writes).
    ///
    /// - When the leadership or its session is lost (the store ended it, a partition
    ///   outlasted the session's client-side deadline), the work's future is dropped
    ///   at once (before anyone else can be elected, by the session's deadline), and
    ///   `lead` campaigns again on a fresh session.
    /// - While the store cannot be reached, or sessions cannot be opened, it retries
    ///   with backoff ([`LeadOptions::with_retry`]), forever: bound it with
    ///   `tokio::time::timeout` or stop it by dropping it.
    /// - When `work` returns, `lead` resigns, closes its session and returns what
    ///   `work` returned. A `work` that should run forever never returns.
    ///
    /// Two processes calling `lead` on one name never run their work at once (the
    /// election's guarantee), and a loss is logged (`tracing`, warn).
    ///
    /// # Errors
    /// What `work` returned, or an error campaigning cannot recover from
    /// ([`Error::InvalidName`], [`Error::Unsupported`], ...); lost sessions and
    /// unreachable stores are retried instead.
    ///
    /// # Cancel safety
    /// Dropping the future drops the work and the leadership, which resigns in the
    /// background (or ends with its session's TTL if no runtime is left).
    pub async fn lead_with<F, Fut>(
        &self,
        name: &str,
        value: impl Into<Bytes>,
        options: &LeadOptions,
        mut work: F,
    ) -> Result<()>
    where
        F: FnMut(Arc<Leadership>) -> Fut + Send,
        Fut: Future<Output = Result<()>> + Send,
    {
        let value = value.into();
        let mut backoff = Backoff::new(options.first_retry, options.longest_retry);
        loop {
            let attempt = async {
                let session = self.backend().session(options.session.clone()).await?;
                let election = self.election(&session, name)?;
                let leadership = election.campaign(value.clone()).await?;
                Ok::<_, Error>((session, leadership))
            };
            let (session, leadership) = match attempt.await {
                Ok(won) => won,
                Err(error) if campaigns_again(&error) => {
                    tracing::warn!(election = name, %error, "campaign failed; retrying");
                    tokio::time::sleep(backoff.next_pause()).await;
                    continue;
                }
                Err(error) => return Err(error),
            };
            backoff.reset();
            let leadership = Arc::new(leadership);
            tracing::info!(election = name, term = %leadership.term(), "leading");
            let lost = leadership.lost();
            tokio::select! {
                biased;
                () = lost => {
                    tracing::warn!(election = name, term = %leadership.term(), "leadership lost; work stopped, campaigning again");
                }
                outcome = work(Arc::clone(&leadership)) => {
                    if let Ok(leadership) = Arc::try_unwrap(leadership) {
                        if let Err(error) = leadership.resign().await {
                            tracing::debug!(election = name, %error, "resigning after the work ended");
                        }
                    }
                    if let Err(error) = session.close().await {
                        tracing::debug!(election = name, %error, "closing the session after the work ended");
                    }
                    return outcome;
                }
            }
            drop(leadership);
            drop(session);
            tokio::time::sleep(backoff.next_pause()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::LeadOptions;
    use crate::backend::Coordinator;
    use crate::error::Error;
    use crate::memory::MemoryBackend;
    use crate::token::FencingToken;

    const DEADLINE: Duration = Duration::from_secs(10);

    fn fast() -> LeadOptions {
        LeadOptions::default().with_retry(Duration::from_millis(1), Duration::from_millis(10))
    }

    /// Counts the work futures alive, so a test sees one dropped.
    struct Alive(Arc<AtomicUsize>);

    impl Drop for Alive {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn work_that_ends_returns_its_result_and_resigns() {
        let coordinator = Coordinator::new(MemoryBackend::new());
        let outcome = coordinator
            .lead("leader", "a", |_| async {
                Err(Error::InvalidArgument("done".into()))
            })
            .await;
        assert!(
            matches!(outcome, Err(Error::InvalidArgument(_))),
            "{outcome:?}"
        );
        let session = coordinator.session().await.unwrap();
        let leader = coordinator
            .election(&session, "leader")
            .unwrap()
            .leader()
            .await
            .unwrap();
        assert!(leader.is_none(), "resigned: {leader:?}");
    }

    #[tokio::test]
    async fn a_lost_term_drops_the_work_and_a_new_term_runs_it_again() {
        let coordinator = Coordinator::new(MemoryBackend::new());
        let (terms, mut started) = mpsc::unbounded_channel::<(FencingToken, u64)>();
        let alive = Arc::new(AtomicUsize::new(0));
        let leading = {
            let (coordinator, alive) = (coordinator.clone(), Arc::clone(&alive));
            tokio::spawn(async move {
                coordinator
                    .lead_with("leader", "a", &fast(), move |leadership| {
                        let (terms, alive) = (terms.clone(), Arc::clone(&alive));
                        async move {
                            alive.fetch_add(1, Ordering::SeqCst);
                            let _alive = Alive(alive);
                            let _ = terms.send((leadership.term(), leadership.session().id().0));
                            std::future::pending::<()>().await;
                            Ok(())
                        }
                    })
                    .await
            })
        };
        let (first, session) = tokio::time::timeout(DEADLINE, started.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(alive.load(Ordering::SeqCst), 1);
        coordinator
            .backend()
            .revoke_session(crate::session::SessionId(session))
            .await
            .unwrap();
        let (second, _) = tokio::time::timeout(DEADLINE, started.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(second > first, "term {second} after {first}");
        assert_eq!(
            alive.load(Ordering::SeqCst),
            1,
            "the first term's work was dropped"
        );
        leading.abort();
    }

    #[tokio::test]
    async fn two_processes_never_lead_at_once() {
        let coordinator = Coordinator::new(MemoryBackend::new());
        let leaders = Arc::new(AtomicUsize::new(0));
        let terms = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for id in 0..2 {
            let (coordinator, leaders, terms) = (
                coordinator.clone(),
                Arc::clone(&leaders),
                Arc::clone(&terms),
            );
            tasks.push(tokio::spawn(async move {
                coordinator
                    .lead_with("leader", format!("node-{id}"), &fast(), move |_| {
                        let (leaders, terms) = (Arc::clone(&leaders), Arc::clone(&terms));
                        async move {
                            let now = leaders.fetch_add(1, Ordering::SeqCst) + 1;
                            terms.fetch_add(1, Ordering::SeqCst);
                            tokio::task::yield_now().await;
                            leaders.fetch_sub(1, Ordering::SeqCst);
                            if now > 1 {
                                return Err(Error::InvalidArgument(format!(
                                    "{now} leaders at once"
                                )));
                            }
                            Ok(())
                        }
                    })
                    .await
            }));
        }
        for task in tasks {
            tokio::time::timeout(DEADLINE, task)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        }
        assert_eq!(terms.load(Ordering::SeqCst), 2);
    }
}
