//! Key bells: how a process that waits for one key's deletion learns of it the moment
//! the process that deleted it commits, rather than at its watch hub's next poll.
//!
//! MySQL has no notification a writer can send to another client, but a client blocked
//! in `GET_LOCK(name)` wakes the moment the lock's holder releases it. So a key's bell
//! is a named lock ([`NAME`]) that the process creating the key on a lease holds, on a
//! connection of its own, until right after the commit that deletes it; a watch of the
//! key waits on it, on a connection of a small pool of its own, and rings its hub (see
//! the crate docs, "Watches").
//!
//! A bell is a hint, never a grant: what a waiter acts on is what the hub reads from
//! the log. Every way a bell can be wrong costs speed only:
//!
//! - a key deleted by another process (its lease expired, a break) leaves its bell
//!   held until its creator deletes the key again or ends: the waiter learns of the
//!   deletion by the poll;
//! - a creator that dies closes its connection, and the server releases its bells:
//!   the waiter's hub reads the log, finds the key still there (its lease has not
//!   expired) and waits on;
//! - a bell nobody holds (the creator could not take it: its connection was down, or
//!   a woken waiter held it for a moment) is seen free (`IS_USED_LOCK` is null) and
//!   not waited on: the poll wakes that waiter;
//! - more waited keys at once than the process's wait connections (`key_bells` in
//!   the URL, 4 by default): the others wait by the poll.
//!
//! Writes inside the caller's own transaction (`callers`) take no bell: they commit
//! when the caller does, unseen here.
//!
//! What it costs: one statement on the holder's connection per created leased key and
//! per deleted key, off the caller's path (a task sends them after the commit), and a
//! connection per waited key while it waits.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use distsync_kv::kv::{EventKind, WatchEvent};
use sqlx::mysql::MySqlConnectOptions;
use sqlx::{ConnectOptions as _, MySqlConnection, MySqlPool};
use tokio::sync::{mpsc, Semaphore};

use crate::BACKEND;

/// How long one `GET_LOCK` of a waiter waits before it looks again whether its watch
/// is still open.
const WAIT_SECONDS: u32 = 1;

/// A bell's name from the bound bytes (the table prefix, then the key): MySQL takes
/// names of at most 64 characters, server-wide, so it is a hash that the database's
/// name keeps apart from other databases' bells.
const NAME: &str = "CONCAT('distsync-bell:', LEFT(SHA2(CONCAT(DATABASE(), ?), 256), 32))";

/// The options of the bells' connections: the server's, without sqlx's statement
/// logging. A waiter's `GET_LOCK` blocks for up to [`WAIT_SECONDS`] by design, which
/// sqlx would report as a slow statement at WARN, once a second a waiting key; and a
/// hint's statements say nothing an operator needs.
pub(crate) fn connect_options(server: &MySqlConnectOptions) -> MySqlConnectOptions {
    server.clone().disable_statement_logging()
}

/// What the holder's task does, in the order the commits that asked for it finished.
#[derive(Debug)]
enum Change {
    /// A key created on a lease: take its bell.
    Created(Vec<u8>),
    /// A key deleted: release its bell if held.
    Deleted(Vec<u8>),
}

/// The bells of one backend: the holder's task for the keys this process creates, and
/// the pool its waits use; none when the process takes no part ([`KeyBells::off`]).
#[derive(Debug)]
pub(crate) struct KeyBells {
    prefix: String,
    ringing: Option<Ringing>,
}

/// What a process that takes part in bells runs them with.
#[derive(Debug)]
struct Ringing {
    changes: mpsc::UnboundedSender<Change>,
    waits: MySqlPool,
    /// One per connection of `waits`: a key is waited on only with one free, so no wait
    /// queues for a connection behind the others.
    slots: Arc<Semaphore>,
}

impl KeyBells {
    /// Bells for the tables under `prefix`, held on a connection that `options` opens
    /// (once a key is created), waited on through `waits`, as many keys at once as the
    /// pool has connections. The holder's task ends with the bells, and its connection
    /// closes then, releasing every bell it held.
    pub(crate) fn new(prefix: &str, options: MySqlConnectOptions, waits: MySqlPool) -> Self {
        let (changes, receiver) = mpsc::unbounded_channel();
        tokio::spawn(hold(prefix.to_owned(), options, receiver));
        let slots = Arc::new(Semaphore::new(
            waits.options().get_max_connections() as usize
        ));
        Self {
            prefix: prefix.to_owned(),
            ringing: Some(Ringing {
                changes,
                waits,
                slots,
            }),
        }
    }

