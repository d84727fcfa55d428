//! The queue, in the layout of Curator's `DistributedQueue` and
//! `DistributedPriorityQueue`, with the `lockPath` of Curator's guaranteed delivery as
//! the holds of at-least-once `receive`; so that a Java producer's items reach a Rust
//! consumer and the reverse.
//!
//! # Layout
//!
//! The queue's node, its items' names, data and order, which Curator shares, are in
//! docs/ZOOKEEPER.md, "The queue: `DistributedQueue` and `DistributedPriorityQueue`"
//! (the item's bytes: `src/queue/framing.rs`). Beside it, in nodes Curator never looks
//! at:
//!
//! | node | what |
//! |---|---|
//! | `<root>/queue_lock/<name>/<item>` | Curator's `lockPath`: an ephemeral node per held item, of the holder's session |
//! | `<root>/queue_meta/<name>/%deliveries/<item>` | how many times `receive` delivered the item, in decimal |
//! | `<root>/queue_meta/<name>/%keys/<key>` | idempotency keys: `k-<key>` of `enqueue_once`, `c-<call id>` of `enqueue` |
//! | `<root>/queue_meta/<name>/%taken/<call id>` | the receipt of a `dequeue` in flight: its item's node name and data |
//! | `<root>/queue_meta/<name>/%clock` | written to read the server's clock |
//!
//! # Protocol
//!
//! * **Enqueue**: one `multi` creates the key node (holding the call's id) and the item
//!   node. A repeat after a lost reply finds its own key and stops; a key node of
//!   another call makes `enqueue_once` answer `Duplicate` while it is younger than
//!   [`DEDUP_WINDOW`] on the server's clock (an older one is deleted and the enqueue
//!   goes ahead). `enqueue` deletes its call's key once answered; keys of calls that
//!   never were are deleted by a later enqueue after [`CALL_KEY_WINDOW`].
//! * **Dequeue** (at most once): for the first item with no lock node, one `multi`
//!   creates and deletes the lock node (so it fails while someone holds the item),
//!   deletes the item at the version read, and creates the receipt, a persistent node
//!   holding the item. A reply lost to a connection loss or a session's end is
//!   resolved by the receipt; a dequeue dropped while its `multi` may have been applied
//!   puts the item back in the background, recreating its node under the same name,
//!   hence at the same place, and deleting the receipt in the same `multi`. A dequeue
//!   that returned its item deletes the receipt in the background. A receipt older
//!   than the URL's `stale_claim=` (by default [`STALE_CLAIM`]) on the server's clock
//!   is put back by a consumer of the queue ([`ClaimSweeps`] says when); what that
//!   costs a user is in docs/ZOOKEEPER.md.
//! * **Receive** (at least once): one `multi`, through the receiver's session, creates
//!   the ephemeral lock node, checks the item's version and counts the delivery. The
//!   item stays at its place: `ack` deletes it with the lock node, `nack` (or a dropped
//!   delivery) deletes the lock node only, and the end of the session deletes it too.
//!   What a Curator consumer needs to skip held items is in docs/ZOOKEEPER.md.
//! * **Curator's `putMulti`** writes several items into one node. distsync delivers
//!   one item at a time, so it first splits such a node, in one `multi`, into nodes
//!   named `<node>`, `<node>.0000000001`, ..., which sort where the node sorted and
//!   keep its items' order.
//!
//! # The server's clock
//!
//! `oldest_age` reads the leader's clock, not the producers' (docs/ZOOKEEPER.md,
//! "The queue", says how, and what a leader change does to it).
//!
//! [`DEDUP_WINDOW`]: distsync_core::queue::DEDUP_WINDOW
//! [`CALL_KEY_WINDOW`]: distsync_core::queue::CALL_KEY_WINDOW
//! [`STALE_CLAIM`]: distsync_core::queue::STALE_CLAIM
//! [`ClaimSweeps`]: distsync_core::raw::ClaimSweeps

pub(crate) mod framing;
pub(crate) mod nodes;
mod receive;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use distsync_core::queue::{AppendKey, Enqueued, CALL_KEY_WINDOW, DEDUP_WINDOW};
use distsync_core::raw::locked;
use distsync_core::raw::Look::{NotYet, Ready};
use distsync_core::raw::Make;
use distsync_core::raw::{
    call_id, Claim, ClaimGuard, ClaimSweeps, CleanUp, Failure, Idempotence, RetryPolicy,
};
use distsync_core::{Bytes, Delivery, Name, Queue, Result, Session};
use tokio::time::Instant;
use zookeeper_client as zk;

use crate::direct::{bounded, persistent, request, request_found, Direct};
use crate::error::{found, map};
use crate::store::Shared;
use nodes::{make_dirs, Paths};

/// How often a queue handle that enqueues deletes expired keys and stray delivery
/// counts.
const PRUNE_EVERY: Duration = Duration::from_secs(10 * 60);

/// How long a dropped dequeue's background put-back keeps trying.
const PUT_BACK_DEADLINE: Duration = Duration::from_secs(60);

