//! A promotion that may have lost acknowledged commits: a standby promoted while its
//! old primary did not wait for a synchronous standby.
//!
//! A durable commit returns once the primary flushed it; with no synchronous standby
//! named (`synchronous_standby_names` empty) it returns without waiting for any
//! standby, and a standby promoted then may lack it. Grants, releases and withdrawn
//! waits are all such commits. A lost release (or withdrawn wait) brings its entry back
//! on the new primary, owned by a session that lives on: the name stays blocked for as
//! long as that session is renewed, forever for a healthy client. A lost grant leaves
//! its holder holding nothing. Neither is seen by reading the new primary, which has
//! no trace of the lost commits.
//!
//! So the heartbeat ([`crate::connection::heartbeat`]) reads, in the statement that
//! renews, the server's epoch (whose last part is the timeline, which every promotion
//! moves) and whether the server waits for a synchronous standby. A timeline that moved
//! since a reading of a server that did not wait is a promotion that may have lost
//! commits: the client treats it as the store forgetting its holds (every session of
//! the client lost, its own grants after the lock-delay, the token floor raised: see
//! [`crate::epoch::grants_may_be_lost`]). Its sessions' rows then expire, and with them
//! every entry a lost release brought back. A promotion from a primary that waited for
//! its synchronous standby loses nothing acknowledged, and changes nothing here;
//! failover managers promote the synchronous standby, and one that promotes another
//! standby of an `ANY n (...)` list is not told apart.
//!
//! Under unflushed grants the crash sentinel, an unlogged table that a promoted standby
//! finds empty, already tells every promotion ([`crate::unflushed_grants`]).

use std::sync::Mutex;

use distsync_core::raw::locked;

/// The last reading of one server: its timeline and whether it waited for a synchronous
/// standby.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Reading {
    timeline: String,
    synchronous: bool,
}

/// What this client last read of the server's timeline (see the module docs).
#[derive(Default)]
pub(crate) struct Promotion {
    last: Mutex<Option<Reading>>,
}

impl Promotion {
    /// A reading of the server's `epoch` (`server_epoch()`: `<checkpoint lsn>/<timeline>`,
    /// `None` where the role may not read it) and of whether it waits for a synchronous
    /// standby. Returns the reason when the timeline moved since a reading of a server
    /// that did not wait: commits acknowledged before may be lost.
    pub(crate) fn seen(&self, epoch: Option<&str>, synchronous: bool) -> Option<String> {
        let timeline = epoch?.rsplit('/').next()?.to_owned();
        let reading = Reading {
            timeline,
            synchronous,
        };
        let mut last = locked(&self.last);
        let before = last.replace(reading.clone())?;
        (before.timeline != reading.timeline && !before.synchronous).then(|| {
            format!(
                "the server's timeline moved from {} to {} (a standby was promoted) and the \
                 old primary did not wait for a synchronous standby: commits it acknowledged \
                 may be lost",
                before.timeline, reading.timeline
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_promotion_after_an_asynchronous_primary_is_told_once() {
        let promotion = Promotion::default();
        assert_eq!(
            promotion.seen(Some("0/16B3740/1"), false),
            None,
            "first reading"
        );
        assert_eq!(
            promotion.seen(Some("0/17000A0/1"), false),
            None,
            "a checkpoint moves the location only"
        );
        let reason = promotion.seen(Some("0/3000028/2"), false);
        assert!(
            reason.as_deref().is_some_and(|r| r.contains("from 1 to 2")),
            "{reason:?}"
        );
        assert_eq!(
            promotion.seen(Some("0/3000100/2"), false),
            None,
            "told once"
        );
    }

    #[test]
    fn a_promotion_after_a_synchronous_primary_loses_nothing() {
        let promotion = Promotion::default();
        assert_eq!(promotion.seen(Some("0/16B3740/1"), true), None);
        assert_eq!(promotion.seen(Some("0/3000028/2"), false), None);
        // The new primary did not wait: its own promotion is told.
        assert!(promotion.seen(Some("0/4000028/3"), true).is_some());
    }

    #[test]
    fn an_unreadable_epoch_changes_nothing() {
        let promotion = Promotion::default();
        assert_eq!(promotion.seen(Some("0/16B3740/1"), false), None);
        assert_eq!(promotion.seen(None, false), None);
        assert!(
            promotion.seen(Some("0/3000028/2"), false).is_some(),
            "compared with the last reading"
        );
    }
}
