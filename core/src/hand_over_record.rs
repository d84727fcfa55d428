//! The store side of a leadership hand-over (see [`crate::hand_over`] for the
//! semantics): the election's line of candidates as the status report shows it, and
//! the two records a hand-over and a preference request write, each a pair of counters
//! under the election's name.
//!
//! A record is the term of the leader it is meant for and a candidate's session id.
//! The writer sets the candidate first and the term second; a reader reads the term
//! first and the candidate second, so a reader that sees the term of the current
//! leader reads the candidate written for that term (or a later one for the same
//! term). A record whose term is not the current leader's is stale and means nothing:
//! no clean-up is needed when a term ends.
//!
//! A reader waits for the next record with [`Counter::changed`] on both counters (a
//! record for the same term may change the candidate alone), from the values it read,
//! so a write after its read wakes it as soon as the backend's notifications carry it.

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::counter::Counter;
use crate::error::{Error, Result};
use crate::name::Name;
use crate::session::SessionId;
use crate::status::{LineKind, LineStatus, StatusReport};
use crate::token::FencingToken;

/// The last segment of the counter that names a hand-over's successor.
pub const HAND_OVER_TO_SEGMENT: &str = ".distsync-hand-over-to";
/// The last segment of the counter that holds the term of the leader handing over.
pub const HAND_OVER_TERM_SEGMENT: &str = ".distsync-hand-over-term";
/// The last segment of the counter that names the candidate asking to be preferred.
pub const PREFER_TO_SEGMENT: &str = ".distsync-prefer-to";
/// The last segment of the counter that holds the term a preference request is for.
pub const PREFER_TERM_SEGMENT: &str = ".distsync-prefer-term";

const SEGMENTS: [&str; 4] = [
    HAND_OVER_TO_SEGMENT,
    HAND_OVER_TERM_SEGMENT,
    PREFER_TO_SEGMENT,
    PREFER_TERM_SEGMENT,
];

/// How many compare-and-set rounds a record write makes before giving up; each lost
/// round means another writer changed the counter meanwhile.
const MAX_SETS: usize = 32;

/// Whether `name` is one of the hand-over records' counters.
pub(crate) fn is_reserved(name: &str) -> bool {
    SEGMENTS
        .iter()
        .any(|segment| crate::name::ends_in_segment(name, segment))
}

/// A candidate of an election, as the store lists it: the session it campaigns
/// through (what [`crate::hand_over::Successor::Candidate`] names) and its store key.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Candidate {
    /// The session the candidacy is held through ([`crate::Session::id`]).
    pub session: SessionId,
    /// The candidacy's key in the store, as [`crate::LeaderInfo::key`] shows a leader's.
    pub key: String,
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "session {} ({})", self.session, self.key)
    }
}

/// The candidates of an election: the leader (with its term) and the others in the
/// order they are to lead ([`crate::Coordinator::candidates`]).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Candidates {
    /// The leader and its term, if there is one.
    pub leader: Option<(Candidate, FencingToken)>,
    /// The other candidates, next in line first.
    pub waiting: Vec<Candidate>,
}

impl Candidates {
    /// The position of `session` among the waiting candidates (0: next in line).
    pub fn position(&self, session: SessionId) -> Option<usize> {
        self.waiting
            .iter()
            .position(|candidate| candidate.session == session)
    }

    /// The leader's term, if there is a leader.
    pub fn term(&self) -> Option<FencingToken> {
        self.leader.as_ref().map(|(_, term)| *term)
    }
}

/// Reads the status report of one name: the backend's `status_of`, given as a closure
/// so that this module does not depend on the backend trait.
pub(crate) type StatusFn =
    Arc<dyn Fn(Name) -> BoxFuture<'static, Result<StatusReport>> + Send + Sync>;

/// A term or a session id as a counter value. Session ids use all 64 bits: they are
/// stored as the same bits.
fn session_value(session: SessionId) -> i64 {
    i64::from_le_bytes(session.0.to_le_bytes())
}

fn session_of(value: i64) -> SessionId {
    SessionId(u64::from_le_bytes(value.to_le_bytes()))
}

/// A record: the term it is for and the candidate it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) term: FencingToken,
    pub(crate) candidate: SessionId,
}

/// The two counters' values as a reader read them: where it waits for the next record
/// from ([`HandOverRecord::hand_over_changed`], [`HandOverRecord::preference_changed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Seen {
    term: i64,
    to: i64,
}

impl Seen {
    /// The record these values make, if any (a term of 0 or less is none).
    fn record(self) -> Option<Record> {
        (self.term > 0).then(|| Record {
            term: FencingToken(self.term.unsigned_abs()),
            candidate: session_of(self.to),
        })
    }
}

/// The records and the line of one election.
pub(crate) struct HandOverRecord {
    backend: &'static str,
    name: Name,
    status: StatusFn,
    /// The hand-over by the leader of the record's term to its candidate.
    pub(crate) hand_over: RecordCounters,
    /// The preference request to the leader of the record's term by its candidate.
    pub(crate) preference: RecordCounters,
}