/// A queue named `name`: Curator's `DistributedPriorityQueue` on its node.
pub(crate) struct ZkQueue {
    inner: Arc<Inner>,
}

/// What a queue and its deliveries share.
pub(crate) struct Inner {
    name: Name,
    paths: Paths,
    /// The backend's client of no session, and through it the backend's shared state:
    /// the queue's nodes other than the holds of `receive` (the receiver's session's)
    /// are persistent.
    direct: Arc<Direct>,
    /// When this handle last pruned keys (`None`: never).
    pruned: Mutex<Option<Instant>>,
    /// When this handle looks for the receipts of dequeues that never finished.
    sweeps: ClaimSweeps,
    /// How old a receipt is when its dequeue counts as never finished: the URL's
    /// `stale_claim=`, by default [`STALE_CLAIM`](distsync_core::queue::STALE_CLAIM).
    stale_after: Duration,
}

impl ZkQueue {
    fn new(direct: &Arc<Direct>, name: Name, stale_after: Duration) -> Self {
        let shared = &direct.shared;
        let paths = Paths::new(shared.config.root(), &name);
        Self {
            inner: Arc::new(Inner {
                name,
                paths,
                direct: Arc::clone(direct),
                pruned: Mutex::new(None),
                sweeps: ClaimSweeps::default(),
                stale_after,
            }),
        }
    }
}

/// What one look at the queue found.
enum Look<T> {
    /// An item (or a delivery of one).
    Found(T),
    /// Nothing available; with watches on the items and the locks when asked for.
    Empty(Watches),
}

/// A look's watches on the items and the locks, when it set them.
type Watches = Option<(zk::OneshotWatcher, zk::OneshotWatcher)>;

/// What an attempt on one available item did.
enum Took<T> {
    /// Took it (or a delivery of it).
    Item(T),
    /// Someone else holds it, or it is gone or changed: try the next one.
    No,
    /// Something changed meanwhile: list again.
    LookAgain,
}

/// Resolves once either of a look's watches fires (at once for a look that set none),
/// or after `sweep_in`, when the oldest receipt the last sweep left comes due.
async fn changed(watches: Watches, sweep_in: Option<Duration>) -> Result<()> {
    let sweep_due = async {
        match sweep_in {
            Some(due) => tokio::time::sleep(due).await,
            None => std::future::pending().await,
        }
    };
    if let Some((items, locks)) = watches {
        tokio::select! {
            _ = items.changed() => {}
            _ = locks.changed() => {}
            () = sweep_due => {}
        }
    }
    Ok(())
}

impl Inner {
    /// Core's policy with the one-shot budget cut to the request timeout.
    fn policy(&self) -> RetryPolicy {
        RetryPolicy::within(self.direct.shared.config.request_timeout())
    }

