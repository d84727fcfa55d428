//! Group membership: live processes join a named group through their sessions, and any
//! process lists the members or follows their joins and leaves
//! ([`Coordinator::group`](crate::Coordinator::group)).
//!
//! It is the shape of Curator's `GroupMember` and tooz's groups, built on the
//! election every store already offers, so it runs on every store with no store code:
//!
//! - a member `m` of group `g` is a candidacy in the election `g/members/m`,
//!   campaigned with the member's metadata as its value; nobody else campaigns there,
//!   so the candidacy wins at once and the member is the "leader" of its own entry;
//! - the member leaves when it calls [`Membership::leave`], when the guard is dropped,
//!   or when its session ends: a crashed member's entry goes with its lease, after at
//!   most the session TTL, as every hold does;
//! - a second join under the same member id waits until the first one's entry is gone
//!   (a replica restarted under its old id takes its place once its old session has
//!   ended, never beside it);
//! - the member list is read from the store's [`status`](crate::status) of the prefix
//!   `g/members/`, one read per call. A read lists every member whose entry lives
//!   throughout it; one that joins or leaves during it may or may not be listed (on
//!   a Redis Cluster the read scans master after master and is no snapshot). Nothing
//!   built on the list needs more: a member missed by one read is seen by the next,
//!   and the shards' exclusion comes from their locks, never from the list.
//!
//! [`Group::changes`] follows the list by reading it every
//! [`Group::with_poll`] interval (one second by default) and reporting what differs
//! between two reads. Joins and leaves are reported in the order the reads see them;
//! within one read, leaves come first, then joins, each sorted by member id. A member
//! that joined and left between two reads is not reported, and a member that left and
//! joined again on a new session is reported as a leave and a join. The list is for
//! spreading work, never for deciding who may write: the holds built on it (shards,
//! see [`crate::shards`]) are what exclude.
//!
//! Member ids are one name segment: no `/`, and the other rules of [`Name`].

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;

use crate::backend::Backend;
use crate::election::Leadership;
use crate::error::{Error, Result};
use crate::name::Name;
use crate::session::{Lost, Session};
use crate::status::{LineKind, StatusReport};
use crate::token::FencingToken;

/// The segment under a group's name that holds its members' entries.
pub const MEMBERS_SEGMENT: &str = "members";

/// How often [`Group::changes`] reads the member list by default.
pub const DEFAULT_POLL: Duration = Duration::from_secs(1);

/// A named group of live processes (see [`crate::group`]). Cheap to clone.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
/// let coordinator = distsync::connect("memory://").await?;
/// let session = coordinator.session().await?;
/// let group = coordinator.group("workers")?;
/// let me = group.join(&session, "host-a", "10.0.0.7:8080").await?;
/// let members = group.members().await?;
/// assert_eq!(members.len(), 1);
/// assert_eq!(members[0].id, "host-a");
/// assert_eq!(members[0].metadata, "10.0.0.7:8080");
/// me.leave().await?;
/// assert!(group.members().await?.is_empty());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Group {
    backend: Arc<dyn Backend>,
    name: Name,
    prefix: String,
    poll: Duration,
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("name", &self.name)
            .field("poll", &self.poll)
            .finish_non_exhaustive()
    }
}

/// A live member of a group, as a read of the store saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Member {
    /// The id it joined under.
    pub id: String,
    /// The metadata it joined with (an address, a zone, a weight: the caller's choice).
    pub metadata: Bytes,
    /// The id of the session it is a member through, where the store records it (see
    /// [`HoldStatus::session`](crate::status::HoldStatus::session)).
    pub session: Option<String>,
    /// The fencing token of its entry: it grows each time the id joins again, so a
    /// member that left and came back is told apart from the one that left.
    pub token: Option<FencingToken>,
}

/// One change [`Group::changes`] saw between two reads of the member list.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupChange {
    /// A member that was not in the previous read.
    Joined(Member),
    /// A member of the previous read that is gone (it left, or its session ended).
    Left(Member),
}

