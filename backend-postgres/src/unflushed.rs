//! Releases committed asynchronously, kept until a later synchronous commit of this
//! process shows they are durable, and made again when the server may have lost them.
//!
//! A release (`semaphore_leave2`: an unlock, a resign, a withdrawn wait and its
//! tombstone) commits with `synchronous_commit = off` (see [`crate::hold`],
//! "Asynchronous commits"): it returns without waiting for the WAL flush, and a crash
//! of the server before the flush loses it, bringing the entry back. Such an entry
//! would count as a holder (or a waiter) for as long as its session lives, and a
//! healthy session lives on: the name would be blocked until the session ends. So
//! every asynchronous release is recorded here until it is known durable, and made
//! again (the release is idempotent: an entry already gone is left alone) when the
//! server may have lost it.
//!
//! # Knowing a release durable, or maybe lost
//! The heartbeat ([`crate::heartbeat`]) renews with a synchronous commit and reads, in
//! the same statement, the server's **epoch** (`server_epoch()`: the location and
//! timeline of its last checkpoint, from `pg_control_checkpoint()`). Crash recovery
//! always ends with a checkpoint (and a promotion changes the timeline), so the epoch
//! changes whenever unflushed WAL may have been lost; it also changes at every
//! ordinary checkpoint, which only costs releases made again for nothing.
//!
//! Each release is recorded with the epoch this process knew *before sending it*. A
//! renewal sent after the release returned, which commits synchronously and reads the
//! same epoch, proves the release durable: no crash came between the earlier reading
//! of that epoch and this one (the epoch would have moved), and the renewal's flush
//! covers every commit record written before its own, the release's included. Any
//! other outcome (another epoch, none known yet) makes the release again, once, in one
//! statement, which is then recorded in its turn.
//!
//! Where the epoch cannot be read (a role without access to `pg_control_checkpoint()`,
//! which PostgreSQL grants to every role by default), releases commit synchronously,
//! as before version 17.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

/// The epoch function (`{s}`: the quoted schema), created by [`crate::schema`].
pub(crate) const DDL: &str = r#"
-- The server's epoch: its last checkpoint's location and timeline (see
-- crate::unflushed). It moves at every checkpoint, so after every crash recovery and
-- promotion. NULL when the role may not read it.
CREATE OR REPLACE FUNCTION {s}.server_epoch() RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RETURN (SELECT c.checkpoint_lsn::text || '/' || c.timeline_id::text
              FROM pg_control_checkpoint() AS c);
EXCEPTION WHEN insufficient_privilege OR undefined_function THEN
    RETURN NULL;
END
$$;
"#;

/// The most releases kept: past it the oldest is dropped (with a warning); at the
/// heartbeat's pace (every session renews every TTL/3) this holds several seconds of
/// releases at tens of thousands a second.
const MAX_PENDING: usize = 1 << 20;

/// One release to make again: `semaphore_leave2(name_id, session, entry, tombstone)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Release {
    pub(crate) name_id: i32,
    pub(crate) session: i64,
    pub(crate) entry: i64,
    pub(crate) tombstone: bool,
}

struct Pending {
    seq: u64,
    /// The epoch known when the release was sent (`None`: none yet).
    epoch: Option<u64>,
    release: Release,
}

#[derive(Default)]
struct State {
    /// The last epoch read, and its number (epochs are numbered in the order read; a
    /// reading equal to the last keeps its number).
    epoch: Option<(String, u64)>,
    epochs: u64,
    next_seq: u64,
    pending: VecDeque<Pending>,
}

/// The asynchronous releases of one backend not yet known durable (see the module
/// docs).
#[derive(Default)]
pub(crate) struct Unflushed {
    state: Mutex<State>,
    /// Whether releases commit asynchronously (the epoch can be read).
    enabled: AtomicBool,
}

impl Unflushed {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether releases may commit asynchronously.
    pub(crate) fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// The number of the epoch known now, to pass to [`Unflushed::record`] once the
    /// release sent after this call has returned.
    pub(crate) fn epoch(&self) -> Option<u64> {
        self.state().epoch.as_ref().map(|(_, number)| *number)
    }