impl HandOverRecord {
    /// The records of the election `name`, whose counters `counter` opens (no I/O).
    ///
    /// # Errors
    /// [`Error::InvalidName`] when `name` is too long to take the records' segments;
    /// the backend's error opening a counter.
    pub(crate) fn new(
        backend: &'static str,
        name: &Name,
        status: StatusFn,
        counter: impl Fn(Name) -> Result<Box<dyn Counter>>,
    ) -> Result<Self> {
        let open = |segment: &str| -> Result<Arc<dyn Counter>> {
            let full = name.child(
                segment,
                "is too long to take hand-over records (their counters' names add up to 25 bytes)",
            )?;
            Ok(Arc::from(counter(full)?))
        };
        let pair = |to, term| -> Result<RecordCounters> {
            Ok(RecordCounters {
                backend,
                to: open(to)?,
                term: open(term)?,
            })
        };
        Ok(Self {
            backend,
            name: name.clone(),
            hand_over: pair(HAND_OVER_TO_SEGMENT, HAND_OVER_TERM_SEGMENT)?,
            preference: pair(PREFER_TO_SEGMENT, PREFER_TERM_SEGMENT)?,
            status,
        })
    }

    /// The backend's name.
    pub(crate) fn backend(&self) -> &'static str {
        self.backend
    }

    /// The election's name.
    pub(crate) fn name(&self) -> &Name {
        &self.name
    }

    /// The election's candidates, read from the status report.
    ///
    /// On etcd and memory an election whose candidates all campaign with an empty
    /// value is reported as a lock (see [`crate::status`]): that line is read then.
    pub(crate) async fn candidates(&self) -> Result<Candidates> {
        let report = (self.status)(self.name.clone()).await?;
        let line = report
            .line(LineKind::Election, self.name.as_str())
            .or_else(|| report.line(LineKind::Lock, self.name.as_str()));
        Ok(line.map(|line| self.read_line(line)).unwrap_or_default())
    }

    fn read_line(&self, line: &LineStatus) -> Candidates {
        let candidate = |hold: &crate::status::HoldStatus| {
            let session = hold
                .session
                .as_deref()
                .and_then(|hex| u64::from_str_radix(hex, 16).ok());
            if session.is_none() {
                tracing::debug!(
                    election = %self.name,
                    key = %hold.key,
                    "a candidate without a session id in the status report cannot be named"
                );
            }
            session.map(|session| Candidate {
                session: SessionId(session),
                key: hold.key.clone(),
            })
        };
        let leader = line.holders.first().and_then(|hold| {
            let term = line
                .leader
                .as_ref()
                .map(|leader| leader.term)
                .or(hold.token)?;
            Some((candidate(hold)?, term))
        });
        Candidates {
            leader,
            waiting: line.waiters.iter().filter_map(candidate).collect(),
        }
    }
}

/// One record's pair of counters: its candidate's and its term's.
pub(crate) struct RecordCounters {
    backend: &'static str,
    to: Arc<dyn Counter>,
    term: Arc<dyn Counter>,
}

impl RecordCounters {
    /// Writes `record`: the candidate first, then the term (see the module docs).
    pub(crate) async fn write(&self, record: Record) -> Result<()> {
        set(&*self.to, session_value(record.candidate), self.backend).await?;
        set(
            &*self.term,
            record
                .term
                .counter_value(self.backend, "a hand-over in a term")?,
            self.backend,
        )
        .await
    }

    /// The last record written, if any, and the values read: the term first, then the
    /// candidate (see the module docs).
    pub(crate) async fn read(&self) -> Result<(Option<Record>, Seen)> {
        let term = self.term.get().await?;
        let to = self.to.get().await?;
        let seen = Seen { term, to };
        Ok((seen.record(), seen))
    }

    /// Waits until a counter of the record differs from `seen`.
    ///
    /// Cancel safety: cancel safe, as [`Counter::changed`].
    pub(crate) async fn changed(&self, seen: Seen) -> Result<()> {
        tokio::select! {
            changed = self.to.changed(seen.to) => changed.map(drop),
            changed = self.term.changed(seen.term) => changed.map(drop),
        }
    }
}

/// Sets `counter` to `value` through compare-and-set rounds.
async fn set(counter: &dyn Counter, value: i64, backend: &'static str) -> Result<()> {
    for _ in 0..MAX_SETS {
        let current = counter.get().await?;
        if current == value || counter.compare_and_set(current, value).await? {
            return Ok(());
        }
    }
    Err(Error::backend(
        backend,
        format!(
            "hand-over record {:?}: the counter kept changing",
            counter.name().as_str()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_names_are_the_records_under_an_election() {
        assert!(is_reserved("jobs/leader/.distsync-hand-over-to"));
        assert!(is_reserved("jobs/leader/.distsync-prefer-term"));
        assert!(!is_reserved("jobs/leader.distsync-prefer-term"));
        assert!(!is_reserved("jobs/leader"));
    }

    #[test]
    fn a_record_needs_a_positive_term() {
        assert_eq!(Seen { term: 0, to: 5 }.record(), None);
        assert_eq!(Seen { term: -1, to: 5 }.record(), None);
        assert_eq!(
            Seen { term: 3, to: -1 }.record(),
            Some(Record {
                term: FencingToken(3),
                candidate: SessionId(u64::MAX)
            })
        );
    }

    #[test]
    fn session_ids_round_trip_through_counter_values() {
        for id in [0, 1, 0x7fff_ffff_ffff_ffff, 0x8000_0000_0000_0000, u64::MAX] {
            assert_eq!(session_of(session_value(SessionId(id))), SessionId(id));
        }
        assert!(matches!(
            FencingToken(u64::MAX).counter_value("memory", "a hand-over in a term"),
            Err(Error::Unsupported { .. })
        ));
    }
}
