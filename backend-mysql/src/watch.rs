//! The watch hub: one per backend, reading the log after the last revision it has
//! seen and handing each revision's changes to the watches they concern. How it learns
//! of writes (this process's at once, a key's bell, `key_bell.rs`, or the poll), and
//! why it reads the log on a connection of its own, is in the crate docs ("Watches").
//!
//! Writers commit in revision order (see `txn.rs`), so once the hub reads the
//! revision row at `r`, every row up to `r` is in the log: reading `(seen, r]` never
//! skips a change that commits later.
//!
//! A new watch reads its own history (from its start revision to the hub's position)
//! in one snapshot, then takes what the hub delivers after that position. When the hub
//! cannot read the log, every open watch ends (the recipes re-read and watch again).
//!
//! No statement runs while the hub's state is locked: a read of the log on a connection
//! that stops answering (a silent partition, a server under load) would otherwise hold
//! back every new watch of the process, past the heal. The hub's own reads are bounded
//! by the request timeout ([`LogReader::bounded`]).

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use distsync_core::Result;
use distsync_kv::kv::{Revision, WatchEvent, WatchResponse};
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt};
use sqlx::pool::PoolConnection;
use sqlx::{MySql, MySqlConnection, MySqlPool, Row};
use tokio::sync::{mpsc, Mutex, Notify};
use tokio::task::JoinHandle;

use crate::batch;
use crate::error::{map, within};
use crate::key_bell::KeyBells;
use crate::range::{key_string, KeyFilter};
use crate::schema::Tables;
use crate::txn::{event, LogRow, READ_ONLY};

/// How many revisions the hub reads in one statement.
const BATCH: Revision = 256;

/// What a watch receives from the hub.
type Sender = mpsc::UnboundedSender<Result<WatchResponse>>;

/// One open watch.
struct Watcher {
    key: String,
    prefix: bool,
    start: Revision,
    sender: Sender,
}

impl Watcher {
    /// Whether `event` is for this watch: at or after its start, to its key.
    fn wants(&self, event: &WatchEvent) -> bool {
        event.kv.mod_revision >= self.start
            && if self.prefix {
                event.kv.key.starts_with(&self.key)
            } else {
                event.kv.key == self.key
            }
    }
}

/// The hub's position and its watches.
#[derive(Default)]
struct State {
    /// The last revision read (every change up to it is delivered).
    seen: Revision,
    watchers: Vec<Watcher>,
}

/// What the hub's task shares with the backend.
struct Shared {
    /// The hub's own connection, for its task's reads of the log: a release reaches
    /// the watches of this process however busy the backend's pool is with other
    /// requests (a pool of one, so a connection lost is opened again). Only the task
    /// uses it, so no statement on it is ever cut off half-way by a dropped caller.
    reader: MySqlPool,
    /// The backend's pool, for a new watch's reads of the revision and its history
    /// (that watch's caller's request).
    pool: MySqlPool,
    tables: Tables,
    poll_interval: Duration,
    /// The most one read of the hub's may take (the URL's `timeout=`).
    request_timeout: Duration,
    /// Locked only to read or change the position and the watches, never across a
    /// statement.
    state: Mutex<State>,
    /// Rung by this process's writes and by new watches.
    bell: Notify,
}

/// The watch hub of one backend; its task ends when the hub is dropped.
pub(crate) struct Hub {
    shared: Arc<Shared>,
    /// The bells a watch of one key waits on beside the poll.
    bells: Arc<KeyBells>,
    task: OnceLock<JoinHandle<()>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("poll_interval", &self.shared.poll_interval)
            .finish_non_exhaustive()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(task) = self.task.get() {
            task.abort();
        }
    }
}

impl Hub {
    /// A hub over the log that `reader` (a pool of the hub's own) and `pool` (the
    /// backend's) reach, whose watches of one key also wait on `bells`, and whose own
    /// reads each end within `request_timeout`; its task starts with the first watch.
    pub(crate) fn new(
        reader: MySqlPool,
        pool: MySqlPool,
        tables: Tables,
        poll_interval: Duration,
        request_timeout: Duration,
        bells: Arc<KeyBells>,
    ) -> Self {
        Self {
            bells,
            shared: Arc::new(Shared {
                reader,
                pool,
                tables,
                poll_interval,
                request_timeout,
                state: Mutex::new(State::default()),
                bell: Notify::new(),
            }),
            task: OnceLock::new(),
        }
    }

    /// Tells the hub that this process wrote: it reads the log now.
    pub(crate) fn ring(&self) {
        self.shared.bell.notify_one();
    }

