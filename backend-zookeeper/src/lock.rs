//! The lock, in the layout and protocol of Curator's `InterProcessMutex`, so that
//! Rust and Java contenders of one path exclude each other and wait in one line.
//!
//! # Layout
//!
//! The lock's node, its contenders' names and their data, which Curator shares, are in
//! docs/ZOOKEEPER.md, "The lock: `InterProcessMutex`".
//!
//! # Protocol
//!
//! 1. **Enter**: create the contender node (the lock's node and its ancestors are made
//!    on first use). The `_c_<uuid>-` prefix is Curator's "protected" mode: a client
//!    whose create reply was lost (connection loss) lists the children and finds its
//!    node by the prefix instead of creating a second one, which would wait behind the
//!    first forever.
//! 2. **Wait**: list the children, keep those whose name ends in `lock-` and a
//!    sequence, order them by sequence (Curator's `StandardLockInternalsDriver`). The
//!    lowest holds the lock. Any other contender watches only the node just before it
//!    (no herd: one wake-up per release) and lists again when that node changes or is
//!    gone. The first listing of `lock()` and `try_lock()` is sent right behind the
//!    create, without waiting for its answer: ZooKeeper answers a session's requests
//!    in the order they were sent, so the listing already holds the new node, and an
//!    uncontended grant waits for two answers that travel together rather than for
//!    two round trips.
//! 3. **Release**: delete the contender node, again after every lost connection
//!    until it is gone (Curator's guaranteed delete). `unlock()` runs the delete
//!    inline, as Curator's `release()` does; a caller that stops waiting does not stop
//!    it, since the guard hands the rest to a task (`LockGuard::unlock`'s cancel safety):
//!    a node left behind by a live session (a leader killed while the delete was in
//!    flight) would hold the lock for as long as the session lives. A holder's node
//!    also goes when its session expires or closes, which frees the lock without the
//!    holder's help.
//!
//! Waiters are granted in sequence order, i.e. arrival order ([`fifo_waiters`]).
//!
//! # Fencing
//!
//! The token of a grant is the creation zxid (`czxid`) of the holder's node.
//! ZooKeeper's zxids order every write of the ensemble and never go back (the epoch in
//! the high 32 bits grows with each leader election, across restarts too), and grants
//! go in sequence order, which is creation order: successive holders of a name carry
//! strictly increasing tokens, as etcd's create revision does. How a Java holder reads
//! its token is in docs/ZOOKEEPER.md, "The lock: `InterProcessMutex`".
//!
//! # Cancel safety
//!
//! A contender dropped before its grant (a cancelled or timed-out `lock`) deletes in
//! the background every child carrying its protected prefix; the client sends that
//! request after the create, so it finds the node even when the create's reply had not
//! arrived. Should the delete fail, the node goes with the session.
//!
//! [`fifo_waiters`]: distsync_core::Capabilities::fifo_waiters

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use distsync_core::raw::{lock_guard, CleanUp, GuardStoreSide as _, Locker};
use distsync_core::raw::{Make, OnSession};
use distsync_core::{Error, FencingToken, LockGuard, Name, Result, Session};
use tokio_util::sync::CancellationToken;
use zookeeper_client as zk;

use crate::direct::{answered, persistent, Direct, RETRY_PAUSE};
use crate::error::found;
use crate::keys::{self, Kind, LOCK_NAME};
use crate::session::LeaseInner;

/// Set by a hold's release once it starts deleting the hold's node, so that the
/// node's loss watch does not take the deletion for a loss.
pub(crate) type Releasing = Arc<AtomicBool>;

/// A mutex named `name`: Curator's `InterProcessMutex` on its node.
pub(crate) struct ZkLocker {
    line: Line,
}

