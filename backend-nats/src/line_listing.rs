//! One listing of a line for every waiter of this process that asked before it was
//! sent.
//!
//! A contender lists its line once it has entered it and again after each wake-up
//! (`src/lock.rs`, step 2). A thousand waiters of one process entering a line at once
//! would each list it, up to a thousand keys a listing: about half a million messages
//! for the server to send down one connection and for this client to read, which
//! starves every other request of the process (measured: the server dropped the
//! client as a slow consumer, and every session of the process was lost). A waiter
//! needs a listing sent after it asked, not one of its own: its own key, and the end
//! of the key it woke for, are in any listing sent after that. So the waiters of one
//! line list it in turn, and a waiter whose turn comes after a listing was sent later
//! than it asked takes that listing instead of sending another. However many waiters
//! of the process ask at once, at most two listings of the line are sent: the one in
//! flight when they asked, and one after it.
//!
//! A listing that failed serves nobody else: each waiter then lists for itself (and
//! rides the failure out as its wait does).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use distsync_core::raw::locked;
use distsync_core::Result;

use crate::store::{Entry, Store};

/// A line's listing: its messages and the stream sequence it was read at.
pub(crate) type Listed = Arc<(Vec<Entry>, u64)>;

/// The lines this process's waiters are listing.
#[derive(Debug, Default)]
pub(crate) struct LineListings {
    lines: Mutex<HashMap<String, Arc<Line>>>,
}

/// One line's turns.
#[derive(Debug, Default)]
struct Line {
    /// How many listings of the line have been sent.
    sent: AtomicU64,
    /// The turn, and the last listing that succeeded with its number (in `sent`).
    last: tokio::sync::Mutex<Option<(u64, Listed)>>,
}

impl LineListings {
    /// A listing of every key matching `filter` sent after this call began.
    ///
    /// # Errors
    /// The store's error, from this call's own listing.
    ///
    /// # Cancel safety
    /// Cancel-safe: a call dropped in its turn leaves the turn to the next waiter,
    /// which lists again.
    pub(crate) async fn list(&self, store: &Store, filter: &str) -> Result<Listed> {
        let filters = [filter.to_owned()];
        self.in_turn(filter, || store.list(&filters)).await
    }

    /// The turns of [`LineListings::list`], with `list` sending the listing.
    async fn in_turn<F, Fut>(&self, filter: &str, list: F) -> Result<Listed>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(Vec<Entry>, u64)>>,
    {
        let line = Arc::clone(self.lines().entry(filter.to_owned()).or_default());
        let listed = line.take_turn(list).await;
        let mut lines = self.lines();
        // Nobody else is waiting for a turn of this line (the map holds one count,
        // this call the other): forget it.
        if Arc::strong_count(&line) == 2 {
            lines.remove(filter);
        }
        listed
    }

