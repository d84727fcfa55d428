//! The doorbell: how a process learns at once that another process wrote a key it
//! watches, on a server that has no `LISTEN`/`NOTIFY`.
//!
//! A watch hub with open watches keeps one connection of its own, the **listener**,
//! waiting in the server: it reads the store's revision, then sleeps unless that is
//! past `seen`, the last revision the hub delivered (`SLEEP(n)`, in a statement that
//! holds no table). The keys the hub watches are registered in the `bells` table
//! under the listener's connection id. A process that commits a write looks up the listeners registered for a key it
//! wrote (or a prefix of it) and interrupts their waits with `KILL QUERY`: the hub
//! then reads the log, as its poll would, a round trip or two after the commit
//! instead of up to a poll interval later. A release reaches the next waiter of a lock
//! in another process so.
//!
//! The poll stays, and it is what makes the watches correct: a ring that goes missing
//! costs at most one poll interval, never a change. Rings go missing by design where
//! making them sure would cost the writers: a registration made after the writer's
//! look-up, a `KILL` the server refuses (another user's connection), a `KILL` that
//! lands between the listener's read of the revision and its sleep, a table the server
//! lost, and the writes made while the table was last seen empty (see
//! [`Doorbell::ring_others`]).
//!
//! `bells` is a `MEMORY` table: a registration is never flushed to disk, and a
//! restart of the server empties it along with the connections it names. Connection
//! ids are not reused while a server runs, so a stale row (its process gone) names no
//! live connection: the `KILL` fails with "unknown thread" and the writer deletes it,
//! and every listener that opens sweeps the rows of connections that are gone.
//! The listener is the only user of its connection and runs nothing but its waits and
//! its own registrations (an interrupted one counts as a ring), so a `KILL QUERY`
//! never interrupts anything else.

use std::collections::HashSet;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use distsync_kv::kv::Revision;
use futures::future::BoxFuture;
use sqlx::{Connection as _, MySqlConnection, MySqlPool, Row as _};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::batch;
use crate::error::{is_interrupted, is_unknown_thread};
use crate::schema::{Tables, MAX_KEY_BYTES};

/// How long one wait of the listener lasts when nothing rings it: fifty poll intervals,
/// within a second and thirty. A wait is cheap (a sleeping statement); between two,
/// the listener deletes the registrations of watches that ended. A ring needs no
/// shorter wait: it interrupts it.
fn wait_for(poll_interval: Duration) -> Duration {
    poll_interval
        .saturating_mul(50)
        .clamp(Duration::from_secs(1), Duration::from_secs(30))
}

/// How long past its sleep a wait may take before its connection is given up (a
/// server or network that stopped answering).
const WAIT_SLACK: Duration = Duration::from_secs(5);

/// How many written keys one look-up of the ringer covers.
const KEYS_PER_LOOKUP: usize = 256;

/// A watched key: the key, and whether every key under it is watched.
pub(crate) type Watched = (String, bool);

/// What the listener's connection, its registrations and the ringer share.
struct Shared {
    pool: MySqlPool,
    table: String,
    /// The listener's connection id while it is open.
    listener: StdMutex<Option<u64>>,
    /// The keys registered under the listener's id.
    registered: StdMutex<HashSet<Watched>>,
    /// Until when the ringer skips look-ups: the table was empty at its last look.
    quiet_until: StdMutex<Option<Instant>>,
    /// How long an empty table keeps the ringer quiet: a quarter of the poll interval
    /// (a watch registered meanwhile sees the write by its poll).
    quiet_for: Duration,
    /// How long a wait of the listener lasts ([`wait_for`]).
    wait: Duration,
}

/// The doorbell of one backend: the writers' side ([`Doorbell::ring_others`]) and the
/// registrations of its hub's listener ([`Doorbell::register`], [`Listener`]).
pub(crate) struct Doorbell {
    shared: Arc<Shared>,
    ringer: StdMutex<Option<mpsc::UnboundedSender<Vec<String>>>>,
}