/// A line of contenders under one node, the lowest sequence first: the protocol
/// Curator's `LockInternals` runs for its mutex and `LeaderLatch` runs for its
/// latch, with the name before the sequence (`lock-`, `latch-`) as the difference.
pub(crate) struct Line {
    pub(crate) session: Session,
    pub(crate) lease: Arc<LeaseInner>,
    pub(crate) name: Name,
    /// The primitive's node.
    pub(crate) dir: String,
    /// What precedes the sequence in a contender's node name.
    lock_name: &'static str,
}

impl Line {
    pub(crate) fn new(
        session: Session,
        lease: Arc<LeaseInner>,
        name: Name,
        kind: Kind,
        lock_name: &'static str,
    ) -> Self {
        let dir = keys::path(lease.shared.config.root(), kind, &name);
        Self::at(session, lease, name, dir, lock_name)
    }

    /// A line of contenders under the node `dir` (a recipe's inner node, such as a
    /// semaphore's `locks/` or `leases/`), for the primitive `name`.
    pub(crate) fn at(
        session: Session,
        lease: Arc<LeaseInner>,
        name: Name,
        dir: String,
        lock_name: &'static str,
    ) -> Self {
        Self {
            session,
            lease,
            name,
            dir,
            lock_name,
        }
    }

    /// The session id in hex: a lock contender's data.
    pub(crate) fn session_data(&self) -> Vec<u8> {
        format!("{:x}", self.lease.id).into_bytes()
    }

    /// Fails with [`Error::SessionLost`] once the session is lost.
    pub(crate) fn check_session(&self) -> Result<()> {
        if self.session.is_lost() {
            Err(Error::SessionLost)
        } else {
            Ok(())
        }
    }

    /// Runs `request` until it gets an answer other than a connection loss (see
    /// [`LeaseInner::retrying`]); gives up when the session is lost.
    pub(crate) async fn retrying<T, F, Fut>(
        &self,
        request: F,
    ) -> Result<std::result::Result<T, zk::Error>>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, zk::Error>>,
    {
        self.check_session()?;
        self.lease.retrying(RETRY_PAUSE, request).await
    }

    /// The contenders in line, ordered by sequence (empty if the lock's node is
    /// missing).
    pub(crate) async fn line(&self) -> Result<Vec<(u64, String)>> {
        Ok(keys::contenders(self.children().await?, self.lock_name))
    }

    /// The children of the primitive's node (empty if it is missing).
    pub(crate) async fn children(&self) -> Result<Vec<String>> {
        let client = self.lease.client()?;
        let listed = self.retrying(|| client.list_children(&self.dir)).await?;
        let listed = found(listed).map_err(|error| self.lease.error(error))?;
        Ok(listed.unwrap_or_default())
    }

    /// Creates the primitive's node, with its ancestors, where missing.
    pub(crate) async fn make_dir(&self, client: &zk::Client) -> Result<()> {
        let dir = persistent();
        let made = self.retrying(|| client.mkdir(&self.dir, &dir)).await?;
        made.map_err(|error| self.lease.error(error))
    }

    /// Deletes the node at `path`; a missing one is fine.
    pub(crate) async fn delete(&self, path: &str) -> Result<()> {
        let client = self.lease.client()?;
        let deleted = self.retrying(|| client.delete(path, None)).await?;
        found(deleted).map_err(|error| self.lease.error(error))?;
        Ok(())
    }

    /// Step 1: creates this contender's node holding `data` (and the primitive's node
    /// if missing).
    pub(crate) async fn enter(&self, data: &[u8]) -> Result<Entry> {
        Ok(self.enter_listed(data, false).await?.0)
    }

