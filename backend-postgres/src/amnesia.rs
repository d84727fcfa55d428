//! When the store forgets: telling that the database answering is not the one the
//! client's sessions were granted on, the lock-delay before any grant after it, and
//! fencing tokens that keep growing.
//!
//! What forgets (an operator's act, not a restart) and what the backend then gives up
//! are in the crate docs ([`crate`], "When the store forgets"). The client's session
//! rows are then gone with every entry they held, and a new client can be granted a
//! lock at once while its former holder still acts on it until its next renewal (a
//! third of its TTL later) finds its row gone.
//!
//! **What tells it, with no extra round trip on the hot path.** At connect the client
//! reads the cluster's `system_identifier` (`pg_control_system()`, which `initdb`
//! draws anew; a role that may not read it goes without) and the schema's **epoch
//! marker**, the one row of `epoch_marker`: a random id, the longest session TTL in
//! use, the token offset (below) and the end of the store's lock-delay. Renewals are
//! unchanged. When a renewal finds a session's row gone (or the schema's objects
//! missing), or a session is lost because its renewals failed until its deadline
//! (then as soon as the store answers again), the client reads them again, with the store's highest fencing counter
//! (the token floor and every name's counter), and the store forgot when:
//! - the `system_identifier` changed (a fresh `initdb` at the same address);
//! - the schema is gone (a recreated database, a dropped schema);
//! - the marker it knew is missing or carries another id (a recreated schema, a
//!   restored backup taken before the marker was written);
//! - the highest counter is below a token this client handed out (a restored backup,
//!   a promoted standby that lacks commits): counters never go backwards otherwise
//!   (a pruned name's counter is folded into the token floor first).
//!
//! **On detection** every session of the client is lost (`lost()` fires, a warning
//! names the reason), and nothing is granted through it until the lock-delay has
//! passed: every join of a lock's, write lock's, election's or semaphore's line waits
//! until the longest session TTL that could have existed (the marker's, the client's
//! own longest, the configured bound) has passed since the detection. A holder's
//! client-side deadline falls within its TTL, so every old holder's `lost()` comes
//! before anyone is granted through this client. The client then writes into the
//! store (creating the schema's objects again if they are gone) the token floor, the
//! marker and its `hold_until`, so that every client that connects during the
//! lock-delay waits it out too.
//!
//! **Clients that never knew the old store** cannot tell a wiped store from a new one:
//! for them a missing marker is the only sign. With a bound on session TTLs
//! (`max_session_ttl=` in the URL, [`crate::PostgresConfig::max_session_ttl`]) the
//! client that finds the marker missing writes it with `hold_until` the bound away,
//! and every client that connects while `hold_until` lies ahead waits until then
//! before its first grant. A session longer than the bound is refused
//! ([`Error::InvalidArgument`]), so the bound covers every session. A client without
//! the bound leaves a missing marker alone (unless it saw the store forget). What the
//! bound costs and what going without it gives up are in the crate docs (see above).
//!
//! **Fencing tokens** are the names' counters, which a store that forgot starts again.
//! The client with the bound that writes a fresh marker seeds the store's token floor,
//! and every counter below it, from the server's clock in microseconds since the Unix
//! epoch (the marker's `token_offset`): above every token of the store before, as long
//! as its counters grew by less than one a microsecond over its life. The detecting
//! client raises the floor and the counters to the highest token it handed out, within
//! its lock-delay: an old holder alive across the forgetting detects it once the store
//! answers its renewal again. Whichever comes first, tokens handed out after the
//! lock-delay are above every token the old store handed out; the clock's seed is what
//! covers the tokens of clients gone by then, or still reconnecting when a newcomer's
//! lock-delay ends.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use distsync_core::raw::locked;
use distsync_core::{Error, Result};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::BACKEND;

/// The epoch marker as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Marker {
    /// Random, drawn by the client that wrote the marker first on this store.
    pub(crate) id: String,
    /// The longest session TTL any client recorded.
    pub(crate) ttl: Duration,
    /// The token offset (see the module docs).
    pub(crate) offset: i64,
    /// How long the store's lock-delay still runs (zero: none).
    pub(crate) hold_left: Duration,
}

/// A new random marker id.
pub(crate) fn fresh_id() -> String {
    format!("{:016x}", distsync_core::raw::random_u64())
}

