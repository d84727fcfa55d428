//! The epoch marker: what a store that can forget (a wiped data directory, a new
//! cluster at the same address) keeps so that its clients tell it forgot.
//!
//! A backend writes one marker per namespace, on the first session of a client that
//! finds none: a random id, the longest session TTL any client recorded (the
//! lock-delay after the store forgets waits that long), and the offset added to the
//! store's own counters so that fencing tokens keep growing on a store that starts
//! them again from the start. A client that knew the marker and finds it missing, or
//! carrying another id, knows the store forgot. The etcd, MySQL, ZooKeeper and NATS
//! backends keep it in a key or node of its own, in the text form
//! [`EpochMarker::encode`] writes.

use std::fmt::Write as _;
use std::time::Duration;

/// The content of an epoch marker (see the module docs).
///
/// ```
/// use std::time::Duration;
/// use distsync::store::raw::EpochMarker;
///
/// let marker = EpochMarker::fresh(Duration::from_secs(15), 42);
/// assert_eq!(EpochMarker::parse(marker.encode().as_bytes()), Some(marker));
/// assert_eq!(EpochMarker::parse(b"written by another program"), None);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochMarker {
    /// Random, chosen by the client that wrote the marker first on this store.
    pub id: String,
    /// The longest session TTL any client recorded.
    pub ttl: Duration,
    /// The token offset: added to the store's counters reported as fencing tokens.
    pub offset: i64,
}

impl EpochMarker {
    /// A new marker with a random id.
    pub fn fresh(ttl: Duration, offset: i64) -> Self {
        Self {
            id: format!("{:016x}", crate::raw::random_u64()),
            ttl,
            offset,
        }
    }

    /// `id=<hex> ttl_ms=<n> offset=<n>`.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let _ = write!(
            text,
            "id={} ttl_ms={} offset={}",
            self.id,
            self.ttl.as_millis(),
            self.offset
        );
        text
    }

    /// The marker of a value, or `None` for one another program wrote.
    pub fn parse(value: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(value).ok()?;
        let (mut id, mut ttl, mut offset) = (None, None, None);
        for field in text.split_whitespace() {
            match field.split_once('=')? {
                ("id", value) if !value.is_empty() => id = Some(value.to_owned()),
                ("ttl_ms", value) => ttl = Some(Duration::from_millis(value.parse().ok()?)),
                ("offset", value) => offset = Some(value.parse::<i64>().ok().filter(|o| *o >= 0)?),
                _ => {}
            }
        }
        Some(Self {
            id: id?,
            ttl: ttl?,
            offset: offset?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_reads_back_what_was_written() {
        let marker = EpochMarker::fresh(Duration::from_secs(15), 42);
        assert_eq!(EpochMarker::parse(marker.encode().as_bytes()), Some(marker));
        assert_eq!(EpochMarker::parse(b"something else"), None);
        assert_eq!(EpochMarker::parse(b"id=a ttl_ms=x offset=0"), None);
        assert_eq!(EpochMarker::parse(b"id=a ttl_ms=1 offset=-1"), None);
        assert_ne!(
            EpochMarker::fresh(Duration::ZERO, 0).id,
            EpochMarker::fresh(Duration::ZERO, 0).id
        );
    }
}
