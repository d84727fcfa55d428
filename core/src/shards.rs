//! Shard ownership: a fixed number of shards spread over the live members of a group, each
//! held by one member at a time as a fenced hold
//! ([`Coordinator::shards`](crate::Coordinator::shards)).
//!
//! Every member runs the same loop:
//!
//! 1. it joins the group (see [`crate::group`]) on a session of its own;
//! 2. it reads the member list and the shards' current holders (one status read of the
//!    group), and computes the balanced, sticky assignment every member computes alike
//!    from the same read ([`assign`]): each member keeps the shards it holds up to its
//!    quota, and the rest go to the members under theirs by rendezvous weight, so a
//!    join moves at most `ceil(shards / members)` shards and a leave only the leaving
//!    member's (from a settled group: a join soon after another change may also move a
//!    shard twice, to a member whose wait from its read before that change has not yet
//!    been stopped by its next read, and on to its new owner);
//! 3. it locks each wanted shard's lock (`<group>/shards/<s>`), waiting for the
//!    previous owner to release it or to lose it, and releases each shard it no longer
//!    wants, after stopping the work it runs on it;
//! 4. it reads them again every [`ShardOptions::with_poll`] interval.
//!
//! **Never two owners.** Ownership is the shard's lock, with the lock's guarantees on
//! that store: the store grants it to the next member only after the previous one
//! released it or its session expired, and the previous one learns of a loss (its
//! client-side deadline) before the store can grant it to anyone else. Members that
//! disagree about the list (one has read a join the other has not yet) only wait
//! longer; they never share a shard. Work runs through [`Shards::while_owned`],
//! which stops the work the moment the shard is released or lost, or under a
//! [`ShardPin`] ([`Shards::pin`]), which lets the work run to its end (a database
//! transaction) and holds a release back until then; pass the shard's fencing token
//! ([`OwnedShards::token`], growing with every change of owner) with every write, as
//! with any lock.
//!
//! **Moves are not errors.** Shards move between members at every join and leave, so a
//! member's loop meets shards that left it: [`Shards::while_owned`] answers
//! [`ShardWork::Ended`] when the shard left while the work ran, and both it and
//! [`Shards::pin`] answer [`Error::NotHeld`] when the shard had left before the call
//! (the list the loop read is already old); a loop logs either at debug level and goes
//! on with the shards it owns.
//!
//! **After a death.** A member that dies leaves the list and loses its shards when its
//! session expires (its TTL); the others see it gone at their next read and lock its
//! shards, so every shard has an owner again within one session TTL, one poll interval
//! and the lock's grant time.
//!
//! **Losses.** When this member's session ends, every shard is lost at once (the work
//! on them stopped); the loop then joins again on a new session, with backoff, until
//! the [`Shards`] handle is stopped or dropped. When one shard is lost while the
//! session lives (its hold ended in the store), the member releases the others and
//! joins again on a new session too: the store may still list the old session on that
//! shard, and the assignment would give it back to a session that waits on itself.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::backend::Backend;
use crate::backoff::Backoff;
use crate::error::{Error, Result};
use crate::group::{Group, Membership};
use crate::guard::LockGuard;
use crate::layers;
use crate::name::Name;
use crate::raw::locked;
use crate::session::{Lost, Session, SessionOptions};
use crate::token::FencingToken;

/// The segment under a group's name that holds its shards' locks.
pub const SHARDS_SEGMENT: &str = "shards";

/// The most shards a group may have: enough for any fleet, few enough that one member
/// can hold every lock alone.
pub const MAX_SHARDS: u32 = 4096;

/// How [`Coordinator::shards`](crate::Coordinator::shards) takes part: the session each
/// join runs on, how often the member list is read, the member's metadata, and the pauses
/// between attempts after a loss.
///
/// ```
/// use std::time::Duration;
/// use distsync::replicas::ShardOptions;
///
/// let options = ShardOptions::default()
///     .with_ttl(Duration::from_secs(10))
///     .with_poll(Duration::from_millis(500))
///     .with_metadata("10.0.0.7:8080");
/// assert_eq!(options.poll(), Duration::from_millis(500));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardOptions {
    session: SessionOptions,
    poll: Duration,
    metadata: Bytes,
    first_retry: Duration,
    longest_retry: Duration,
}