impl Doorbell {
    /// The doorbell over `pool`'s store, for a hub that polls every `poll_interval`.
    pub(crate) fn new(pool: MySqlPool, tables: &Tables, poll_interval: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                pool,
                table: tables.bells.clone(),
                listener: StdMutex::new(None),
                registered: StdMutex::new(HashSet::new()),
                quiet_until: StdMutex::new(None),
                quiet_for: poll_interval / 4,
                wait: wait_for(poll_interval),
            }),
            ringer: StdMutex::new(None),
        }
    }

    /// Registers `watched` under the listener, in the background, if the listener is
    /// open and the key is not registered yet, so that a write of another process
    /// rings it from then on. Opening a watch does not wait for it: a write before it
    /// lands is found by the poll. A failure is left to the poll too (and to the
    /// listener, which registers every watched key when it opens).
    pub(crate) fn register(&self, watched: Watched) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let shared = Arc::clone(&self.shared);
        runtime.spawn(async move { Self::insert_registration(&shared, &watched).await });
    }

    /// [`Doorbell::register`]'s statement.
    async fn insert_registration(shared: &Shared, watched: &Watched) {
        let Some(id) = *lock(&shared.listener) else {
            return;
        };
        if !lock(&shared.registered).insert(watched.clone()) {
            return;
        }
        let Some(statement) = insert(&shared.table, id, std::slice::from_ref(watched)) else {
            return;
        };
        let statement = [statement];
        let mut conn = match shared.pool.acquire().await {
            Ok(conn) => conn,
            Err(error) => {
                lock(&shared.registered).remove(watched);
                tracing::debug!(backend = crate::BACKEND, %error, "doorbell: registering a key");
                return;
            }
        };
        if let Err(error) = batch::run(&mut conn, &statement).await {
            lock(&shared.registered).remove(watched);
            tracing::debug!(backend = crate::BACKEND, %error, "doorbell: registering a key");
        }
    }

    /// Rings the listeners of other processes that watch one of `keys` (just written
    /// and committed), in the background: one look-up for the keys written since the
    /// last one, and a `KILL QUERY` per listener found. When the look-up finds no
    /// registration at all, the writes of the next poll interval ring nobody: no
    /// process was waiting, and one that starts to wait meanwhile finds them by its
    /// poll. So a store nobody waits on costs one look-up per poll interval per
    /// writing process, not one per write.
    pub(crate) fn ring_others(&self, keys: Vec<String>) {
        if keys.is_empty() {
            return;
        }
        if lock(&self.shared.quiet_until).is_some_and(|until| Instant::now() < until) {
            return;
        }
        let mut ringer = lock(&self.ringer);
        if let Some(sender) = ringer.as_ref() {
            if sender.send(keys.clone()).is_ok() {
                return;
            }
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (sender, receiver) = mpsc::unbounded_channel();
        let _ = sender.send(keys);
        runtime.spawn(ring(Arc::downgrade(&self.shared), receiver));
        *ringer = Some(sender);
    }

    /// Opens the listener: a connection of its own, registered under for every key in
    /// `watched` (creating the table if the store has none).
    ///
    /// Cancel safety: a listener cut off while opening leaves its connection closed and
    /// perhaps rows under an id nobody uses, which the first writer to ring it deletes.
    pub(crate) async fn listen(&self, watched: HashSet<Watched>) -> sqlx::Result<Listener> {
        let options = self.shared.pool.connect_options();
        let mut conn = MySqlConnection::connect_with(&options).await?;
        // Rows of connections that are gone (processes that ended without closing
        // their listener) are swept as a listener opens. A user without the `PROCESS`
        // privilege sees only its own connections: other users' rows go too, whom it
        // could not ring anyway, and who are left to their polls.
        let sql = format!(
            "{};\nDELETE FROM {table} WHERE conn NOT IN \
                 (SELECT ID FROM information_schema.PROCESSLIST);\n\
             SELECT CONNECTION_ID()",
            create(&self.shared.table),
            table = self.shared.table,
        );
        let rows = batch::text(&mut conn, sql).await?;
        let id: u64 = rows
            .first()
            .ok_or_else(|| sqlx::Error::Protocol("no connection id".to_owned()))?
            .try_get(0)?;
        *lock(&self.shared.listener) = Some(id);
        lock(&self.shared.registered).clear();
        let mut listener = Listener {
            shared: Arc::clone(&self.shared),
            conn: Some(conn),
            id,
        };
        listener.keep(watched).await?;
        Ok(listener)
    }
}

/// The hub's listener: its connection waits for a ring between deliveries. Dropping
/// it closes the connection and forgets its registrations (their rows go when a writer
/// finds the connection gone, or with the listener's own [`Listener::close`]).
pub(crate) struct Listener {
    shared: Arc<Shared>,
    conn: Option<MySqlConnection>,
    id: u64,
}

