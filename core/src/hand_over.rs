//! Handing leadership over: a leader passes its election to the next candidate in line or
//! to a named one ([`Leadership::resign_to`]), and a candidate asks the leader to prefer it
//! ([`Coordinator::prefer`](crate::Coordinator::prefer), seen by
//! [`Leadership::preference_requested`]).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
//! use std::time::Duration;
//! use distsync::election::Successor;
//!
//! let coordinator = distsync::connect("memory://").await?;
//! let (first, second) = (coordinator.session().await?, coordinator.session().await?);
//! let leader = coordinator.election(&first, "scheduler")?.campaign("node-1").await?;
//! let election = coordinator.election(&second, "scheduler")?;
//! let candidate = tokio::spawn(async move { election.campaign("node-2").await });
//! // Wait (bounded) until node-2 is in line, then hand over to it by name.
//! let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
//! while coordinator.candidates("scheduler").await?.position(second.id()).is_none() {
//!     assert!(tokio::time::Instant::now() < deadline, "node-2 never joined the line");
//!     tokio::time::sleep(Duration::from_millis(10)).await;
//! }
//! let handed = leader.resign_to(Successor::Candidate(second.id()), Duration::from_secs(5)).await?;
//! let next = candidate.await.expect("the candidate's task")?;
//! assert!(next.term() > handed.from_term);
//! # Ok(()) }
//! ```
//!
//! # Semantics
//!
//! - **Identity.** A candidate is named by the id of the session it campaigns through
//!   ([`Session::id`]): it is what the status report lists for every candidate on every
//!   backend ([`Coordinator::candidates`](crate::Coordinator::candidates)), a waiting
//!   candidate knows it before it is elected, and one session holds at most one candidacy per
//!   election.
//! - **No overlap.** The successor is elected by the store only once the old leader's
//!   candidacy is gone, so the old leader's guarded writes ([`Leadership::proclaim`])
//!   fail from the moment the successor can act, and the successor's term (fencing
//!   token) is higher than the old one.
//! - **No gap** where the backend declares
//!   [`Capabilities::gapless_hand_over`](crate::Capabilities::gapless_hand_over): the
//!   store elects the next candidate in the same step that removes the leader (etcd,
//!   MySQL and memory: the next key becomes the first by create revision at the instant
//!   the old one is deleted; Redis: the releasing script grants the next entry;
//!   ZooKeeper: the next sequential node becomes the first; NATS: the next key becomes
//!   the line's lowest by create sequence once the leader's is purged; PostgreSQL: the
//!   transaction that deletes the leader's entry writes the next candidate's term and
//!   leader row),
//!   so [`Election::leader`] never answers "no leader" between the two.
//! - **A named successor that is not next in line.** The leader records the hand-over (its
//!   term and the successor's session id, in counters under the election's name, see
//!   [`crate::hand_over_record`]) and waits, for at most the caller's bound, until the
//!   successor is next in line; then it resigns. Every candidate that campaigns through a
//!   [`Coordinator`](crate::Coordinator) waits for that record to change while it waits
//!   ([`Counter::changed`](crate::Counter::changed)): one that stands ahead of the named
//!   successor withdraws its candidacy and
//!   campaigns again at the back of the line, still inside the same `campaign` call.
//!   Candidates outside distsync (Go's `concurrency.Election`, Curator's `LeaderLatch`) and
//!   candidates made from a backend directly never step back: the leader's wait then ends
//!   with [`Error::Timeout`] and it keeps leading.
//! - **Failure keeps the leader.** Whatever stops a hand-over before the resignation
//!   (no candidate waiting, the named candidate gone, the bound passed, a store error)
//!   hands the leadership back in [`NotHandedOver`]: it still leads. A successor that
//!   dies after the resignation is succeeded as any leader is (within its session's
//!   TTL, by the next in line).
//! - **Cost.** Every candidate that waits through a [`Coordinator`](crate::Coordinator)
//!   (after its first [`HAND_OVER_POLL`] in line) reads the two record counters once, then
//!   waits on the store's notifications of a change to either
//!   ([`Counter::changed`](crate::Counter::changed)), and reads the election's line from the
//!   status report when a record of the current term names another candidate. Idle, a
//!   standby candidate costs: etcd and memory, two key watches (on etcd multiplexed on the
//!   client's watch stream); MySQL, two watches on the process's one watch hub, which
//!   reads the store's revision once per `poll_interval` (20 ms by default) for all of
//!   the process's watches together; Redis, two channel subscriptions on the backend's one
//!   pub/sub connection; PostgreSQL, two payloads on the backend's one `LISTEN`
//!   connection; ZooKeeper, two data watches; and on each, two reads per
//!   [`CHANGED_SAFETY_NET`](crate::counter::CHANGED_SAFETY_NET) (5 s), the guard against a
//!   lost notification. On NATS, two ordered consumers on the server and their idle
//!   heartbeats to the client, with no periodic read (a consumer whose heartbeats stop is
//!   made again). A record written is seen within the notification's delivery (on MySQL,
//!   a write from another process at the hub's next poll) plus two reads. A backend
//!   without notifications reads both counters every
//!   [`CHANGED_POLL`](crate::counter::CHANGED_POLL) (eight small reads a second per
//!   candidate).
//! - **Preference requests** are recorded for the leader of the moment (its term),
//!   like the hand-over record: the leader waits on the preference record's counters as
//!   candidates wait on the hand-over record's, sees the latest request made in its term as
//!   soon as the notification and two reads allow, and a later leader sees nothing.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use tokio::time::Instant;