impl Default for ShardOptions {
    /// Sessions with the default options, the member list read every second, no
    /// metadata, retries after 100 ms doubling up to 5 s.
    fn default() -> Self {
        Self {
            session: SessionOptions::default(),
            poll: crate::group::DEFAULT_POLL,
            metadata: Bytes::new(),
            first_retry: Duration::from_millis(100),
            longest_retry: Duration::from_secs(5),
        }
    }
}

impl ShardOptions {
    /// The same options with every join's session made with `session`.
    #[must_use]
    pub fn with_session(mut self, session: SessionOptions) -> Self {
        self.session = session;
        self
    }

    /// The same options with sessions of `ttl` (the rest of the session options
    /// default): how long a dead member's shards wait for a new owner.
    #[must_use]
    pub fn with_ttl(self, ttl: Duration) -> Self {
        self.with_session(SessionOptions::with_ttl(ttl))
    }

    /// The same options reading the member list every `poll`.
    #[must_use]
    pub fn with_poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// The same options joining the group with `metadata`.
    #[must_use]
    pub fn with_metadata(mut self, metadata: impl Into<Bytes>) -> Self {
        self.metadata = metadata.into();
        self
    }

    /// The same options pausing `first` before the first retry, doubling up to
    /// `longest`.
    #[must_use]
    pub fn with_retry(mut self, first: Duration, longest: Duration) -> Self {
        self.first_retry = first;
        self.longest_retry = longest;
        self
    }

    /// The options of every join's session.
    pub fn session(&self) -> &SessionOptions {
        &self.session
    }

    /// How often the member list is read.
    pub fn poll(&self) -> Duration {
        self.poll
    }
}

/// The shards a member owns now, each with the fencing token of its hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnedShards {
    tokens: BTreeMap<u32, FencingToken>,
}

impl OwnedShards {
    /// Whether `shard` is owned.
    pub fn contains(&self, shard: u32) -> bool {
        self.tokens.contains_key(&shard)
    }

    /// The fencing token of `shard`'s hold, if it is owned.
    pub fn token(&self, shard: u32) -> Option<FencingToken> {
        self.tokens.get(&shard).copied()
    }

    /// The owned shards, ascending.
    pub fn shards(&self) -> impl Iterator<Item = u32> + '_ {
        self.tokens.keys().copied()
    }

    /// The owned shards with their tokens, ascending.
    pub fn iter(&self) -> impl Iterator<Item = (u32, FencingToken)> + '_ {
        self.tokens.iter().map(|(shard, token)| (*shard, *token))
    }

    /// How many shards are owned.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether no shard is owned.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// What a member's loop has done since it started: every change of owner it took part
/// in. Summed over the members, `acquired` is the number of shard moves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardCounts {
    /// Shards this member locked (each one a change of owner).
    pub acquired: u64,
    /// Shards it released because another member is now their owner, or on stop.
    pub released: u64,
    /// Shards it lost without releasing them (its session or the hold ended).
    pub lost: u64,
}

/// This member's part in a sharded group, from
/// [`Coordinator::shards`](crate::Coordinator::shards). Dropping it stops the loop: the
/// work on its shards is stopped, its shards are released and it leaves the group, in the
/// background ([`Shards::stop`] waits for that).
pub struct Shards {
    shared: Arc<Shared>,
    owned: watch::Receiver<OwnedShards>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl fmt::Debug for Shards {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shards")
            .field("group", &self.shared.group.name())
            .field("member", &self.shared.member)
            .field("count", &self.shared.count)
            .field("owned", &*self.owned.borrow())
            .finish_non_exhaustive()
    }
}

/// What the loop and the handle share.
struct Shared {
    group: Group,
    member: String,
    count: u32,
    /// The shards held now, each with what stops the work on it.
    holds: Mutex<BTreeMap<u32, Arc<ShardHold>>>,
    /// The session of the membership being served, if any.
    session: Mutex<Option<Session>>,
    acquired: AtomicU64,
    released: AtomicU64,
    lost: AtomicU64,
}