/// How a wait of the listener ended.
pub(crate) enum Woken {
    /// The store is past the revision the hub delivered, or a writer rang.
    Rung,
    /// The wait ran its course.
    Slept,
}

impl Listener {
    /// Makes the registrations match `watched`: rows for keys no longer watched are
    /// deleted, keys not registered yet are inserted.
    ///
    /// Cancel safety: a call cut off may leave the registrations part-way; the next
    /// call completes them.
    pub(crate) async fn keep(&mut self, watched: HashSet<Watched>) -> sqlx::Result<()> {
        let (gone, new): (Vec<Watched>, Vec<Watched>) = {
            let registered = lock(&self.shared.registered);
            (
                registered.difference(&watched).cloned().collect(),
                watched.difference(&registered).cloned().collect(),
            )
        };
        let mut statements = Vec::new();
        if !gone.is_empty() {
            let rows: Vec<String> = gone
                .iter()
                .map(|(key, prefix)| {
                    format!("({}, {})", batch::bytes(key.as_bytes()), u8::from(*prefix))
                })
                .collect();
            statements.push(format!(
                "DELETE FROM {} WHERE conn = {} AND (k, prefix) IN ({})",
                self.shared.table,
                self.id,
                rows.join(", ")
            ));
        }
        statements.extend(insert(&self.shared.table, self.id, &new));
        if statements.is_empty() {
            return Ok(());
        }
        let conn = self.conn.as_mut().ok_or(sqlx::Error::PoolClosed)?;
        batch::text(conn, statements.join(";\n")).await?;
        let mut registered = lock(&self.shared.registered);
        for watched in &gone {
            registered.remove(watched);
        }
        registered.extend(new);
        Ok(())
    }

    /// Waits until the store is past `seen`, a writer rings, or the wait ([`wait_for`])
    /// runs its course.
    /// An error leaves the listener unusable: drop it and open another.
    ///
    /// Cancel safety: not cancel-safe: a wait cut off leaves its statement running on
    /// the connection; drop the listener then.
    pub(crate) async fn wait(&mut self, meta: &str, seen: Revision) -> sqlx::Result<Woken> {
        let conn = self.conn.as_mut().ok_or(sqlx::Error::PoolClosed)?;
        let wait = self.shared.wait;
        // The revision is read by a statement of its own, so that the sleeping one
        // holds no table: a `DROP` or `ALTER` of the revision table would wait for
        // it, and every writer behind that.
        let sql = format!(
            "SET @distsync_revision = (SELECT revision FROM {meta} WHERE id = 1);\n\
             SELECT CAST(IF(@distsync_revision IS NULL OR @distsync_revision > {seen}, 2, \
                            SLEEP({:.3})) AS SIGNED)",
            wait.as_secs_f64()
        );
        let waited = tokio::time::timeout(wait + WAIT_SLACK, batch::text(conn, sql))
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?;
        match waited {
            // 2: past `seen`; 1: `SLEEP` interrupted (MySQL); 0: slept its course.
            Ok(rows) => Ok(
                match rows
                    .first()
                    .map(|row| row.try_get::<i64, _>(0))
                    .transpose()?
                {
                    Some(0) => Woken::Slept,
                    _ => Woken::Rung,
                },
            ),
            // MariaDB answers an interrupted statement with an error.
            Err(error) if is_interrupted(&error) => Ok(Woken::Rung),
            Err(error) => Err(error),
        }
    }