    /// Bells turned off (`key_bells=0`): no bell is held (other processes' waiters
    /// for this process's keys find them free) or waited on, and no connection opened
    /// for them.
    pub(crate) fn off(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            ringing: None,
        }
    }

    /// Takes the bells of the keys `events` created on a lease, and releases those of
    /// the keys they deleted; called after the commit that made them.
    pub(crate) fn committed(&self, events: &[WatchEvent]) {
        let Some(Ringing { changes, .. }) = &self.ringing else {
            return;
        };
        for event in events {
            let key = self.bound(&event.kv.key);
            let change = match event.kind {
                EventKind::Put if event.kv.lease != 0 && event.kv.version == 1 => {
                    Change::Created(key)
                }
                EventKind::Delete => Change::Deleted(key),
                EventKind::Put => continue,
            };
            // The task ends only with the bells.
            let _ = changes.send(change);
        }
    }

    /// Waits on the bell of `key` in a task of its own, unless every wait connection is
    /// taken, and calls `ring` once it is released, or at once when nobody holds it.
    /// The task looks every second whether `open` still holds and stops when it does
    /// not; a bell rings once.
    pub(crate) fn listen(
        &self,
        key: &str,
        open: impl Fn() -> bool + Send + 'static,
        ring: impl FnOnce() + Send + 'static,
    ) {
        let Some(Ringing { waits, slots, .. }) = &self.ringing else {
            return;
        };
        let Ok(slot) = Arc::clone(slots).try_acquire_owned() else {
            return;
        };
        let key = self.bound(key);
        let pool = waits.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match wait(&pool, &key, open).await {
                Ok(true) => ring(),
                Ok(false) => {}
                Err(error) => tracing::debug!(
                    backend = BACKEND,
                    %error,
                    "a key's bell could not be waited on; the poll wakes its watch"
                ),
            }
        });
    }

    /// The bytes a bell's name is made of.
    fn bound(&self, key: &str) -> Vec<u8> {
        [self.prefix.as_bytes(), &[0], key.as_bytes()].concat()
    }
}

/// Waits until the bell of `key` is released or found free (`true`: the hub should
/// read the log, since a release may have come before this wait began and after the
/// watch's own read), or `open` stops holding (`false`). Every statement runs to its
/// end (the task is never aborted), so no connection goes back to the pool holding a
/// bell.
async fn wait(pool: &MySqlPool, key: &[u8], open: impl Fn() -> bool) -> sqlx::Result<bool> {
    let mut conn = pool.acquire().await?;
    let statement =
        format!("SELECT IF(IS_USED_LOCK({NAME}) IS NULL, NULL, GET_LOCK({NAME}, {WAIT_SECONDS}))");
    while open() {
        let got: Option<i64> = sqlx::query_scalar(&statement)
            .bind(key)
            .bind(key)
            .fetch_one(&mut *conn)
            .await?;
        match got {
            None => return Ok(true),
            Some(1) => {
                release(&mut conn, key).await?;
                return Ok(true);
            }
            Some(_) => {}
        }
    }
    Ok(false)
}

/// The holder's task: applies `changes` in order on one connection, opened when a
/// bell is to be taken. A failed statement drops the connection (the server releases
/// its bells) and forgets what it held; the waiters of those keys wait by the poll.
async fn hold(
    prefix: String,
    options: MySqlConnectOptions,
    mut changes: mpsc::UnboundedReceiver<Change>,
) {
    let mut conn: Option<MySqlConnection> = None;
    let mut held: HashSet<Vec<u8>> = HashSet::new();
    while let Some(change) = changes.recv().await {
        let outcome = match change {
            Change::Created(key) if !held.contains(&key) => {
                take(&mut conn, &options, &key).await.map(|taken| {
                    if taken {
                        held.insert(key);
                    }
                })
            }
            Change::Deleted(key) if held.remove(&key) => match conn.as_mut() {
                Some(open) => release(open, &key).await,
                None => Ok(()),
            },
            Change::Created(_) | Change::Deleted(_) => Ok(()),
        };
        if let Err(error) = outcome {
            tracing::debug!(
                backend = BACKEND,
                prefix,
                %error,
                "key bells: the holder's connection failed; its waiters wait by the poll"
            );
            conn = None;
            held.clear();
        }
    }
}

/// Releases the bell of `key`, held on `conn`.
async fn release(conn: &mut MySqlConnection, key: &[u8]) -> sqlx::Result<()> {
    sqlx::query(&format!("DO RELEASE_LOCK({NAME})"))
        .bind(key)
        .execute(conn)
        .await
        .map(drop)
}

/// Takes the bell of `key` without waiting (a waiter may hold it for a moment), on
/// `conn`, opened first if it is not.
async fn take(
    conn: &mut Option<MySqlConnection>,
    options: &MySqlConnectOptions,
    key: &[u8],
) -> sqlx::Result<bool> {
    if conn.is_none() {
        let opened = tokio::time::timeout(Duration::from_secs(5), options.clone().connect()).await;
        let timed_out = |_| {
            sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connecting for key bells",
            ))
        };
        *conn = Some(opened.map_err(timed_out)??);
    }
    let Some(open) = conn.as_mut() else {
        return Ok(false);
    };
    let got: Option<i64> = sqlx::query_scalar(&format!("SELECT GET_LOCK({NAME}, 0)"))
        .bind(key)
        .fetch_one(open)
        .await?;
    Ok(got == Some(1))
}
