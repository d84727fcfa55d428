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
//! is no longer its), keeping the create sequence in `Ds-Create`, then writes the
//! value once more to a key of its own, `election.<name>.p.<session>.<n>.<m>` (kept
//! [`PROCLAIM_TTL`]): the bucket keeps one message per key, so a watcher that falls
//! behind a leader's proclaims would skip the superseded rewrites of its key, never
//! those. A resign purges the leader's key.
//!
//! # Observing
//!
//! [`Election::observe`] lists the line once, then follows every message of the line
//! from that listing's sequence on (an ordered consumer), keeping each live
//! candidate's create sequence and value: after each message the leader is the
//! lowest, and a change of its key or value is emitted. Renewals rewrite a key with
//! the same value and emit nothing; a proclaim's own key sets its candidate's value.
//! Messages come in stream order, so a value never follows a newer one.

use distsync_core::raw::{Make, OnSession};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use distsync_core::raw::{
    leadership, observe_leaders, Election, LeaderInfo, LeaderObserver, Leadership, Proclaim,
};
use distsync_core::{Error, Name, Result, Session};
use futures::stream::BoxStream;
use futures::StreamExt;

use crate::amnesia::Amnesia;
use crate::keys::{self, Kind};
use crate::lock::{releasing, token_of, NatsLocker};
use crate::session::LeaseInner;
use crate::shared::Shared;
use crate::store::{Entry, Write};
use crate::BACKEND;

/// How long a proclaim's own key is kept: an observer further behind than this
/// misses the value (and still sees the leader key's latest).
pub const PROCLAIM_TTL: Duration = Duration::from_secs(60);

/// The candidate key a proclaim's key (`election.<name>.p.<session>.<n>.<m>`) is of.
fn candidate_of_proclaim(key: &str) -> Option<String> {
    let parts = keys::parts(key)?;
    match parts.rest.as_slice() {
        ["p", session, n, _] => Some(format!("{}.{}.q.{session}.{n}", parts.kind, parts.name)),
        _ => None,
    }
}

/// The key of the `m`th proclaim of the candidate `key`
/// (`election.<name>.q.<session>.<n>`): `election.<name>.p.<session>.<n>.<m>`.
fn proclaim_key(key: &str, m: u64) -> Option<String> {
    let parts = keys::parts(key)?;
    match parts.rest.as_slice() {
        ["q", session, n] => Some(format!("{}.{}.p.{session}.{n}.{m}", parts.kind, parts.name)),
        _ => None,
    }
}

/// An election named `name`.
pub(crate) struct NatsElection {
    line: NatsLocker,
    session: Session,
    lease: Arc<LeaseInner>,
    name: Name,
}

/// The leader of a set of live candidates by key: the lowest token.
fn leader_of(candidates: &BTreeMap<String, (u64, Bytes)>, amnesia: &Amnesia) -> Option<LeaderInfo> {
    candidates
        .iter()
        .min_by_key(|(_, (token, _))| *token)
        .map(|(key, (token, value))| LeaderInfo::new(value.clone(), amnesia.token(*token), key))
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
        let candidate = self.line.enter_with(value).await?;
        self.line.wait_to_head(&candidate).await?;
        let (key, token) = candidate.granted();
        let resign = releasing(&self.lease, &key);
        Ok(leadership(
            key.clone(),
            self.lease.shared.amnesia.token(token),
            &self.session,
            Arc::new(NatsProclaim {
                lease: Arc::clone(&self.lease),
                key,
                proclaims: AtomicU64::new(0),
            }),
            resign,
        ))
    }

    async fn leader(&self) -> Result<Option<LeaderInfo>> {
        let store = &self.lease.shared.store;
        let (entries, _) = store.list(&[keys::every_in(self.line.line())]).await?;
        Ok(leader_of(&candidates(entries), &self.lease.shared.amnesia))
    }

    fn observe(&self) -> BoxStream<'static, Result<LeaderInfo>> {
        let name = self.line.line().trim_end_matches(".q");
        let observer = Observer {
            shared: Arc::clone(&self.lease.shared),
            filter: keys::every_in(self.line.line()),
            watched: format!("{name}.>"),
            candidates: BTreeMap::new(),
            events: None,
            shown: None,
            pending: VecDeque::new(),
        };
        observe_leaders(observer)
    }
}