    /// Watches `key` (every key under it when `prefix`) from `start` (0 or below:
    /// from the changes after the present on, as etcd's).
    ///
    /// Cancel safety: cancel-safe; a watch registered by a dropped call is removed at
    /// the hub's next delivery.
    pub(crate) async fn watch(
        &self,
        key: &str,
        prefix: bool,
        mut start: Revision,
    ) -> Result<BoxStream<'static, Result<WatchResponse>>> {
        self.task
            .get_or_init(|| tokio::spawn(run(Arc::downgrade(&self.shared))));
        let (sender, receiver) = mpsc::unbounded_channel();
        // An idle hub read nothing since its last watch ended: it starts from the
        // present, read before the state is locked, on the backend's pool (why not on
        // the hub's own connection: [`Shared::reader`]).
        let idle = self.shared.state.lock().await.watchers.is_empty();
        let present: Option<Revision> = if idle {
            let revision = sqlx::query_scalar(&self.shared.tables.meta_row("revision"))
                .fetch_one(&self.shared.pool)
                .await
                .map_err(map)?;
            Some(revision)
        } else {
            None
        };
        let upto = {
            let mut state = self.shared.state.lock().await;
            if let (true, Some(present)) = (state.watchers.is_empty(), present) {
                state.seen = state.seen.max(present);
            }
            // A start of 0 or below is etcd's "from now": after the hub's position.
            if start <= 0 {
                start = state.seen.saturating_add(1);
            }
            if !prefix {
                let open = sender.clone();
                let shared = Arc::downgrade(&self.shared);
                self.bells.listen(
                    key,
                    move || !open.is_closed(),
                    move || {
                        if let Some(shared) = shared.upgrade() {
                            shared.bell.notify_one();
                        }
                    },
                );
            }
            state.watchers.push(Watcher {
                key: key.to_owned(),
                prefix,
                start,
                sender,
            });
            state.seen
        };
        self.ring();
        let history = if start <= upto {
            history(&self.shared, key, prefix, start, upto).await?
        } else {
            Vec::new()
        };
        let ends = matches!(history.last(), Some(Ok(WatchResponse::Compacted(_))));
        let live = stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|item| (item, receiver))
        });
        Ok(if ends {
            stream::iter(history).boxed()
        } else {
            stream::iter(history).chain(live).boxed()
        })
    }
}

/// The changes to `key` (or under it) in `[start, upto]`, one response per revision,
/// or `Compacted` when `start` is below the compaction point; read in one snapshot.
async fn history(
    shared: &Shared,
    key: &str,
    prefix: bool,
    start: Revision,
    upto: Revision,
) -> Result<Vec<Result<WatchResponse>>> {
    // Begun by a statement of this crate's ([`batch::Open`]): a call cut off before its
    // end closes the connection, rather than leaving it inside the snapshot for the pool
    // to hand out (sqlx's own begin does not roll back a `START TRANSACTION` cut off in
    // flight).
    let mut open = batch::Open::new(shared.pool.acquire().await.map_err(map)?);
    batch::run(open.conn(), &[READ_ONLY.to_owned()]).await?;
    let compacted: Revision = sqlx::query_scalar(&shared.tables.meta_row("compacted"))
        .fetch_one(open.conn())
        .await
        .map_err(map)?;
    if start < compacted {
        open.rollback().await;
        return Ok(vec![Ok(WatchResponse::Compacted(compacted))]);
    }
    let filter = KeyFilter::new(key, prefix, None);
    let sql = format!(
        "SELECT revision, sub, k, create_revision, version, lease, v, deleted FROM {} \
         WHERE {} AND revision >= ? AND revision <= ? ORDER BY revision, sub",
        shared.tables.log, filter.sql
    );
    let mut query = sqlx::query(&sql);
    for value in &filter.binds {
        query = query.bind(value);
    }
    let rows = query
        .bind(start)
        .bind(upto)
        .fetch_all(open.conn())
        .await
        .map_err(map)?;
    // Read only: its end commits nothing.
    open.rollback().await;
    let events = rows.iter().map(row_event).collect::<Result<Vec<_>>>()?;
    Ok(by_revision(&events)
        .map(|events| Ok(WatchResponse::Events(events.to_vec())))
        .collect())
}

/// A log row `revision, sub, k, create_revision, version, lease, v, deleted` as its
/// event (whose `mod_revision` is the row's revision).
fn row_event(row: &sqlx::mysql::MySqlRow) -> Result<WatchEvent> {
    let revision: Revision = row.try_get(0).map_err(map)?;
    let value: Vec<u8> = row.try_get(6).map_err(map)?;
    let logged = LogRow {
        key: key_string(row.try_get(2).map_err(map)?)?,
        create_revision: row.try_get(3).map_err(map)?,
        version: row.try_get(4).map_err(map)?,
        lease: row.try_get(5).map_err(map)?,
        value: Bytes::from(value),
        deleted: row.try_get(7).map_err(map)?,
    };
    Ok(event(logged, revision))
}

/// Events in revision order, grouped by revision.
fn by_revision(events: &[WatchEvent]) -> impl Iterator<Item = &[WatchEvent]> {
    events.chunk_by(|one, next| one.kv.mod_revision == next.kv.mod_revision)
}

