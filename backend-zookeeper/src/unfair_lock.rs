//! The unfair lock: whoever asks first after a release takes the lock, and a release
//! wakes one waiter. Curator has no unfair mutex; this is ZooKeeper's natural one, laid
//! out so that it and the fair lock ([`crate::lock`], Curator's `InterProcessMutex`) of
//! the same name exclude each other.
//!
//! # Layout
//!
//! The holder node in the lock's node (a contender of sequence 0 to every fair
//! contender) and the wait line beside it are in docs/ZOOKEEPER.md, "The unfair lock".
//!
//! # Protocol
//!
//! 1. **Take**: create the holder node under a fresh protected prefix and, sent right
//!    behind the create (ZooKeeper answers a session's requests in order), list the
//!    lock's node. The take holds if the listing shows no other contender, or only
//!    other unfair takes all made after it (their creation zxids, read only on such a
//!    collision: the first made of colliding takes holds, so a release that the
//!    releaser and a waiter race for always ends with a holder). Otherwise it deletes
//!    its node again and waits: a fair line goes first, and an unfair node made before
//!    it is a holder (or a take that backs off in turn).
//! 2. **Wait**: a take that lost joins the wait line (its back-off delete, the line's
//!    create and the line's listing sent together). A waiter behind another watches
//!    its predecessor only. The head of the line watches the last contender of the
//!    lock's node (the holder, or the tail of a fair line); woken, it lists the lock's
//!    node (a read) and takes only if nobody is there, else watches again: a newcomer
//!    that was faster (barging, the holder taking again as a rule) costs it no failed
//!    take, which would be two writes on the leader. A waiter that comes to head the
//!    line looks the same way before its first take: the place ahead of it went with a
//!    line holder's release, and that holder takes again at once as a rule. The head's
//!    takes use its own protected prefix, so its holder node is told from the others
//!    by it.
//! 3. **Hold**: a head that takes the lock keeps its place in the wait line while it
//!    holds, so the waiter behind it still watches that place.
//! 4. **Release**: delete the holder node (Curator's guaranteed delete, as the fair
//!    lock's) and the holder's place in the wait line, if any, both in one `multi`: one
//!    write on the leader. Should either be gone already, each is deleted on its own.
//!    The session's end deletes both with it.
//!
//! # Why it is herd-free
//!
//! A release wakes one waiter: the new head when the holder came from the line (its
//! place goes with the release), or the head when the holder barged in (the head
//! watches its node). No other waiter watches anything a release changes. A head that
//! loses to a newcomer is woken once more by that newcomer's release. A waiter's watch
//! is a ZooKeeper watch, which the client sets again after a reconnection and the
//! server fires when the watched node's session ends, so no wake-up depends on a poll:
//! a lost holder's node goes at its lease's end, and that is the re-check. A break
//! deletes a line holder's place with its holder node ([`break_place`]), so the line
//! moves on at once, even while the holder's client is frozen. Should the holder node
//! go otherwise (deleted by hand), its own client deletes its place, which it watches
//! for that; were that client gone too, its session's end deletes the place.
//!
//! # Fencing
//!
//! A grant's token is its holder node's creation zxid, as the fair lock's: the two
//! share one token source. Grants go in creation order across both kinds: an unfair
//! take holds only when every other contender it lists is an unfair take made after it,
//! so every node made before it is gone; a fair contender holds only when no node of a
//! lower sequence exists, and an unfair node (sequence 0) made after it is such a node;
//! a node made after a holder's waits for it (an unfair take sees the holder and backs
//! off, a fair contender gets a higher sequence, since the holder's create moved the
//! parent's counter). So successive holders carry strictly increasing zxids, the offset
//! after an amnesia added (see `src/amnesia.rs`).
//!
//! # Mixing with the fair lock
//!
//! Fair and unfair contenders of a name exclude each other (above); what a mixed line
//! looks like to its contenders is in docs/ZOOKEEPER.md, "The unfair lock".
//!
//! # Cancel safety
//!
//! A take dropped before its grant deletes its holder node in the background (the
//! client sends the delete after the create); a dropped waiter's place is deleted by
//! its protected prefix, as the fair lock's contender is. Should a delete fail, the
//! node goes with the session.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use distsync_core::raw::locked;
use distsync_core::raw::{lock_guard, CleanUp, GuardStoreSide as _, Locker, ReleaseFn};
use distsync_core::raw::{Make, OnSession};
use distsync_core::{Error, FencingToken, LockGuard, Name, Result};
use tokio_util::sync::CancellationToken;
use zookeeper_client as zk;