/// What a check read from the store.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    /// The cluster's `system_identifier`, when the role may read it.
    pub(crate) system_id: Option<i64>,
    /// The schema is gone.
    pub(crate) schema_gone: bool,
    /// The marker (`None`: missing).
    pub(crate) marker: Option<Marker>,
    /// The highest fencing counter (the floor and every name's), when read.
    pub(crate) top_token: Option<i64>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    /// The `system_identifier` of the store this client knows.
    pub(crate) system_id: Option<i64>,
    /// The marker's id as this client read or wrote it.
    pub(crate) marker_id: Option<String>,
    /// The longest session TTL known (this client's, the marker's).
    pub(crate) longest_ttl: Duration,
    /// The marker's TTL as last read or written.
    pub(crate) marker_ttl: Duration,
    /// The highest fencing token handed out through this client.
    pub(crate) reported: i64,
    /// No line is joined before this.
    pub(crate) hold_until: Option<Instant>,
}

/// The detection state of one backend.
pub(crate) struct Amnesia {
    pub(crate) bound: Option<Duration>,
    state: Mutex<State>,
    /// Whether a [`check_soon`](crate::epoch::check_soon) runs (one at a time).
    pub(crate) pending: AtomicBool,
    /// How many checks were asked for.
    pub(crate) requested: AtomicU64,
}

impl Amnesia {
    /// Detection for a backend whose URL bounds session TTLs by `bound`.
    pub(crate) fn new(bound: Option<Duration>) -> Self {
        Self {
            bound,
            state: Mutex::new(State {
                longest_ttl: bound.unwrap_or_default(),
                ..State::default()
            }),
            pending: AtomicBool::new(false),
            requested: AtomicU64::new(0),
        }
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        locked(&self.state)
    }

    /// Refuses a session TTL above the bound, which the lock-delay relies on.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a TTL above the bound.
    pub(crate) fn check_ttl(&self, ttl: Duration) -> Result<()> {
        distsync_core::raw::check_session_ttl(ttl, self.bound)
    }

    /// Records a session TTL this client uses; `true` when the marker this client
    /// knows records a shorter one (raise it,
    /// [`raise_marker_ttl`](crate::epoch::raise_marker_ttl)).
    pub(crate) fn record_ttl(&self, ttl: Duration) -> bool {
        let mut state = self.state();
        state.longest_ttl = state.longest_ttl.max(ttl);
        state.marker_id.is_some() && ttl > state.marker_ttl
    }

    /// Records a fencing token handed out through this client.
    pub(crate) fn reported(&self, token: i64) {
        let mut state = self.state();
        state.reported = state.reported.max(token);
    }

    /// When the lock-delay ends, if one runs.
    pub(crate) fn hold(&self) -> Option<Instant> {
        self.state()
            .hold_until
            .filter(|until| *until > Instant::now())
    }

    /// Starts (or extends) a lock-delay of `delay` from now.
    pub(crate) fn hold_for(&self, delay: Duration) {
        let mut state = self.state();
        let until = Instant::now() + delay;
        state.hold_until = Some(state.hold_until.map_or(until, |held| held.max(until)));
    }

    /// The lock-delay after the store forgot: the longest session TTL known.
    pub(crate) fn delay(&self, marker: Option<&Marker>) -> Duration {
        let state = self.state();
        state
            .longest_ttl
            .max(state.marker_ttl)
            .max(marker.map_or(Duration::ZERO, |marker| marker.ttl))
            .max(self.bound.unwrap_or_default())
    }

    /// Records what was read (the store this client knows from now on).
    pub(crate) fn adopt(&self, system_id: Option<i64>, marker: Option<&Marker>) {
        let mut state = self.state();
        if system_id.is_some() {
            state.system_id = system_id;
        }
        if let Some(marker) = marker {
            state.marker_id = Some(marker.id.clone());
            state.marker_ttl = marker.ttl;
            state.longest_ttl = state.longest_ttl.max(marker.ttl);
            state.reported = state.reported.max(marker.offset);
        }
    }

    /// Why `seen` is a store that forgot, or `None` for the store this client knows.
    pub(crate) fn judge(&self, seen: &Seen) -> Option<String> {
        let state = self.state();
        if let (Some(known), Some(now)) = (state.system_id, seen.system_id) {
            if known != now {
                return Some(format!(
                    "the cluster's system_identifier changed from {known} to {now} (a new \
                     initdb at the same address)"
                ));
            }
        }
        if seen.schema_gone {
            return Some(
                "the schema of this client's sessions is gone (a recreated database or \
                 schema)"
                    .to_owned(),
            );
        }
        if let Some(known) = &state.marker_id {
            match &seen.marker {
                None => {
                    return Some(format!(
                        "the epoch marker {known} is gone (a recreated schema or a restored backup)"
                    ))
                }
                Some(marker) if marker.id != *known => {
                    return Some(format!(
                        "the epoch marker changed from {known} to {} (a store that forgot)",
                        marker.id
                    ))
                }
                Some(_) => {}
            }
        }
        match seen.top_token {
            Some(top) if top < state.reported => Some(format!(
                "the highest fencing counter is {top}, below the token {} this client handed \
                 out (a restored backup, or a promoted standby without the last commits)",
                state.reported
            )),
            _ => None,
        }
    }