use crate::backend::Backend;
use crate::election::{Election, LeaderInfo, Leadership};
use crate::error::{Error, Result};
pub use crate::hand_over_record::{Candidate, Candidates};
use crate::hand_over_record::{HandOverRecord, Record, StatusFn};
use crate::name::Name;
use crate::session::{Session, SessionId};
use crate::token::FencingToken;

/// How long a candidate waits after joining the line before it first reads the
/// hand-over record, and how long a waiting candidate or a leader waiting for a
/// preference request pauses after a failed read before trying again. Between those,
/// both wait for the records' counters to change ([`Counter::changed`](crate::Counter::changed)):
/// on a backend without notifications that polls every
/// [`CHANGED_POLL`](crate::counter::CHANGED_POLL), the same quarter of a second.
pub const HAND_OVER_POLL: Duration = Duration::from_millis(250);

/// How often a leader handing over to a named candidate reads the line while the
/// candidates ahead of it step back.
const LINE_POLL: Duration = Duration::from_millis(50);

/// Whom [`Leadership::resign_to`] hands the leadership to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Successor {
    /// The candidate next in line.
    Next,
    /// The candidate campaigning through the session with this id
    /// ([`Session::id`], as [`Coordinator::candidates`](crate::Coordinator::candidates) lists it).
    Candidate(SessionId),
}

/// A hand-over done by [`Leadership::resign_to`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandOver {
    /// The term of the leadership handed over.
    pub from_term: FencingToken,
    /// The candidate that was next in line when the leader resigned.
    pub to: Candidate,
}

/// A hand-over that did not happen: why, and the leadership, which still leads unless
/// it was lost meanwhile (`None` when the resignation itself failed).
#[non_exhaustive]
pub struct NotHandedOver {
    /// Why.
    pub error: Error,
    /// The leadership, given back.
    pub leadership: Option<Leadership>,
}

impl fmt::Debug for NotHandedOver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotHandedOver")
            .field("error", &self.error)
            .field("leadership", &self.leadership)
            .finish()
    }
}

impl fmt::Display for NotHandedOver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "leadership not handed over: {}", self.error)
    }
}

impl std::error::Error for NotHandedOver {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// With `?`, the leadership given back is dropped (so resigned in the background) and
/// the error kept.
impl From<NotHandedOver> for Error {
    fn from(failed: NotHandedOver) -> Self {
        failed.error
    }
}

/// A preference request seen by [`Leadership::preference_requested`], or made by
/// [`Coordinator::prefer`](crate::Coordinator::prefer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PreferenceRequest {
    /// The session of the candidate asking to lead next.
    pub candidate: SessionId,
    /// The term of the leader asked.
    pub term: FencingToken,
}

/// The error for a session with no candidacy waiting in the election `name`.
fn not_waiting(session: SessionId, name: &Name) -> Error {
    Error::InvalidArgument(format!(
        "session {session} has no candidacy waiting in election {:?}",
        name.as_str()
    ))
}

fn keep(leadership: Leadership, error: Error) -> NotHandedOver {
    NotHandedOver {
        error,
        leadership: Some(leadership),
    }
}