    /// `attempt`, idempotent, tried as [`Inner::policy`] says.
    async fn one_shot<T, Fut>(&self, what: &'static str, attempt: impl FnMut() -> Fut) -> Result<T>
    where
        Fut: std::future::Future<Output = Result<T>>,
    {
        self.policy()
            .one_shot(what, Idempotence::Idempotent, Failure::of, attempt)
            .await
    }

    /// The children of `path` (with a watch on them when `watch`), creating the node
    /// when missing.
    async fn children(
        &self,
        client: &zk::Client,
        path: &str,
        watch: bool,
    ) -> Result<(Vec<String>, Option<zk::OneshotWatcher>)> {
        loop {
            let listed = if watch {
                bounded(&self.direct.shared, client.list_and_watch_children(path))
                    .await?
                    .map(|(children, watcher)| (children, Some(watcher)))
            } else {
                bounded(&self.direct.shared, client.list_children(path))
                    .await?
                    .map(|children| (children, None))
            };
            match listed {
                Ok(listed) => return Ok(listed),
                Err(zk::Error::NoNode) if watch => {
                    make_dirs(&self.direct.shared, client, &[path]).await?
                }
                Err(zk::Error::NoNode) => return Ok((Vec::new(), None)),
                Err(error) => return Err(map(error)),
            }
        }
    }

    /// The items in Curator's order that no one holds, with watches when `watch`.
    async fn available(&self, client: &zk::Client, watch: bool) -> Result<(Vec<String>, Watches)> {
        // The holds are listed before the items. An ack deletes an item and its lock
        // node in one `multi`, so an item acked between the two reads is either held in
        // the first or gone from the second; read the other way round, it would show as
        // waiting. An item claimed between the reads shows as waiting, as it was when
        // the holds were read: a receiver's claim of it then fails and tries the next.
        let (held, locks_watch) = self.children(client, &self.paths.locks, watch).await?;
        let (children, items_watch) = self.children(client, &self.paths.items, watch).await?;
        let held: HashSet<String> = held.into_iter().collect();
        let available = nodes::items(children)
            .into_iter()
            .filter(|child| !held.contains(child))
            .collect();
        Ok((available, items_watch.zip(locks_watch)))
    }

    /// The item `child` and its node's version; `None` if it is gone. A node holding
    /// several items (Curator's `putMulti`) is split first, and `Split` returned.
    async fn read(&self, client: &zk::Client, child: &str) -> Result<Read> {
        let path = self.paths.item(child);
        let Some((data, stat)) = request_found(&self.direct.shared, client.get_data(&path)).await?
        else {
            return Ok(Read::Gone);
        };
        match framing::decode(&data) {
            Ok(mut items) if items.len() == 1 => Ok(Read::Item(items.remove(0), stat.version)),
            Ok(items) if items.len() > 1 => {
                self.split(client, child, &items, stat.version).await?;
                Ok(Read::Split)
            }
            Ok(_) => {
                // Curator's consumer takes an empty `putMulti` as no item at all.
                tracing::warn!(
                    queue = %self.name,
                    node = %path,
                    "queue node holds no item; delivered as an empty item"
                );
                Ok(Read::Item(Bytes::new(), stat.version))
            }
            Err(framing::Malformed(why)) => {
                tracing::warn!(
                    queue = %self.name,
                    node = %path,
                    why,
                    "queue node is not in Curator's item format; delivered as it is"
                );
                Ok(Read::Item(Bytes::from(data), stat.version))
            }
        }
    }

    /// Splits the node `child` holding `items` (at `version`) into one node per item
    /// at its place, unless someone holds it or changed it meanwhile.
    async fn split(
        &self,
        client: &zk::Client,
        child: &str,
        items: &[Bytes],
        version: i32,
    ) -> Result<()> {
        let mut multi = self.unless_held(client, child, version)?;
        let mut ops = || -> std::result::Result<(), zk::Error> {
            for (at, item) in items.iter().enumerate() {
                let node = match at {
                    0 => child.to_owned(),
                    at => format!("{child}.{at:010}"),
                };
                multi.add_create(
                    &self.paths.item(&node),
                    &framing::encode(item),
                    &persistent(),
                )?;
            }
            Ok(())
        };
        ops().map_err(map)?;
        match bounded(&self.direct.shared, multi.commit()).await? {
            Ok(_) => {
                tracing::debug!(queue = %self.name, node = child, items = items.len(), "split a multi-item queue node");
                Ok(())
            }
            // Held, gone or changed since it was read: the caller looks again.
            Err(zk::MultiWriteError::OperationFailed { .. }) => Ok(()),
            Err(zk::MultiWriteError::RequestFailed { source }) => Err(map(source)),
        }
    }

    /// One look for an item, after a sweep of stale receipts when one is due: `take`
    /// tries the available items in Curator's order, each as read at its node's
    /// version, until it takes one (a dequeue's take, or a receive's hold).
    async fn look<T, F, Fut>(&self, watch: bool, mut take: F) -> Result<Look<T>>
    where
        F: FnMut(zk::Client, String, Bytes, i32) -> Fut,
        Fut: std::future::Future<Output = Result<Took<T>>>,
    {
        self.sweep_if_due().await;
        let client = self.direct.client().await?;
        'listing: loop {
            let (available, watches) = self.available(&client, watch).await?;
            for child in available {
                let (item, version) = match self.read(&client, &child).await? {
                    Read::Item(item, version) => (item, version),
                    Read::Gone => continue,
                    Read::Split => continue 'listing,
                };
                match take(client.clone(), child, item, version).await? {
                    Took::Item(taken) => return Ok(Look::Found(taken)),
                    Took::No => {}
                    Took::LookAgain => continue 'listing,
                }
            }
            return Ok(Look::Empty(watches));
        }
    }

    /// One look for an item to dequeue: takes the first available one.
    async fn take(&self, watch: bool) -> Result<Look<Bytes>> {
        self.look(watch, |client, child, item, version| async move {
            self.take_item(&client, &child, item, version).await
        })
        .await
    }

    /// Deletes the item `child` (read at `version`) unless someone holds it; `No`
    /// when it is held or gone.
    async fn take_item(
        &self,
        client: &zk::Client,
        child: &str,
        item: Bytes,
        version: i32,
    ) -> Result<Took<Bytes>> {
        let data = framing::encode(&item);
        let receipt = format!("{}/{}", self.paths.taken, call_id());
        loop {
            let mut multi = self.take_multi(client, child, version, &receipt, &data)?;
            let put_back = ClaimGuard::new(Taken {
                direct: Arc::clone(&self.direct),
                receipt: receipt.clone(),
                data: data.clone(),
                paths: self.paths.clone(),
                child: child.to_owned(),
            });
            let failed = match bounded(&self.direct.shared, multi.commit()).await {
                Ok(Ok(_)) => None,
                Ok(Err(zk::MultiWriteError::OperationFailed { index, source })) => {
                    put_back.disarm();
                    match (index, source) {
                        (0, zk::Error::NoNode) => {
                            make_dirs(&self.direct.shared, client, &[&self.paths.locks]).await?;
                            continue;
                        }
                        (3, zk::Error::NoNode) => {
                            make_dirs(&self.direct.shared, client, &[&self.paths.taken]).await?;
                            continue;
                        }
                        // Held (the lock node exists), gone or changed.
                        (0, zk::Error::NodeExists)
                        | (2, zk::Error::NoNode | zk::Error::BadVersion) => return Ok(Took::No),
                        (_, source) => return Err(map(source)),
                    }
                }
                Ok(Err(zk::MultiWriteError::RequestFailed { source })) => Some(map(source)),
                Err(error) => Some(error),
            };
            if let Some(error) = failed {
                // The reply is lost, the `multi` maybe applied: the receipt, which
                // outlives this client's session, says. Not known, the put-back runs.
                if !self.receipt_exists(&receipt).await.map_err(|_| error)? {
                    put_back.disarm();
                    return Ok(Took::No);
                }
            }
            // Taken. No await may come between here and the return, or a dequeue
            // dropped there would lose the item: the receipt and the delivery count
            // are deleted in the background.
            put_back.hand_over();
            return Ok(Took::Item(item));
        }
    }

