//! [`Coordinator::rate_limiter`], in a file of its own: the backend trait names the
//! [`RateLimiter`] trait and [`Rate`], and the coordinator names the backend, so a
//! factory kept beside the trait would tie `rate_limiter.rs` into a circle with
//! `coordinator.rs` and `backend.rs`.

use std::sync::Arc;

use crate::coordinator::Coordinator;
use crate::error::{Error, Result};
use crate::name::Name;
use crate::rate_limiter::{Rate, RateLimiter};

impl Coordinator {
    /// The rate limiter `name` at `rate` (see [`Backend::rate_limiter`] and
    /// [`crate::rate_limiter`]).
    ///
    /// [`Backend::rate_limiter`]: crate::backend::Backend::rate_limiter
    ///
    /// # Errors
    /// [`Error::InvalidName`] for a bad name; [`Error::Unsupported`] where the backend
    /// has no rate limiter (etcd); before any I/O.
    pub fn rate_limiter(&self, name: &str, rate: Rate) -> Result<Arc<dyn RateLimiter>> {
        let name = Name::new(name)?;
        let capabilities = self.capabilities();
        if !capabilities.rate_limiter {
            return Err(Error::unsupported(capabilities.backend, "rate limiter"));
        }
        Ok(Arc::from(self.backend().rate_limiter(name, rate)?))
    }
}
