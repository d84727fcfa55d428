//! The future that resolves once a session or a hold is known to be gone.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio_util::sync::CancellationToken;

/// The future returned by [`Session::lost`](crate::Session::lost) and the guards' `lost()`: resolves once the
/// session or hold is known to be gone.
///
/// It owns what it needs (`'static`), so it can be moved into a task or a `select!`.
/// Cancel-safe.
#[must_use = "futures do nothing unless polled"]
pub struct Lost {
    inner: Pin<Box<dyn Future<Output = ()> + Send + 'static>>,
}

impl Lost {
    pub(crate) fn new(token: &CancellationToken) -> Self {
        Self::from_future(token.clone().cancelled_owned())
    }

    /// Resolves when `signal` does (e.g. the first of several holds' `lost()`), for
    /// code that stops on one of several signals where a `Lost` is expected.
    pub fn from_future(signal: impl Future<Output = ()> + Send + 'static) -> Self {
        Self {
            inner: Box::pin(signal),
        }
    }
}

impl fmt::Debug for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lost").finish_non_exhaustive()
    }
}

impl Future for Lost {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.inner.as_mut().poll(cx)
    }
}