    /// The `multi` of a dequeue that takes the item `child` (read at `version`,
    /// holding `data`) under the receipt `receipt`.
    fn take_multi<'c>(
        &self,
        client: &'c zk::Client,
        child: &str,
        version: i32,
        receipt: &str,
        data: &[u8],
    ) -> Result<zk::MultiWriter<'c>> {
        let mut multi = self.unless_held(client, child, version)?;
        multi
            .add_create(receipt, &nodes::receipt(child, data), &persistent())
            .map_err(map)?;
        Ok(multi)
    }

    /// A `multi` whose first three operations delete the item node `child` at
    /// `version` unless a receiver holds it: the lock node is made and deleted at once,
    /// which fails while a receiver's lock node exists. Callers add their operations
    /// after these, and read a failure's index against them.
    fn unless_held<'c>(
        &self,
        client: &'c zk::Client,
        child: &str,
        version: i32,
    ) -> Result<zk::MultiWriter<'c>> {
        let lock = self.paths.lock(child);
        let mut multi = client.new_multi_writer();
        let mut ops = || -> std::result::Result<(), zk::Error> {
            multi.add_create(&lock, &[], &persistent())?;
            multi.add_delete(&lock, None)?;
            multi.add_delete(&self.paths.item(child), Some(version))
        };
        ops().map_err(map)?;
        Ok(multi)
    }

    /// Whether the receipt `receipt` exists: whether a dequeue whose reply was lost
    /// was applied.
    async fn receipt_exists(&self, receipt: &str) -> Result<bool> {
        let client = self.direct.client().await?;
        request(&self.direct.shared, client.check_stat(receipt))
            .await
            .map(|stat| stat.is_some())
    }

    /// Sweeps the receipts when [`ClaimSweeps`] says it is due.
    async fn sweep_if_due(&self) {
        self.sweeps
            .sweep_if_due(&self.paths.items, || self.sweep())
            .await;
    }

    /// Puts back the items of receipts older than `stale_after` on the server's clock;
    /// returns how long until the oldest receipt left comes due, if any is left.
    async fn sweep(&self) -> Result<Option<Duration>> {
        let client = self.direct.client().await?;
        let (receipts, _) = self.children(&client, &self.paths.taken, false).await?;
        if receipts.is_empty() {
            return Ok(None);
        }
        let now = nodes::server_now(&self.direct.shared, &client, &self.paths.clock).await?;
        let stale = i64::try_from(self.stale_after.as_millis()).unwrap_or(i64::MAX);
        let mut next: Option<i64> = None;
        for receipt in receipts {
            let path = format!("{}/{receipt}", self.paths.taken);
            let Some((data, stat)) =
                request_found(&self.direct.shared, client.get_data(&path)).await?
            else {
                continue;
            };
            let left = stale.saturating_sub(now.saturating_sub(stat.ctime));
            if left > 0 {
                next = Some(next.map_or(left, |next| next.min(left)));
                continue;
            }
            let Some((child, item)) = nodes::parse_receipt(&data) else {
                tracing::warn!(node = %path, "a dequeue's receipt of another shape is left as it is");
                continue;
            };
            tracing::warn!(
                queue = %self.name,
                node = %path,
                "putting back the item of a dequeue that never finished",
            );
            put_back(
                &self.direct.shared,
                &client,
                &path,
                &self.paths.item(child),
                item,
            )
            .await?;
        }
        Ok(next.map(|left| Duration::from_millis(left.unsigned_abs())))
    }

    /// One attempt of an enqueue of `item` at `priority` under the key node `key`
    /// (`call`'s, whose id it holds); `sent` says whether an earlier attempt may have
    /// been applied.
    async fn append(
        &self,
        key: &str,
        call: &str,
        window: Duration,
        item: &[u8],
        priority: u16,
        sent: &AtomicBool,
    ) -> Result<Enqueued> {
        let client = self.direct.client().await?;
        let key_path = format!("{}/{key}", self.paths.keys);
        if sent.swap(true, Ordering::SeqCst) {
            if let Some(answer) = self.existing(&client, &key_path, call, window).await? {
                return Ok(answer);
            }
        }
        let data = framing::encode(item);
        let item_path = format!("{}/{}", self.paths.items, nodes::item_prefix(priority));
        loop {
            let mut multi = client.new_multi_writer();
            multi
                .add_create(&key_path, call.as_bytes(), &persistent())
                .map_err(map)?;
            multi
                .add_create(&item_path, &data, &nodes::sequential())
                .map_err(map)?;
            match bounded(&self.direct.shared, multi.commit()).await? {
                Ok(_) => return Ok(Enqueued::New),
                Err(zk::MultiWriteError::OperationFailed {
                    source: zk::Error::NodeExists,
                    ..
                }) => {
                    if let Some(answer) = self.existing(&client, &key_path, call, window).await? {
                        return Ok(answer);
                    }
                }
                Err(zk::MultiWriteError::OperationFailed {
                    source: zk::Error::NoNode,
                    ..
                }) => {
                    make_dirs(
                        &self.direct.shared,
                        &client,
                        &[&self.paths.items, &self.paths.keys],
                    )
                    .await?;
                }
                Err(zk::MultiWriteError::OperationFailed { source, .. })
                | Err(zk::MultiWriteError::RequestFailed { source }) => return Err(map(source)),
            }
        }
    }

    /// What the key node at `key_path` says of an enqueue by `call`: `New` when it is
    /// the call's own, `Duplicate` when another call's is younger than `window`, `None`
    /// when there is none (an expired one is deleted).
    async fn existing(
        &self,
        client: &zk::Client,
        key_path: &str,
        call: &str,
        window: Duration,
    ) -> Result<Option<Enqueued>> {
        let Some((data, stat)) =
            request_found(&self.direct.shared, client.get_data(key_path)).await?
        else {
            return Ok(None);
        };
        if data == call.as_bytes() {
            return Ok(Some(Enqueued::New));
        }
        let now = nodes::server_now(&self.direct.shared, client, &self.paths.clock).await?;
        if !expired(now, stat.ctime, window) {
            return Ok(Some(Enqueued::Duplicate));
        }
        match bounded(
            &self.direct.shared,
            client.delete(key_path, Some(stat.version)),
        )
        .await?
        {
            Ok(()) | Err(zk::Error::NoNode | zk::Error::BadVersion) => Ok(None),
            Err(error) => Err(map(error)),
        }
    }

    /// An enqueue under `key` (`c-<call id>` for a plain one).
    async fn enqueue(
        self: &Arc<Self>,
        key: &AppendKey,
        item: Bytes,
        priority: u16,
    ) -> Result<Enqueued> {
        let (key_node, call) = match key {
            AppendKey::Caller(key) => (format!("k-{key}"), call_id()),
            AppendKey::Call(call) => (format!("c-{call}"), call.clone()),
        };
        let window = key.window();
        let sent = AtomicBool::new(false);
        let enqueued = self
            .one_shot("enqueue", || {
                self.append(&key_node, &call, window, &item, priority, &sent)
            })
            .await?;
        if let AppendKey::Call(_) = key {
            // The call is answered: no attempt of it is left to repeat.
            if let Ok(client) = self.direct.client().await {
                let path = format!("{}/{key_node}", self.paths.keys);
                if let Ok(Err(error)) =
                    bounded(&self.direct.shared, client.delete(&path, None)).await
                {
                    tracing::debug!(node = %path, %error, "could not delete an enqueue's call key");
                }
            }
        }
        self.prune_when_due();
        Ok(enqueued)
    }

    /// Starts a prune in the background when this handle has not pruned for
    /// [`PRUNE_EVERY`].
    fn prune_when_due(self: &Arc<Self>) {
        {
            let mut pruned = locked(&self.pruned);
            if pruned.is_some_and(|at| at.elapsed() < PRUNE_EVERY) {
                return;
            }
            *pruned = Some(Instant::now());
        }
        let inner = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(error) = inner.prune().await {
                tracing::debug!(queue = %inner.name, %error, "queue prune failed; a later enqueue tries again");
            }
        });
    }

    /// Deletes the key nodes older than their window and the delivery counts of items
    /// that are gone.
    async fn prune(&self) -> Result<()> {
        let client = self.direct.client().await?;
        let (keys, _) = self.children(&client, &self.paths.keys, false).await?;
        if !keys.is_empty() {
            let now = nodes::server_now(&self.direct.shared, &client, &self.paths.clock).await?;
            for key in keys {
                let window = if key.starts_with("c-") {
                    CALL_KEY_WINDOW
                } else {
                    DEDUP_WINDOW
                };
                let path = format!("{}/{key}", self.paths.keys);
                if let Some(stat) = request(&self.direct.shared, client.check_stat(&path)).await? {
                    if expired(now, stat.ctime, window) {
                        let _ = bounded(
                            &self.direct.shared,
                            client.delete(&path, Some(stat.version)),
                        )
                        .await?;
                    }
                }
            }
        }
        let (counts, _) = self
            .children(&client, &self.paths.deliveries, false)
            .await?;
        if !counts.is_empty() {
            let (items, _) = self.children(&client, &self.paths.items, false).await?;
            let items: HashSet<String> = items.into_iter().collect();
            for count in counts.into_iter().filter(|count| !items.contains(count)) {
                forget_deliveries(&self.direct.shared, &self.paths, &client, &count).await;
            }
        }
        Ok(())
    }

    /// How many items no one holds.
    async fn len(&self) -> Result<usize> {
        let client = self.direct.client().await?;
        Ok(self.available(&client, false).await?.0.len())
    }

    /// The age of the oldest item no one holds, on the server's clock.
    async fn oldest_age(&self) -> Result<Option<Duration>> {
        let client = self.direct.client().await?;
        let (mut available, _) = self.available(&client, false).await?;
        // Sequences grow with creation time across priorities.
        available.sort_by_key(|child| nodes::sequence(child).unwrap_or(u64::MAX));
        for child in available {
            let path = self.paths.item(&child);
            if let Some(stat) = request(&self.direct.shared, client.check_stat(&path)).await? {
                let now =
                    nodes::server_now(&self.direct.shared, &client, &self.paths.clock).await?;
                let age = u64::try_from(now.saturating_sub(stat.ctime)).unwrap_or(0);
                return Ok(Some(Duration::from_millis(age)));
            }
        }
        Ok(None)
    }
}

