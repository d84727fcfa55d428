//! When the store forgets: telling that the bucket answering is not the one the
//! client's sessions were opened on, the lock-delay before any grant after it, and
//! fencing tokens that keep growing.
//!
//! A nats-server kill loses nothing (see the crate docs, "Durability"). What does
//! forget is an operator's act: a server whose store directory was wiped and that was
//! started again at the same address, or the bucket deleted and made again. Every key
//! is then gone, sessions' keys with it, and a new client can be granted a lock at once
//! while its former holder still acts on it until its next renewal finds its key gone.
//!
//! **What tells it.** The client keeps the time its bucket's stream was made
//! ([`crate::bucket::Made::created`]); a stream made again has another, and a wiped
//! server has none until a client makes it. It also keeps the id of the bucket's
//! **epoch marker**, the key `amnesia` holding a random id, the longest session TTL in
//! use and the token offset, as [`EpochMarker`] encodes them (the key is no
//! primitive's: every primitive's key starts with its kind and a name). It reads the
//! marker as every session opens, before the session's key exists (see [`EpochBook`]
//! for why every open); a read that finds nothing at its read floor (a new stream's
//! sequences below what it saw) makes it look at the stream as below. A renewal
//! that fails or is refused makes the client look again, in the background: at the
//! stream (gone: it makes the bucket again; made again) and at the marker (missing,
//! or carrying another id).
//!
//! **On detection** every session the client opened before is lost at its next
//! renewal (their keys are gone with the store), its read floor starts again from the
//! new stream's, and a warning names the reason. Then nothing is granted through this
//! client until the lock-delay has passed: every contender key (joining a lock's,
//! write lock's, election's or semaphore's line) waits before it is written until the
//! longest session TTL that could have existed has passed since the detection (the
//! marker's, the client's own longest, and the configured bound).
//!
//! **Clients that never knew the old store** cannot tell a wiped store from a new one:
//! for them a missing marker is the only sign. With a bound on session TTLs
//! (`max_session_ttl=` in the URL, [`crate::NatsConfig::max_session_ttl`]) the client
//! that finds the marker missing writes it in one atomic batch with the hold key
//! `amnesia-hold`, whose `Nats-TTL` is the bound, so that it lives for the bound
//! whatever becomes of the client; every client that opens its first session while the
//! hold key lives (or writes it) waits out the bound before its first grant. A session
//! longer than the bound is refused ([`distsync_core::Error::InvalidArgument`]), so the
//! bound covers every session. The price: a bucket's first session on a server waits
//! the bound once before its first grant. A client without the bound leaves a missing
//! marker alone (unless it saw the store forget): it cannot tell a new store from one
//! that forgot, and grants without a wait. Only the bound makes the backend declare
//! `exclusive_across_restart`, and every client of a bucket must give it.
//!
//! **Fencing tokens** are create sequences, which start again at 1 on a stream made
//! again. The client reports every token as the stream's sequence plus the marker's
//! offset, which [`EpochBook`] seeds and raises (see its docs); it reads the marker
//! again at the end of every lock-delay, and an old holder alive across the forgetting
//! finds out at its first renewal once the server answers again. Sequences stay the
//! stream's everywhere else (a line's order, compares).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use distsync_core::raw::locked;
use distsync_core::raw::{EpochBook, EpochMarker};
use distsync_core::{FencingToken, Result};
use tokio::time::Instant;

use crate::bucket;
use crate::config::NatsConfig;
use crate::store::{below_floor, Store, Write};
use crate::BACKEND;

/// The marker's key.
const MARKER: &str = "amnesia";
/// The hold key: while it lives, first grants wait.
const HOLD: &str = "amnesia-hold";
/// How many times a marker write that raced another client's is tried again.
const WRITE_ATTEMPTS: usize = 8;
/// What a missing marker means on this store.
const GONE: &str = "a wiped server or a deleted bucket";

/// What [`Amnesia`] keeps under its lock.
struct State {
    /// The marker, the lock-delay and the token offset, as every store that can
    /// forget keeps them.
    book: EpochBook,
    /// When the bucket's stream this client uses was made.
    created: i128,
}