use crate::direct::{answered, request_found, Direct, RETRY_PAUSE};
use crate::keys::{self, Kind, LOCK_NAME, UNFAIR_HOLDER_NAME, WAIT_NAME};
use crate::lock::{Entry, Line, Releasing};
use crate::session::LeaseInner;
use crate::store::Shared;

/// The unfair mutex named `name` (see the [module docs](self)).
pub(crate) struct ZkUnfairLocker {
    /// The lock's node, where the holder stands among the fair contenders.
    lock: Line,
    /// The wait line.
    waiters: Line,
    /// How many times a wait through this handle was woken (`Locker::wakeups`).
    wakeups: AtomicU64,
}

/// What a take found.
enum Take {
    /// The take holds the lock.
    Held(Claim),
    /// Someone else is there: the take's node (to delete) and the contender to watch.
    Blocked(Claim, String),
}

/// A holder node made (or being made) by one take. Dropped while armed (a take
/// cancelled or failed), it deletes the node in the background.
struct Claim {
    lease: Arc<LeaseInner>,
    /// The node's path.
    path: String,
    /// The node's name under the lock's node.
    child: String,
    /// The node's creation zxid, with the amnesia offset.
    token: i64,
    /// The node's creation zxid as the server gave it: its place among colliding takes.
    czxid: i64,
    armed: bool,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let lease = Arc::clone(&self.lease);
        let path = std::mem::take(&mut self.path);
        // Sent after the create on the same session, so it finds the node. A node left
        // behind would keep the lock held for as long as the session lives, so the
        // delete is retried for as long.
        CleanUp::new(
            "deleting a cancelled unfair take's node",
            "it holds the lock until its session ends",
        )
        .of(&path)
        .until_lost(lease.lost_token())
        .spawn(move |clean_up| async move { clean_up.retry(|| lease.delete_once(&path)).await });
    }
}

/// The place in the wait line a holder keeps, deleted by the first of its release and
/// its watch on the holder node.
type Place = Arc<Mutex<Option<ReleaseFn>>>;

/// Takes the place's delete, if nobody ran it yet.
fn take_place(place: &Place) -> Option<ReleaseFn> {
    locked(place).take()
}

impl ZkUnfairLocker {
    fn lease(&self) -> &Arc<LeaseInner> {
        &self.lock.lease
    }