impl Leadership {
    /// Resigns in favour of `to`, with neither a moment without a leader (where the
    /// backend declares [`Capabilities::gapless_hand_over`](crate::Capabilities::gapless_hand_over))
    /// nor two leaders; see [`crate::hand_over`] for the guarantees and how a named
    /// candidate that is not next in line gets there. Waits at most `timeout` for the
    /// candidates ahead of a named successor to step back.
    ///
    /// # Errors
    /// [`NotHandedOver`] with the leadership (still leading) and:
    /// [`Error::InvalidArgument`] when nobody waits ([`Successor::Next`]) or the named
    /// session has no candidacy waiting; [`Error::Timeout`] when the candidates ahead
    /// of it did not step back in time; [`Error::NotLeader`] when the leadership was
    /// lost meanwhile; [`Error::Unsupported`] on a leadership not won through a
    /// [`Coordinator`](crate::Coordinator) or a backend without
    /// [`Capabilities::hand_over`](crate::Capabilities::hand_over); the store's error.
    /// A failed resignation itself gives `leadership: None`.
    ///
    /// # Cancel safety
    /// Dropped before it resigns, it leaves the leader leading (a recorded hand-over
    /// may still make candidates ahead of the named one step back, which moves them
    /// in the line and nothing else). Dropped while resigning, the resignation goes on
    /// in the background, as [`Leadership::resign`]'s does.
    pub async fn resign_to(
        self,
        to: Successor,
        timeout: Duration,
    ) -> std::result::Result<HandOver, NotHandedOver> {
        let Some(record) = self.hand_over_record().cloned() else {
            let error = Error::unsupported(
                self.session().backend(),
                "hand-over of a leadership not won through a Coordinator",
            );
            return Err(keep(self, error));
        };
        let deadline = Instant::now() + timeout;
        let term = self.term();
        let mut recorded = false;
        loop {
            if self.is_lost() {
                return Err(keep(self, Error::NotLeader));
            }
            let line = match record.candidates().await {
                Ok(line) => line,
                Err(error) => return Err(keep(self, error)),
            };
            if line.term() != Some(term) {
                return Err(keep(self, Error::NotLeader));
            }
            let next = match to {
                Successor::Next => match line.waiting.first() {
                    Some(next) => Some(next.clone()),
                    None => {
                        let error = Error::InvalidArgument(format!(
                            "no candidate waits to take over election {:?}",
                            record.name().as_str()
                        ));
                        return Err(keep(self, error));
                    }
                },
                Successor::Candidate(session) => match line.position(session) {
                    Some(0) => Some(line.waiting[0].clone()),
                    Some(_) => None,
                    None => return Err(keep(self, not_waiting(session, record.name()))),
                },
            };
            if let Some(next) = next {
                tracing::info!(
                    backend = record.backend(),
                    election = %record.name(),
                    term = term.0,
                    successor = %next,
                    "handing leadership over"
                );
                return match self.resign().await {
                    Ok(()) => Ok(HandOver {
                        from_term: term,
                        to: next,
                    }),
                    Err(error) => Err(NotHandedOver {
                        error,
                        leadership: None,
                    }),
                };
            }
            if let (false, Successor::Candidate(candidate)) = (recorded, to) {
                if let Err(error) = record.hand_over.write(Record { term, candidate }).await {
                    return Err(keep(self, error));
                }
                recorded = true;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(keep(self, Error::Timeout(timeout)));
            }
            tokio::time::sleep(LINE_POLL.min(deadline - now)).await;
        }
    }