/// This process's entry in a group, from [`Group::join`]. Dropping it leaves the group
/// in the background (as dropping a lock guard releases the lock).
#[must_use = "the member leaves the group as soon as the membership is dropped"]
pub struct Membership {
    id: String,
    leadership: Leadership,
}

impl fmt::Debug for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Membership")
            .field("id", &self.id)
            .field("token", &self.leadership.term())
            .finish_non_exhaustive()
    }
}

impl Group {
    /// The group `name` over `backend` (see
    /// [`Coordinator::group`](crate::Coordinator::group)). No I/O.
    ///
    /// # Errors
    /// [`Error::InvalidName`] for a bad name; [`Error::Unsupported`] on a store that
    /// cannot scan its names.
    pub(crate) fn new(backend: &Arc<dyn Backend>, name: &str) -> Result<Self> {
        let name = Name::new(name)?;
        let capabilities = backend.capabilities();
        if !capabilities.export {
            return Err(Error::unsupported(
                capabilities.backend,
                "group membership and shards (the store cannot list its names)",
            ));
        }
        let prefix = format!("{name}/{MEMBERS_SEGMENT}/");
        Ok(Self {
            backend: Arc::clone(backend),
            name,
            prefix,
            poll: DEFAULT_POLL,
        })
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The same group, with [`Group::changes`] reading the member list every `poll`.
    #[must_use]
    pub fn with_poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// How often [`Group::changes`] reads the member list.
    pub fn poll(&self) -> Duration {
        self.poll
    }

    /// The name of the entry member `id` holds (`<group>/members/<id>`).
    ///
    /// # Errors
    /// [`Error::InvalidName`] for an id that is not one name segment.
    pub fn member_entry(&self, id: &str) -> Result<Name> {
        if id.contains('/') {
            return Err(Error::InvalidName {
                name: id.to_owned(),
                reason: "is a member id with a '/' (an id is one name segment)",
            });
        }
        Name::new(format!("{}{id}", self.prefix))
    }

    /// Joins the group as `id` with `metadata`, through `session`: the member is listed
    /// until it leaves or the session ends. Waits while another session is a member
    /// under the same id.
    ///
    /// # Errors
    /// [`Error::InvalidName`] for a bad id; [`Error::TooLarge`] for metadata above the
    /// store's [`max_value_size`](crate::Capabilities::max_value_size) (nothing sent);
    /// [`Error::SessionLost`] if the session ends first; the store's error.
    ///
    /// # Cancel safety
    /// Cancel-safe as the election's campaign is: dropping the future before it
    /// returns leaves no entry behind (or leaves it to the lease).
    pub async fn join(
        &self,
        session: &Session,
        id: &str,
        metadata: impl Into<Bytes> + Send,
    ) -> Result<Membership> {
        let entry = self.member_entry(id)?;
        // The member's election is the backend's own, not the coordinator's checked
        // one: its metadata is checked here, and its leadership gets the limit.
        let limit = self.backend.capabilities().value_limit();
        let metadata = metadata.into();
        limit.check("group member metadata", metadata.len())?;
        let election = self.backend.election(session, entry)?;
        let leadership = election
            .campaign_bytes(metadata)
            .await?
            .with_value_limit(limit);
        tracing::debug!(group = %self.name, member = id, token = %leadership.term(), "joined");
        Ok(Membership {
            id: id.to_owned(),
            leadership,
        })
    }

    /// The live members, sorted by id: one read of the store.
    ///
    /// # Errors
    /// The store's error; [`Error::Unsupported`] where the store cannot list holders.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn members(&self) -> Result<Vec<Member>> {
        let report = self.backend.status(&self.prefix).await?;
        Ok(self.members_in(&report))
    }