    /// Records an asynchronous release that returned, sent when `epoch` was known.
    pub(crate) fn record(&self, epoch: Option<u64>, release: Release) {
        let mut state = self.state();
        let seq = state.next_seq;
        state.next_seq += 1;
        if state.pending.len() >= MAX_PENDING {
            state.pending.pop_front();
            tracing::warn!(
                "too many asynchronous releases awaiting a flush; the oldest is no longer tracked"
            );
        }
        state.pending.push_back(Pending {
            seq,
            epoch,
            release,
        });
    }

    /// The mark of a renewal about to be sent: the releases recorded before it.
    pub(crate) fn mark(&self) -> u64 {
        self.state().next_seq
    }

    /// A renewal sent at `mark` committed and read `epoch`: forgets the releases before
    /// the mark that it proves durable, and returns those to make again (forgotten too:
    /// recorded anew once made again), with the epoch number to send them under.
    /// Enables asynchronous releases when an epoch was read, disables them otherwise.
    pub(crate) fn settle(&self, mark: u64, epoch: Option<String>) -> (Vec<Release>, Option<u64>) {
        self.enabled.store(epoch.is_some(), Ordering::Relaxed);
        let mut state = self.state();
        let number = match (epoch, state.epoch.take()) {
            (Some(now), Some((last, number))) if now == last => Some((now, number)),
            (Some(now), _) => {
                state.epochs += 1;
                Some((now, state.epochs))
            }
            (None, _) => None,
        };
        let current = number.as_ref().map(|(_, number)| *number);
        state.epoch = number;
        let mut again = Vec::new();
        while state.pending.front().is_some_and(|p| p.seq < mark) {
            let Some(pending) = state.pending.pop_front() else {
                break;
            };
            if current.is_none() || pending.epoch != current {
                again.push(pending.release);
            }
        }
        (again, current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(entry: i64) -> Release {
        Release {
            name_id: 1,
            session: 7,
            entry,
            tombstone: false,
        }
    }

    #[test]
    fn a_renewal_at_the_same_epoch_proves_earlier_releases_durable() {
        let unflushed = Unflushed::default();
        let (again, epoch) = unflushed.settle(unflushed.mark(), Some("0/10/1".into()));
        assert!(again.is_empty());
        assert!(unflushed.enabled());
        unflushed.record(epoch, release(1));
        let mark = unflushed.mark();
        unflushed.record(epoch, release(2)); // after the renewal was sent
        let (again, _) = unflushed.settle(mark, Some("0/10/1".into()));
        assert!(again.is_empty(), "entry 1 is durable: {again:?}");
        // Entry 2 was recorded after the mark: still pending, and made again once the
        // epoch moves.
        let (again, _) = unflushed.settle(unflushed.mark(), Some("0/20/1".into()));
        assert_eq!(again, vec![release(2)]);
        let (again, _) = unflushed.settle(unflushed.mark(), Some("0/20/1".into()));
        assert!(again.is_empty(), "made again once only");
    }

    #[test]
    fn a_release_sent_before_an_epoch_moved_is_made_again() {
        let unflushed = Unflushed::default();
        // Nothing known yet: made again at the first renewal.
        unflushed.record(unflushed.epoch(), release(1));
        let (again, epoch) = unflushed.settle(unflushed.mark(), Some("0/10/1".into()));
        assert_eq!(again, vec![release(1)]);
        // Sent under epoch "0/10/1"; the server crashed and a renewal in flight read
        // the new epoch before the release was recorded: the next renewal, at that new
        // epoch, must not take it as durable.
        let sent_under = unflushed.epoch();
        assert_eq!(sent_under, epoch);
        let (again, _) = unflushed.settle(unflushed.mark(), Some("0/30/1".into()));
        assert!(again.is_empty());
        unflushed.record(sent_under, release(2));
        let (again, _) = unflushed.settle(unflushed.mark(), Some("0/30/1".into()));
        assert_eq!(again, vec![release(2)]);
    }

    #[test]
    fn without_an_epoch_releases_are_synchronous() {
        let unflushed = Unflushed::default();
        assert!(!unflushed.enabled(), "synchronous until an epoch is read");
        unflushed.settle(unflushed.mark(), Some("0/10/1".into()));
        assert!(unflushed.enabled());
        let (again, _) = unflushed.settle(unflushed.mark(), None);
        assert!(again.is_empty());
        assert!(!unflushed.enabled());
    }
}

/// On real servers: the commit mode of each statement of the line, and a crash of the
/// server right after an asynchronous release.
#[cfg(test)]
mod server_tests {
    use std::time::Duration;

    use distsync_conformance::faults::private;
    use distsync_conformance::{connector, server_url, StoreKind};
    use distsync_core::{Backend, Name, SessionOptions};
    use sqlx::{Connection, PgConnection};

    async fn within<T>(
        limit: Duration,
        what: &str,
        future: impl std::future::Future<Output = T>,
    ) -> T {
        tokio::time::timeout(limit, future)
            .await
            .unwrap_or_else(|_| panic!("{what}: not within {limit:?}"))
    }

    /// Runs `call` (a statement of the schema) in a transaction and returns its first
    /// column with the transaction's `synchronous_commit` as the statement left it.
    async fn commit_mode(conn: &mut PgConnection, call: &str) -> (String, String) {
        let mut tx = conn.begin().await.unwrap();
        let result: String = sqlx::query_scalar(&format!("SELECT ({call})::text"))
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        let mode: String = sqlx::query_scalar("SELECT current_setting('synchronous_commit')")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        (result, mode)
    }

    /// A grant commits synchronously, a release that grants the next waiter too (the
    /// waiter's check then only reads its token); a join or check that only waits, and
    /// a release that lets nobody in, asynchronously; a release asked synchronous (the
    /// default of older clients and of a backend that cannot read the epoch)
    /// synchronously.
    #[tokio::test(flavor = "multi_thread")]
    async fn grants_commit_synchronously_and_releases_asynchronously() {
        let Some(url) = server_url("DISTSYNC_POSTGRES_URL") else {
            return;
        };
        let backend = crate::backend(&url).await.unwrap();
        let shared = &backend.shared;
        assert!(
            shared.unflushed.enabled(),
            "the test server's epoch is readable: releases are asynchronous"
        );
        let holder = backend.session(SessionOptions::default()).await.unwrap();
        let waiter = backend.session(SessionOptions::default()).await.unwrap();
        let (h, w) = (holder.id().0 as i64, waiter.id().0 as i64);
        let mut conn =
            PgConnection::connect_with(&crate::PostgresConfig::parse(&url).unwrap().options)
                .await
                .unwrap();
        sqlx::query("SELECT set_config('synchronous_commit', 'on', false)")
            .execute(&mut conn)
            .await
            .unwrap();
        let name = format!("commit-modes-{h}");
        let k: i32 = sqlx::query_scalar(&shared.sql("SELECT {s}.register_name('lock', $1)"))
            .bind(&name)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        let join = |session: i64, entry: i64| {
            shared.sql(&format!(
                "SELECT o_state FROM {{s}}.semaphore_join2({k}, {session}, {entry}, 1, true, \
                 false, NULL, NULL, 1000, true)"
            ))
        };
        assert_eq!(
            commit_mode(&mut conn, &join(h, 1)).await,
            ("1".into(), "on".into()),
            "a grant"
        );
        assert_eq!(
            commit_mode(&mut conn, &join(w, 2)).await,
            ("0".into(), "off".into()),
            "a wait"
        );
        let check = shared.sql(&format!(
            "SELECT o_state FROM {{s}}.semaphore_check2({k}, {w}, 2, 1000, true)"
        ));
        assert_eq!(
            commit_mode(&mut conn, &check).await,
            ("0".into(), "off".into()),
            "a check, still waiting"
        );
        let leave = |session: i64, entry: i64, sync: bool| {
            shared.sql(&format!(
                "SELECT {{s}}.semaphore_leave2({k}, {session}, {entry}, false, {sync})"
            ))
        };
        assert_eq!(
            commit_mode(&mut conn, &leave(h, 1, false)).await,
            ("true".into(), "on".into()),
            "a release that grants the waiter it lets in"
        );
        assert_eq!(
            commit_mode(&mut conn, &check).await,
            ("1".into(), "on".into()),
            "a check that grants"
        );
        assert_eq!(
            commit_mode(&mut conn, &leave(w, 2, true)).await,
            ("true".into(), "on".into()),
            "a release asked synchronous"
        );
        assert_eq!(
            commit_mode(&mut conn, &join(h, 4)).await,
            ("1".into(), "on".into()),
            "a grant"
        );
        assert_eq!(
            commit_mode(&mut conn, &leave(h, 4, false)).await,
            ("true".into(), "off".into()),
            "a release with nobody waiting"
        );
        let old_client = shared.sql(&format!("SELECT {{s}}.semaphore_leave({k}, {w}, 3, false)"));
        assert_eq!(
            commit_mode(&mut conn, &old_client).await,
            ("false".into(), "on".into()),
            "a release with the arguments of version 16"
        );
        holder.close().await.unwrap();
        waiter.close().await.unwrap();
    }

    /// A backend process of the server killed right after an asynchronous release (the
    /// postmaster then resets and runs crash recovery, losing the WAL not yet written):
    /// whether or not the release survived, the next locker is granted within a few
    /// heartbeats, not when the releasing session ends, and its token is higher.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_release_lost_in_a_crash_is_made_again() {
        if server_url("DISTSYNC_POSTGRES_URL").is_none() {
            return;
        }
        if let Err(reason) = private::available(StoreKind::Postgres) {
            panic!("the PostgreSQL test server is set but no private one can be started: {reason}");
        }
        let connect = connector(|url| async move { crate::backend(&url).await });
        let server = private::start(StoreKind::Postgres, connect).await.unwrap();
        let url = server.url().to_owned();
        let backend = crate::backend(&url).await.unwrap();
        let name = Name::new("crashed").unwrap();
        // The releasing session outlives the test; the next locker's renews every
        // 500 ms, so heartbeats (which read the epoch) run often.
        let releaser = backend
            .session(SessionOptions::with_ttl(Duration::from_secs(120)))
            .await
            .unwrap();
        let options = crate::PostgresConfig::parse(&url).unwrap().options;
        let mut lost = 0;
        let mut last = 0;
        for _ in 0..3 {
            // The process to kill, ready before the release.
            let mut victim = PgConnection::connect_with(&options).await.unwrap();
            let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                .fetch_one(&mut victim)
                .await
                .unwrap();
            let guard = backend
                .locker(&releaser, name.clone())
                .unwrap()
                .lock()
                .await
                .unwrap();
            let token = guard.token().0;
            assert!(token > last, "tokens went backwards: {token} after {last}");
            guard.unlock().await.unwrap();
            kill(pid);
            drop(victim);
            // Recovery: the server answers again (a connection made before the
            // postmaster reset its processes is reset too: tried again).
            let count = backend.shared.sql(
                "SELECT count(*) FROM {s}.semaphore_entries WHERE session_id = $1 AND NOT cancelled",
            );
            let back: i64 = within(Duration::from_secs(60), "the server back", async {
                loop {
                    if let Ok(mut conn) = PgConnection::connect_with(&options).await {
                        if let Ok(back) = sqlx::query_scalar(&count)
                            .bind(releaser.id().0 as i64)
                            .fetch_one(&mut conn)
                            .await
                        {
                            break back;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
            .await;
            lost += back;
            // The pools' connections died with the server's processes: the first
            // statements on them fail (a connection error), and are retried.
            let (next, guard) = within(
                Duration::from_secs(20),
                "the lock after a crash that may have lost its release",
                async {
                    loop {
                        let next = match backend
                            .session(SessionOptions::with_ttl(Duration::from_millis(1500)))
                            .await
                        {
                            Ok(next) => next,
                            Err(error) if error.is_transient() => continue,
                            Err(error) => panic!("opening a session: {error}"),
                        };
                        match backend.locker(&next, name.clone()).unwrap().lock().await {
                            Ok(guard) => break (next, guard),
                            Err(error) if error.is_transient() => continue,
                            Err(error) => panic!("locking: {error}"),
                        }
                    }
                },
            )
            .await;
            assert!(
                guard.token().0 > token,
                "fencing token went backwards across a crash: {} after {token}",
                guard.token().0
            );
            last = guard.token().0;
            guard.unlock().await.unwrap();
            next.close().await.unwrap();
        }
        eprintln!("releases brought back by the crashes (then made again): {lost} of 3");
        releaser.close().await.unwrap();
        drop(server);
    }

    /// SIGKILL to a server process (the postmaster's crash handling then resets every
    /// process, as after an out-of-memory kill).
    fn kill(pid: i32) {
        let status = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -9 {pid} failed: {status}");
    }
}