/// The items ready and in flight (held, or taken by a dequeue that has not deleted its
/// receipt) of the queue at `paths`, for `status`. The holds are listed first, for the
/// reason `available` gives: an item acked between the reads never counts as ready.
pub(crate) async fn counts(client: &zk::Client, paths: &Paths) -> Result<(usize, usize)> {
    let list = |path| async move {
        let children = found(client.list_children(path).await).map_err(map)?;
        Ok::<_, distsync_core::Error>(children.unwrap_or_default())
    };
    let held: HashSet<String> = list(&paths.locks).await?.into_iter().collect();
    let items = nodes::items(list(&paths.items).await?);
    let taken = list(&paths.taken).await?.len();
    let held = items.iter().filter(|child| held.contains(*child)).count();
    Ok((items.len() - held, held + taken))
}

/// Deletes the delivery count of the item `child`, gone for good (a count left
/// behind by a failure is deleted by a later prune).
async fn forget_deliveries(shared: &Shared, paths: &Paths, client: &zk::Client, child: &str) {
    let path = paths.delivery(child);
    let deleted = bounded(shared, client.delete(&path, None)).await;
    if let Err(error) = deleted.and_then(|deleted| found(deleted).map_err(map)) {
        tracing::debug!(node = %path, %error, "could not delete a delivery count");
    }
}

