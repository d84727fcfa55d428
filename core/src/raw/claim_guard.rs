//! The claim on a queue item between the store's answer and the caller: the one place a
//! dequeue or receive can lose an item. A caller that drops the call (its own timeout,
//! a `select!`) after the store took the item, but before the item reached it, must
//! not lose it; so the claim is held by a guard that puts the item back when dropped,
//! and that, once the item is handed over, ends the claim's record instead. Both run
//! in the background, through transient failures ([`CleanUp`]), since a `Drop` cannot
//! await and the handing over must not: nothing can cancel the caller between the
//! store's answer and the item in its hands.
//!
//! Each store supplies its atomic steps ([`Claim`]); the guard is written once.

use async_trait::async_trait;

use crate::error::Result;
use crate::raw::CleanUp;

/// A store's claim on one queue item, taken under a call id: the two idempotent steps
/// that end it, each repeated through transient failures until it lands.
#[async_trait]
pub trait Claim: Send + Sync + 'static {
    /// The clean-up that puts the item back: its name in log lines, what a put-back
    /// that fails for good leaves (where the item waits), the claim it is of, and how
    /// long it is retried.
    fn put_back_clean_up(&self) -> CleanUp;

    /// One attempt at putting the item back where it was, ending the claim. Idempotent:
    /// a repeat after one that landed changes nothing.
    ///
    /// # Errors
    /// The store's error; a transient one is retried.
    async fn put_back(&self) -> Result<()>;

    /// The clean-up that ends a claim whose item was handed over (its in-flight
    /// record), or `None` when the claim leaves nothing behind once taken.
    fn forget_clean_up(&self) -> Option<CleanUp> {
        None
    }

    /// One attempt at ending the claim of an item handed over. Idempotent.
    ///
    /// # Errors
    /// The store's error; a transient one is retried.
    async fn forget(&self) -> Result<()> {
        Ok(())
    }
}

/// A [`Claim`] not yet ended: dropped, it puts its item back in the background;
/// [`hand_over`](ClaimGuard::hand_over) ends it as delivered instead.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::sync::Arc;
/// use tokio::sync::Notify;
/// use async_trait::async_trait;
/// use distsync::store::raw::{Claim, ClaimGuard, CleanUp};
///
/// struct Taken(Arc<Notify>);
///
/// #[async_trait]
/// impl Claim for Taken {
///     fn put_back_clean_up(&self) -> CleanUp {
///         CleanUp::new("putting back an item", "it waits in flight")
///     }
///     async fn put_back(&self) -> distsync::Result<()> {
///         self.0.notify_one();
///         Ok(())
///     }
/// }
///
/// let put_back = Arc::new(Notify::new());
/// // The caller went away before the item reached it: the item goes back.
/// drop(ClaimGuard::new(Taken(Arc::clone(&put_back))));
/// put_back.notified().await;
/// # }
/// ```
#[must_use = "dropping the guard puts its item back"]
pub struct ClaimGuard<C: Claim> {
    claim: Option<C>,
}

impl<C: Claim> ClaimGuard<C> {
    /// Guards `claim`, which took an item.
    pub fn new(claim: C) -> Self {
        Self { claim: Some(claim) }
    }

    /// The item reached the caller: ends the claim as delivered, in the background
    /// ([`Claim::forget`]). Not async, so that nothing cancels the caller between the
    /// store's answer and the item in its hands.
    pub fn hand_over(mut self) {
        let Some(claim) = self.claim.take() else {
            return;
        };
        let Some(clean_up) = claim.forget_clean_up() else {
            return;
        };
        clean_up.spawn(move |clean_up| async move { clean_up.retry(|| claim.forget()).await });
    }

    /// Ends the guard with nothing to do: the claim turned out to take no item.
    pub fn disarm(mut self) {
        self.claim = None;
    }
}

impl<C: Claim> std::fmt::Debug for ClaimGuard<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimGuard")
            .field("armed", &self.claim.is_some())
            .finish()
    }
}

impl<C: Claim> Drop for ClaimGuard<C> {
    fn drop(&mut self) {
        let Some(claim) = self.claim.take() else {
            return;
        };
        claim
            .put_back_clean_up()
            .spawn(move |clean_up| async move { clean_up.retry(|| claim.put_back()).await });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::sync::Notify;

    /// A claim that counts its steps, fails its first put-back attempts transiently,
    /// and signals each step that lands.
    struct Counted {
        put_backs: Arc<AtomicU32>,
        forgets: Arc<AtomicU32>,
        transient_failures: AtomicU32,
        landed: Arc<Notify>,
    }

    #[async_trait]
    impl Claim for Counted {
        fn put_back_clean_up(&self) -> CleanUp {
            CleanUp::new("putting back a test item", "it stays claimed")
        }

        async fn put_back(&self) -> Result<()> {
            if self
                .transient_failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(Error::connection("test", "a store that does not answer"));
            }
            self.put_backs.fetch_add(1, Ordering::SeqCst);
            self.landed.notify_one();
            Ok(())
        }

        fn forget_clean_up(&self) -> Option<CleanUp> {
            Some(CleanUp::new("forgetting a test claim", "its record stays"))
        }

        async fn forget(&self) -> Result<()> {
            self.forgets.fetch_add(1, Ordering::SeqCst);
            self.landed.notify_one();
            Ok(())
        }
    }

    fn counted(transient_failures: u32) -> (Counted, Arc<AtomicU32>, Arc<AtomicU32>, Arc<Notify>) {
        let (put_backs, forgets, landed) = (
            Arc::new(AtomicU32::new(0)),
            Arc::new(AtomicU32::new(0)),
            Arc::new(Notify::new()),
        );
        let claim = Counted {
            put_backs: Arc::clone(&put_backs),
            forgets: Arc::clone(&forgets),
            transient_failures: AtomicU32::new(transient_failures),
            landed: Arc::clone(&landed),
        };
        (claim, put_backs, forgets, landed)
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_claim_is_put_back_through_transient_failures() {
        let (claim, put_backs, forgets, landed) = counted(2);
        drop(ClaimGuard::new(claim));
        landed.notified().await;
        assert_eq!(put_backs.load(Ordering::SeqCst), 1);
        assert_eq!(forgets.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_handed_over_claim_is_forgotten_not_put_back() {
        let (claim, put_backs, forgets, landed) = counted(0);
        ClaimGuard::new(claim).hand_over();
        landed.notified().await;
        tokio::task::yield_now().await;
        assert_eq!(forgets.load(Ordering::SeqCst), 1);
        assert_eq!(put_backs.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_disarmed_claim_does_nothing() {
        let (claim, put_backs, forgets, _) = counted(0);
        ClaimGuard::new(claim).disarm();
        // The claim was dropped on the spot, not moved into a clean-up task.
        assert_eq!(Arc::strong_count(&put_backs), 1);
        assert_eq!(Arc::strong_count(&forgets), 1);
    }
}