    /// Step 1: creates the holder node under `prefix` and lists the lock's node right
    /// behind the create.
    async fn take(&self, prefix: &str) -> Result<Take> {
        let line = &self.lock;
        let lease = self.lease();
        let shared = &lease.shared;
        let client = lease.client()?;
        // The lock-delay after the store forgot (see `src/amnesia.rs`).
        crate::epoch::before_grant(shared, &line.session, &client).await?;
        let child = format!("{prefix}{UNFAIR_HOLDER_NAME}");
        let mut claim = Claim {
            lease: Arc::clone(lease),
            path: format!("{}/{child}", line.dir),
            child,
            token: 0,
            czxid: 0,
            armed: true,
        };
        let data = line.session_data();
        let options = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
        let ticket = shared.amnesia.ticket();
        let (czxid, listed) = loop {
            let answer = line
                .retrying(|| {
                    // Both requests leave when called, the create first.
                    let created = client.create(&claim.path, &data, &options);
                    let listed = client.list_children(&line.dir);
                    async move {
                        let created = created.await?;
                        Ok((created, listed.await))
                    }
                })
                .await?;
            match answer {
                Ok(((stat, _), listed)) => {
                    if shared.amnesia.observe_created(ticket, stat.czxid) {
                        // Made on a store that forgot: every session goes, this one too.
                        shared.end_sessions().await;
                        return Err(Error::SessionLost);
                    }
                    break (stat.czxid, listed.ok());
                }
                // An earlier send of this create applied and its answer was lost: the
                // name is this take's own.
                Err(zk::Error::NodeExists) => {
                    match line.retrying(|| client.check_stat(&claim.path)).await? {
                        Ok(Some(stat)) => break (stat.czxid, None),
                        Ok(None) => {}
                        Err(error) => return Err(lease.error(error)),
                    }
                }
                Err(zk::Error::NoNode) => line.make_dir(&client).await?,
                Err(error) => return Err(lease.error(error)),
            }
        };
        drop(client);
        claim.token = shared.amnesia.up(czxid);
        claim.czxid = czxid;
        let children = match listed {
            Some(children) if children.contains(&claim.child) => children,
            // Not listed behind the create: list again.
            _ => line.children().await?,
        };
        if !children.contains(&claim.child) {
            return Err(self.lock.node_gone("unfair lock node", &claim.path));
        }
        let others: Vec<String> = keys::contenders(children, LOCK_NAME)
            .into_iter()
            .map(|(_, child)| child)
            .filter(|child| *child != claim.child)
            .collect();
        if others.iter().all(|child| holder_prefix(child).is_some()) {
            // Only other unfair takes: the first made holds (see `first_made`).
            return match self.first_made(&claim, &others).await? {
                None => Ok(Take::Held(claim)),
                Some(blocker) => Ok(Take::Blocked(claim, blocker)),
            };
        }
        // The last one: a fair line must drain before this take can hold, so its tail
        // is the one whose end is worth a try.
        match others.last() {
            None => Ok(Take::Held(claim)),
            Some(blocker) => Ok(Take::Blocked(claim, blocker.clone())),
        }
    }

    /// Of the unfair takes `others` that the take `claim` listed beside its own node (no
    /// fair contender among them), the one made before it that is still there, if any:
    /// the take made first holds, and the others back off behind it.
    ///
    /// Safe: a take that holds this way was made before every other node it listed,
    /// and every take made after it lists after its own create, which the server
    /// applies after this take's create (zxid order), so it lists this take's node and
    /// backs off while that node stands. A take whose node is gone (withdrawn or
    /// released) no longer counts. Tokens still grow: a holder was made after every
    /// node still there when it listed, so after every earlier holder's. Without the
    /// order, two takes that list each other both back off, and a release that a
    /// waiter and the releaser (taking again) race for ends with no holder and two
    /// more writes each.
    async fn first_made(&self, claim: &Claim, others: &[String]) -> Result<Option<String>> {
        Ok(self
            .made_at(others)
            .await?
            .into_iter()
            .filter(|(czxid, _)| *czxid < claim.czxid)
            .min()
            .map(|(_, child)| child))
    }

    /// The creation zxids of the children `children` of the lock's node that are still
    /// there, read together (one round trip).
    async fn made_at(&self, children: &[String]) -> Result<Vec<(i64, String)>> {
        let client = self.lease().client()?;
        let paths: Vec<String> = children
            .iter()
            .map(|child| format!("{}/{child}", self.lock.dir))
            .collect();
        let stats = self
            .lock
            .retrying(|| {
                // Every read leaves when called.
                let sent: Vec<_> = paths.iter().map(|path| client.check_stat(path)).collect();
                async move {
                    let mut stats = Vec::with_capacity(sent.len());
                    for read in sent {
                        stats.push(read.await?);
                    }
                    Ok(stats)
                }
            })
            .await?
            .map_err(|error| self.lease().error(error))?;
        Ok(children
            .iter()
            .zip(stats)
            .filter_map(|(child, stat)| Some((stat?.czxid, child.clone())))
            .collect())
    }