/// One held shard as the work on it sees it.
struct ShardHold {
    token: FencingToken,
    /// Fires when the shard is being released or is lost: the work stops.
    ended: CancellationToken,
    /// The session the shard is held through: its client-side deadline ends the hold
    /// for [`ShardPin::is_ended`] even before `ended` fires.
    session: Session,
    /// Held shared by every [`ShardPin`]; the loop takes it exclusively after `ended`,
    /// so a shard is released only once its work has stopped.
    running: Arc<tokio::sync::RwLock<()>>,
}

/// Work on a shard under way, from [`Shards::pin`]: the shard is not released to
/// another member while the pin lives. Drop it as soon as [`ShardPin::ended`] fires.
pub struct ShardPin {
    shard: u32,
    token: FencingToken,
    ended: CancellationToken,
    session: Session,
    _running: tokio::sync::OwnedRwLockReadGuard<()>,
}

impl fmt::Debug for ShardPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardPin")
            .field("shard", &self.shard)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl ShardPin {
    /// The pinned shard.
    pub fn shard(&self) -> u32 {
        self.shard
    }

    /// The fencing token of this member's hold on the shard.
    pub fn token(&self) -> FencingToken {
        self.token
    }

    /// Resolves when the shard is being released to another member, or is lost: stop
    /// the work and drop the pin (a release waits for it; a loss does not).
    pub fn ended(&self) -> Lost {
        Lost::from_future(self.ended.clone().cancelled_owned())
    }

    /// Whether [`ShardPin::ended`] has fired, or the session's client-side deadline
    /// has passed ([`Session::is_lost`]): from the deadline on the store may grant the
    /// shard again, so a check between transactions stops there even when the runtime
    /// is too busy to have run the loss yet.
    pub fn is_ended(&self) -> bool {
        self.ended.is_cancelled() || self.session.is_lost()
    }
}

/// How work run by [`Shards::while_owned`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "the work may have been cut short: `Ended` says its output never came"]
pub enum ShardWork<T> {
    /// The work ran to its end while this member owned the shard: its output.
    Done(T),
    /// The shard was released to another member or lost while the work ran, and the
    /// work was dropped where it stood: an expected event at every rebalance, not an
    /// error. Whatever it wrote carried this member's token, which the next owner's
    /// newer one supersedes.
    Ended,
}

impl<T> ShardWork<T> {
    /// The work's output, `None` when the shard ended first.
    pub fn done(self) -> Option<T> {
        match self {
            Self::Done(output) => Some(output),
            Self::Ended => None,
        }
    }

    /// Whether the shard ended before the work did.
    pub fn is_ended(&self) -> bool {
        matches!(self, Self::Ended)
    }
}

/// The rendezvous weight of `member` for `shard`: FNV-1a over the id, mixed with the
/// shard by SplitMix64's finalizer. Fixed here (not `std`'s hasher, which may change
/// between Rust releases) so that every build of every member agrees.
fn weight(member: &str, shard: u32) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in member.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut mixed = hash ^ u64::from(shard).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    mixed ^ (mixed >> 31)
}

