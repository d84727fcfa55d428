//! Leader election, in the layout and protocol of Curator's `LeaderLatch`, so that
//! Rust and Java candidates of one path elect one leader between them.
//!
//! # Layout
//!
//! The election's node, its candidates' names and data, and the proclaims' entries,
//! which Curator sees or skips, are in docs/ZOOKEEPER.md, "The election: `LeaderLatch`".
//!
//! # Protocol
//!
//! Campaigning is the lock's protocol ([`Line`]) with `latch-` before the sequence: the
//! lowest candidate leads, every other one watches the candidate just before it, and
//! resigning deletes the candidate's node (as does the end of its session). The term
//! is the leader node's creation zxid, the lock's fencing token.
//!
//! # Proclaim
//!
//! A candidate node's data never changes after its creation: Curator's `LeaderLatch`
//! watches the node before its own with a data watch, reacts to its deletion only,
//! and does not watch again after any other event, so a `setData` on a leader node
//! would leave a Java candidate behind it waiting forever once the leader resigns (the
//! interop test checks that it does not). A proclaim instead creates its entry
//! `<candidate>.<n>` under `<root>/election_log/<name>`, in one `multi` with a check
//! that the leader's node exists: a leader whose node is gone (resigned, or its session
//! ended) gets `NoNode` and the proclaim [`Error::NotLeader`], changing nothing. The
//! leader's value is its highest entry, or its node's data before any proclaim.
//!
//! # Observe
//!
//! An observer watches the candidates and the entries (ZooKeeper's watches fire once
//! and carry no data, so the entries are what keeps every proclaim); what it yields,
//! and in which order, is in docs/ZOOKEEPER.md, "The election: `LeaderLatch`". Each
//! leadership keeps its last [`KEPT_ENTRIES`] entries: older ones are deleted as it
//! proclaims, the rest when the same election object is next elected, or with the
//! session.

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use distsync_core::raw::locked;
use distsync_core::raw::{leadership, observe_leaders, GuardStoreSide as _, LeaderObserver};
use distsync_core::raw::{Make, OnSession};
use distsync_core::{
    Bytes, Election, Error, FencingToken, LeaderInfo, Leadership, Name, Proclaim, Result,
};
use futures::stream::BoxStream;
use zookeeper_client as zk;

use crate::direct::{answered, persistent, Direct, RETRY_PAUSE};
use crate::error::{found, is_connection_loss, is_session_end, map};
use crate::keys::{self, Kind, LATCH_NAME};
use crate::lock::Line;
use crate::session::LeaseInner;
use crate::store::Shared;

/// How many of a leadership's latest proclaims keep their entry.
const KEPT_ENTRIES: usize = 64;

/// An election named `name`: Curator's `LeaderLatch` on its node.
pub(crate) struct ZkElection {
    line: Line,
    /// `<root>/election_log/<name>`.
    log_dir: String,
    /// The entries of this object's earlier leaderships, deleted when it is next
    /// elected.
    written: Arc<std::sync::Mutex<Vec<String>>>,
}

impl ZkElection {
    /// Deletes the entries of this object's earlier leaderships (best effort: a
    /// leftover goes with the session).
    async fn forget_earlier_terms(&self) {
        let earlier = std::mem::take(&mut *locked(&self.written));
        if earlier.is_empty() {
            return;
        }
        let Ok(client) = self.line.lease.client() else {
            return;
        };
        for path in earlier {
            if let Err(error) = client.delete(&path, None).await {
                tracing::debug!(node = %path, %error, "could not delete an old proclaim entry");
            }
        }
    }
}

/// The proclaim numbers among the election log's `children` that belong to the
/// candidate node `child`, in order.
fn entries_of(children: &[String], child: &str) -> Vec<u64> {
    let prefix = format!("{child}.");
    let mut numbers: Vec<u64> = children
        .iter()
        .filter_map(|entry| entry.strip_prefix(&prefix)?.parse().ok())
        .collect();
    numbers.sort_unstable();
    numbers
}

/// The current value and the term of the candidate `child` of the election whose
/// nodes are `dir` and `log_dir`: its latest proclaim entry's value, or its node's data
/// before any; `None` once its node is gone.
pub(crate) async fn current_value(
    client: &zk::Client,
    dir: &str,
    log_dir: &str,
    child: &str,
) -> std::result::Result<Option<(Vec<u8>, i64)>, zk::Error> {
    let Some((data, stat)) = found(client.get_data(&format!("{dir}/{child}")).await)? else {
        return Ok(None);
    };
    let children = found(client.list_children(log_dir).await)?.unwrap_or_default();
    // The latest entry; one deleted meanwhile (kept no longer) is older.
    for number in entries_of(&children, child).into_iter().rev() {
        let entry = format!("{log_dir}/{child}.{number}");
        if let Some((value, _)) = found(client.get_data(&entry).await)? {
            return Ok(Some((value, stat.czxid)));
        }
    }
    Ok(Some((data, stat.czxid)))
}

