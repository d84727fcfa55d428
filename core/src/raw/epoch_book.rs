//! What a client of a store that can forget keeps of the store's epochs: the epoch
//! marker it knows, the lock-delay after the store forgot, and the offset that keeps
//! fencing tokens growing.
//!
//! A backend whose store can forget (a wiped data directory, a new cluster at the same
//! address) tells it from signs of its own (a revision going back, a create below a
//! zxid seen, another cluster id) and from the [`EpochMarker`]. What follows a sign is
//! the same on every such store, and lives here:
//!
//! - the marker: read by every session as it opens, before its lease exists, and
//!   adopted (its offset and TTL); a marker the client knew found missing or carrying
//!   another id is a sign ([`EpochBook::observe_marker`]). Every session reads it, not
//!   only a client's first: a client idle while the store forgot, whose next answers
//!   show no sign (the new store's counter already past the old one's), would
//!   otherwise hand out tokens on its old offset, below those of the clients that
//!   read the new marker.
//! - on a sign ([`EpochBook::forgot`]): a new epoch, an offset above every token this
//!   client reported, and a lock-delay of the longest session TTL that could have
//!   existed (the client's, the marker's, the configured bound), after which the
//!   marker is read again;
//! - tokens: the store's counter plus the offset ([`EpochBook::up`], [`EpochBook::down`]).
//!
//! **The offset of a fresh marker.** A client that writes a marker where there is none
//! (the store is new, or it forgot) cannot know what tokens a forgotten store handed
//! out, so it seeds the offset from its clock: microseconds since the Unix epoch
//! (`clock_floor`). Tokens then start above every token of the store before,
//! whose offset was the clock when its own marker was written plus one per counter
//! step, as long as that store's counter grew by less than one a microsecond on
//! average over its life and the writers' clocks agree to within that life. A store
//! wiped minutes after it was first used, by clients on one host, meets this by
//! millions; so does a store run for years at thousands of writes a second. An old
//! holder alive across the forgetting also publishes the highest token it saw
//! ([`EpochBook::forgot`]), and a client adopts the higher of the two: the clock is
//! what makes the tokens grow when no old client is alive, or is still connecting,
//! when a newcomer's lock-delay ends. Waiting for old clients alone would make the
//! guarantee a race between their reconnection and the lock-delay.
//!
//! The book is plain data: a backend keeps it under its own lock, beside what its own
//! signs need.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::{EpochMarker, check_session_ttl};
use crate::Result;

/// A client's knowledge of its store's epochs (see the module docs).
///
/// ```
/// use std::time::Duration;
/// use distsync::store::raw::{EpochBook, EpochMarker};
///
/// let mut book = EpochBook::new(Some(Duration::from_secs(10)));
/// let marker = EpochMarker::fresh(Duration::from_secs(5), 0);
/// assert_eq!(book.observe_marker(Some(&marker), "a wiped store"), None);
/// assert_eq!(book.up(40), 40);
/// // The marker the client knew is gone: the store forgot.
/// let reason = book.observe_marker(None, "a wiped store").expect("a sign");
/// let delay = book.forgot("example", &reason);
/// assert_eq!(delay, Duration::from_secs(10), "the lock-delay: the bound");
/// assert!(book.hold().is_some());
/// // Tokens keep growing: the new store's counter 3 reports above 40.
/// assert_eq!(book.up(3), 43);
/// ```
#[derive(Clone, Debug)]
pub struct EpochBook {
    /// The configured bound on session TTLs.
    bound: Option<Duration>,
    /// How many times this client saw the store forget.
    epoch: u64,
    /// Added to every store counter reported up as a token.
    offset: i64,
    /// The highest token reported up.
    reported: i64,
    /// Nothing is granted through this client before this.
    hold_until: Option<Instant>,
    /// Whether the marker must be read again when the lock-delay ends.
    reread: bool,
    /// The longest session TTL known (this client's, the marker's, the bound).
    longest_ttl: Duration,
    /// The marker's id as this client read or wrote it.
    marker_id: Option<String>,
    /// Whether a session's check of the marker completed: read, and written where
    /// this client had to write it. Until then a client has no marker of its own to
    /// check again after a lost connection (every session's open checks it anyway).
    marker_checked: bool,
    /// The store's mark (create revision, `czxid`) of the last hold key or node that
    /// this client waited out or wrote.
    hold_mark: i64,
}

impl EpochBook {
    /// A book for a client with `bound` on its session TTLs, before any read.
    pub fn new(bound: Option<Duration>) -> Self {
        Self {
            bound,
            epoch: 0,
            offset: 0,
            reported: 0,
            hold_until: None,
            reread: false,
            longest_ttl: bound.unwrap_or_default(),
            marker_id: None,
            marker_checked: false,
            hold_mark: 0,
        }
    }

    /// The configured bound on session TTLs.
    pub fn bound(&self) -> Option<Duration> {
        self.bound
    }