/// The assignment every member computes: which member owns each of `count` shards,
/// given the live `members` and the current `owners` (shard → member id, as the store's
/// holds show them; owners that are not members, and shards not below `count`, are
/// ignored). Empty for no member.
///
/// Balanced and sticky: with `n` members, every member gets `count / n` shards, and
/// the `count % n` members holding the most now get one more; each keeps the shards it
/// holds up to that quota (those of highest rendezvous weight), and every other shard
/// goes, in shard order, to the member of highest rendezvous weight still under its
/// quota. A join therefore moves only the new member's quota (at most
/// `ceil(count / n)` shards) and a leave only the leaving member's shards, and an
/// assignment that already is balanced is its own answer, so members that agree on
/// the list move nothing.
///
/// ```
/// use std::collections::BTreeMap;
/// use distsync::replicas::assign;
/// let before = assign(&["a", "b", "c"], &BTreeMap::new(), 64);
/// let owners: BTreeMap<u32, &str> = before.iter().map(|(s, m)| (*s, *m)).collect();
/// let after = assign(&["a", "b", "c", "d"], &owners, 64);
/// let moved = (0..64).filter(|s| before[s] != after[s]).count();
/// assert_eq!(moved, after.values().filter(|m| **m == "d").count());
/// assert!(moved <= 16);
/// ```
pub fn assign<'a>(
    members: &[&'a str],
    owners: &BTreeMap<u32, &str>,
    count: u32,
) -> BTreeMap<u32, &'a str> {
    let mut members: Vec<&'a str> = members.to_vec();
    members.sort_unstable();
    members.dedup();
    let mut plan = BTreeMap::new();
    if members.is_empty() {
        return plan;
    }
    let mut owned: BTreeMap<&'a str, Vec<u32>> =
        members.iter().map(|member| (*member, Vec::new())).collect();
    for (shard, owner) in owners.range(..count) {
        if let Some(shards) = owned.get_mut::<str>(owner) {
            shards.push(*shard);
        }
    }
    let per_member = count as usize / members.len();
    let extra = count as usize % members.len();
    let mut by_load = members.clone();
    by_load.sort_by(|a, b| owned[b].len().cmp(&owned[a].len()).then(a.cmp(b)));
    let mut need: BTreeMap<&'a str, usize> = BTreeMap::new();
    for (rank, member) in by_load.into_iter().enumerate() {
        let quota = per_member + usize::from(rank < extra);
        let mut mine = owned.remove(member).unwrap_or_default();
        mine.sort_by_key(|shard| (std::cmp::Reverse(weight(member, *shard)), *shard));
        mine.truncate(quota);
        need.insert(member, quota - mine.len());
        for shard in mine {
            plan.insert(shard, member);
        }
    }
    for shard in 0..count {
        if plan.contains_key(&shard) {
            continue;
        }
        let taker = members
            .iter()
            .filter(|member| need[*member] > 0)
            .max_by_key(|member| (weight(member, shard), **member));
        // The quotas add up to `count`, so some member is always under its quota.
        if let Some(taker) = taker {
            plan.insert(shard, *taker);
            if let Some(left) = need.get_mut(taker) {
                *left -= 1;
            }
        }
    }
    plan
}

/// The lock that is ownership of `shard`.
fn shard_lock_name(group: &Group, shard: u32) -> Result<String> {
    let name = format!("{}/{SHARDS_SEGMENT}/{shard}", group.name());
    crate::name::Name::new(name.as_str())?;
    Ok(name)
}

