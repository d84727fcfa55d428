//! Taking a lock back from its holder by force: what
//! [`Coordinator::break_lock`](crate::Coordinator::break_lock) (`distsync break NAME` on
//! the command line) reports about the hold it ended.
//!
//! A break is administrative: an operator ends a hold that a stuck or forgotten
//! process keeps renewing. It is safe because it ends the holder's *session* in the
//! store, the way the store's own expiry does: the holder's next renewal fails, so its
//! guard's `lost()` fires within its session's deadline, its guarded writes
//! (`put_if_held`) are refused, and the next grant carries a higher fencing token. A
//! session holds everything its owner took through it, so breaking one lock ends
//! **every** hold of that session (its other locks, elections, permits): the owner
//! sees all of them lost. ZooKeeper, where only a session's owner can end it, ends the
//! hold alone instead (it deletes the holder's node, which the holder's guard
//! watches). See docs/FENCING.md, "Taking a lock back".

use std::fmt;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::name::Name;
use crate::session::SessionId;
use crate::status::{LineKind, StatusReport};
use crate::token::FencingToken;

/// The hold a break ended: whose it was and since when, as the store recorded it
/// before the break.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokenHold {
    /// The lock's name.
    pub name: String,
    /// The store key (or row) of the hold, as the holder's guard `key()` shows it.
    pub key: String,
    /// The holder's session, which the break ended (with every other hold of it;
    /// on ZooKeeper the session goes on, and only this hold ended).
    pub session: SessionId,
    /// The fencing token of the broken grant, where the store records it: the next
    /// grant's token is higher.
    pub token: Option<FencingToken>,
    /// How long the hold had been held (or waited for, then held) when the break
    /// read it, where the store records when it was taken (see [`crate::status`]).
    pub held_for: Option<Duration>,
}

impl BrokenHold {
    /// The holder of the lock `name` in `report`, if the lock has one.
    ///
    /// For backends overriding [`Backend::break_lock`](crate::Backend::break_lock): the
    /// default implementation reads the holder this way before ending its session.
    ///
    /// # Errors
    /// [`Error::Unsupported`] when the store does not record the holder's session (a
    /// break would not know which session to end), or its session id is not one a
    /// [`SessionId`] can carry.
    pub fn holder_in(report: &StatusReport, name: &Name) -> Result<Option<Self>> {
        let Some(line) = report.line(LineKind::Lock, name.as_str()) else {
            return Ok(None);
        };
        let Some(hold) = line.holders.first() else {
            return Ok(None);
        };
        let Some(session) = hold.session.as_deref() else {
            return Err(Error::unsupported(
                report.backend,
                "breaking a lock (the store does not record the holder's session)",
            ));
        };
        let session = u64::from_str_radix(session, 16).map_err(|_| {
            Error::unsupported(
                report.backend,
                format!("breaking a lock held through session {session:?} (not a hex id)"),
            )
        })?;
        Ok(Some(Self {
            name: line.name.clone(),
            key: hold.key.clone(),
            session: SessionId(session),
            token: hold.token,
            held_for: hold.age,
        }))
    }
}

impl fmt::Display for BrokenHold {
    /// `lock NAME held by session ID (key KEY, token T, for D)`, leaving out what the
    /// store does not record.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "lock {} held by session {} (key {}",
            self.name, self.session, self.key
        )?;
        if let Some(token) = self.token {
            write!(f, ", token {token}")?;
        }
        match self.held_for {
            Some(age) => write!(f, ", for {:.1}s)", age.as_secs_f64()),
            None => write!(f, ", since an unrecorded time)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{HoldMode, HoldStatus, LineStatus};

    fn report_with(session: Option<&str>) -> StatusReport {
        let mut report = StatusReport::new("memory", "");
        let mut line = LineStatus::new(LineKind::Lock, "jobs/a");
        line.holders.push(
            HoldStatus::new("ns/jobs/a/1f", HoldMode::Exclusive)
                .with_session(session.map(str::to_owned))
                .with_token(Some(FencingToken(7)))
                .with_age(Some(Duration::from_secs(3))),
        );
        line.waiters
            .push(HoldStatus::new("ns/jobs/a/20", HoldMode::Exclusive));
        report.lines.push(line);
        report
    }

    #[test]
    fn holder_in_reads_the_first_holder_and_its_session() {
        let report = report_with(Some("1f"));
        let name = Name::new("jobs/a").unwrap();
        let hold = BrokenHold::holder_in(&report, &name).unwrap().unwrap();
        assert_eq!(hold.session, SessionId(0x1f));
        assert_eq!(hold.key, "ns/jobs/a/1f");
        assert_eq!(hold.token, Some(FencingToken(7)));
        assert_eq!(hold.held_for, Some(Duration::from_secs(3)));
        let text = hold.to_string();
        assert!(
            text.contains("session 1f") && text.contains("token 7"),
            "{text}"
        );
    }

    #[test]
    fn holder_in_is_none_for_another_name_and_refuses_an_unknown_session() {
        let name = Name::new("jobs/b").unwrap();
        assert_eq!(
            BrokenHold::holder_in(&report_with(Some("1f")), &name).unwrap(),
            None
        );
        let name = Name::new("jobs/a").unwrap();
        assert!(matches!(
            BrokenHold::holder_in(&report_with(None), &name),
            Err(Error::Unsupported { .. })
        ));
        assert!(matches!(
            BrokenHold::holder_in(&report_with(Some("zz")), &name),
            Err(Error::Unsupported { .. })
        ));
    }
}