    /// Deletes the listener's registrations and closes its connection.
    ///
    /// Cancel safety: cut off, the rows stay until a writer finds the connection gone.
    pub(crate) async fn close(mut self) {
        forget(&self.shared, self.id);
        if let Some(mut conn) = self.conn.take() {
            let sql = format!("DELETE FROM {} WHERE conn = {}", self.shared.table, self.id);
            let _ = batch::text(&mut conn, sql).await;
            let _ = conn.close().await;
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        forget(&self.shared, self.id);
    }
}

/// Forgets the listener `id` as the one registrations go under, if it still is.
fn forget(shared: &Shared, id: u64) {
    let mut listener = lock(&shared.listener);
    if *listener == Some(id) {
        *listener = None;
        lock(&shared.registered).clear();
    }
}

/// The ringer: looks up the listeners of the keys written and interrupts them, one
/// look-up for every batch of keys that arrived meanwhile. Ends with its doorbell.
async fn ring(shared: std::sync::Weak<Shared>, mut keys: mpsc::UnboundedReceiver<Vec<String>>) {
    while let Some(first) = keys.recv().await {
        let mut written: HashSet<String> = first.into_iter().collect();
        while written.len() < KEYS_PER_LOOKUP {
            match keys.try_recv() {
                Ok(more) => written.extend(more),
                Err(_) => break,
            }
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if let Err(error) = ring_once(&shared, written).await {
            tracing::debug!(backend = crate::BACKEND, %error, "doorbell: ringing");
        }
    }
}

/// One look-up and its `KILL QUERY`s.
///
/// Boxed as `Send` here, where its lifetimes are known (see [`batch::text`]).
fn ring_once(shared: &Shared, written: HashSet<String>) -> BoxFuture<'_, sqlx::Result<()>> {
    Box::pin(ring_lookup(shared, written))
}

/// [`ring_once`]'s work.
async fn ring_lookup(shared: &Shared, written: HashSet<String>) -> sqlx::Result<()> {
    let own = (*lock(&shared.listener)).unwrap_or(0);
    let keys: Vec<&String> = written
        .iter()
        .filter(|key| !key.is_empty() && key.len() <= MAX_KEY_BYTES)
        .collect();
    if keys.is_empty() {
        return Ok(());
    }
    let exact = batch::bytes_list(keys.iter().map(|key| key.as_bytes()));
    let prefixes: Vec<String> = keys
        .iter()
        .map(|key| format!("LEFT({}, LENGTH(k)) = k", batch::bytes(key.as_bytes())))
        .collect();
    // -1 when the table is empty: nobody waits anywhere (see `ring_others`).
    let sql = format!(
        "SELECT DISTINCT CAST(conn AS SIGNED) FROM {table} WHERE conn <> {own} \
           AND (k IN {exact} OR (prefix = 1 AND ({prefixes}))) \
         UNION ALL SELECT -1 FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM {table})",
        table = shared.table,
        prefixes = prefixes.join(" OR "),
    );
    let mut conn = shared.pool.acquire().await?;
    let found = (batch::text(&mut conn, sql).await?.iter())
        .map(|row| row.try_get::<i64, _>(0))
        .collect::<sqlx::Result<Vec<i64>>>()?;
    if found == [-1] {
        *lock(&shared.quiet_until) = Some(Instant::now() + shared.quiet_for);
        return Ok(());
    }
    for listener in found.into_iter().filter(|id| *id > 0) {
        match batch::text(&mut conn, format!("KILL QUERY {listener}")).await {
            Ok(_) => {}
            Err(error) if is_unknown_thread(&error) => {
                // Its process is gone: so are its waits.
                let forget = format!("DELETE FROM {} WHERE conn = {listener}", shared.table);
                batch::text(&mut conn, forget).await?;
            }
            Err(error) => {
                tracing::debug!(backend = crate::BACKEND, %error, listener, "doorbell: a ring refused");
            }
        }
    }
    Ok(())
}

/// The `CREATE TABLE` of the registrations.
fn create(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (
            conn BIGINT UNSIGNED NOT NULL,
            k VARBINARY({MAX_KEY_BYTES}) NOT NULL,
            prefix TINYINT NOT NULL,
            KEY by_conn (conn) USING HASH
        ) ENGINE=MEMORY"
    )
}

/// The `INSERT` of `watched` under listener `id` (keys too long for the table left
/// out, to the poll); `None` when nothing is left.
fn insert(table: &str, id: u64, watched: &[Watched]) -> Option<String> {
    let rows: Vec<String> = watched
        .iter()
        .filter(|(key, _)| key.len() <= MAX_KEY_BYTES)
        .map(|(key, prefix)| {
            format!(
                "({id}, {}, {})",
                batch::bytes(key.as_bytes()),
                u8::from(*prefix)
            )
        })
        .collect();
    (!rows.is_empty()).then(|| {
        format!(
            "INSERT INTO {table} (conn, k, prefix) VALUES {}",
            rows.join(", ")
        )
    })
}

/// `mutex`'s guard, even if a panic poisoned it (what it guards stays consistent:
/// plain values replaced whole).
fn lock<T>(mutex: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