/// Whether a node created at `ctime` is older than `window` at `now` (server times in
/// milliseconds).
fn expired(now: i64, ctime: i64, window: Duration) -> bool {
    let window = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    now.saturating_sub(ctime) >= window
}

/// What reading an item node found.
enum Read {
    /// The item and its node's version.
    Item(Bytes, i32),
    /// The node is gone.
    Gone,
    /// The node held several items and was split (or someone else got to it): look
    /// again.
    Split,
}

/// A dequeue's `multi` that may have been applied (its receipt `receipt` says so): put
/// back (the dequeue was cancelled, or failed not knowing) by recreating the node under
/// its name, so at its place; handed over, its receipt and delivery count are deleted.
struct Taken {
    direct: Arc<Direct>,
    receipt: String,
    data: Vec<u8>,
    paths: Paths,
    child: String,
}

#[async_trait]
impl Claim for Taken {
    fn put_back_clean_up(&self) -> CleanUp {
        CleanUp::new(
            "putting back the item of a dropped dequeue",
            "a later dequeue puts it back once its receipt is stale",
        )
        .of(self.paths.item(&self.child))
        .within(PUT_BACK_DEADLINE)
    }

    async fn put_back(&self) -> Result<()> {
        let client = self.direct.client().await?;
        put_back(
            &self.direct.shared,
            &client,
            &self.receipt,
            &self.paths.item(&self.child),
            &self.data,
        )
        .await
    }

    fn forget_clean_up(&self) -> Option<CleanUp> {
        Some(
            CleanUp::new(
                "deleting a dequeue's receipt",
                "a later dequeue takes the receipt for an unfinished one and delivers its item again",
            )
            .of(&self.receipt)
            .within(PUT_BACK_DEADLINE),
        )
    }

    async fn forget(&self) -> Result<()> {
        let shared = &self.direct.shared;
        let client = self.direct.client().await?;
        match request(shared, client.delete(&self.receipt, None)).await {
            Ok(()) => {}
            Err(error) if error.is_transient() => return Err(error),
            Err(error) => {
                tracing::debug!(node = %self.receipt, %error, "could not delete a dequeue's receipt");
            }
        }
        forget_deliveries(shared, &self.paths, &client, &self.child).await;
        Ok(())
    }
}