    /// [`Line::enter`], and with `list`, the line as it stands just after the create:
    /// the listing is sent right behind the create, before its answer, so the wait's
    /// first listing costs no round trip of its own. ZooKeeper answers a session's
    /// requests in the order they were sent (and the client sends them in the order of
    /// the calls), so that listing includes the new node. `None` when the listing was
    /// not asked for or did not come back (the wait then lists again).
    pub(crate) async fn enter_listed(
        &self,
        data: &[u8],
        list: bool,
    ) -> Result<(Entry, Option<Vec<(u64, String)>>)> {
        let client = self.lease.client()?;
        let mut entry = Entry {
            lease: Arc::clone(&self.lease),
            dir: self.dir.clone(),
            prefix: keys::protected_prefix(),
            child: String::new(),
            token: 0,
            armed: true,
        };
        let path = format!("{}/{}{}", self.dir, entry.prefix, self.lock_name);
        let options = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
        let shared = &self.lease.shared;
        let timeout = shared.config.request_timeout();
        // The lock-delay after the store forgot (see `src/amnesia.rs`).
        crate::epoch::before_grant(shared, &self.session, &client).await?;
        let ticket = shared.amnesia.ticket();
        loop {
            self.check_session()?;
            // Both requests leave when called, the create first.
            let created = answered(shared, client.create(&path, data, &options));
            let listed =
                list.then(|| tokio::time::timeout(timeout, client.list_children(&self.dir)));
            match created.await {
                Ok((stat, sequence)) => {
                    entry.child = format!("{}{}{sequence}", entry.prefix, self.lock_name);
                    if shared.amnesia.observe_created(ticket, stat.czxid) {
                        // Made on a store that forgot: every session goes, this one too.
                        shared.end_sessions().await;
                        return Err(Error::SessionLost);
                    }
                    entry.token = shared.amnesia.up(stat.czxid);
                    let line = match listed {
                        Some(listed) => match listed.await {
                            Ok(Ok(children)) => Some(keys::contenders(children, self.lock_name)),
                            Ok(Err(error)) => {
                                tracing::debug!(
                                    lock = %self.name,
                                    %error,
                                    "listing behind the create failed; listing again"
                                );
                                None
                            }
                            Err(_) => None,
                        },
                        None => None,
                    };
                    return Ok((entry, line));
                }
                Err(zk::Error::NoNode) => self.make_dir(&client).await?,
                Err(error) if crate::error::is_connection_loss(&error) => {
                    // The create may have been applied: look for the protected prefix.
                    if let Some((child, token)) = self.find(&entry.prefix).await? {
                        entry.child = child;
                        entry.token = token;
                        return Ok((entry, None));
                    }
                }
                Err(error) => return Err(self.lease.error(error)),
            }
        }
    }

    /// The node with `prefix` among the lock's children and its `czxid`, if any.
    async fn find(&self, prefix: &str) -> Result<Option<(String, i64)>> {
        let client = self.lease.client()?;
        let children = self.children().await?;
        let Some(child) = children.into_iter().find(|child| child.starts_with(prefix)) else {
            return Ok(None);
        };
        let path = format!("{}/{child}", self.dir);
        let stat = self.retrying(|| client.check_stat(&path)).await?;
        let stat = stat.map_err(|error| self.lease.error(error))?;
        Ok(stat.map(|stat| (child, self.lease.shared.amnesia.up(stat.czxid))))
    }

    /// Step 2: waits until `entry` is the lowest contender.
    pub(crate) async fn wait(&self, entry: &Entry) -> Result<()> {
        self.wait_from(entry, None).await
    }

    /// [`Line::wait`], starting from `first`, a listing made after `entry`'s node was
    /// created (see [`Line::enter_listed`]), if there is one.
    pub(crate) async fn wait_from(
        &self,
        entry: &Entry,
        mut first: Option<Vec<(u64, String)>>,
    ) -> Result<()> {
        loop {
            let line = self.line_after(first.take(), &entry.child).await?;
            let Some(place) = line.iter().position(|(_, child)| *child == entry.child) else {
                return Err(self.gone(entry));
            };
            if place == 0 {
                return Ok(());
            }
            self.wait_for(&format!("{}/{}", self.dir, line[place - 1].1))
                .await?;
        }
    }