    fn lines(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Line>>> {
        locked(&self.lines)
    }
}

impl Line {
    /// The last listing if it was sent after this call read `sent`, else one sent by
    /// `list` now.
    async fn take_turn<F, Fut>(&self, list: F) -> Result<Listed>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(Vec<Entry>, u64)>>,
    {
        let asked = self.sent.load(Ordering::SeqCst);
        let mut last = self.last.lock().await;
        if let Some((number, listed)) = &*last {
            // Sent once `sent` had passed what this call read: after it asked.
            if *number > asked {
                return Ok(Arc::clone(listed));
            }
        }
        let number = self.sent.fetch_add(1, Ordering::SeqCst) + 1;
        let listed = Arc::new(list().await?);
        *last = Some((number, Arc::clone(&listed)));
        Ok(listed)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::store::Write;
    use crate::test_server::sent;

    /// A line of the test server's bucket `line_listings` with one key in it.
    async fn line_with_a_key() -> Option<(crate::NatsBackend, String)> {
        let backend = crate::test_server::backend("DISTSYNC_NATS_URL", "line_listings").await?;
        let line = format!("lock.listed-{}.q", distsync_core::raw::call_id());
        let store = &backend.shared.store;
        store
            .publish(Write::put(format!("{line}.first"), Bytes::new()))
            .await
            .unwrap();
        Some((backend, line))
    }

    /// Many waiters of the test server's line asking at once (every one asks before
    /// the first listing is sent on) cost two listings: the first, and one sent after
    /// they all asked; each has the line's key.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiters_asking_at_once_share_two_listings() {
        const WAITERS: usize = 64;
        let Some((backend, line)) = line_with_a_key().await else {
            return;
        };
        let (store, listings) = (&backend.shared.store, &backend.shared.listings);
        let filters = [crate::keys::every_in(&line)];
        let asked = std::sync::atomic::AtomicUsize::new(0);
        let before = sent(store);
        let waiters = (0..WAITERS).map(|_| async {
            asked.fetch_add(1, Ordering::SeqCst);
            listings
                .in_turn(&filters[0], || async {
                    while asked.load(Ordering::SeqCst) < WAITERS {
                        tokio::task::yield_now().await;
                    }
                    store.list(&filters).await
                })
                .await
        });
        let listed = futures::future::join_all(waiters).await;
        assert_eq!(
            sent(store) - before,
            2,
            "listing requests sent for {WAITERS} waiters"
        );
        for listed in listed {
            assert_eq!(listed.unwrap().0.len(), 1, "the line's one key");
        }
        assert!(
            listings.lines().is_empty(),
            "a line nobody lists is forgotten"
        );
    }

    /// A listing whose answer comes when `answer` is sent, as of `seq`.
    fn held_until(
        answer: tokio::sync::oneshot::Receiver<()>,
        seq: u64,
    ) -> impl FnOnce() -> futures::future::BoxFuture<'static, Result<(Vec<Entry>, u64)>> {
        move || {
            Box::pin(async move {
                answer.await.unwrap();
                Ok((Vec::new(), seq))
            })
        }
    }

    /// Waiters that ask while a listing is in flight (sent before they asked) do not
    /// take it: the first of them in turn sends another, and the rest take that one.
    #[tokio::test(flavor = "current_thread")]
    async fn waiters_asking_during_a_listing_share_the_next() {
        let listings = Arc::new(LineListings::default());
        let (answer_first, first_answered) = tokio::sync::oneshot::channel();
        let first = tokio::spawn({
            let listings = Arc::clone(&listings);
            async move { listings.in_turn("l", held_until(first_answered, 1)).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(
            listings.lines()["l"].sent.load(Ordering::SeqCst),
            1,
            "in flight"
        );
        let sent_later = Arc::new(AtomicU64::new(0));
        let later: Vec<_> = (0..3)
            .map(|_| {
                let (listings, sent_later) = (Arc::clone(&listings), Arc::clone(&sent_later));
                tokio::spawn(async move {
                    listings
                        .in_turn("l", || {
                            sent_later.fetch_add(1, Ordering::SeqCst);
                            async { Ok((Vec::new(), 2)) }
                        })
                        .await
                })
            })
            .collect();
        // The later waiters ask, then wait for their turn.
        tokio::task::yield_now().await;
        answer_first.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap().1, 1);
        for waiter in later {
            assert_eq!(
                waiter.await.unwrap().unwrap().1,
                2,
                "a listing sent after the waiter asked"
            );
        }
        assert_eq!(
            sent_later.load(Ordering::SeqCst),
            1,
            "one listing for the three"
        );
        assert!(
            listings.lines().is_empty(),
            "a line nobody lists is forgotten"
        );
    }

    /// A listing that failed serves nobody else: the next waiter lists for itself.
    #[tokio::test(flavor = "current_thread")]
    async fn a_failed_listing_is_nobody_elses() {
        let listings = LineListings::default();
        let failed = listings
            .in_turn("l", || async {
                Err(distsync_core::Error::connection("test", "no answer"))
            })
            .await;
        assert!(failed.is_err());
        let listed = listings
            .in_turn("l", || async { Ok((Vec::new(), 7)) })
            .await;
        assert_eq!(listed.unwrap().1, 7);
    }
}