    /// The lock's contenders that stay: of several unfair nodes, the first made alone
    /// (the holder, or the take that is to hold); the others are takes that back off
    /// into the wait line, and count once they stand there. So a waiter counts once,
    /// and only where it waits: a caller that sees it counted sees it parked in line.
    async fn staying(&self, line: Vec<(u64, String)>) -> Result<Vec<(u64, String)>> {
        let unfair: Vec<String> = line
            .iter()
            .map(|(_, child)| child)
            .filter(|child| holder_prefix(child).is_some())
            .cloned()
            .collect();
        if unfair.len() < 2 {
            return Ok(line);
        }
        let first = self.made_at(&unfair).await?.into_iter().min();
        Ok(line
            .into_iter()
            .filter(|(_, child)| {
                holder_prefix(child).is_none()
                    || first.as_ref().is_some_and(|(_, first)| first == child)
            })
            .collect())
    }

    /// Deletes a blocked take's node: `sent` is its delete when already sent, which is
    /// sent again after a lost connection.
    async fn withdraw(
        &self,
        claim: &mut Claim,
        sent: impl std::future::Future<Output = std::result::Result<(), zk::Error>>,
    ) -> Result<()> {
        let mut answer = answered(&self.lease().shared, sent).await;
        if answer.as_ref().is_err_and(crate::error::is_connection_loss) {
            let client = self.lease().client()?;
            answer = self
                .lock
                .retrying(|| client.delete(&claim.path, None))
                .await?;
        }
        match answer {
            Ok(()) | Err(zk::Error::NoNode) => {
                claim.armed = false;
                Ok(())
            }
            Err(error) => Err(self.lease().error(error)),
        }
    }

    /// The watch `sent` on the node at `path`, sent again after a lost connection:
    /// `None` when the node is already gone.
    async fn watch(
        &self,
        path: &str,
        sent: impl std::future::Future<
            Output = std::result::Result<(Option<zk::Stat>, zk::OneshotWatcher), zk::Error>,
        >,
    ) -> Result<Option<zk::OneshotWatcher>> {
        let mut answer = answered(&self.lease().shared, sent).await;
        if answer.as_ref().is_err_and(crate::error::is_connection_loss) {
            let client = self.lease().client()?;
            answer = self
                .lock
                .retrying(|| client.check_and_watch_stat(path))
                .await?;
        }
        match answer {
            Ok((Some(_), watcher)) => Ok(Some(watcher)),
            Ok((None, _)) => Ok(None),
            Err(error) => Err(self.lease().error(error)),
        }
    }

    /// Deletes a blocked take's node and watches `blocker`, the watch sent right
    /// behind the delete: `None` when the blocker is already gone.
    async fn back_off(
        &self,
        claim: &mut Claim,
        blocker: &str,
    ) -> Result<Option<zk::OneshotWatcher>> {
        let path = format!("{}/{blocker}", self.lock.dir);
        let client = self.lease().client()?;
        let deleted = client.delete(&claim.path, None);
        let watched = client.check_and_watch_stat(&path);
        self.withdraw(claim, deleted).await?;
        let watcher = self.watch(&path, watched).await;
        drop(client);
        watcher
    }

