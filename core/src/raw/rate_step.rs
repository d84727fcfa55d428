//! A store's rate limiter as its one atomic step: [`RateStep`] is what a store writes,
//! [`RateStepLimiter`] the [`RateLimiter`] handle every store's step sits in.

use async_trait::async_trait;

use crate::error::Result;
use crate::make::Make;
use crate::name::Name;
use crate::rate_limiter::{Admission, Rate, RateLimiter};

/// What a store decides a rate limiter's request with: GCRA's step
/// ([`crate::rate_limiter::gcra`]) on the store's clock, atomic on the store (a
/// script, a statement, a compare-and-swap).
///
/// A store's step is made, with [`Make`], from the store's context and the limiter's
/// name (what its key is made of); [`RateStepLimiter`] adds what every store's handle
/// shares.
#[async_trait]
pub trait RateStep: Send + Sync {
    /// Takes `permits` permits from the limiter `name` at `rate` if they are due now on
    /// the store's clock; otherwise counts nothing and says when they are due. The
    /// request is already checked against the rate ([`Rate::check_request`]).
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] for a limiter whose live state was stored at
    /// another rate ([`Rate::in_use_at_another_rate`]); the store's error.
    ///
    /// # Cancel safety
    /// As [`RateLimiter::try_acquire`]: the decision is one atomic step on the store, so
    /// a dropped call counted its permits or nothing.
    async fn step(&self, name: &Name, rate: &Rate, permits: u32) -> Result<Admission>;
}

/// The rate limiter `name` at `rate` that a store's [`RateStep`] decides: it checks
/// each request against the rate before the step sees it, so that every store refuses
/// a bad request alike and without I/O.
#[derive(Debug)]
pub struct RateStepLimiter<S> {
    name: Name,
    rate: Rate,
    step: S,
}

impl<S> RateStepLimiter<S> {
    /// The limiter `name` at `rate`, decided by `step`.
    pub fn new(name: Name, rate: Rate, step: S) -> Self {
        Self { name, rate, step }
    }
}

#[async_trait]
impl<S: RateStep> RateLimiter for RateStepLimiter<S> {
    fn name(&self) -> &Name {
        &self.name
    }

    fn rate(&self) -> Rate {
        self.rate
    }

    async fn try_acquire(&self, permits: u32) -> Result<Admission> {
        self.rate.check_request(permits)?;
        self.step.step(&self.name, &self.rate, permits).await
    }
}

/// The handle [`Primitives::rate_limiter`](crate::raw::Primitives::rate_limiter) makes
/// from a store whose step is made from the store's context and the limiter's name.
impl<C, S: Make<C, Name>> Make<C, (Name, Rate)> for RateStepLimiter<S> {
    fn make(context: &C, (name, rate): (Name, Rate)) -> Result<Self> {
        let step = S::make(context, name.clone())?;
        Ok(Self::new(name, rate, step))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    /// A step that counts what reaches it and grants everything.
    #[derive(Default)]
    struct Counting(AtomicU32);

    #[async_trait]
    impl RateStep for Counting {
        async fn step(&self, _: &Name, _: &Rate, permits: u32) -> Result<Admission> {
            self.0.fetch_add(permits, Ordering::SeqCst);
            Ok(Admission::Granted)
        }
    }

    #[tokio::test]
    async fn a_request_the_rate_refuses_never_reaches_the_step() {
        let rate = Rate::new(2, Duration::from_secs(1)).unwrap();
        let limiter = RateStepLimiter::new(Name::new("api").unwrap(), rate, Counting::default());
        assert!(matches!(
            limiter.try_acquire(0).await,
            Err(crate::Error::InvalidArgument(_))
        ));
        assert!(matches!(
            limiter.try_acquire(3).await,
            Err(crate::Error::InvalidArgument(_))
        ));
        assert!(limiter.try_acquire(2).await.unwrap().is_granted());
        assert_eq!(limiter.step.0.load(Ordering::SeqCst), 2);
        assert_eq!((limiter.name().as_str(), limiter.rate()), ("api", rate));
    }
}