/// The state of one `observe()` stream.
struct Observer {
    shared: Arc<Shared>,
    /// `election.<name>.q.>`: the candidates, listed.
    filter: String,
    /// `election.<name>.>`: the candidates and the proclaims, watched.
    watched: String,
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
        let Some(leader) = leader_of(&self.candidates, &self.shared.amnesia) else {
            return;
        };
        let now = (leader.key.clone(), leader.value.clone());
        if self.shown.as_ref() != Some(&now) {
            self.shown = Some(now);
            self.pending.push_back(leader);
        }
    }
}

impl LeaderObserver for Observer {
    async fn next_leader(&mut self) -> Result<LeaderInfo> {
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
                let events = self.shared.store.watch(&self.watched, last + 1).await?;
                self.events = Some(events);
                continue;
            };
            match events.next().await {
                Some(Ok(entry)) => {
                    if let Some(candidate) = candidate_of_proclaim(&entry.key) {
                        let known = self.candidates.get_mut(&candidate);
                        if let Some(known) = known.filter(|_| entry.live()) {
                            known.1 = entry.value;
                        }
                    } else if entry.live() {
                        let token = token_of(&entry);
                        self.candidates.insert(entry.key, (token, entry.value));
                    } else {
                        self.candidates.remove(&entry.key);
                    }
                    self.note_leader();
                }
                // A watch that failed with the connection is made again from a
                // fresh listing, as one that ended.
                Some(Err(error)) if error.is_transient() => self.events = None,
                Some(Err(error)) => return Err(error),
                None => self.events = None,
            }
        }
    }
}

/// A leadership's side of [`Leadership::proclaim`]: rewrites the leader's key and
/// writes the value to a key of the proclaim's own.
struct NatsProclaim {
    lease: Arc<LeaseInner>,
    key: String,
    /// The number of the next proclaim's key.
    proclaims: AtomicU64,
}

#[async_trait]
impl Proclaim for NatsProclaim {
    async fn proclaim_bytes(&self, value: Bytes) -> Result<()> {
        if !self.lease.rewrite(&self.key, value.clone()).await? {
            return Err(Error::NotLeader);
        }
        let n = self.proclaims.fetch_add(1, Ordering::Relaxed);
        let key = proclaim_key(&self.key, n).ok_or_else(|| {
            Error::backend(BACKEND, format!("{} is no candidate's key", self.key))
        })?;
        let write = Write::put(key, value).ttl(PROCLAIM_TTL);
        self.lease
            .shared
            .store
            .publish(write)
            .await?
            .compared()
            .map(drop)
    }
}

impl Make<Arc<Shared>, OnSession<Arc<LeaseInner>>> for NatsElection {
    fn make(_: &Arc<Shared>, on: OnSession<Arc<LeaseInner>>) -> Result<Self> {
        let line = NatsLocker::in_line(&on.session, &on.lease, &on.name, Kind::Election);
        Ok(Self {
            line,
            session: on.session,
            lease: on.lease,
            name: on.name,
        })
    }
}

#[cfg(test)]
mod tests {
    use distsync_core::Name;

    use super::{candidate_of_proclaim, proclaim_key};
    use crate::keys::{self, Kind};

    /// A proclaim's key and its candidate's read back from each other, whatever the
    /// election's name holds (a segment `q` or `p` among them).
    #[test]
    fn a_proclaims_key_names_its_candidate() {
        for name in ["e", "q", "p/q", "a/q/p"] {
            let name = Name::new(name).unwrap();
            let candidate = keys::contender(&keys::line(Kind::Election, &name), 0xab, 3);
            let proclaim = proclaim_key(&candidate, 7).unwrap();
            assert_eq!(keys::name_of(&proclaim).as_deref(), Some(name.as_str()));
            assert!(proclaim.ends_with(".p.00000000000000ab.3.7"), "{proclaim}");
            assert_eq!(candidate_of_proclaim(&proclaim), Some(candidate.clone()));
            assert_eq!(candidate_of_proclaim(&candidate), None);
        }
    }
}