    /// Resolves with the latest preference request made to this leader
    /// ([`Coordinator::prefer`](crate::Coordinator::prefer)) once there is one; see
    /// [`crate::hand_over`] for how soon it is seen. Typically awaited in a
    /// `tokio::select!` with the work, followed by [`Leadership::resign_to`] the candidate
    /// named.
    ///
    /// # Errors
    /// [`Error::NotLeader`] once the leadership is lost; [`Error::Unsupported`] (at
    /// once) on a leadership not won through a [`Coordinator`](crate::Coordinator) or a
    /// backend without [`Capabilities::hand_over`](crate::Capabilities::hand_over).
    ///
    /// The future does not borrow the leadership, so it can be handed to a task.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads; a request made meanwhile is seen by the next call.
    pub fn preference_requested(
        &self,
    ) -> impl std::future::Future<Output = Result<PreferenceRequest>> + Send + 'static {
        let record = self.hand_over_record().cloned().ok_or_else(|| {
            Error::unsupported(
                self.session().backend(),
                "preference requests on a leadership not won through a Coordinator",
            )
        });
        let term = self.term();
        let lost = self.lost();
        async move {
            let record = record?;
            tokio::pin!(lost);
            loop {
                let read = tokio::select! {
                    () = &mut lost => return Err(Error::NotLeader),
                    read = record.preference.read() => read,
                };
                let waited = match read {
                    Ok((Some(request), _)) if request.term == term => {
                        return Ok(PreferenceRequest {
                            candidate: request.candidate,
                            term,
                        });
                    }
                    Ok((_, seen)) => tokio::select! {
                        () = &mut lost => return Err(Error::NotLeader),
                        waited = record.preference.changed(seen) => waited,
                    },
                    Err(error) => Err(error),
                };
                if let Err(error) = waited {
                    tracing::debug!(
                        election = %record.name(),
                        %error,
                        "could not read the preference record"
                    );
                    tokio::select! {
                        () = &mut lost => return Err(Error::NotLeader),
                        () = tokio::time::sleep(HAND_OVER_POLL) => {}
                    }
                }
            }
        }
    }
}

/// The records of the election `name` on `backend`, where it offers hand-overs.
pub(crate) fn record_for(backend: &Arc<dyn Backend>, name: &Name) -> Result<Arc<HandOverRecord>> {
    let capabilities = backend.capabilities();
    if !capabilities.hand_over {
        return Err(Error::unsupported(
            capabilities.backend,
            "leadership hand-over",
        ));
    }
    let for_status = Arc::clone(backend);
    let status: StatusFn = Arc::new(move |name: Name| {
        let backend = Arc::clone(&for_status);
        Box::pin(async move { backend.status_of(&name).await })
    });
    let record = HandOverRecord::new(capabilities.backend, name, status, |counter| {
        backend.counter(counter)
    })?;
    Ok(Arc::new(record))
}

/// A backend's election whose candidates step back when a hand-over names a candidate
/// behind them, and whose leaderships can hand over.
pub(crate) struct HandOverElection {
    inner: Box<dyn Election>,
    record: Arc<HandOverRecord>,
    session: SessionId,
    /// The session's TTL: the longest a withdrawn candidacy can stay in the line (the
    /// store removes it with the session's lease at the latest).
    ttl: Duration,
}

impl HandOverElection {
    /// `inner`, with hand-overs where `backend` offers them (else `inner` as is).
    pub(crate) fn wrap(
        backend: &Arc<dyn Backend>,
        session: &Session,
        inner: Box<dyn Election>,
    ) -> Box<dyn Election> {
        match record_for(backend, inner.name()) {
            Ok(record) => Box::new(Self {
                inner,
                record,
                session: session.id(),
                ttl: session.ttl(),
            }),
            Err(error) => {
                if backend.capabilities().hand_over {
                    tracing::debug!(
                        election = %inner.name(),
                        %error,
                        "this election's leaderships cannot hand over"
                    );
                }
                inner
            }
        }
    }

    /// Resolves when a hand-over by the current leader names a candidate behind this
    /// one: then this candidacy must go to the back of the line.
    ///
    /// The first read waits one [`HAND_OVER_POLL`]: a candidacy that has just joined
    /// stands behind any successor already named, and an uncontended campaign, granted
    /// within that time, sends the store no read of the record at all. Then it waits
    /// for the record to change ([`Counter::changed`](crate::Counter::changed)), and
    /// reads again every [`HAND_OVER_POLL`] only while a record of the current term
    /// names a candidate that the line does not show yet, or a read failed.
    async fn asked_to_step_back(&self) {
        let mut handled: Option<Record> = None;
        tokio::time::sleep(HAND_OVER_POLL).await;
        loop {
            // What to wait for before looking again: the record to change, or (while
            // the line is being read or still moving) one more HAND_OVER_POLL.
            let mut wait_for = None;
            match self.record.hand_over.read().await {
                Ok((Some(record), seen))
                    if Some(record) != handled && record.candidate != self.session =>
                {
                    match self.record.candidates().await {
                        Ok(line) if line.term() != Some(record.term) => {
                            handled = Some(record);
                            wait_for = Some(seen);
                        }
                        Ok(line) => {
                            if let (Some(mine), Some(named)) =
                                (line.position(self.session), line.position(record.candidate))
                            {
                                if mine < named {
                                    tracing::info!(
                                        election = %self.record.name(),
                                        term = record.term.0,
                                        successor = %record.candidate,
                                        "stepping back behind the named successor"
                                    );
                                    return;
                                }
                                handled = Some(record);
                                wait_for = Some(seen);
                            }
                        }
                        Err(error) => tracing::debug!(
                            election = %self.record.name(),
                            %error,
                            "could not read the election's line"
                        ),
                    }
                }
                Ok((_, seen)) => wait_for = Some(seen),
                Err(error) => tracing::debug!(
                    election = %self.record.name(),
                    %error,
                    "could not read the hand-over record"
                ),
            }
            match wait_for {
                Some(seen) => {
                    if let Err(error) = self.record.hand_over.changed(seen).await {
                        tracing::debug!(
                            election = %self.record.name(),
                            %error,
                            "could not wait for the hand-over record"
                        );
                        tokio::time::sleep(HAND_OVER_POLL).await;
                    }
                }
                None => tokio::time::sleep(HAND_OVER_POLL).await,
            }
        }
    }