    /// Waits until the node at `path` changes or goes; `false` at once when it is gone
    /// already (between a listing and the watch: the caller lists again), `true` once
    /// woken. The session's loss ends the wait.
    pub(crate) async fn wait_for(&self, path: &str) -> Result<bool> {
        // The client is not kept across the wait below: a close must end the session at
        // once.
        let client = self.lease.client()?;
        let watched = self.retrying(|| client.check_and_watch_stat(path)).await?;
        drop(client);
        let watcher = match watched {
            Ok((Some(_), watcher)) => watcher,
            Ok((None, _)) => return Ok(false),
            Err(error) => return Err(self.lease.error(error)),
        };
        tokio::select! {
            () = self.session.lost() => Err(Error::SessionLost),
            _ = watcher.changed() => Ok(true),
        }
    }

    /// `first`, a listing made after `child`'s node was created, if it holds the node;
    /// otherwise the line listed again: a listing without the node cannot follow its
    /// create on this session, so rather than judge the node gone on it, list again.
    pub(crate) async fn line_after(
        &self,
        first: Option<Vec<(u64, String)>>,
        child: &str,
    ) -> Result<Vec<(u64, String)>> {
        match first {
            Some(line) if line.iter().any(|(_, listed)| listed == child) => Ok(line),
            _ => self.line().await,
        }
    }

    /// `entry` back if it heads the line now (`first`: see [`Line::line_after`]). One
    /// behind another is withdrawn before the answer (see [`Line::leave`]), so that no
    /// later try finds it ahead (cancelled there, its drop deletes it in the
    /// background); a missing one is [`Line::gone`].
    pub(crate) async fn head_or_leave(
        &self,
        entry: Entry,
        first: Option<Vec<(u64, String)>>,
    ) -> Result<Option<Entry>> {
        let line = self.line_after(first, &entry.child).await?;
        match line.first() {
            Some((_, head)) if *head == entry.child => Ok(Some(entry)),
            Some(_) if line.iter().any(|(_, child)| *child == entry.child) => {
                self.leave(entry).await?;
                Ok(None)
            }
            _ => Err(self.gone(&entry)),
        }
    }

    /// The error for a contender whose node vanished while its session lives (deleted
    /// by an operator or another client): the session lost, or a backend error.
    pub(crate) fn gone(&self, entry: &Entry) -> Error {
        self.node_gone("contender node", &format!("{}/{}", entry.dir, entry.child))
    }

    /// The error for this line's `what` at `path`, vanished while its session lives
    /// (see [`Line::gone`]).
    pub(crate) fn node_gone(&self, what: &str, path: &str) -> Error {
        if self.session.is_lost() || self.lease.is_over() {
            return Error::SessionLost;
        }
        let gone = format!(
            "the {what} {path} of {:?} was deleted by someone else",
            self.name
        );
        Error::backend(crate::BACKEND, gone)
    }

    /// Withdraws `entry` (granted or not): deletes its node now rather than in the
    /// background, so that whoever watches it moves on before this returns.
    pub(crate) async fn leave(&self, mut entry: Entry) -> Result<()> {
        self.delete(&format!("{}/{}", entry.dir, entry.child))
            .await?;
        entry.armed = false;
        Ok(())
    }

    /// Step 3, made into the guard's release.
    pub(crate) fn guard(&self, entry: Entry) -> LockGuard {
        let token = FencingToken(entry.token as u64);
        let (path, release, releasing) = self.release(entry);
        distsync_core::raw::with_guarded_write(
            lock_guard(path.clone(), token, &self.session, release),
            crate::stm::ZkGuardedWrite::new(&self.lease, path.clone()),
        )
        .with_loss_watch(self.loss_watch(path, releasing))
    }

    /// A loss watch on the node at `path`, whose own release sets `releasing` (see
    /// [`watch_node`]).
    pub(crate) fn loss_watch(
        &self,
        path: String,
        releasing: Releasing,
    ) -> distsync_core::raw::LossWatchFn {
        let lease = Arc::clone(&self.lease);
        Box::new(move |lost: CancellationToken| {
            tokio::spawn(watch_node(lease, path, releasing, lost));
        })
    }