/// The hub's task: waits for its bell or the poll interval (only while watches are
/// open), then delivers what the log holds after its position.
async fn run(shared: Weak<Shared>) {
    loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let idle = strong.state.lock().await.watchers.is_empty();
        let bell = strong.bell.notified();
        if idle {
            // No watch to serve: no statement until one opens (it rings). The hub's
            // drop aborts the task here.
            bell.await;
            continue;
        }
        let interval = strong.poll_interval;
        let _ = tokio::time::timeout(interval, bell).await;
        if let Err(error) = deliver(&strong).await {
            tracing::warn!(
                backend = crate::BACKEND,
                %error,
                "watch hub: reading the log failed; ending the open watches"
            );
            strong.state.lock().await.watchers.clear();
            tokio::time::sleep(interval).await;
        }
    }
}

/// Reads and delivers every change after the hub's position.
///
/// The reads run with the state unlocked; each batch is delivered under the lock, and
/// only if the position is still the one the batch was read from: while watches are
/// open only this task moves it, but once they have all ended a new watch moves an
/// idle hub to the present, and what was read from before that is dropped.
async fn deliver(shared: &Shared) -> Result<()> {
    let mut seen = {
        let mut state = shared.state.lock().await;
        state.watchers.retain(|watcher| !watcher.sender.is_closed());
        if state.watchers.is_empty() {
            return Ok(());
        }
        state.seen
    };
    let mut reader = LogReader::open(shared).await?;
    let (current, compacted) = reader.position().await?;
    if seen.saturating_add(1) < compacted {
        // The hub fell behind the compaction point: what it missed is gone.
        let mut state = shared.state.lock().await;
        if state.seen == seen {
            for watcher in state.watchers.drain(..) {
                let _ = watcher.sender.send(Ok(WatchResponse::Compacted(compacted)));
            }
            state.seen = current;
        }
        return Ok(());
    }
    while seen < current {
        let upto = current.min(seen.saturating_add(BATCH));
        let events = reader.changes(seen, upto).await?;
        let mut state = shared.state.lock().await;
        if state.seen != seen {
            return Ok(());
        }
        for events in by_revision(&events) {
            state.watchers.retain(|watcher| {
                let wanted: Vec<WatchEvent> = (events.iter())
                    .filter(|event| watcher.wants(event))
                    .cloned()
                    .collect();
                wanted.is_empty()
                    || watcher
                        .sender
                        .send(Ok(WatchResponse::Events(wanted)))
                        .is_ok()
            });
        }
        state.seen = upto;
        seen = upto;
    }
    Ok(())
}

/// The hub's own connection for one delivery, its reads [`LogReader::bounded`].
struct LogReader<'a> {
    shared: &'a Shared,
    conn: PoolConnection<MySql>,
}

impl<'a> LogReader<'a> {
    /// Takes the hub's connection (its pool waits at most the request timeout).
    async fn open(shared: &'a Shared) -> Result<Self> {
        let conn = shared.reader.acquire().await.map_err(map)?;
        Ok(Self { shared, conn })
    }

    /// The store's revision and its compaction point.
    async fn position(&mut self) -> Result<(Revision, Revision)> {
        let sql = self.shared.tables.meta_row("revision, compacted");
        self.bounded("reading the log's position", move |conn| {
            Box::pin(async move { sqlx::query_as(&sql).fetch_one(conn).await.map_err(map) })
        })
        .await
    }

    /// The changes of revisions `(after, upto]`, in order.
    async fn changes(&mut self, after: Revision, upto: Revision) -> Result<Vec<WatchEvent>> {
        let sql = format!(
            "SELECT revision, sub, k, create_revision, version, lease, v, deleted FROM {} \
             WHERE revision > ? AND revision <= ? ORDER BY revision, sub",
            self.shared.tables.log
        );
        self.bounded("reading the log", move |conn| {
            Box::pin(async move {
                let rows = sqlx::query(&sql)
                    .bind(after)
                    .bind(upto)
                    .fetch_all(conn)
                    .await
                    .map_err(map)?;
                rows.iter().map(row_event).collect::<Result<Vec<_>>>()
            })
        })
        .await
    }

    /// Runs `read` on the connection within the request timeout; a read that fails or
    /// runs out of time closes the connection once it is dropped, rather than hand back
    /// to the pool a connection that may still be inside a statement the server never
    /// answered.
    async fn bounded<T>(
        &mut self,
        doing: &str,
        read: impl for<'c> FnOnce(&'c mut MySqlConnection) -> BoxFuture<'c, Result<T>>,
    ) -> Result<T> {
        let timeout = self.shared.request_timeout;
        let result = within(timeout, "timeout", doing, read(&mut self.conn)).await;
        if result.is_err() {
            self.conn.close_on_drop();
        }
        result
    }
}