    /// The token offset to write after the store forgot.
    pub(crate) fn offset(&self, seen: &Seen) -> i64 {
        let reported = self.state().reported;
        reported
            .max(seen.marker.as_ref().map_or(0, |marker| marker.offset))
            .max(seen.top_token.unwrap_or(0))
    }
}

/// Waits until the lock-delay, if one runs, has passed.
///
/// Cancel-safe: it only waits.
///
/// # Errors
/// [`Error::SessionLost`] when `lost` fires first.
pub(crate) async fn wait_hold(amnesia: &Amnesia, lost: &CancellationToken) -> Result<()> {
    while let Some(until) = amnesia.hold() {
        tracing::debug!(
            backend = BACKEND,
            left = ?until.saturating_duration_since(Instant::now()),
            "waiting out the lock-delay after the store forgot"
        );
        tokio::select! {
            biased;
            () = lost.cancelled() => return Err(Error::SessionLost),
            () = tokio::time::sleep_until(until) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(id: &str) -> Marker {
        Marker {
            id: id.to_owned(),
            ttl: Duration::from_secs(5),
            offset: 0,
            hold_left: Duration::ZERO,
        }
    }

    #[test]
    fn another_system_identifier_schema_or_marker_is_a_store_that_forgot() {
        let amnesia = Amnesia::new(None);
        amnesia.adopt(Some(7), Some(&marker("a")));
        let same = Seen {
            system_id: Some(7),
            marker: Some(marker("a")),
            ..Seen::default()
        };
        assert_eq!(amnesia.judge(&same), None);
        for forgot in [
            Seen {
                system_id: Some(8),
                marker: Some(marker("a")),
                ..Seen::default()
            },
            Seen {
                system_id: Some(7),
                schema_gone: true,
                ..Seen::default()
            },
            Seen {
                system_id: Some(7),
                ..Seen::default()
            },
            Seen {
                system_id: Some(7),
                marker: Some(marker("b")),
                ..Seen::default()
            },
        ] {
            assert!(amnesia.judge(&forgot).is_some(), "{forgot:?}");
        }
        // A role that may not read the system_identifier still judges the marker.
        assert_eq!(
            amnesia.judge(&Seen {
                marker: Some(marker("a")),
                ..Seen::default()
            }),
            None
        );
    }

    #[test]
    fn counters_below_a_token_handed_out_are_a_store_that_forgot() {
        let amnesia = Amnesia::new(None);
        amnesia.reported(41);
        let seen = |top| Seen {
            top_token: Some(top),
            ..Seen::default()
        };
        assert_eq!(amnesia.judge(&seen(41)), None);
        assert!(amnesia.judge(&seen(3)).is_some());
        // Tokens continue above every one handed out, and above the store's own.
        assert_eq!(amnesia.offset(&seen(3)), 41);
        assert_eq!(amnesia.offset(&seen(50)), 50);
    }

    #[test]
    fn the_lock_delay_is_the_longest_ttl_known() {
        let amnesia = Amnesia::new(Some(Duration::from_secs(5)));
        assert!(amnesia.hold().is_none());
        assert!(!amnesia.record_ttl(Duration::from_secs(2)));
        assert_eq!(amnesia.delay(None), Duration::from_secs(5));
        let mut long = marker("a");
        long.ttl = Duration::from_secs(9);
        assert_eq!(amnesia.delay(Some(&long)), Duration::from_secs(9));
        amnesia.adopt(None, Some(&marker("a")));
        // A session longer than the marker records raises it.
        assert!(amnesia.record_ttl(Duration::from_secs(6)));
        amnesia.hold_for(Duration::from_secs(5));
        assert!(amnesia.hold().is_some());
    }

    #[test]
    fn a_session_above_the_bound_is_refused() {
        let amnesia = Amnesia::new(Some(Duration::from_secs(5)));
        assert!(amnesia.check_ttl(Duration::from_secs(5)).is_ok());
        assert!(matches!(
            amnesia.check_ttl(Duration::from_secs(6)),
            Err(Error::InvalidArgument(_))
        ));
        assert!(Amnesia::new(None)
            .check_ttl(Duration::from_secs(3600))
            .is_ok());
        assert_ne!(fresh_id(), fresh_id());
    }
}