    /// The members a status report of this group's prefix (or a wider one) lists,
    /// sorted by id.
    pub(crate) fn members_in(&self, report: &StatusReport) -> Vec<Member> {
        let mut members = BTreeMap::new();
        for line in &report.lines {
            let Some(id) = line.name.strip_prefix(&self.prefix) else {
                continue;
            };
            // A nested name is not a member entry; etcd lists a candidacy with an
            // empty value as a lock (the store cannot tell them apart).
            if id.contains('/') || !matches!(line.kind, LineKind::Election | LineKind::Lock) {
                continue;
            }
            let Some(holder) = line.holders.first() else {
                continue;
            };
            let (metadata, token) = match &line.leader {
                Some(leader) => (leader.value.clone(), Some(leader.term)),
                None => (Bytes::new(), holder.token),
            };
            members.insert(
                id.to_owned(),
                Member {
                    id: id.to_owned(),
                    metadata,
                    session: holder.session.clone(),
                    token,
                },
            );
        }
        members.into_values().collect()
    }

    /// The group's joins and leaves, as reads of the member list every
    /// [`Group::poll`] see them (see [`crate::group`] for the order). The first read
    /// reports every member present as joined. A read that fails yields its error and
    /// the stream goes on with the next read.
    pub fn changes(&self) -> BoxStream<'static, Result<GroupChange>> {
        use futures::StreamExt;
        let known = BTreeMap::<String, Member>::new();
        let state = (self.clone(), known, VecDeque::new(), true);
        futures::stream::unfold(
            state,
            |(group, mut known, mut pending, mut first)| async move {
                loop {
                    if let Some(change) = pending.pop_front() {
                        return Some((Ok(change), (group, known, pending, first)));
                    }
                    if !first {
                        tokio::time::sleep(group.poll).await;
                    }
                    first = false;
                    match group.members().await {
                        Ok(members) => {
                            let now: BTreeMap<String, Member> =
                                members.into_iter().map(|m| (m.id.clone(), m)).collect();
                            pending.extend(not_in(&known, &now).map(GroupChange::Left));
                            pending.extend(not_in(&now, &known).map(GroupChange::Joined));
                            known = now;
                        }
                        Err(error) => return Some((Err(error), (group, known, pending, first))),
                    }
                }
            },
        )
        .boxed()
    }
}

/// The members of `from` that `to` lists with another entry (session and token, which
/// tell one entry of a member id from the next), or not at all.
fn not_in<'a>(
    from: &'a BTreeMap<String, Member>,
    to: &'a BTreeMap<String, Member>,
) -> impl Iterator<Item = Member> + 'a {
    let entry = |member: &'a Member| (&member.session, &member.token);
    from.values()
        .filter(move |member| to.get(&member.id).map(entry) != Some(entry(member)))
        .cloned()
}

impl Membership {
    /// The id this member joined under.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The fencing token of this entry (grows each time the id joins again).
    pub fn token(&self) -> FencingToken {
        self.leadership.term()
    }

    /// Resolves when the membership ends without [`Membership::leave`]: its session
    /// ended or its entry was removed in the store.
    pub fn lost(&self) -> Lost {
        self.leadership.lost()
    }

    /// Whether the membership has ended (see [`Membership::lost`]).
    pub fn is_lost(&self) -> bool {
        self.leadership.is_lost()
    }

    /// Replaces the metadata other processes read.
    ///
    /// # Errors
    /// [`Error::NotLeader`] when the membership has ended; [`Error::TooLarge`] for
    /// metadata above the store's
    /// [`max_value_size`](crate::Capabilities::max_value_size) (nothing sent); the
    /// store's error.
    ///
    /// # Cancel safety
    /// Dropped part-way, the metadata was replaced or it was not.
    pub async fn set_metadata(&self, metadata: impl Into<Bytes> + Send) -> Result<()> {
        self.leadership.proclaim(metadata).await
    }

    /// Leaves the group.
    ///
    /// # Errors
    /// The store's error (the entry then goes with the session's lease).
    ///
    /// # Cancel safety
    /// Dropped part-way, the member has left or leaves in the background.
    pub async fn leave(self) -> Result<()> {
        self.leadership.resign().await
    }
}