    /// Refuses a session TTL above the bound, which the lock-delay relies on.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] for a TTL above the bound.
    pub fn check_ttl(&self, ttl: Duration) -> Result<()> {
        check_session_ttl(ttl, self.bound)
    }

    /// How many times this client saw the store forget: a request's answer is judged
    /// against what was known in the epoch it was sent in.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether this client saw the store forget.
    pub fn detected(&self) -> bool {
        self.epoch > 0
    }

    /// Whether a session's check of the marker completed at least once
    /// ([`EpochBook::record_ttl`]).
    pub fn marker_checked(&self) -> bool {
        self.marker_checked
    }

    /// Records the marker as read (`None`: missing) and adopts its offset and TTL.
    /// Returns why it shows the store forgot, `gone` saying what a missing marker
    /// means on this store, or `None`; on `Some` the caller resets what its own signs
    /// keep and calls [`EpochBook::forgot`].
    pub fn observe_marker(&mut self, marker: Option<&EpochMarker>, gone: &str) -> Option<String> {
        let reason = match (&self.marker_id, marker) {
            (Some(known), None) => Some(format!("the epoch marker {known} is gone ({gone})")),
            (Some(known), Some(marker)) if *known != marker.id => Some(format!(
                "the epoch marker changed from {known} to {} (a store that forgot)",
                marker.id
            )),
            _ => None,
        };
        match marker {
            Some(marker) => {
                self.marker_id = Some(marker.id.clone());
                self.offset = self.offset.max(marker.offset);
                self.longest_ttl = self.longest_ttl.max(marker.ttl);
            }
            None if reason.is_some() => self.marker_id = None,
            None => {}
        }
        reason
    }

    /// The store of `backend` forgot, as `reason` says: a new epoch, an offset above
    /// every token reported, and a lock-delay from now, after which the marker is read
    /// again. Logs a warning with both, and returns the delay.
    pub fn forgot(&mut self, backend: &str, reason: &str) -> Duration {
        self.epoch += 1;
        self.offset = self.offset.max(self.reported);
        let delay = self.delay();
        self.hold_for(delay);
        tracing::warn!(
            backend,
            reason,
            lock_delay = ?delay,
            "the {backend} store forgot: every session of this client is lost, and nothing \
             is granted through it until the lock-delay has passed"
        );
        delay
    }

    /// The lock-delay: the longest session TTL known, or the bound if longer.
    pub fn delay(&self) -> Duration {
        self.longest_ttl.max(self.bound.unwrap_or_default())
    }

    /// Starts (or extends) a lock-delay of `delay` from now, after which the marker is
    /// read again (a missing marker, or the store's hold key, seen by a client with
    /// the bound).
    pub fn hold_for(&mut self, delay: Duration) {
        let until = Instant::now() + delay;
        self.hold_until = Some(self.hold_until.map_or(until, |held| held.max(until)));
        self.reread = true;
    }

    /// When the lock-delay ends, if one runs.
    pub fn hold(&self) -> Option<Instant> {
        self.hold_until.filter(|until| *until > Instant::now())
    }

    /// Whether the marker must be read again after a lock-delay (cleared).
    pub fn take_reread(&mut self) -> bool {
        std::mem::take(&mut self.reread)
    }

    /// Whether a hold key or node of the store's `mark` is one this client has not
    /// waited out yet (and records it).
    pub fn new_hold(&mut self, mark: i64) -> bool {
        let new = self.hold_mark != mark;
        self.hold_mark = mark;
        new
    }

    /// Records a session TTL this client uses, once the session's check of the marker
    /// has completed ([`EpochBook::marker_checked`]).
    pub fn record_ttl(&mut self, ttl: Duration) {
        self.longest_ttl = self.longest_ttl.max(ttl);
        self.marker_checked = true;
    }

    /// The marker to write where there is none (`current`; its offset is at least
    /// `clock_floor`, see the module docs), or one raising the current one's TTL or
    /// offset, or `None` when the current one already covers them.
    pub fn marker_to_write(
        &self,
        current: Option<&EpochMarker>,
        ttl: Duration,
    ) -> Option<EpochMarker> {
        let longest = self.longest_ttl.max(ttl);
        match current {
            None => Some(EpochMarker::fresh(longest, self.offset.max(clock_floor()))),
            Some(marker) if marker.ttl < longest || marker.offset < self.offset => {
                Some(EpochMarker {
                    id: marker.id.clone(),
                    ttl: marker.ttl.max(longest),
                    offset: marker.offset.max(self.offset),
                })
            }
            Some(_) => None,
        }
    }

    /// Records the marker this client wrote, and adopts its offset.
    pub fn wrote_marker(&mut self, marker: &EpochMarker) {
        self.marker_id = Some(marker.id.clone());
        self.longest_ttl = self.longest_ttl.max(marker.ttl);
        self.offset = self.offset.max(marker.offset);
    }

