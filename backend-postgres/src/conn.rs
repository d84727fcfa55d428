//! Session connections that notice their own death at once.
//!
//! A session's control connection and its hold connections are `Conn`s: a dedicated
//! connection (outside every pool) owned by a task of its own. Statements are sent to
//! the task and run there, one at a time, in order; between statements the task keeps a
//! read pending on the socket (sqlx's cancel-safe `PgListener::try_recv`). A connection
//! closed or reset under it (`pg_terminate_backend`, a proxy or middlebox restart, the
//! server going away) is therefore seen the moment the socket reports it, not at the
//! next ping: the task marks the connection dead and, while the connection carries a
//! hold, declares the session lost (see `Conn::watch_for`).
//!
//! Settings are applied after connecting with `set_config` (one round trip), never as
//! startup parameters, which PgBouncer rejects: `idle_session_timeout = 0` and
//! `idle_in_transaction_session_timeout = 0` (a hold connection idles for as long as the
//! lock is held), `lock_timeout = 0` and `statement_timeout = 0` (a waiter blocks until
//! granted), `client_connection_check_interval = 1000` (a waiter whose process died
//! leaves the lock queue within a second), and `synchronous_commit = on` (a fencing
//! counter or session id is acknowledged only once it survives a crash of the server).
//!
//! When the owner drops a `Conn` without having released what it holds, the task
//! releases it (deletes the connection's grant rows and unlocks every advisory lock)
//! before closing the connection: a connection never outlives its owner with a lock.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use futures::future::BoxFuture;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::session::LeaseInner;

/// The settings every dedicated connection applies right after connecting, in one
/// statement that also returns the backend's pid.
const SETUP: &str = "SELECT pg_backend_pid(), concat(\
     set_config('idle_session_timeout', '0', false), \
     set_config('idle_in_transaction_session_timeout', '0', false), \
     set_config('lock_timeout', '0', false), \
     set_config('statement_timeout', '0', false), \
     set_config('client_connection_check_interval', '1000', false), \
     set_config('synchronous_commit', 'on', false))";

/// The settings of pooled connections (queues, STM, name lookups, the reaper): commits
/// acknowledged only once durable.
pub(crate) const POOL_SETUP: &str = "SELECT set_config('synchronous_commit', 'on', false)";

/// A statement to run on the connection, with its reply channel captured.
type Job = Box<dyn for<'c> FnOnce(&'c mut PgListener) -> BoxFuture<'c, ()> + Send>;

/// A dedicated connection owned by a watching task (see the module docs).
pub(crate) struct Conn {
    jobs: mpsc::UnboundedSender<Job>,
    pid: i32,
    dead: CancellationToken,
    holder: Arc<Mutex<Option<Weak<LeaseInner>>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The error of a statement sent to a connection that has died.
fn closed() -> sqlx::Error {
    sqlx::Error::Io(io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the session connection has closed",
    ))
}

impl Conn {
    /// Connects with `options`, applies the settings, and starts the watching task.
    /// `cleanup` is the statement that releases whatever the connection may still hold
    /// when its owner drops it.
    pub(crate) async fn open(
        options: &PgConnectOptions,
        cleanup: String,
    ) -> Result<Self, sqlx::Error> {
        // sqlx's listener reads a connection of a pool; this pool of one is private to
        // this connection, and never hands it to anyone else.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .idle_timeout(None)
            .max_lifetime(None)
            .test_before_acquire(false)
            .connect_lazy_with(options.clone());
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.ignore_pool_close_event(true);
        listener.eager_reconnect(false);
        let (pid, _): (i32, String) = sqlx::query_as(SETUP).fetch_one(&mut listener).await?;
        let (jobs, receiver) = mpsc::unbounded_channel();
        let dead = CancellationToken::new();
        let holder = Arc::new(Mutex::new(None));
        tokio::spawn(watch(
            listener,
            receiver,
            dead.clone(),
            Arc::clone(&holder),
            cleanup,
            pid,
        ));
        Ok(Self {
            jobs,
            pid,
            dead,
            holder,
        })
    }

    /// The backend's process id.
    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    /// Whether the connection is known to have died.
    pub(crate) fn is_dead(&self) -> bool {
        self.dead.is_cancelled()
    }

    /// Sets (or clears) the session to declare lost if the connection dies: set while
    /// the connection carries a hold or is the session's control connection.
    pub(crate) fn watch_for(&self, lease: Option<Weak<LeaseInner>>) {
        *lock(&self.holder) = lease;
    }

    /// Runs `f` on the connection, after the statements sent before it.
    ///
    /// Cancel-safety: the statement runs to completion in the connection's task even
    /// if this future is dropped; only its result is lost.
    ///
    /// # Errors
    /// The statement's error, or an I/O error if the connection has died.
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T, sqlx::Error>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut PgListener) -> BoxFuture<'c, Result<T, sqlx::Error>>
            + Send
            + 'static,
    {
        if self.is_dead() {
            return Err(closed());
        }
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn: &mut PgListener| {
            Box::pin(async move {
                let result = f(conn).await;
                let _ = reply.send(result);
            })
        });
        self.jobs.send(job).map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

/// The connection's task: runs the jobs, and between them waits on the socket.
async fn watch(
    mut listener: PgListener,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    dead: CancellationToken,
    holder: Arc<Mutex<Option<Weak<LeaseInner>>>>,
    cleanup: String,
    pid: i32,
) {
    loop {
        tokio::select! {
            biased;
            job = jobs.recv() => match job {
                Some(job) => job(&mut listener).await,
                None => break,
            },
            message = listener.try_recv() => match message {
                // Nothing is listened to; a stray notification is ignored.
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    died(&dead, &holder, pid);
                    return;
                }
            },
        }
        if dead.is_cancelled() {
            return;
        }
    }
    // The owner is gone: release whatever the connection still holds, then close it
    // (dropping the listener and its private pool closes the socket).
    if let Err(error) = sqlx::query(&cleanup).execute(&mut listener).await {
        tracing::debug!(pid, %error, "releasing a dropped session connection failed; closing it");
    }
}

fn died(dead: &CancellationToken, holder: &Mutex<Option<Weak<LeaseInner>>>, pid: i32) {
    dead.cancel();
    let lease = lock(holder).take().and_then(|lease| lease.upgrade());
    match lease {
        Some(lease) => {
            tracing::warn!(
                session = lease.id,
                pid,
                "a connection of the session closed"
            );
            lease.fail();
        }
        None => tracing::debug!(pid, "an idle session connection closed"),
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    /// A dedicated connection applies its settings after connecting (none are sent as
    /// startup parameters), and a statement runs on it.
    #[tokio::test]
    async fn settings_are_applied_after_connecting() {
        let Some(url) = distsync_conformance::server_url("DISTSYNC_POSTGRES_URL") else {
            return;
        };
        let options = PgConnectOptions::from_str(&url).unwrap();
        let conn = Conn::open(&options, "SELECT 1".into()).await.unwrap();
        let settings = conn
            .run(|c: &mut PgListener| {
                Box::pin(async move {
                    sqlx::query_as::<_, (String, String, String, String, i32)>(
                        "SELECT current_setting('idle_session_timeout'), \
                                current_setting('lock_timeout'), \
                                current_setting('client_connection_check_interval'), \
                                current_setting('synchronous_commit'), \
                                pg_backend_pid()",
                    )
                    .fetch_one(&mut *c)
                    .await
                })
            })
            .await
            .unwrap();
        assert_eq!(
            settings,
            (
                "0".to_owned(),
                "0".to_owned(),
                "1s".to_owned(),
                "on".to_owned(),
                conn.pid()
            )
        );
    }
}