/// The detection state of one backend (shared by its sessions).
pub(crate) struct Amnesia {
    state: Mutex<State>,
    /// Whether a look after a failed renewal is under way.
    looking: AtomicBool,
}

impl Amnesia {
    /// Detection for a bucket whose stream was made at `created`, with `bound` the
    /// configured bound on session TTLs.
    pub(crate) fn new(bound: Option<Duration>, created: i128) -> Self {
        Self {
            state: Mutex::new(State {
                book: EpochBook::new(bound),
                created,
            }),
            looking: AtomicBool::new(false),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        locked(&self.state)
    }

    /// How many times this client saw the store forget: a session opened in an
    /// earlier epoch is gone.
    pub(crate) fn epoch(&self) -> u64 {
        self.state().book.epoch()
    }

    /// The fencing token of a key created at the stream sequence `seq`.
    pub(crate) fn token(&self, seq: u64) -> FencingToken {
        FencingToken(u64::try_from(self.state().book.up(mark(seq))).unwrap_or(0))
    }

    /// Before a session of `ttl` opens: refuses a TTL above the bound, and reads the
    /// marker (see the module docs), recording the TTL there before any key of the
    /// session exists. A read that nothing answers at this client's read floor may be
    /// of a stream made again while the client was idle, still below the sequences it
    /// saw: only the stream's creation time tells, so the client looks at it (as after
    /// a failed renewal, which resets the floor for a new stream) and reads again.
    ///
    /// # Errors
    /// [`distsync_core::Error::InvalidArgument`] for a TTL above the bound; the
    /// store's error.
    pub(crate) async fn before_session(
        &self,
        store: &Store,
        config: &NatsConfig,
        ttl: Duration,
    ) -> Result<()> {
        self.state().book.check_ttl(ttl)?;
        if let Err(error) = self.sync_marker(store, Some(ttl)).await {
            if !below_floor(&error) {
                return Err(error);
            }
            self.look(store, config).await;
            self.sync_marker(store, Some(ttl)).await?;
        }
        self.state().book.record_ttl(ttl);
        Ok(())
    }

    /// Before a contender key is written: waits out a lock-delay, then reads the
    /// marker again (adopting the token offset an old holder wrote meanwhile).
    ///
    /// Cancel-safe: it only waits and reads.
    pub(crate) async fn before_grant(&self, store: &Store) {
        loop {
            loop {
                let until = self.state().book.hold();
                let Some(until) = until else { break };
                tokio::time::sleep_until(until).await;
            }
            if !self.state().book.take_reread() {
                return;
            }
            if let Err(error) = self.sync_marker(store, None).await {
                tracing::debug!(backend = BACKEND, %error, "reading the epoch marker failed");
            }
        }
    }

    /// After a renewal failed or was refused: looks at the bucket's stream and the
    /// marker in the background (one look at a time), so that a store that forgot is
    /// told and the token offset published while the renewal goes on.
    pub(crate) fn look_after_loss(self: &Arc<Self>, store: &Store, config: &NatsConfig) {
        if self.looking.swap(true, Ordering::AcqRel) {
            return;
        }
        let (amnesia, store, config) = (Arc::clone(self), store.clone(), config.clone());
        tokio::spawn(async move {
            amnesia.look(&store, &config).await;
            amnesia.looking.store(false, Ordering::Release);
        });
    }

    /// One look (see [`Amnesia::look_after_loss`]). A server that does not answer
    /// tells nothing yet: the next failed renewal looks again.
    async fn look(&self, store: &Store, config: &NatsConfig) {
        let created = match bucket::created(store).await {
            Ok(created) => created,
            Err(error) => {
                tracing::debug!(backend = BACKEND, %error, "looking at the bucket failed");
                return;
            }
        };
        let known = self.state().created;
        let reason = match created {
            None => Some("the bucket is gone (a wiped server or a deleted bucket)"),
            Some(created) if created != known => {
                Some("the bucket was made again (a wiped server or a recreated bucket)")
            }
            Some(_) => None,
        };
        if let Some(reason) = reason {
            self.state().book.forgot(BACKEND, reason);
            store.forget_floor();
            let made = match created {
                Some(created) => Some(created),
                None => {
                    let deadline = Instant::now() + config.connect_timeout();
                    match bucket::ensure(store, config.replicas(), deadline).await {
                        Ok(made) => Some(made.created),
                        Err(error) => {
                            tracing::debug!(backend = BACKEND, %error, "making the bucket again failed");
                            None
                        }
                    }
                }
            };
            if let Some(made) = made {
                self.state().created = made;
            }
        }
        // A bucket emptied under the same stream tells only through the marker; a
        // detection publishes the token offset there.
        if let Err(error) = self.sync_marker(store, None).await {
            tracing::debug!(backend = BACKEND, %error, "reading the epoch marker failed");
        }
    }

    /// Reads the marker and the hold key in one listing, judges them, and writes the
    /// marker where it is missing or records less than this client knows (a longer
    /// session TTL `ttl`, a higher token offset). A missing marker, with a bound or
    /// after a detection, is written with the hold key in one atomic batch, and
    /// starts the lock-delay.
    ///
    /// Cancel-safe: each write is one compare-and-set against what was read.
    async fn sync_marker(&self, store: &Store, ttl: Option<Duration>) -> Result<()> {
        for _ in 0..WRITE_ATTEMPTS {
            let (entries, _) = store.list(&[MARKER.to_owned(), HOLD.to_owned()]).await?;
            let last = |key: &str| entries.iter().find(|entry| entry.key == key);
            // The marker's last sequence, a tombstone's included: what the write
            // compares against.
            let stored_seq = last(MARKER).map_or(0, |entry| entry.seq);
            let stored = last(MARKER).filter(|entry| entry.live());
            let held = last(HOLD).filter(|entry| entry.live());
            let marker = stored.and_then(|entry| EpochMarker::parse(&entry.value));
            let (write, hold) = {
                let mut state = self.state();
                let book = &mut state.book;
                if let Some(reason) = book.observe_marker(marker.as_ref(), GONE) {
                    book.forgot(BACKEND, &reason);
                }
                // A hold key waited out once is not waited again.
                if let Some(held) = held.filter(|held| book.new_hold(mark(held.seq))) {
                    let delay = std::str::from_utf8(&held.value)
                        .ok()
                        .and_then(|ms| ms.parse().ok())
                        .map_or_else(|| book.delay(), Duration::from_millis);
                    book.hold_for(delay);
                }
                let hold = match (stored, book.bound()) {
                    (Some(_), _) => None,
                    (None, Some(_)) => Some(book.delay()),
                    (None, None) if book.detected() => Some(book.delay()),
                    (None, None) => return Ok(()),
                };
                match book.marker_to_write(marker.as_ref(), ttl.unwrap_or_default()) {
                    Some(write) => (write, hold),
                    None => return Ok(()),
                }
            };
            let mut writes = Vec::with_capacity(2);
            if let Some(delay) = hold {
                writes.push(Write::put(HOLD, delay.as_millis().to_string()).ttl(delay));
            }
            writes.push(Write::put(MARKER, write.encode()).if_at(stored_seq));
            let Some(seq) = store.batch(writes).await?.compared()? else {
                continue;
            };
            let mut state = self.state();
            state.book.wrote_marker(&write);
            if let Some(delay) = hold {
                // The batch stored the hold key just before the marker.
                state.book.new_hold(mark(seq.saturating_sub(1)));
                state.book.hold_for(delay);
                tracing::info!(
                    backend = BACKEND,
                    lock_delay = ?delay,
                    "no epoch marker: the store is new or forgot; grants wait the lock-delay"
                );
            }
            return Ok(());
        }
        Err(distsync_core::Error::backend(
            BACKEND,
            "the epoch marker kept changing under this client's writes",
        ))
    }
}

/// A hold key's sequence as the book marks it.
fn mark(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}