/// Recreates the node at `path` holding `data` if the receipt `receipt` exists (the
/// dequeue took it), deleting the receipt in the same step.
async fn put_back(
    shared: &Shared,
    client: &zk::Client,
    receipt: &str,
    path: &str,
    data: &[u8],
) -> Result<()> {
    if request(shared, client.check_stat(receipt)).await?.is_none() {
        return Ok(());
    }
    let mut multi = client.new_multi_writer();
    multi.add_create(path, data, &persistent()).map_err(map)?;
    multi.add_delete(receipt, None).map_err(map)?;
    match bounded(shared, multi.commit()).await? {
        Ok(_) => {
            tracing::debug!(node = %path, "put back the item of a dequeue");
            Ok(())
        }
        // Another put-back of this receipt won meanwhile (the owner's, or a sweep's).
        Err(zk::MultiWriteError::OperationFailed {
            index: 0,
            source: zk::Error::NodeExists,
        })
        | Err(zk::MultiWriteError::OperationFailed {
            index: 1,
            source: zk::Error::NoNode,
        }) => Ok(()),
        Err(zk::MultiWriteError::OperationFailed { source, .. })
        | Err(zk::MultiWriteError::RequestFailed { source }) => Err(map(source)),
    }
}

#[async_trait]
impl Queue for ZkQueue {
    fn name(&self) -> &Name {
        &self.inner.name
    }

    async fn append_bytes(&self, key: &AppendKey, item: Bytes, priority: u16) -> Result<Enqueued> {
        self.inner.enqueue(key, item, priority).await
    }

    async fn dequeue(&self) -> Result<Bytes> {
        RetryPolicy::default()
            .wait_until("dequeue", None, || async {
                Ok(match self.inner.take(true).await? {
                    Look::Found(item) => Ready(item),
                    Look::Empty(watches) => NotYet(changed(watches, self.inner.sweeps.next_in())),
                })
            })
            .await
    }

    async fn try_dequeue(&self) -> Result<Option<Bytes>> {
        let inner = &self.inner;
        let look = inner.one_shot("try_dequeue", || inner.take(false)).await?;
        Ok(match look {
            Look::Found(item) => Some(item),
            Look::Empty(_) => None,
        })
    }

    async fn receive(&self, session: &Session) -> Result<Delivery> {
        receive::receive(&self.inner, session).await
    }

    async fn try_receive(&self, session: &Session) -> Result<Option<Delivery>> {
        receive::try_receive(&self.inner, session).await
    }

    async fn len(&self) -> Result<usize> {
        let inner = &self.inner;
        inner.one_shot("len", || inner.len()).await
    }

    async fn oldest_age(&self) -> Result<Option<Duration>> {
        let inner = &self.inner;
        inner.one_shot("oldest_age", || inner.oldest_age()).await
    }
}