    /// Step 3: the granted `entry`'s node path, its release (a delete of the node), and
    /// the flag the release sets for the node's loss watch.
    pub(crate) fn release(
        &self,
        mut entry: Entry,
    ) -> (String, distsync_core::raw::ReleaseFn, Releasing) {
        entry.armed = false;
        let path = format!("{}/{}", entry.dir, entry.child);
        let lease = Arc::clone(&self.lease);
        let release_path = path.clone();
        // Run inline by `unlock()`: the guard hands the rest of a release whose caller
        // stops waiting to a task of its own (as it runs a dropped guard's), so a
        // cancelled unlock still deletes the node, and a release waited for to the end
        // costs no spawn.
        let releasing = Releasing::default();
        let flag = Arc::clone(&releasing);
        let release: distsync_core::raw::ReleaseFn = Box::new(move || {
            // The node's loss watch sees this deletion: a release, not a loss. The flag
            // is never cleared: once its release starts, the hold ends either way.
            flag.store(true, Ordering::SeqCst);
            Box::pin(delete_guaranteed(lease, release_path, false))
        });
        (path, release, releasing)
    }
}

/// Deletes a granted contender's node as Curator's guaranteed delete does: again after
/// every lost connection (a leader change, a server killed), until the node is gone or
/// the session ends, which bounds the wait by the session's deadline. `resent` says
/// whether a request that deletes the node was sent already and its answer lost (a
/// `NoNode` then means that request applied).
pub(crate) async fn delete_guaranteed(
    lease: Arc<LeaseInner>,
    path: String,
    mut resent: bool,
) -> Result<()> {
    loop {
        // A session that ended took the node with it: the hold was lost, which the
        // release reports rather than a clean unlock.
        if lease.is_over() {
            return Err(Error::SessionLost);
        }
        let client = lease.client()?;
        match answered(&lease.shared, client.delete(&path, None)).await {
            Ok(()) => return Ok(()),
            Err(_) if lease.is_over() => return Err(Error::SessionLost),
            // An earlier delete whose answer the lost connection took applied.
            Err(zk::Error::NoNode) if resent => return Ok(()),
            Err(zk::Error::NoNode) => return Err(Error::NotHeld),
            Err(error) if crate::error::is_connection_loss(&error) => {
                tracing::debug!(node = %path, %error, "zookeeper delete not answered; sending it again");
                resent = true;
                drop(client);
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(error) => return Err(crate::error::map(error)),
        }
    }
}

/// Cancels `lost` once the node at `path` is gone (deleted, or its session ended).
async fn watch_node(
    lease: Arc<LeaseInner>,
    path: String,
    releasing: Releasing,
    lost: CancellationToken,
) {
    loop {
        let Ok(client) = lease.client() else { break };
        // `biased`: a hold already ended (its session closed) ends the watch, whatever
        // the store says of its node at the same moment.
        let watched = tokio::select! {
            biased;
            () = lost.cancelled() => return,
            watched = client.check_and_watch_stat(&path) => watched,
        };
        drop(client);
        match watched {
            Ok((Some(_), watcher)) => {
                tokio::select! {
                    biased;
                    () = lost.cancelled() => return,
                    _ = watcher.changed() => {}
                }
            }
            // Deleted by this hold's own release: the guard ends the hold itself.
            Ok((None, _)) if releasing.load(Ordering::SeqCst) => return,
            Ok((None, _)) => break,
            Err(error) if crate::error::is_session_end(&error) => break,
            Err(_) => {
                tokio::select! {
                    () = lost.cancelled() => return,
                    () = tokio::time::sleep(RETRY_PAUSE) => {}
                }
            }
        }
    }
    // A hold whose session ended first (closed by its owner, or lost, which says so
    // itself) is not lost by its node going with the session.
    if lost.is_cancelled() {
        return;
    }
    tracing::warn!(node = %path, "zookeeper lock node gone: the lock is lost");
    lost.cancel();
}

/// A contender node being made or waited with. Dropped while armed (a cancelled or
/// failed acquisition), it deletes in the background every child with its prefix.
pub(crate) struct Entry {
    lease: Arc<LeaseInner>,
    dir: String,
    prefix: String,
    /// The node's name under `dir`, once known.
    pub(crate) child: String,
    /// The node's creation zxid.
    pub(crate) token: i64,
    armed: bool,
}

impl Drop for Entry {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let lease = Arc::clone(&self.lease);
        let dir = std::mem::take(&mut self.dir);
        let prefix = std::mem::take(&mut self.prefix);
        let known = std::mem::take(&mut self.child);
        // A node left behind would stand in line until the session ends, so the
        // requests are retried for as long as it lives.
        CleanUp::new(
            "deleting a cancelled contender's node",
            "it stands in line until its session ends",
        )
        .of(format!("{dir}/{prefix}"))
        .until_lost(lease.lost_token())
        .spawn(move |clean_up| async move {
            // Sent after the create on the same session, so the listing includes it.
            let list = || async {
                let client = lease.client()?;
                let listed = lease.once(|| client.list_children(&dir)).await?;
                Ok(found(listed)
                    .map_err(|error| lease.error(error))?
                    .unwrap_or_default())
            };
            let mut deleted = Ok(());
            for child in clean_up
                .retry(list)
                .await?
                .into_iter()
                .filter(|child| *child == known || child.starts_with(&prefix))
            {
                let path = format!("{dir}/{child}");
                // A node that cannot be deleted does not keep the others in line.
                deleted = deleted.and(clean_up.retry(|| lease.delete_once(&path)).await);
            }
            deleted
        });
    }
}

