//! The locker layer that lets the guards a coordinator hands out see release requests
//! (see [`crate::revocation`]; the request is
//! [`Coordinator::request_release`](crate::Coordinator::request_release)).

use std::sync::Arc;

use async_trait::async_trait;

use crate::backend::Backend;
use crate::counter::Counter;
use crate::error::Result;
use crate::guard::LockGuard;
use crate::lock::Locker;
use crate::name::Name;
use crate::revocation::{counter_watch, request_counter_name};

/// A backend's locker whose guards watch the portable request counter, unless the
/// backend gave them a watch of its own.
pub(crate) struct RevocableLocker {
    inner: Box<dyn Locker>,
    /// The lock's request counter; `None` where the backend has no release requests
    /// (its guards then answer `Unsupported`) or the name is too long for one.
    counter: Option<Arc<dyn Counter>>,
}

impl RevocableLocker {
    /// `inner`, whose guards see release requests made through `backend`.
    pub(crate) fn new(backend: &dyn Backend, inner: Box<dyn Locker>) -> Self {
        let counter = if backend.capabilities().release_request {
            request_counter_name(inner.name())
                .and_then(|name| backend.counter(name))
                .map(Arc::from)
                .ok()
        } else {
            None
        };
        Self { inner, counter }
    }

    fn watched(&self, guard: LockGuard) -> LockGuard {
        match &self.counter {
            Some(counter) if !guard.has_release_request_watch() => {
                let token = guard.token();
                guard.with_release_request_watch(counter_watch(Arc::clone(counter), token))
            }
            _ => guard,
        }
    }
}

#[async_trait]
impl Locker for RevocableLocker {
    fn name(&self) -> &Name {
        self.inner.name()
    }

    async fn lock(&self) -> Result<LockGuard> {
        Ok(self.watched(self.inner.lock().await?))
    }

    async fn try_lock(&self) -> Result<Option<LockGuard>> {
        Ok(self
            .inner
            .try_lock()
            .await?
            .map(|guard| self.watched(guard)))
    }

    async fn contenders(&self) -> Result<usize> {
        self.inner.contenders().await
    }

    fn wakeups(&self) -> u64 {
        self.inner.wakeups()
    }
}