impl Make<Arc<Direct>, Name> for ZkQueue {
    fn make(direct: &Arc<Direct>, name: Name) -> Result<Self> {
        Ok(Self::new(direct, name, direct.shared.config.stale_claim()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use distsync_core::queue::AppendKey;
    use distsync_core::raw::call_id;
    use distsync_core::{Bytes, Name, Queue};

    use super::{expired, Read, ZkQueue};
    use crate::backend::tests::test_url;

    #[test]
    fn keys_expire_after_their_window_on_the_servers_clock() {
        let window = Duration::from_secs(60);
        assert!(!expired(1_000_000, 1_000_000, window));
        assert!(!expired(1_059_999, 1_000_000, window));
        assert!(expired(1_060_000, 1_000_000, window));
        // A clock that went back (another leader) keeps the key.
        assert!(!expired(999_000, 1_000_000, window));
    }

    /// How long a receipt lives before these tests' queues take it as stale.
    const STALE_AFTER: Duration = Duration::from_secs(2);

    /// A fresh queue whose receipts are stale after [`STALE_AFTER`], holding `items`
    /// in order, and the first item taken by a dequeue that never finished: its
    /// `multi` applied, and then its process died (its session ended, and nothing put
    /// the item back or deleted the receipt). `None` when there is no test server.
    async fn queue_after_an_unfinished_dequeue(items: &[&str]) -> Option<ZkQueue> {
        Some(queue_after_an_unfinished_dequeue_at(&test_url()?, items).await)
    }

    /// [`queue_after_an_unfinished_dequeue`] on the store at `url`.
    async fn queue_after_an_unfinished_dequeue_at(url: &str, items: &[&str]) -> ZkQueue {
        let backend = crate::backend(url).await.unwrap();
        let name = Name::new(format!("unfinished-dequeue-{}", call_id())).unwrap();
        let queue = ZkQueue::new(&backend.sessionless, name, STALE_AFTER);
        for item in items {
            let item = Bytes::copy_from_slice(item.as_bytes());
            queue
                .append_bytes(&AppendKey::call(), item, 0)
                .await
                .unwrap();
        }
        let inner = &queue.inner;
        // The dequeue's process, with a ZooKeeper session of its own.
        let dying = crate::direct::Direct::new(&inner.direct.shared);
        let client = dying.client().await.unwrap();
        let (available, _) = inner.available(&client, false).await.unwrap();
        let first = &available[0];
        let Read::Item(item, version) = inner.read(&client, first).await.unwrap() else {
            panic!("the first item cannot be read");
        };
        assert_eq!(item, items[0].as_bytes());
        let receipt = format!("{}/{}", inner.paths.taken, call_id());
        let data = super::framing::encode(&item);
        let dirs = [inner.paths.taken.as_str(), inner.paths.locks.as_str()];
        super::nodes::make_dirs(&inner.direct.shared, &client, &dirs)
            .await
            .unwrap();
        let mut multi = inner
            .take_multi(&client, first, version, &receipt, &data)
            .unwrap();
        multi.commit().await.unwrap();
        // The process dies: its client closes its session.
        drop(multi);
        drop(client);
        drop(dying);
        assert_eq!(
            queue.len().await.unwrap(),
            items.len() - 1,
            "the item is taken"
        );
        let client = inner.direct.client().await.unwrap();
        assert_eq!(
            super::counts(&client, &inner.paths).await.unwrap(),
            (items.len() - 1, 1),
            "status counts the taken item in flight"
        );
        queue
    }

    #[tokio::test]
    async fn the_item_of_a_dequeue_that_never_finished_comes_back_at_its_place_once_stale() {
        let Some(queue) = queue_after_an_unfinished_dequeue(&["first", "second"]).await else {
            return;
        };
        let inner = &queue.inner;
        // A sweep before the receipt is stale leaves it, and says when it is due.
        let due = inner.sweep().await.unwrap().expect("a receipt is left");
        assert!(due <= STALE_AFTER, "due in {due:?}");
        assert_eq!(queue.len().await.unwrap(), 1, "a fresh receipt stays");
        tokio::time::sleep(due).await;
        // The server's clock may tick a little behind this one's.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while inner.sweep().await.unwrap().is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the receipt never came due"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(queue.len().await.unwrap(), 2, "the item is back");
        let client = inner.direct.client().await.unwrap();
        let (receipts, _) = inner
            .children(&client, &inner.paths.taken, false)
            .await
            .unwrap();
        assert!(
            receipts.is_empty(),
            "the receipt went with the put-back: {receipts:?}"
        );
        assert_eq!(queue.try_dequeue().await.unwrap().unwrap(), "first");
        assert_eq!(queue.try_dequeue().await.unwrap().unwrap(), "second");
        assert_eq!(queue.try_dequeue().await.unwrap(), None, "delivered once");
    }

    #[tokio::test]
    async fn export_lists_the_item_of_a_dequeue_that_never_finished_at_its_place_once() {
        let Some(url) = test_url() else { return };
        // A root of its own: the export reads everything under it.
        let root = format!("/export-unfinished-dequeue-{}", call_id());
        let (hosts, query) = url
            .split_once('?')
            .map_or((url.as_str(), None), |(h, q)| (h, Some(q)));
        let hosts = hosts
            .trim_start_matches("zk://")
            .split('/')
            .next()
            .unwrap_or_default();
        let url = match query {
            Some(query) => format!("zk://{hosts}{root}?{query}"),
            None => format!("zk://{hosts}{root}"),
        };
        let queue = queue_after_an_unfinished_dequeue_at(&url, &["first", "second", "third"]).await;
        let inner = &queue.inner;
        let logs = distsync_conformance::log_capture::LogCapture::start();
        let snapshot = crate::export::export(&inner.direct.shared).await.unwrap();
        let items: Vec<_> = snapshot.queues[&inner.name]
            .iter()
            .map(|queued| (queued.priority, queued.item.clone()))
            .collect();
        assert_eq!(
            items,
            [(0, "first"), (0, "second"), (0, "third")].map(|(p, i)| (p, Bytes::from(i))),
            "the taken item at its place, every item once"
        );
        assert_eq!(
            logs.count(&["exported as items", "count=1"]),
            1,
            "{}",
            logs.text()
        );
        drop(logs);
        // The export read the store: the receipt and the two items are left.
        assert_eq!(queue.len().await.unwrap(), 2);
        let client = inner.direct.client().await.unwrap();
        for (node, _) in crate::status::walk(&client, &root)
            .await
            .unwrap()
            .iter()
            .rev()
        {
            match client.delete(node, None).await {
                Ok(()) | Err(zookeeper_client::Error::NoNode) => {}
                Err(error) => panic!("deleting {node}: {error}"),
            }
        }
    }

    #[tokio::test]
    async fn a_waiting_dequeue_wakes_when_a_receipt_comes_due_and_takes_its_item() {
        let Some(queue) = queue_after_an_unfinished_dequeue(&["only"]).await else {
            return;
        };
        // Its first look sweeps (the receipt is not stale yet) and then waits: the
        // sweep's due time is the only thing that can wake it.
        let item = tokio::time::timeout(STALE_AFTER + Duration::from_secs(20), queue.dequeue())
            .await
            .expect("the waiting dequeue never took the item back")
            .unwrap();
        assert_eq!(item, "only");
        assert_eq!(queue.try_dequeue().await.unwrap(), None, "delivered once");
    }
}