/// `guard`, watching its node for Curator's release requests (see `src/revoke.rs`).
fn revocable(line: &Line, guard: LockGuard) -> LockGuard {
    let path = guard.key().to_owned();
    distsync_core::raw::with_release_request_watch(
        guard,
        crate::revoke::watch(Arc::clone(&line.lease), path),
    )
}

#[async_trait]
impl Locker for ZkLocker {
    fn name(&self) -> &Name {
        &self.line.name
    }

    async fn lock(&self) -> Result<LockGuard> {
        let line = &self.line;
        let (entry, first) = line.enter_listed(&line.session_data(), true).await?;
        line.wait_from(&entry, first).await?;
        Ok(revocable(line, line.guard(entry)))
    }

    async fn try_lock(&self) -> Result<Option<LockGuard>> {
        let this = &self.line;
        let attempt = async {
            let (entry, first) = this.enter_listed(&this.session_data(), true).await?;
            // Someone ahead: withdrawn, so that no later `try_lock` finds it ahead.
            let entry = this.head_or_leave(entry, first).await?;
            Ok(entry.map(|entry| revocable(this, this.guard(entry))))
        };
        this.lease.shared.one_shot("try_lock", attempt).await
    }

    async fn contenders(&self) -> Result<usize> {
        self.line.check_session()?;
        let line = self.line.line().await?;
        // The unfair lock's waiters of this name wait apart (see `src/unfair_lock.rs`).
        let waiters = crate::unfair_lock::waiters_of(&self.line);
        Ok(line.len() + crate::unfair_lock::waiting_apart(&waiters, &line).await?)
    }
}

impl Make<Arc<Direct>, OnSession<Arc<LeaseInner>>> for ZkLocker {
    fn make(_: &Arc<Direct>, on: OnSession<Arc<LeaseInner>>) -> Result<Self> {
        let line = Line::new(on.session, on.lease, on.name, Kind::Lock, LOCK_NAME);
        Ok(Self { line })
    }
}