impl Shards {
    /// This member's part in the sharded group `group` over `backend`, its loop
    /// started (see [`Coordinator::shards`](crate::Coordinator::shards)).
    ///
    /// # Errors
    /// As [`Coordinator::shards`](crate::Coordinator::shards).
    pub(crate) fn start(
        backend: &Arc<dyn Backend>,
        group: &str,
        member: &str,
        count: u32,
        options: ShardOptions,
    ) -> Result<Self> {
        if count == 0 || count > MAX_SHARDS {
            return Err(Error::InvalidArgument(format!(
                "a sharded group has 1 to {MAX_SHARDS} shards, not {count}"
            )));
        }
        let group = Group::new(backend, group)?.with_poll(options.poll);
        group.member_entry(member)?;
        shard_lock_name(&group, count - 1)?;
        let shared = Arc::new(Shared {
            group,
            member: member.to_owned(),
            count,
            holds: Mutex::new(BTreeMap::new()),
            session: Mutex::new(None),
            acquired: AtomicU64::new(0),
            released: AtomicU64::new(0),
            lost: AtomicU64::new(0),
        });
        let (publish, owned) = watch::channel(OwnedShards::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(member_loop(
            Arc::clone(backend),
            shared.clone(),
            options,
            publish,
            stop.clone(),
        ));
        Ok(Shards {
            shared,
            owned,
            stop,
            task: Some(task),
        })
    }

    /// The group's name.
    pub fn group(&self) -> &str {
        self.shared.group.name()
    }

    /// This member's id.
    pub fn member(&self) -> &str {
        &self.shared.member
    }

    /// The number of shards in the group.
    pub fn count(&self) -> u32 {
        self.shared.count
    }

    /// The shards this member owns now.
    pub fn owned(&self) -> OwnedShards {
        self.owned.borrow().clone()
    }

    /// The shards this member owns, updated on every change (see
    /// [`tokio::sync::watch`]): `changed().await` for the next one,
    /// `wait_for(..)` for a condition.
    pub fn changes(&self) -> watch::Receiver<OwnedShards> {
        self.owned.clone()
    }

    /// What this member's loop has done so far.
    pub fn counts(&self) -> ShardCounts {
        ShardCounts {
            acquired: self.shared.acquired.load(Ordering::Relaxed),
            released: self.shared.released.load(Ordering::Relaxed),
            lost: self.shared.lost.load(Ordering::Relaxed),
        }
    }

    /// Runs `work`, given the fencing token of this member's hold on `shard`, while this
    /// member owns the shard, as [`LockGuard::while_held`](crate::LockGuard::while_held)
    /// does for a lock: the work is dropped the moment the shard is released to another
    /// member or lost (at the hold's client-side deadline at the latest), and the shard
    /// is released only after the work has stopped. Pass the token with every write.
    ///
    /// For work that may be cut anywhere (each write one atomic, fenced statement). Work
    /// that must not be cut part-way, such as a database transaction, runs under
    /// [`Shards::pin`] instead (see Cancel safety).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
    /// use distsync::replicas::{ShardOptions, ShardWork};
    /// use distsync::Error;
    /// let coordinator = distsync::connect("memory://").await?;
    /// let shards = coordinator.shards("indexers", "host-a", 4, ShardOptions::default())?;
    /// shards.changes().wait_for(|owned| owned.len() == 4).await.expect("running");
    /// for shard in shards.owned().shards() {
    ///     match shards.while_owned(shard, |token| async move { token.get() }).await {
    ///         Ok(ShardWork::Done(token)) => assert!(token > 0),
    ///         // The shard moved to another member: expected at every rebalance.
    ///         Ok(ShardWork::Ended) | Err(Error::NotHeld) => tracing::debug!(shard, "moved away"),
    ///         Err(error) => return Err(error),
    ///     }
    /// }
    /// shards.stop().await;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::NotHeld`] when the shard is not owned when this is called (`shard` out
    /// of range included), or is already being released: the work never started. A
    /// shard that ends while the work runs is [`ShardWork::Ended`], not an error.
    ///
    /// # Cancel safety
    /// Dropping the returned future drops `work`, and so does the shard's end: `work`
    /// is cut at whichever `.await` it stands on. That suits work whose every step is
    /// safe to abandon; it does not suit a database transaction, whose client may not
    /// survive a cut (sqlx's `begin()` dropped mid-flight leaves its connection inside a
    /// transaction the pool hands to the next caller). Run such work under
    /// [`Shards::pin`]: it runs to its end and checks [`ShardPin::ended`] between
    /// transactions, and a rebalance waits for it.
    pub async fn while_owned<F, Fut>(&self, shard: u32, work: F) -> Result<ShardWork<Fut::Output>>
    where
        F: FnOnce(FencingToken) -> Fut,
        Fut: Future,
    {
        let pin = self.pin(shard).await?;
        let work = work(pin.token);
        Ok(tokio::select! {
            biased;
            () = pin.ended.cancelled() => ShardWork::Ended,
            output = work => ShardWork::Done(output),
        })
    }

    /// Pins `shard` for work this member does on it that must not be cut part-way (a
    /// database transaction) or that runs by other means than a future (a child
    /// process, a thread): until the pin is dropped, the shard is not released to
    /// another member. Nothing stops the work: it runs to its end, checks
    /// [`ShardPin::is_ended`] (or awaits [`ShardPin::ended`]) where stopping is safe,
    /// and drops the pin. A rebalance waits for it (hold it no longer than one unit of
    /// work), a loss does not wait (the hold is already gone): the writes carry
    /// [`ShardPin::token`], so the store refuses a stale one after a loss.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
    /// use distsync::replicas::ShardOptions;
    /// use distsync::Error;
    /// let coordinator = distsync::connect("memory://").await?;
    /// let shards = coordinator.shards("ledgers", "host-a", 4, ShardOptions::default())?;
    /// shards.changes().wait_for(|owned| owned.len() == 4).await.expect("running");
    /// let pin = match shards.pin(2).await {
    ///     Ok(pin) => pin,
    ///     // Moved to another member since the list was read: expected, not an error.
    ///     Err(Error::NotHeld) => return Ok(()),
    ///     Err(error) => return Err(error),
    /// };
    /// while !pin.is_ended() {
    ///     // One transaction, never cut: `let mut tx = pool.begin().await?`, the
    ///     // writes fenced by `pin.token()`, `tx.commit().await?`.
    ///     let _token = pin.token();
    ///     # break;
    /// }
    /// drop(pin);
    /// shards.stop().await;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::NotHeld`] when the shard is not owned now (`shard` out of range
    /// included) or is already ending: an expected answer in a loop over an owned list
    /// read a moment earlier.
    ///
    /// # Cancel safety
    /// Cancel-safe: dropped before it returns, it pins nothing.
    pub async fn pin(&self, shard: u32) -> Result<ShardPin> {
        let hold = locked(&self.shared.holds)
            .get(&shard)
            .cloned()
            .ok_or(Error::NotHeld)?;
        // A release in progress waits for the pins it knows of; a new one waiting behind
        // it would wait for itself.
        let running = tokio::select! {
            biased;
            () = hold.ended.cancelled() => return Err(Error::NotHeld),
            running = hold.running.clone().read_owned() => running,
        };
        if hold.ended.is_cancelled() {
            return Err(Error::NotHeld);
        }
        Ok(ShardPin {
            shard,
            token: hold.token,
            ended: hold.ended.clone(),
            session: hold.session.clone(),
            _running: running,
        })
    }

    /// The session this member's shards are held through now, `None` between a loss
    /// and the next join: its [`Session::health_watch`] warns before the shards could
    /// be lost, its [`Session::lost`] fires when they all are.
    pub fn session(&self) -> Option<Session> {
        locked(&self.shared.session).clone()
    }

    /// Stops the loop and waits until the work on this member's shards has stopped,
    /// its shards are released and it has left the group.
    ///
    /// # Cancel safety
    /// Dropped part-way, the loop still stops in the background.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take()
            && let Err(error) = task.await
        {
            tracing::warn!(%error, "the shard loop ended abnormally");
        }
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What the loop's helper tasks report.
enum Event {
    /// A wanted shard's lock was taken (or could not be).
    Acquired(u32, Result<LockGuard>),
    /// A held shard's hold ended in the store or with the session.
    Lost(u32),
}

/// Joins, serves and joins again after every loss until stopped.
async fn member_loop(
    backend: Arc<dyn Backend>,
    shared: Arc<Shared>,
    options: ShardOptions,
    publish: watch::Sender<OwnedShards>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new(options.first_retry, options.longest_retry);
    while !stop.is_cancelled() {
        let joined = async {
            let session = layers::session(backend.as_ref(), options.session.clone()).await?;
            let membership = shared
                .group
                .join(&session, &shared.member, options.metadata.clone())
                .await?;
            Ok::<_, Error>((session, membership))
        };
        let joined = tokio::select! {
            () = stop.cancelled() => break,
            joined = joined => joined,
        };
        let (session, membership) = match joined {
            Ok(joined) => joined,
            Err(error) => {
                let group = shared.group.name();
                tracing::warn!(group, member = %shared.member, %error, "joining failed; retrying");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(backoff.next_pause()) => continue,
                }
            }
        };
        backoff.reset();
        *locked(&shared.session) = Some(session.clone());
        let mut serving = Serving {
            backend: &backend,
            shared: &shared,
            session: &session,
            publish: &publish,
            held: BTreeMap::new(),
            acquiring: BTreeMap::new(),
        };
        serving.serve(&membership, &stop).await;
        serving.release_all().await;
        *locked(&shared.session) = None;
        if stop.is_cancelled() {
            if let Err(error) = membership.leave().await {
                tracing::debug!(%error, "leaving the group failed; the lease ends the entry");
            }
        } else {
            let group = shared.group.name();
            tracing::warn!(group, member = %shared.member, "membership or a shard lost; joining again");
        }
        if let Err(error) = session.close().await {
            tracing::debug!(%error, "closing the shard session failed; its lease ends it");
        }
    }
}

/// One membership's serving state.
struct Serving<'a> {
    backend: &'a Arc<dyn Backend>,
    shared: &'a Arc<Shared>,
    session: &'a Session,
    publish: &'a watch::Sender<OwnedShards>,
    held: BTreeMap<u32, (LockGuard, Arc<ShardHold>)>,
    /// Shards being locked, each with the task that waits for it.
    acquiring: BTreeMap<u32, tokio::task::JoinHandle<()>>,
}

