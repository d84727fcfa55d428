//! A session that is replaced after a loss:
//! [`Coordinator::live_session`](crate::Coordinator::live_session) hands out
//! [`LiveSession`], whose [`current`](LiveSession::current) is always a live
//! [`Session`], opening a new one when the last one was lost.
//!
//! A [`Session`] is single-use: once it is lost, every lock, candidacy or delivery made
//! from it is dead, and a service that keeps one session for its whole life has to
//! notice the loss and open another itself. `LiveSession` does that part, and only
//! that part: it never hides a loss. The old session's `lost()` still fires, the
//! handles made from it stay dead, and what was held through it is released by the
//! store; the holder decides what to do about it (take the lock again, through
//! [`current`](LiveSession::current)).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::backend::Backend;
use crate::backoff::Backoff;
use crate::error::{Error, Result};
use crate::layers;
use crate::session::{Session, SessionOptions};

/// The first pause after a failed attempt to open a session.
const FIRST_RETRY: Duration = Duration::from_millis(100);

/// The longest pause between attempts to open a session: long enough not to hammer a
/// store that is down, short enough that a new session follows soon after it is back.
const LONGEST_RETRY: Duration = Duration::from_secs(5);

/// A session replaced after every loss, shared by the tasks of a service.
///
/// [`current`](LiveSession::current) returns the session in use while it is live, and
/// after a loss opens one new session (with the same [`SessionOptions`]) that every
/// caller then shares: several tasks asking at once after one loss all get the same
/// new session. The first session is opened by the first call.
///
/// Holders of the old session still learn of its loss: its [`Session::lost`] fires
/// and every guard, candidacy or delivery made from it stays dead. A lock held through
/// the old session must be taken again through the new one.
///
/// Cheap to clone (an `Arc`); clones share the session. When the last clone is dropped
/// the current session is dropped with it (revoked in the background, unless guards
/// made from it still hold clones of it).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
/// use std::time::Duration;
/// use distsync::SessionOptions;
/// let coordinator = distsync::connect("memory://").await?;
/// let sessions = coordinator.live_session(SessionOptions::with_ttl(Duration::from_secs(2)))?;
///
/// let session = sessions.current().await?;
/// let guard = coordinator.locker(&session, "jobs/nightly")?.lock().await?;
/// // The store ends the session (an operator, an expiry after a partition): the
/// // holder learns it at the next renewal.
/// coordinator.backend().revoke_session(session.id()).await?;
/// guard.lost().await;
/// session.lost().await;
///
/// // The next call opens a new session; the lock is taken again through it.
/// let replacement = sessions.current().await?;
/// assert_ne!(replacement.id(), session.id());
/// assert_eq!(sessions.generation(), 2);
/// let guard = coordinator.locker(&replacement, "jobs/nightly")?.lock().await?;
/// guard.unlock().await?;
/// sessions.close().await
/// # }
/// ```
#[derive(Clone)]
pub struct LiveSession {
    shared: Arc<Shared>,
}

struct Shared {
    backend: Arc<dyn Backend>,
    options: SessionOptions,
    /// The session in use. Locked across the opening of a replacement, so that
    /// callers arriving meanwhile wait for it instead of opening one each.
    current: tokio::sync::Mutex<Option<Session>>,
    /// How many sessions have been opened.
    generation: AtomicU64,
    /// Cancelled by `close()`: stops an opening in progress and every later call.
    closed: CancellationToken,
}