#[async_trait]
impl Election for ZkElection {
    fn name(&self) -> &Name {
        &self.line.name
    }

    /// Stands with `value` as the candidate node's data and waits for every earlier
    /// candidate to go.
    ///
    /// Cancel-safety: cancel-safe; a dropped campaign deletes its candidate node in
    /// the background (the session removes it should that fail).
    async fn campaign_bytes(&self, value: Bytes) -> Result<Leadership> {
        let line = &self.line;
        let entry = line.enter(&value).await?;
        line.wait(&entry).await?;
        self.forget_earlier_terms().await;
        let term = FencingToken(entry.token as u64);
        let child = entry.child.clone();
        let (path, resign, releasing) = line.release(entry);
        let proclaim = Arc::new(ZkProclaim {
            lease: Arc::clone(&line.lease),
            node: path.clone(),
            log_dir: self.log_dir.clone(),
            child,
            state: tokio::sync::Mutex::new(ProclaimState {
                number: 0,
                entries: VecDeque::new(),
            }),
            written: Arc::clone(&self.written),
        });
        Ok(
            leadership(path.clone(), term, &line.session, proclaim, resign)
                .with_loss_watch(line.loss_watch(path, releasing)),
        )
    }

    async fn leader(&self) -> Result<Option<LeaderInfo>> {
        self.line.check_session()?;
        let client = self.line.lease.client()?;
        loop {
            let Some((_, child)) = self.line.line().await?.into_iter().next() else {
                return Ok(None);
            };
            let (dir, log_dir) = (&self.line.dir, &self.log_dir);
            let found = self
                .line
                .retrying(|| current_value(&client, dir, log_dir, &child))
                .await?;
            match found {
                Ok(Some((value, term))) => {
                    let term = self.line.lease.shared.amnesia.up(term);
                    return Ok(Some(info(value, term, &format!("{dir}/{child}"))));
                }
                // Resigned since the listing: list again.
                Ok(None) => continue,
                Err(error) => return Err(self.line.lease.error(error)),
            }
        }
    }

    fn observe(&self) -> BoxStream<'static, Result<LeaderInfo>> {
        let observer = Observer {
            shared: Arc::clone(&self.line.lease.shared),
            client: None,
            dir: self.line.dir.clone(),
            log_dir: self.log_dir.clone(),
            current: None,
            started: false,
            pending: VecDeque::new(),
        };
        observe_leaders(observer)
    }
}

/// A leadership's side of [`Leadership::proclaim`].
struct ZkProclaim {
    lease: Arc<LeaseInner>,
    /// The leader's candidate node.
    node: String,
    log_dir: String,
    /// The candidate node's name under the election's node.
    child: String,
    /// Proclaims go one at a time, so that their numbers follow their order.
    state: tokio::sync::Mutex<ProclaimState>,
    /// Where the entries go once the leadership is over (see [`ZkElection`]).
    written: Arc<std::sync::Mutex<Vec<String>>>,
}

struct ProclaimState {
    /// The number of the last entry written.
    number: u64,
    /// The paths of the entries written in this leadership, oldest first.
    entries: VecDeque<String>,
}

impl Drop for ZkProclaim {
    fn drop(&mut self) {
        let entries = std::mem::take(&mut self.state.get_mut().entries);
        locked(&self.written).extend(entries);
    }
}

impl ZkProclaim {
    /// Notes the entry `path` as written, deleting the oldest beyond [`KEPT_ENTRIES`].
    async fn note_written(&self, state: &mut ProclaimState, client: &zk::Client, path: String) {
        state.number += 1;
        state.entries.push_back(path);
        if state.entries.len() > KEPT_ENTRIES {
            if let Some(old) = state.entries.pop_front() {
                if let Err(error) = client.delete(&old, None).await {
                    tracing::debug!(node = %old, %error, "could not delete an old proclaim entry");
                }
            }
        }
    }
}