impl Serving<'_> {
    /// Rebalances until the membership ends or the loop is stopped.
    async fn serve(&mut self, membership: &Membership, stop: &CancellationToken) {
        let (events, mut inbox) = mpsc::unbounded_channel();
        let mut read_members = true;
        loop {
            if read_members {
                match self.wanted().await {
                    Ok(wanted) => self.rebalance(&wanted, &events).await,
                    Err(error) => {
                        let group = self.shared.group.name();
                        tracing::warn!(group, %error, "reading the members failed; keeping the shards");
                    }
                }
            }
            read_members = false;
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                () = membership.lost() => return,
                Some(event) = inbox.recv() => {
                    if self.handle(event, &events).await {
                        return;
                    }
                }
                () = tokio::time::sleep(self.shared.group.poll()) => read_members = true,
            }
        }
    }

    /// The shards this member should own, from one read of the group's members and
    /// shard holds (see [`assign`]). Until the store lists this member, it wants none
    /// (its own join not yet visible is no reason to take anything).
    async fn wanted(&self) -> Result<BTreeSet<u32>> {
        let group = &self.shared.group;
        let report = self.backend.status(&format!("{}/", group.name())).await?;
        let members = group.members_in(&report);
        let me = self.shared.member.as_str();
        if !members.iter().any(|member| member.id == me) {
            return Ok(BTreeSet::new());
        }
        let by_session: BTreeMap<&str, &str> = members
            .iter()
            .filter_map(|member| Some((member.session.as_deref()?, member.id.as_str())))
            .collect();
        let shards_prefix = format!("{}/{SHARDS_SEGMENT}/", group.name());
        let owners: BTreeMap<u32, &str> = report
            .lines
            .iter()
            .filter(|line| line.kind == crate::status::LineKind::Lock)
            .filter_map(|line| {
                let shard = line.name.strip_prefix(&shards_prefix)?.parse().ok()?;
                let session = line.holders.first()?.session.as_deref()?;
                Some((shard, *by_session.get(session)?))
            })
            .collect();
        let ids: Vec<&str> = members.iter().map(|member| member.id.as_str()).collect();
        Ok(assign(&ids, &owners, self.shared.count)
            .into_iter()
            .filter(|(_, owner)| *owner == me)
            .map(|(shard, _)| shard)
            .collect())
    }

    /// Releases what is no longer wanted, stops waiting for it, and starts locking
    /// what is newly wanted.
    async fn rebalance(&mut self, wanted: &BTreeSet<u32>, events: &mpsc::UnboundedSender<Event>) {
        let unwanted: Vec<u32> = self
            .held
            .keys()
            .copied()
            .filter(|shard| !wanted.contains(shard))
            .collect();
        for shard in unwanted {
            self.release(shard).await;
        }
        // A finished wait stays listed until its event is handled, so a shard is never
        // locked twice through this session.
        self.acquiring.retain(|shard, task| {
            let keep = wanted.contains(shard);
            if !keep {
                task.abort();
            }
            keep
        });
        for &shard in wanted {
            if self.held.contains_key(&shard) || self.acquiring.contains_key(&shard) {
                continue;
            }
            let locker = shard_lock_name(&self.shared.group, shard)
                .and_then(Name::new)
                .and_then(|name| layers::locker(self.backend, self.session, name));
            let events = events.clone();
            let task = tokio::spawn(async move {
                let result = async { locker?.lock().await }.await;
                let _ = events.send(Event::Acquired(shard, result));
            });
            self.acquiring.insert(shard, task);
        }
    }

    /// Handles one helper task's report; true when the membership must start again on a
    /// new session (a shard was lost).
    async fn handle(&mut self, event: Event, events: &mpsc::UnboundedSender<Event>) -> bool {
        match event {
            Event::Acquired(shard, Ok(guard)) => {
                if self.acquiring.remove(&shard).is_none() {
                    // No longer wanted: the wait was being stopped as it won.
                    if let Err(error) = guard.unlock().await {
                        tracing::debug!(shard, %error, "releasing an unwanted shard failed");
                    }
                    return false;
                }
                let hold = Arc::new(ShardHold {
                    token: guard.token(),
                    ended: CancellationToken::new(),
                    session: guard.session().clone(),
                    running: Arc::new(tokio::sync::RwLock::new(())),
                });
                // The work stops at the loss itself, not when the loop gets to it (the
                // loop may be waiting on the store just then).
                let lost = guard.lost();
                let events = events.clone();
                let ended = hold.ended.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        () = lost => {
                            ended.cancel();
                            let _ = events.send(Event::Lost(shard));
                        }
                        () = ended.cancelled() => {}
                    }
                });
                tracing::debug!(group = self.shared.group.name(), shard, token = %hold.token, "shard acquired");
                self.shared.acquired.fetch_add(1, Ordering::Relaxed);
                self.lock_holds().insert(shard, hold.clone());
                self.held.insert(shard, (guard, hold));
                self.publish();
            }
            Event::Acquired(shard, Err(error)) => {
                self.acquiring.remove(&shard);
                let group = self.shared.group.name();
                tracing::warn!(group, shard, %error, "locking a shard failed; trying at the next read");
            }
            Event::Lost(shard) => {
                if let Some((_guard, hold)) = self.held.remove(&shard) {
                    hold.ended.cancel();
                    self.lock_holds().remove(&shard);
                    self.shared.lost.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(group = self.shared.group.name(), shard, "shard lost");
                    self.publish();
                    // The store may still list this session on the shard (a hold judged
                    // lost on the client's side), and the sticky assignment would give it
                    // back to this session, which would then wait on its own entry: a
                    // session that lost a hold starts over as a new one.
                    return true;
                }
            }
        }
        false
    }

    /// Stops the work on `shard`, waits until it has stopped, and releases the shard.
    async fn release(&mut self, shard: u32) {
        let Some((guard, hold)) = self.held.remove(&shard) else {
            return;
        };
        hold.ended.cancel();
        self.lock_holds().remove(&shard);
        self.publish();
        let _stopped = hold.running.write().await;
        if guard.is_lost() {
            self.shared.lost.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.shared.released.fetch_add(1, Ordering::Relaxed);
        if let Err(error) = guard.unlock().await {
            let group = self.shared.group.name();
            tracing::warn!(group, shard, %error, "releasing a shard failed; its lease ends it");
        }
    }

    /// Ends every hold and wait (the membership ended or the loop stops).
    async fn release_all(&mut self) {
        for (_, task) in std::mem::take(&mut self.acquiring) {
            task.abort();
        }
        let shards: Vec<u32> = self.held.keys().copied().collect();
        for shard in shards {
            self.release(shard).await;
        }
    }

    fn lock_holds(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, Arc<ShardHold>>> {
        locked(&self.shared.holds)
    }

    fn publish(&self) {
        let owned = OwnedShards {
            tokens: self
                .held
                .iter()
                .map(|(shard, (_, hold))| (*shard, hold.token))
                .collect(),
        };
        self.publish.send_replace(owned);
    }
}