impl fmt::Debug for LiveSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveSession")
            .field("backend", &self.shared.backend.capabilities().backend)
            .field("options", &self.shared.options)
            .field("generation", &self.generation())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl LiveSession {
    /// A live session over `backend` with `options`, checked by the caller
    /// ([`Coordinator::live_session`](crate::Coordinator::live_session)). No I/O.
    pub(crate) fn new(backend: Arc<dyn Backend>, options: SessionOptions) -> Self {
        Self {
            shared: Arc::new(Shared {
                backend,
                options,
                current: tokio::sync::Mutex::new(None),
                generation: AtomicU64::new(0),
                closed: CancellationToken::new(),
            }),
        }
    }

    /// The session in use if it is still live; otherwise (none opened yet, or the
    /// last one lost) a new one, which becomes the session in use.
    ///
    /// While the store cannot be reached, it keeps trying, pausing 100 ms, then twice
    /// as long each time up to 5 s, for as long as the caller waits: bound it with
    /// `tokio::time::timeout` (a service usually has nothing better to do than wait
    /// for the store). Callers arriving while a replacement is being opened wait for
    /// it and get the same session.
    ///
    /// A session returned here can be lost at any moment afterwards; watch
    /// [`Session::lost`] (or a guard's) as with any session.
    ///
    /// # Errors
    /// [`Error::SessionLost`] once [`close`](LiveSession::close) has been called
    /// (including while this call was waiting); an error opening a session that
    /// retrying does not cure (not [`Error::is_transient`]: refused credentials, an
    /// unsupported backend, ...), returned as the store gave it.
    ///
    /// # Cancel safety
    /// Cancel-safe: dropping the future leaves the session in use as it was, and a
    /// replacement being opened is opened by the next call instead. A session the store
    /// granted just as the future was dropped is never renewed, so the store ends it after
    /// its TTL (as with [`Coordinator::session`](crate::Coordinator::session)).
    pub async fn current(&self) -> Result<Session> {
        let shared = &*self.shared;
        let mut current = tokio::select! {
            biased;
            () = shared.closed.cancelled() => return Err(Error::SessionLost),
            current = shared.current.lock() => current,
        };
        if shared.closed.is_cancelled() {
            return Err(Error::SessionLost);
        }
        if let Some(session) = current.as_ref().filter(|session| !session.is_lost()) {
            return Ok(session.clone());
        }
        let lost = current.as_ref().map(Session::id);
        let session = tokio::select! {
            biased;
            () = shared.closed.cancelled() => return Err(Error::SessionLost),
            opened = self.open() => opened?,
        };
        let generation = shared.generation.fetch_add(1, Ordering::SeqCst) + 1;
        match lost {
            Some(lost) => tracing::info!(
                backend = session.backend(),
                lost = %lost,
                session = %session.id(),
                generation,
                "session lost; replaced",
            ),
            None => tracing::debug!(
                backend = session.backend(),
                session = %session.id(),
                "live session opened",
            ),
        }
        *current = Some(session.clone());
        Ok(session)
    }

    /// Opens a session, retrying with backoff for as long as the store cannot be
    /// reached.
    async fn open(&self) -> Result<Session> {
        let shared = &*self.shared;
        let mut backoff = Backoff::new(FIRST_RETRY, LONGEST_RETRY);
        loop {
            match layers::session(shared.backend.as_ref(), shared.options.clone()).await {
                Ok(session) => {
                    if !backoff.is_reset() {
                        tracing::info!(
                            backend = session.backend(),
                            "the store answers again; session opened"
                        );
                    }
                    return Ok(session);
                }
                Err(error) if error.is_transient() => {
                    // An outage is logged once as it starts (and once as it ends,
                    // above), not at every attempt.
                    if backoff.is_reset() {
                        tracing::warn!(%error, "opening a session failed; retrying until the store answers");
                    } else {
                        tracing::debug!(%error, "opening a session failed again; retrying");
                    }
                    tokio::time::sleep(backoff.next_pause()).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// How many sessions have been opened: 0 before the first
    /// [`current`](LiveSession::current), 1 after it, one more after each
    /// replacement. A caller that kept the generation it last saw learns from a
    /// higher one that its session was replaced.
    pub fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::SeqCst)
    }

    /// The options every session is opened with.
    pub fn options(&self) -> &SessionOptions {
        &self.shared.options
    }

    /// Whether [`close`](LiveSession::close) has been called.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.is_cancelled()
    }

    /// Closes the session in use (see [`Session::close`]: everything held through it
    /// is released and its `lost()` fires) and stops handing out sessions: every
    /// clone's [`current`](LiveSession::current) then answers
    /// [`Error::SessionLost`], and an opening in progress is abandoned. Closing twice
    /// is harmless.
    ///
    /// # Errors
    /// As [`Session::close`]: the store's error if the revoke could not be sent (the
    /// lease then expires after its TTL).
    ///
    /// # Cancel safety
    /// Once the call has started, later calls to `current` fail whether or not it
    /// finishes. If the future is dropped before the session in use is closed, the
    /// session is closed when the last clone of this `LiveSession` is dropped (or
    /// ends with its TTL); dropped during the revoke, as [`Session::close`].
    pub async fn close(&self) -> Result<()> {
        self.shared.closed.cancel();
        let session = self.shared.current.lock().await.take();
        match session {
            Some(session) => session.close().await,
            None => Ok(()),
        }
    }
}