    /// Waits until this session's withdrawn candidacy has left the line (read every
    /// [`LINE_POLL`]), for at most the session's TTL.
    async fn wait_withdrawn(&self) {
        let deadline = Instant::now() + self.ttl;
        loop {
            match self.record.candidates().await {
                Ok(line)
                    if line.position(self.session).is_none()
                        && line
                            .leader
                            .as_ref()
                            .is_none_or(|(leader, _)| leader.session != self.session) =>
                {
                    return;
                }
                Ok(_) => {}
                Err(error) => tracing::debug!(
                    election = %self.record.name(),
                    %error,
                    "could not read the election's line"
                ),
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    election = %self.record.name(),
                    "a withdrawn candidacy is still listed after the session's TTL; \
                     campaigning again"
                );
                return;
            }
            tokio::time::sleep(LINE_POLL).await;
        }
    }
}

#[async_trait]
impl Election for HandOverElection {
    fn name(&self) -> &Name {
        self.inner.name()
    }

    /// The backend's campaign, withdrawn and made again at the back of the line when a
    /// hand-over names a candidate behind this one.
    ///
    /// Cancel-safety: cancel-safe, as the backend's campaign (whose future is the only
    /// thing that holds the candidacy).
    async fn campaign_bytes(&self, value: Bytes) -> Result<Leadership> {
        loop {
            {
                // In a block of its own, so that the campaign is dropped (withdrawn)
                // before the wait below.
                let campaign = self.inner.campaign_bytes(value.clone());
                tokio::pin!(campaign);
                tokio::select! {
                    biased;
                    won = &mut campaign => {
                        return won.map(|leadership| {
                            leadership.with_hand_over(Arc::clone(&self.record))
                        });
                    }
                    () = self.asked_to_step_back() => {}
                }
            }
            // The dropped campaign withdraws in the background; campaigning again
            // before that is done would find (and keep) the old place in the line.
            self.wait_withdrawn().await;
        }
    }

    async fn leader(&self) -> Result<Option<LeaderInfo>> {
        self.inner.leader().await
    }

    fn observe(&self) -> BoxStream<'static, Result<LeaderInfo>> {
        self.inner.observe()
    }
}

/// The candidates of the election `name` over `backend` (see
/// [`Coordinator::candidates`](crate::Coordinator::candidates)).
pub(crate) async fn candidates(backend: &Arc<dyn Backend>, name: &Name) -> Result<Candidates> {
    record_for(backend, name)?.candidates().await
}

/// Asks the leader of the election `name` over `backend` to hand over to the candidate
/// of the session `candidate` (see [`Coordinator::prefer`](crate::Coordinator::prefer)).
pub(crate) async fn prefer(
    backend: &Arc<dyn Backend>,
    name: &Name,
    candidate: SessionId,
) -> Result<Option<PreferenceRequest>> {
    let record = record_for(backend, name)?;
    let line = record.candidates().await?;
    let Some(term) = line.term() else {
        return Ok(None);
    };
    if line.position(candidate).is_none() {
        return Err(not_waiting(candidate, name));
    }
    let request = Record { term, candidate };
    record.preference.write(request).await?;
    tracing::info!(
        backend = record.backend(),
        election = name.as_str(),
        term = term.0,
        candidate = %candidate,
        "asked the leader to hand over"
    );
    Ok(Some(PreferenceRequest { candidate, term }))
}