    /// A store counter reported up as a token (0 and below: none, kept).
    pub fn up(&mut self, value: i64) -> i64 {
        if value <= 0 {
            return value;
        }
        let reported = value.saturating_add(self.offset);
        self.reported = self.reported.max(reported);
        reported
    }

    /// A reported token as the store knows it (0 and below kept; one from before the
    /// offset, which the store never had, becomes 1).
    pub fn down(&self, value: i64) -> i64 {
        if value <= 0 || self.offset == 0 {
            value
        } else {
            (value - self.offset).max(1)
        }
    }
}

/// The least offset of a fresh marker: this host's clock in microseconds since the
/// Unix epoch (see the module docs); 0 for a clock before it or past `i64`'s range,
/// which leaves the offset to what old clients publish.
fn clock_floor() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .and_then(|since| i64::try_from(since.as_micros()).ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn a_marker_gone_or_changed_shows_the_store_forgot() {
        let mut book = EpochBook::new(None);
        assert_eq!(
            book.observe_marker(None, "wiped"),
            None,
            "never known: no sign"
        );
        book.record_ttl(Duration::from_secs(5));
        let marker = EpochMarker::fresh(Duration::from_secs(5), 7);
        assert_eq!(book.observe_marker(Some(&marker), "wiped"), None);
        assert_eq!(book.up(1), 8, "the marker's offset is adopted");
        let gone = book.observe_marker(None, "wiped").unwrap();
        assert!(
            gone.contains(&marker.id) && gone.ends_with("(wiped)"),
            "{gone}"
        );
        book.forgot("test", "a test");
        assert!(book.detected());
        assert_eq!(
            book.observe_marker(Some(&EpochMarker::fresh(Duration::ZERO, 0)), "wiped"),
            None
        );
        let other = EpochMarker::fresh(Duration::ZERO, 0);
        assert!(book.observe_marker(Some(&other), "wiped").is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn forgetting_starts_a_lock_delay_and_raises_the_offset() {
        let mut book = EpochBook::new(Some(Duration::from_secs(5)));
        book.record_ttl(Duration::from_secs(8));
        assert_eq!(book.up(100), 100);
        assert!(book.hold().is_none() && !book.take_reread());
        assert_eq!(book.forgot("test", "a test"), Duration::from_secs(8));
        assert_eq!(book.epoch(), 1);
        let until = book.hold().unwrap();
        assert_eq!(until - Instant::now(), Duration::from_secs(8));
        assert!(book.take_reread() && !book.take_reread());
        // Tokens keep growing, and map back to the store's counter.
        assert_eq!(book.up(4), 104);
        assert_eq!((book.down(104), book.down(50), book.down(0)), (4, 1, 0));
        // A shorter hold does not cut a running one.
        book.hold_for(Duration::from_secs(1));
        assert_eq!(book.hold(), Some(until));
        tokio::time::advance(Duration::from_secs(8)).await;
        assert!(book.hold().is_none());
    }

    #[test]
    fn the_marker_written_records_the_longest_ttl_and_the_offset() {
        let mut book = EpochBook::new(Some(Duration::from_secs(5)));
        let floor = clock_floor();
        let fresh = book.marker_to_write(None, Duration::from_secs(2)).unwrap();
        assert_eq!(fresh.ttl, Duration::from_secs(5));
        // A fresh marker's offset is the writer's clock: above every token a store
        // forgotten before it handed out.
        assert!(fresh.offset >= floor && floor > 1_700_000_000_000_000);
        assert!(fresh.offset <= clock_floor());
        book.wrote_marker(&fresh);
        assert_eq!(book.up(3), fresh.offset + 3, "the writer adopts its offset");
        assert_eq!(
            book.marker_to_write(Some(&fresh), Duration::from_secs(2)),
            None
        );
        book.up(50);
        assert!(book.observe_marker(None, "wiped").is_some());
        book.forgot("test", "a test");
        let stale = EpochMarker {
            offset: 0,
            ..fresh.clone()
        };
        let raised = book.marker_to_write(Some(&stale), Duration::ZERO).unwrap();
        assert_eq!(
            (raised.id.as_str(), raised.offset),
            (fresh.id.as_str(), fresh.offset + 50)
        );
        assert!(book.new_hold(9) && !book.new_hold(9) && book.new_hold(10));
    }

    #[test]
    fn a_session_above_the_bound_is_refused() {
        let book = EpochBook::new(Some(Duration::from_secs(5)));
        assert!(book.check_ttl(Duration::from_secs(5)).is_ok());
        assert!(matches!(
            book.check_ttl(Duration::from_secs(6)),
            Err(Error::InvalidArgument(_))
        ));
        assert!(
            EpochBook::new(None)
                .check_ttl(Duration::from_secs(3600))
                .is_ok()
        );
    }
}
