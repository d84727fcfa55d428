//! Staying leader: [`Coordinator::lead`](crate::Coordinator::lead) runs work while this
//! process leads an election, and campaigns again, on a fresh session, after every loss,
//! until the work is done or the caller stops it.
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

use crate::backend::Backend;
use crate::backoff::Backoff;
use crate::election::Leadership;
use crate::error::{Error, Result};
use crate::layers;
use crate::name::Name;
use crate::session::SessionOptions;

/// How [`Coordinator::lead_with`](crate::Coordinator::lead_with) campaigns: the session
/// every campaign runs on, and the pauses between attempts after a loss or while the store
/// cannot be reached.
///
/// ```
/// use std::time::Duration;
/// use distsync::election::LeadOptions;
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
    error.is_transient() || error.needs_new_session() || matches!(error, Error::NotLeader)
}

/// The loop of [`Coordinator::lead_with`](crate::Coordinator::lead_with) over `backend`:
/// a session and a campaign, `work` while the term lasts, and again after every loss.
pub(crate) async fn lead<F, Fut>(
    backend: &Arc<dyn Backend>,
    name: &str,
    value: Bytes,
    options: &LeadOptions,
    mut work: F,
) -> Result<()>
where
    F: FnMut(Arc<Leadership>) -> Fut + Send,
    Fut: Future<Output = Result<()>> + Send,
{
    let mut backoff = Backoff::new(options.first_retry, options.longest_retry);
    loop {
        let attempt = async {
            let session = layers::session(backend.as_ref(), options.session.clone()).await?;
            let election = layers::election(backend, &session, Name::new(name)?)?;
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
                tracing::warn!(
                    election = name,
                    term = %leadership.term(),
                    "leadership lost; work stopped, campaigning again",
                );
            }
            outcome = work(Arc::clone(&leadership)) => {
                if let Ok(leadership) = Arc::try_unwrap(leadership)
                    && let Err(error) = leadership.resign().await {
                        tracing::debug!(election = name, %error, "resigning after the work ended");
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