#[async_trait]
impl Proclaim for ZkProclaim {
    async fn proclaim_bytes(&self, value: Bytes) -> Result<()> {
        let mut state = self.state.lock().await;
        let shared = &self.lease.shared;
        let timeout = shared.config.request_timeout();
        let ephemeral = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
        loop {
            let entry = format!("{}/{}.{}", self.log_dir, self.child, state.number + 1);
            if self.lease.is_over() {
                return Err(Error::NotLeader);
            }
            let client = self.lease.client().map_err(|_| Error::NotLeader)?;
            let mut multi = client.new_multi_writer();
            multi
                .add_check_version(&self.node, -1)
                .and_then(|()| multi.add_create(&entry, &value, &ephemeral))
                .map_err(map)?;
            let failure = match tokio::time::timeout(timeout, multi.commit()).await {
                Ok(Ok(_)) => {
                    self.note_written(&mut state, &client, entry).await;
                    return Ok(());
                }
                // The leader's node is gone: this candidate no longer leads.
                Ok(Err(zk::MultiWriteError::OperationFailed {
                    index: 0,
                    source: zk::Error::NoNode,
                })) => return Err(Error::NotLeader),
                // The log's node is missing: make it.
                Ok(Err(zk::MultiWriteError::OperationFailed {
                    index: 1,
                    source: zk::Error::NoNode,
                })) => match answered(shared, client.mkdir(&self.log_dir, &persistent())).await {
                    Ok(()) => continue,
                    Err(error) => error,
                },
                // An earlier attempt whose reply was lost (or whose caller went away)
                // made it: done if it holds this value, otherwise next number.
                Ok(Err(zk::MultiWriteError::OperationFailed {
                    index: 1,
                    source: zk::Error::NodeExists,
                })) => match answered(shared, client.get_data(&entry)).await {
                    Ok((data, _)) => {
                        let done = data == value;
                        self.note_written(&mut state, &client, entry).await;
                        if done {
                            return Ok(());
                        }
                        continue;
                    }
                    Err(error) => error,
                },
                Ok(Err(zk::MultiWriteError::OperationFailed { source, .. }))
                | Ok(Err(zk::MultiWriteError::RequestFailed { source })) => source,
                Err(_) => zk::Error::ConnectionLoss,
            };
            drop(client);
            match failure {
                error if is_session_end(&error) => {
                    self.lease.error(error);
                    return Err(Error::NotLeader);
                }
                // Sent again after a pause (the same entry: it is made at most once).
                error if is_connection_loss(&error) => {
                    tracing::debug!(node = %self.node, "zookeeper proclaim not answered; retrying");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                error => return Err(self.lease.error(error)),
            }
        }
    }
}

/// The leader an observer follows.
struct Current {
    /// Its candidate node's name.
    child: String,
    term: i64,
    /// The number of the last value yielded: 0 the campaign value, `n` the entry
    /// `<child>.<n>`; `None` before any.
    number: Option<u64>,
}

/// The state of one `observe()` stream, on a ZooKeeper session of its own (it reads
/// only, and must not keep the candidate's session's client across its waits).
struct Observer {
    shared: Arc<Shared>,
    client: Option<zk::Client>,
    dir: String,
    log_dir: String,
    current: Option<Current>,
    /// Whether the candidates were read yet: the leader found first yields its latest
    /// value only.
    started: bool,
    pending: VecDeque<LeaderInfo>,
}

impl LeaderObserver for Observer {
    async fn next_leader(&mut self) -> Result<LeaderInfo> {
        loop {
            if let Some(info) = self.pending.pop_front() {
                return Ok(info);
            }
            let client = match &self.client {
                Some(client) => client.clone(),
                None => {
                    let client = self.shared.connect(crate::MIN_SESSION_TTL * 4).await?;
                    self.client = Some(client.clone());
                    client
                }
            };
            match self.step(&client).await {
                Ok(()) => {}
                Err(error) if is_session_end(&error) => {
                    // A new session reads the same nodes: go on with it.
                    tracing::debug!(%error, "zookeeper observer session ended; reconnecting");
                    self.client = None;
                }
                Err(error) if is_connection_loss(&error) => tokio::time::sleep(RETRY_PAUSE).await,
                Err(error) => return Err(map(error)),
            }
        }
    }
}

impl Observer {
    /// Reads the election once: queues what changed, or waits for a change.
    async fn step(&mut self, client: &zk::Client) -> std::result::Result<(), zk::Error> {
        let (children, line_watch) = match client.list_and_watch_children(&self.dir).await {
            Ok(found) => found,
            Err(zk::Error::NoNode) => {
                let (stat, watch) = client.check_and_watch_stat(&self.dir).await?;
                if stat.is_none() {
                    watch.changed().await;
                }
                return Ok(());
            }
            Err(error) => return Err(error),
        };
        let first = keys::contenders(children, LATCH_NAME).into_iter().next();
        let fresh = !self.started;
        self.started = true;
        let same = matches!(
            (&self.current, &first),
            (Some(current), Some((_, child))) if current.child == *child
        );
        if !same {
            if let Some(mut current) = self.current.take() {
                // What the old leader proclaimed after the last value yielded.
                let log = found(client.list_children(&self.log_dir).await)?.unwrap_or_default();
                let key = format!("{}/{}", self.dir, current.child);
                let (log_dir, pending) = (&self.log_dir, &mut self.pending);
                queue_entries(client, log_dir, &log, &mut current, &key, pending).await?;
                if !self.pending.is_empty() {
                    // The old leader's values first; the next step reads the new one.
                    return Ok(());
                }
            }
        }
        let Some((_, child)) = first else {
            line_watch.changed().await;
            return Ok(());
        };
        let path = format!("{}/{child}", self.dir);
        if self.current.is_none() {
            // `None`: resigned since the listing.
            let Some((data, stat)) = found(client.get_data(&path).await)? else {
                return Ok(());
            };
            let term = self.shared.amnesia.up(stat.czxid);
            let mut current = Current {
                child: child.clone(),
                term,
                number: None,
            };
            // A new leader: its campaign value, then its entries. The leader found
            // first: its latest value only, which its latest entry replaces (below).
            self.pending.push_back(info(data, term, &path));
            current.number = (!fresh).then_some(0);
            self.current = Some(current);
        }
        let (entries, log_watch) = match client.list_and_watch_children(&self.log_dir).await {
            Ok(found) => found,
            Err(zk::Error::NoNode) => {
                let (stat, watch) = client.check_and_watch_stat(&self.log_dir).await?;
                if stat.is_some() {
                    return Ok(());
                }
                (Vec::new(), watch)
            }
            Err(error) => return Err(error),
        };
        let Some(current) = self.current.as_mut() else {
            return Ok(());
        };
        if current.number.is_none() {
            // The leader found first: only its latest entry, if it has one, replaces
            // its campaign value queued above.
            match entries_of(&entries, &child).last() {
                Some(&latest) => {
                    let entry = format!("{}/{child}.{latest}", self.log_dir);
                    if let Ok((value, _)) = client.get_data(&entry).await {
                        self.pending.clear();
                        self.pending.push_back(info(value, current.term, &path));
                    }
                    current.number = Some(latest);
                }
                None => current.number = Some(0),
            }
            return Ok(());
        }
        let (log_dir, pending) = (&self.log_dir, &mut self.pending);
        queue_entries(client, log_dir, &entries, current, &path, pending).await?;
        if !self.pending.is_empty() {
            return Ok(());
        }
        tokio::select! {
            _ = line_watch.changed() => {}
            _ = log_watch.changed() => {}
        }
        Ok(())
    }
}

/// Queues in `pending` the values of the entries among `log`, the children of
/// `log_dir`, that `current` (whose node is `key`) proclaimed after the last value
/// yielded, noting each as yielded; one deleted meanwhile (kept no longer) is skipped.
async fn queue_entries(
    client: &zk::Client,
    log_dir: &str,
    log: &[String],
    current: &mut Current,
    key: &str,
    pending: &mut VecDeque<LeaderInfo>,
) -> std::result::Result<(), zk::Error> {
    let seen = current.number.unwrap_or(0);
    for number in entries_of(log, &current.child) {
        if number <= seen {
            continue;
        }
        let entry = format!("{log_dir}/{}.{number}", current.child);
        if let Some((value, _)) = found(client.get_data(&entry).await)? {
            pending.push_back(info(value, current.term, key));
        }
        current.number = Some(number);
    }
    Ok(())
}

fn info(value: Vec<u8>, term: i64, key: &str) -> LeaderInfo {
    LeaderInfo::new(value, FencingToken(term as u64), key)
}

impl Make<Arc<Direct>, OnSession<Arc<LeaseInner>>> for ZkElection {
    fn make(_: &Arc<Direct>, on: OnSession<Arc<LeaseInner>>) -> Result<Self> {
        let log_dir = keys::path(on.lease.shared.config.root(), Kind::ElectionLog, &on.name);
        Ok(Self {
            line: Line::new(on.session, on.lease, on.name, Kind::Election, LATCH_NAME),
            log_dir,
            written: Arc::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::entries_of;

    #[test]
    fn entries_belong_to_their_candidate_in_number_order() {
        let children = vec![
            "_c_a-latch-0000000001.10".to_owned(),
            "_c_a-latch-0000000001.2".to_owned(),
            "_c_b-latch-0000000002.1".to_owned(),
            "_c_a-latch-0000000001.x".to_owned(),
        ];
        assert_eq!(entries_of(&children, "_c_a-latch-0000000001"), vec![2, 10]);
        assert_eq!(entries_of(&children, "_c_b-latch-0000000002"), vec![1]);
        assert!(entries_of(&children, "_c_c-latch-0000000003").is_empty());
    }
}
