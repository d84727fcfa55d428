//! The election: the lock's line of candidates, the lowest the leader.
//!
//! # Layout and protocol
//!
//! The election `<name>` is the line `election.<name>.q`: each campaign creates a key
//! `election.<name>.q.<session>.<n>` holding the candidate's value, create-only with
//! the session's TTL, and waits as a lock contender does (see `src/lock.rs`): the
//! live key with the lowest create sequence leads, each candidate watches only the
//! one before it. The term is the leader key's create sequence, so every new leader
//! has a higher term. A proclaim rewrites the leader's key with a compare on the
//! sequence its session last wrote (failing with [`Error::NotLeader`] once the key
//! is no longer its), keeping the create sequence in `Ds-Create`; a resign purges it.
//!
//! # Observing
//!
//! [`Election::observe`] lists the line once, then follows every message of the line
//! from that listing's sequence on (an ordered consumer), keeping each live
//! candidate's create sequence and value: after each message the leader is the
//! lowest, and a change of its key or value is emitted. Renewals rewrite a key with
//! the same value and emit nothing. Messages come in stream order, so a value never
//! follows a newer one.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use distsync_core::raw::{leadership, Election, LeaderInfo, Leadership, Proclaim};
use distsync_core::{Error, FencingToken, Name, Result, Session};
use futures::stream::BoxStream;
use futures::StreamExt;

use crate::keys::Kind;
use crate::lock::NatsLocker;
use crate::session::{LeaseInner, CREATE_HEADER};
use crate::shared::Shared;
use crate::store::Entry;

/// An election named `name`.
pub(crate) struct NatsElection {
    line: NatsLocker,
    session: Session,
    lease: Arc<LeaseInner>,
    name: Name,
}

impl NatsElection {
    pub(crate) fn new(session: Session, lease: Arc<LeaseInner>, name: Name) -> Self {
        Self {
            line: NatsLocker::in_line(
                session.clone(),
                Arc::clone(&lease),
                name.clone(),
                Kind::Election,
            ),
            session,
            lease,
            name,
        }
    }
}

/// The token (create sequence) of a line's entry.
fn token_of(entry: &Entry) -> u64 {
    entry
        .header(CREATE_HEADER)
        .and_then(|create| create.parse().ok())
        .unwrap_or(entry.seq)
}

/// The leader of a set of live candidates by key: the lowest token.
fn leader_of(candidates: &BTreeMap<String, (u64, Bytes)>) -> Option<LeaderInfo> {
    candidates
        .iter()
        .min_by_key(|(_, (token, _))| *token)
        .map(|(key, (token, value))| LeaderInfo::new(value.clone(), FencingToken(*token), key))
}

/// The live candidates of a listing, by key.
fn candidates(entries: Vec<Entry>) -> BTreeMap<String, (u64, Bytes)> {
    entries
        .into_iter()
        .filter(Entry::live)
        .map(|entry| {
            let token = token_of(&entry);
            (entry.key, (token, entry.value))
        })
        .collect()
}

#[async_trait]
impl Election for NatsElection {
    fn name(&self) -> &Name {
        &self.name
    }

    async fn campaign_bytes(&self, value: Bytes) -> Result<Leadership> {
        let mut candidate = self.line.enter_with(value).await?;
        self.line.wait(&candidate).await?;
        candidate.armed = false;
        let key = std::mem::take(&mut candidate.key);
        let resigning = Arc::clone(&self.lease);
        let resigned = key.clone();
        Ok(leadership(
            key.clone(),
            FencingToken(candidate.token),
            &self.session,
            Arc::new(NatsProclaim {
                lease: Arc::clone(&self.lease),
                key,
            }),
            Box::new(move || Box::pin(async move { resigning.release(&resigned).await })),
        ))
    }

    async fn leader(&self) -> Result<Option<LeaderInfo>> {
        let store = &self.lease.shared.store;
        let (entries, _) = store.list(&[format!("{}.>", self.line.line())]).await?;
        Ok(leader_of(&candidates(entries)))
    }

    fn observe(&self) -> BoxStream<'static, Result<LeaderInfo>> {
        let observer = Observer {
            shared: Arc::clone(&self.lease.shared),
            filter: format!("{}.>", self.line.line()),
            candidates: BTreeMap::new(),
            events: None,
            shown: None,
            pending: VecDeque::new(),
        };
        futures::stream::unfold(Some(observer), |state| async move {
            let mut observer = state?;
            match observer.next().await {
                Ok(info) => Some((Ok(info), Some(observer))),
                Err(error) => Some((Err(error), None)),
            }
        })
        .boxed()
    }
}

/// The state of one `observe()` stream.
struct Observer {
    shared: Arc<Shared>,
    /// `election.<name>.q.>`.
    filter: String,
    /// The live candidates: token and value, by key.
    candidates: BTreeMap<String, (u64, Bytes)>,
    /// The line's messages after the listing; `None` before the first listing or
    /// after the watch ended (the observer lists again).
    events: Option<crate::store::Watch>,
    /// The leader last emitted: its key and value.
    shown: Option<(String, Bytes)>,
    pending: VecDeque<LeaderInfo>,
}

impl Observer {
    /// Queues the leader if it differs from the one last emitted.
    fn note_leader(&mut self) {
        let Some(leader) = leader_of(&self.candidates) else {
            return;
        };
        let now = (leader.key.clone(), leader.value.clone());
        if self.shown.as_ref() != Some(&now) {
            self.shown = Some(now);
            self.pending.push_back(leader);
        }
    }

    /// The next leader to emit.
    async fn next(&mut self) -> Result<LeaderInfo> {
        loop {
            if let Some(leader) = self.pending.pop_front() {
                return Ok(leader);
            }
            let Some(events) = self.events.as_mut() else {
                let (entries, last) = self
                    .shared
                    .store
                    .list(std::slice::from_ref(&self.filter))
                    .await?;
                self.candidates = candidates(entries);
                self.note_leader();
                let events = self.shared.store.watch(&self.filter, last + 1).await?;
                self.events = Some(events);
                continue;
            };
            match events.next().await {
                Some(Ok(entry)) => {
                    if entry.live() {
                        let token = token_of(&entry);
                        self.candidates.insert(entry.key, (token, entry.value));
                    } else {
                        self.candidates.remove(&entry.key);
                    }
                    self.note_leader();
                }
                Some(Err(error)) => return Err(error),
                None => self.events = None,
            }
        }
    }
}

/// A leadership's side of [`Leadership::proclaim`]: rewrites the leader's key.
struct NatsProclaim {
    lease: Arc<LeaseInner>,
    key: String,
}

#[async_trait]
impl Proclaim for NatsProclaim {
    async fn proclaim_bytes(&self, value: Bytes) -> Result<()> {
        if self.lease.rewrite(&self.key, value).await? {
            Ok(())
        } else {
            Err(Error::NotLeader)
        }
    }
}