    /// Waits for `watcher` (the session's loss ends the wait), and counts the wake-up.
    async fn woken(&self, watcher: zk::OneshotWatcher) -> Result<()> {
        tokio::select! {
            () = self.lock.session.lost() => return Err(Error::SessionLost),
            _ = watcher.changed() => {}
        }
        self.wakeups.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Step 2: waits in line at `entry` (`first`: the line as listed behind its
    /// create) until its take holds. `blocker`: the contender the take that led here
    /// found, watched first should this waiter head the line.
    async fn wait_in_line(
        &self,
        entry: Entry,
        first: Option<Vec<(u64, String)>>,
        mut blocker: Option<String>,
    ) -> Result<LockGuard> {
        let entry_path = format!("{}/{}", self.waiters.dir, entry.child);
        let prefix = match entry.child.rsplit_once(WAIT_NAME) {
            Some((prefix, _)) => prefix.to_owned(),
            None => keys::protected_prefix(),
        };
        let mut listed = first;
        // Behind another waiter: watch it alone until this one heads the line.
        loop {
            let line = self.waiters.line_after(listed.take(), &entry.child).await?;
            let Some(place) = line.iter().position(|(_, child)| *child == entry.child) else {
                return Err(self.lock.node_gone("unfair lock node", &entry_path));
            };
            if place == 0 {
                break;
            }
            let before = format!("{}/{}", self.waiters.dir, line[place - 1].1);
            if self.waiters.wait_for(&before).await? {
                self.wakeups.fetch_add(1, Ordering::Relaxed);
            }
            // What the take saw is stale by now: look at the lock's node afresh. The
            // place ahead went with its holder's release as a rule, and that holder
            // takes again at once (barging): a take sent now would collide with its
            // take and cost the leader two writes, the loser's create and delete.
            blocker = self.lock.line().await?.pop().map(|(_, last)| last);
        }
        // The head: take when the lock's last contender goes. Woken, it looks (a read)
        // before it takes: a newcomer that took the lock meanwhile (the holder taking it
        // again, as a rule) is watched without a take that would fail, which would cost
        // the leader two writes.
        loop {
            if let Some(watched) = blocker.take() {
                let path = format!("{}/{watched}", self.lock.dir);
                if self.lock.wait_for(&path).await? {
                    self.wakeups.fetch_add(1, Ordering::Relaxed);
                }
                if let Some((_, last)) = self.lock.line().await?.pop() {
                    blocker = Some(last);
                    continue;
                }
            }
            match self.take(&prefix).await? {
                Take::Held(claim) => return Ok(self.grant(claim, Some(entry))),
                Take::Blocked(mut claim, other) => {
                    if let Some(watcher) = self.back_off(&mut claim, &other).await? {
                        self.woken(watcher).await?;
                    }
                    if let Some((_, last)) = self.lock.line().await?.pop() {
                        blocker = Some(last);
                    }
                }
            }
        }
    }

    /// Step 3, made into the guard: the held `claim`, and the holder's place in the
    /// wait line when it came from there.
    fn grant(&self, mut claim: Claim, entry: Option<Entry>) -> LockGuard {
        claim.armed = false;
        let path = std::mem::take(&mut claim.path);
        let token = FencingToken(claim.token as u64);
        let lease = Arc::clone(self.lease());
        // The place's own release: a guaranteed delete of the waiter's node.
        let mut place_path = String::new();
        let place: Option<Place> = entry.map(|entry| {
            let (path, release, _) = self.waiters.release(entry);
            place_path = path;
            Arc::new(Mutex::new(Some(release)))
        });
        let releasing = Releasing::default();
        let flag = Arc::clone(&releasing);
        let release_lease = Arc::clone(&lease);
        let release_path = path.clone();
        let release_place = place.clone();
        let release: ReleaseFn = Box::new(move || {
            // The node's loss watch sees this deletion: a release, not a loss.
            flag.store(true, Ordering::SeqCst);
            Box::pin(async move {
                // Polled in order: the holder node's delete is sent first, so the waiter
                // the place's delete wakes finds the lock free.
                let place = release_place.as_ref().and_then(take_place);
                let resent = match place {
                    // Both deletes in one transaction: one write on the leader, not two.
                    Some(_) => match both_deleted(&release_lease, &release_path, &place_path).await
                    {
                        Ok(()) => return Ok(()),
                        // One of the two is gone already (a break, the watch below): each
                        // is deleted on its own.
                        Err(zk::Error::NoNode) => false,
                        Err(error) => crate::error::is_connection_loss(&error),
                    },
                    None => false,
                };
                let held = crate::lock::delete_guaranteed(release_lease, release_path, resent);
                let place = async {
                    if let Some(release) = place {
                        // Gone already (its session's end, or the watch below): fine.
                        let _ = release().await;
                    }
                };
                futures::join!(held, place).0
            })
        });
        let guard = distsync_core::raw::with_guarded_write(
            lock_guard(path.clone(), token, &self.lock.session, release),
            crate::stm::ZkGuardedWrite::new(&lease, path.clone()),
        )
        .with_loss_watch(self.lock.loss_watch(path.clone(), releasing));
        if let Some(place) = place {
            let ended = guard.lost_token().clone();
            tokio::spawn(leave_line_when_gone(
                Arc::clone(&lease),
                path.clone(),
                place,
                ended,
            ));
        }
        distsync_core::raw::with_release_request_watch(guard, crate::revoke::watch(lease, path))
    }
}

/// Deletes a line holder's node at `holder` and its place at `place` in one `multi`.
/// A lost connection may have let it apply: the caller's deletes that follow treat a
/// missing node as deleted then.
async fn both_deleted(
    lease: &LeaseInner,
    holder: &str,
    place: &str,
) -> std::result::Result<(), zk::Error> {
    let client = lease.client().map_err(|_| zk::Error::SessionExpired)?;
    let mut multi = client.new_multi_writer();
    multi.add_delete(holder, None)?;
    multi.add_delete(place, None)?;
    answered(&lease.shared, async {
        multi.commit().await.map_err(zk::Error::from)
    })
    .await
    .map(drop)
}

/// Deletes a line holder's `place` once its hold has `ended` (released, whose release
/// deletes the place itself, or lost) or its holder node at `holder` is gone without a
/// release (a break, a purge), so that the waiter behind it moves on.
async fn leave_line_when_gone(
    lease: Arc<LeaseInner>,
    holder: String,
    place: Place,
    ended: CancellationToken,
) {
    loop {
        // A closed session took the place with it.
        let Ok(client) = lease.client() else { return };
        let watched = tokio::select! {
            biased;
            () = ended.cancelled() => break,
            watched = lease.retrying(RETRY_PAUSE, || client.check_and_watch_stat(&holder)) => watched,
        };
        drop(client);
        match watched {
            Ok(Ok((Some(_), watcher))) => {
                tokio::select! {
                    biased;
                    () = ended.cancelled() => break,
                    // Deleted, or written (a release request): look again.
                    _ = watcher.changed() => {}
                }
            }
            Ok(Ok((None, _))) => break,
            // The session is over (the place went with it), or the node cannot be read:
            // the release deletes the place.
            Ok(Err(_)) | Err(_) => return,
        }
    }
    if let Some(release) = take_place(&place) {
        tracing::debug!(node = %holder, "unfair lock holder node gone: leaving the wait line");
        if let Err(error) = release().await {
            tracing::debug!(node = %holder, %error, "could not delete a line holder's place");
        }
    }
}

#[async_trait]
impl Locker for ZkUnfairLocker {
    fn name(&self) -> &Name {
        &self.lock.name
    }

    async fn lock(&self) -> Result<LockGuard> {
        let (mut claim, blocker) = match self.take(&keys::protected_prefix()).await? {
            Take::Held(claim) => return Ok(self.grant(claim, None)),
            Take::Blocked(claim, blocker) => (claim, blocker),
        };
        // Join the line: the back-off delete leaves first, the line's create and listing
        // right behind it.
        let client = self.lease().client()?;
        let deleted = client.delete(&claim.path, None);
        let data = self.waiters.session_data();
        let entered = self.waiters.enter_listed(&data, true);
        let (withdrawn, entered) = futures::join!(self.withdraw(&mut claim, deleted), entered);
        drop(client);
        withdrawn?;
        let (entry, first) = entered?;
        self.wait_in_line(entry, first, Some(blocker)).await
    }

    async fn try_lock(&self) -> Result<Option<LockGuard>> {
        let attempt = async {
            match self.take(&keys::protected_prefix()).await? {
                Take::Held(claim) => Ok(Some(self.grant(claim, None))),
                Take::Blocked(mut claim, _) => {
                    // Withdrawn before answering, so that no later take finds it there.
                    let client = self.lease().client()?;
                    let deleted = client.delete(&claim.path, None);
                    self.withdraw(&mut claim, deleted).await?;
                    Ok(None)
                }
            }
        };
        self.lease().shared.one_shot("try_lock", attempt).await
    }

    /// The lock's staying contenders (a take that backs off counts from its place in
    /// the wait line, see `staying`) and the waiters in line apart from a line holder.
    async fn contenders(&self) -> Result<usize> {
        self.lock.check_session()?;
        let lock = self.staying(self.lock.line().await?).await?;
        Ok(lock.len() + waiting_apart(&self.waiters, &lock).await?)
    }

    fn wakeups(&self) -> u64 {
        self.wakeups.load(Ordering::Relaxed)
    }
}

/// How many unfair waiters of the lock whose contenders are `lock` wait in the line
/// `waiters`, apart from the lock's node: a line holder keeps its place, and is
/// counted once, by its holder node.
pub(crate) async fn waiting_apart(waiters: &Line, lock: &[(u64, String)]) -> Result<usize> {
    let holding: Vec<&str> = lock
        .iter()
        .filter_map(|(_, child)| holder_prefix(child))
        .collect();
    let waiting = waiters.line().await?;
    Ok(waiting
        .iter()
        .filter(|(_, child)| {
            let prefix = child
                .rsplit_once(WAIT_NAME)
                .map_or("", |(prefix, _)| prefix);
            !holding.contains(&prefix)
        })
        .count())
}

/// The unfair waiters' line of the lock `lock` (see [`waiting_apart`]).
pub(crate) fn waiters_of(lock: &Line) -> Line {
    Line::new(
        lock.session.clone(),
        Arc::clone(&lock.lease),
        lock.name.clone(),
        Kind::LockWait,
        WAIT_NAME,
    )
}

/// The protected prefix of the lock contender `child` if it is an unfair lock's
/// holder node (the prefix its place in the wait line shares, when it has one).
pub(crate) fn holder_prefix(child: &str) -> Option<&str> {
    child.strip_suffix(UNFAIR_HOLDER_NAME)
}

/// Deletes the place in the wait line of the lock `name` that the holder node `child`
/// keeps, if `child` is an unfair holder that came from the line. A break deletes the
/// holder node; the waiter behind the holder watches its place, so the place goes with
/// the break and that waiter moves on at once, whether or not the holder's client is
/// there to notice (a frozen one would keep the place until its session's end).
pub(crate) async fn break_place(
    shared: &Shared,
    client: &zk::Client,
    name: &Name,
    child: &str,
) -> Result<()> {
    let Some(prefix) = holder_prefix(child) else {
        return Ok(());
    };
    let line = keys::path(shared.config.root(), Kind::LockWait, name);
    let Some(children) = request_found(shared, client.list_children(&line)).await? else {
        return Ok(());
    };
    let places = children.iter().filter(|child| {
        child
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with(WAIT_NAME))
    });
    for place in places {
        let path = format!("{line}/{place}");
        if request_found(shared, client.delete(&path, None))
            .await?
            .is_some()
        {
            tracing::debug!(node = %path, "deleted a broken unfair holder's place");
        }
    }
    Ok(())
}

impl Make<Arc<Direct>, OnSession<Arc<LeaseInner>>> for ZkUnfairLocker {
    fn make(_: &Arc<Direct>, on: OnSession<Arc<LeaseInner>>) -> Result<Self> {
        let lock = Line::new(on.session, on.lease, on.name, Kind::Lock, LOCK_NAME);
        Ok(Self {
            waiters: waiters_of(&lock),
            lock,
            wakeups: AtomicU64::new(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_node_is_a_contender_of_sequence_zero() {
        let child = format!("{}{UNFAIR_HOLDER_NAME}", keys::protected_prefix());
        assert_eq!(keys::sequence(&child, LOCK_NAME), Some(0));
        assert!(holder_prefix(&child).is_some_and(|prefix| prefix.starts_with("_c_")));
        let fair = "_c_0b0c0d0e-aaaa-4bbb-8ccc-000000000000-lock-0000000001".to_owned();
        let found = keys::contenders(vec![fair.clone(), child.clone()], LOCK_NAME);
        assert_eq!(found, vec![(0, child), (1, fair)]);
    }

    #[test]
    fn curator_sorts_the_holder_node_first() {
        // Curator's `StandardLockInternalsDriver.fixForSorting`: what follows the last
        // `lock-`, compared as a string.
        fn fix(child: &str) -> &str {
            child.rsplit_once(LOCK_NAME).map_or(child, |(_, rest)| rest)
        }
        let holder = format!("{}{UNFAIR_HOLDER_NAME}", keys::protected_prefix());
        let fair = format!("{}lock-0000000001", keys::protected_prefix());
        assert!(fix(&holder) < fix(&fair));
    }
}
