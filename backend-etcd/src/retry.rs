//! Retrying requests across cluster members.
//!
//! etcd-client balances requests over every endpoint it was given. A member that is
//! down stays in the set: a request sent its way fails at once with a connect error,
//! and the next attempt usually picks a live member. Like Go's clientv3 retry
//! interceptor, a request that never left the client is retried whatever it is; one
//! that may have reached a member is retried only when repeating it is harmless
//! (reads, lease operations, watch creation), never for a transaction that may
//! already have been applied.

use std::future::Future;
use std::time::Duration;

use distsync_core::raw::Backoff;
use tokio::time::Instant;

use crate::error::{classify, Failure, BACKEND};

/// Whether a request may be repeated after it may have reached a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Idempotence {
    /// Repeating it is harmless (reads, keepalives, revokes, watch creation).
    Idempotent,
    /// It may change the store: only retried when it was certainly not sent.
    Mutation,
}

/// How long and how often to retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    /// No new attempt starts later than this after the first one.
    pub(crate) budget: Duration,
    /// The pause after the first failure; doubles up to `max_backoff` (core's
    /// [`Backoff`]).
    pub(crate) first_backoff: Duration,
    /// The longest pause between attempts.
    pub(crate) max_backoff: Duration,
}

/// How long a failing request is retried by default: a few election timeouts, so a
/// leader change is ridden out.
pub(crate) const DEFAULT_RETRY_BUDGET: Duration = Duration::from_secs(3);

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            budget: DEFAULT_RETRY_BUDGET,
            first_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(500),
        }
    }
}

impl RetryPolicy {
    /// Runs `call` until it succeeds, fails in a way that may not be retried, or the
    /// budget is spent; returns the last error then. Cancel-safe: dropping the future
    /// drops the attempt in flight.
    pub(crate) async fn run<T, F, Fut>(
        &self,
        what: &'static str,
        idempotence: Idempotence,
        mut call: F,
    ) -> Result<T, etcd_client::Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + self.budget;
        let mut backoff = Backoff::new(self.first_backoff, self.max_backoff);
        let mut attempt = 1u32;
        loop {
            let error = match call().await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let retryable = match classify(&error) {
                Failure::NotSent => true,
                Failure::Transient => idempotence == Idempotence::Idempotent,
                Failure::Permanent => false,
            };
            if !retryable || Instant::now() + backoff.peek() > deadline {
                return Err(error);
            }
            tracing::debug!(backend = BACKEND, what, attempt, %error, "retrying");
            tokio::time::sleep(backoff.next_pause()).await;
            attempt += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(tonic::Status::from_error(Box::new(tonic::ConnectError(
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into(),
        ))))
    }

    fn unavailable() -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(tonic::Status::unavailable("etcdserver: leader changed"))
    }

    async fn attempts(idempotence: Idempotence, errors: Vec<etcd_client::Error>) -> (usize, bool) {
        let policy = RetryPolicy {
            budget: Duration::from_secs(1),
            first_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
        };
        let mut errors = errors.into_iter();
        let mut calls = 0;
        let result = policy
            .run("test", idempotence, || {
                calls += 1;
                let next = errors.next();
                async move {
                    match next {
                        Some(error) => Err(error),
                        None => Ok(()),
                    }
                }
            })
            .await;
        (calls, result.is_ok())
    }

    #[tokio::test]
    async fn unsent_requests_are_retried_even_when_mutating() {
        assert_eq!(
            attempts(Idempotence::Mutation, vec![refused(), refused()]).await,
            (3, true)
        );
    }

    #[tokio::test]
    async fn maybe_sent_mutations_are_not_retried() {
        assert_eq!(
            attempts(Idempotence::Mutation, vec![unavailable()]).await,
            (1, false)
        );
        assert_eq!(
            attempts(Idempotence::Idempotent, vec![unavailable()]).await,
            (2, true)
        );
    }

    #[tokio::test]
    async fn answers_from_the_store_are_not_retried() {
        let invalid = etcd_client::Error::GRpcStatus(tonic::Status::invalid_argument("no"));
        assert_eq!(
            attempts(Idempotence::Idempotent, vec![invalid]).await,
            (1, false)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_bounds_the_retries() {
        let policy = RetryPolicy::default();
        let started = Instant::now();
        let mut calls = 0;
        let result: Result<(), _> = policy
            .run("test", Idempotence::Idempotent, || {
                calls += 1;
                async { Err(refused()) }
            })
            .await;
        assert!(result.is_err());
        assert!(calls > 3, "only {calls} attempts");
        assert!(started.elapsed() <= policy.budget);
    }
}
