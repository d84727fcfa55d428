//! Tests on a real server that need a whole backend and its internals (they are here, at
//! the top of the crate, so that the modules they test import nothing above them).

/// On a real server: a waiting acquisition and the holds' connections.
mod waiter_line {
    use distsync_core::Primitives;
    use std::time::Duration;

    use distsync_conformance::server_url;
    use distsync_core::{Backend, Name, SessionOptions};

    /// With every hold connection busy for longer than the request timeout, `lock()`
    /// keeps waiting (its join was never sent) instead of failing, and is granted once
    /// a connection is free.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_waiting_lock_outlasts_a_wait_for_a_hold_connection() {
        let Some(url) = server_url("DISTSYNC_POSTGRES_URL") else {
            return;
        };
        let separator = if url.contains('?') { '&' } else { '?' };
        // Long enough that the join and grant sent once a connection is free get
        // their reply within it on a loaded runner (the grant commits synchronously).
        let timeout = Duration::from_secs(1);
        let backend = crate::backend(&format!(
            "{url}{separator}hold_connections=1&timeout={}ms",
            timeout.as_millis()
        ))
        .await
        .unwrap();
        let session = backend.session(SessionOptions::default()).await.unwrap();
        let name = Name::new(format!("busy-holds-{}", session.id().0)).unwrap();
        let locker = backend.locker(&session, name).unwrap();
        // Registers the name, so that the wait below is the join's alone.
        locker
            .try_lock()
            .await
            .unwrap()
            .unwrap()
            .unlock()
            .await
            .unwrap();
        let busy = backend.shared.holds.take().await.unwrap();
        let lock = tokio::spawn(async move { locker.lock().await });
        // The absence of a failure can only be seen over time: three request timeouts.
        tokio::time::sleep(timeout * 3).await;
        assert!(
            !lock.is_finished(),
            "lock() ended while it could not get a hold connection: {:?}",
            lock.await
        );
        drop(busy);
        let guard = tokio::time::timeout(Duration::from_secs(10), lock)
            .await
            .expect("lock() granted once a hold connection is free")
            .unwrap()
            .unwrap();
        guard.unlock().await.unwrap();
        session.close().await.unwrap();
    }
}

/// On real servers: the commit mode of each statement of the line, and a crash of the
/// server right after an asynchronous release.
mod unflushed {
    use distsync_core::Primitives;
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
    /// default, and what a backend that cannot read the epoch asks) synchronously.
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
                "SELECT o_state FROM {{s}}.semaphore_join({k}, {session}, {entry}, 1, true, \
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
            "SELECT o_state FROM {{s}}.semaphore_check({k}, {w}, 2, 1000, true)"
        ));
        assert_eq!(
            commit_mode(&mut conn, &check).await,
            ("0".into(), "off".into()),
            "a check, still waiting"
        );
        let leave = |session: i64, entry: i64, sync: bool| {
            shared.sql(&format!(
                "SELECT {{s}}.semaphore_leave({k}, {session}, {entry}, false, {sync})"
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
        holder.close().await.unwrap();
        waiter.close().await.unwrap();
    }

    /// Under unflushed grants (a connection with `distsync.unflushed_grants` set, as the
    /// backend's pools have it) every grant commits without waiting for the flush: a
    /// join's immediate grant, a check's, a release's grant of the next waiter; while
    /// the crash sentinel is missing (as a crash leaves it) the gate grants nothing,
    /// writes it again with the lock-delay in a synchronous commit, and every grant
    /// waits the bound.
    #[tokio::test(flavor = "multi_thread")]
    async fn unflushed_grants_commit_without_a_flush_and_wait_after_a_crash() {
        let Some(url) = server_url("DISTSYNC_POSTGRES_URL") else {
            return;
        };
        let separator = if url.contains('?') { '&' } else { '?' };
        let schema = format!("unflushed_{}", std::process::id());
        let bound = Duration::from_secs(2);
        let backend = crate::backend(&format!(
            "{url}{separator}schema={schema}&grants=unflushed&max_session_ttl={}ms",
            bound.as_millis()
        ))
        .await
        .unwrap();
        let shared = &backend.shared;
        // The backend's own connections carry the mode.
        let mut taken = shared.holds.take().await.unwrap();
        let setting: String =
            sqlx::query_scalar("SELECT current_setting('distsync.unflushed_grants')")
                .fetch_one(taken.conn())
                .await
                .unwrap();
        assert_eq!(setting, bound.as_millis().to_string());
        drop(taken);
        // A schema's first grants do not wait (the marker written at connect aside).
        let held: f64 = sqlx::query_scalar(&shared.sql(
            "SELECT greatest(0, extract(epoch FROM hold_until - clock_timestamp()))::float8 \
               FROM {s}.epoch_marker",
        ))
        .fetch_one(&shared.pool)
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_secs_f64(held)).await;

        let holder = backend
            .session(SessionOptions::with_ttl(bound))
            .await
            .unwrap();
        let waiter = backend
            .session(SessionOptions::with_ttl(bound))
            .await
            .unwrap();
        let (h, w) = (holder.id().0 as i64, waiter.id().0 as i64);
        let mut conn =
            PgConnection::connect_with(&crate::PostgresConfig::parse(&url).unwrap().options)
                .await
                .unwrap();
        sqlx::query(&crate::connection::pool_setup(Some(bound)))
            .execute(&mut conn)
            .await
            .unwrap();
        let k: i32 = sqlx::query_scalar(&shared.sql("SELECT {s}.register_name('lock', 'n')"))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        let join = |session: i64, entry: i64| {
            shared.sql(&format!(
                "SELECT o_state FROM {{s}}.semaphore_join({k}, {session}, {entry}, 1, true, \
                 false, NULL, NULL, 1000, true)"
            ))
        };
        let leave = |session: i64, entry: i64| {
            shared.sql(&format!(
                "SELECT {{s}}.semaphore_leave({k}, {session}, {entry}, false, false)"
            ))
        };
        let check = |session: i64, entry: i64| {
            shared.sql(&format!(
                "SELECT o_state FROM {{s}}.semaphore_check({k}, {session}, {entry}, 1000, true)"
            ))
        };
        assert_eq!(
            commit_mode(&mut conn, &join(h, 1)).await,
            ("1".into(), "off".into()),
            "an immediate grant"
        );
        assert_eq!(
            commit_mode(&mut conn, &join(w, 2)).await,
            ("0".into(), "off".into()),
            "a wait"
        );
        assert_eq!(
            commit_mode(&mut conn, &leave(h, 1)).await,
            ("true".into(), "off".into()),
            "a release that grants the waiter it lets in"
        );
        assert_eq!(
            commit_mode(&mut conn, &check(w, 2)).await.0,
            "1",
            "the waiter, granted by the release (its check only reads its token)"
        );
        assert_eq!(
            commit_mode(&mut conn, &join(h, 3)).await,
            ("0".into(), "off".into()),
            "a wait"
        );
        // The crash, as far as the sentinel goes: PostgreSQL empties unlogged tables in
        // recovery. The next grant finds it, grants nothing, and commits synchronously.
        sqlx::query(&shared.sql("DELETE FROM {s}.grant_sentinel"))
            .execute(&mut conn)
            .await
            .unwrap();
        let crashed = std::time::Instant::now();
        assert_eq!(
            commit_mode(&mut conn, &leave(w, 2)).await,
            ("true".into(), "on".into()),
            "a release that finds the sentinel missing: the lock-delay written durably"
        );
        let sentinel: Option<String> =
            sqlx::query_scalar(&shared.sql("SELECT id FROM {s}.grant_sentinel"))
                .fetch_optional(&mut conn)
                .await
                .unwrap();
        assert!(sentinel.is_some(), "the sentinel is written again");
        // Nothing granted during the lock-delay: the entry waits on, told how long.
        let told: (i32, Option<f64>) = sqlx::query_as(&shared.sql(&format!(
            "SELECT o_state, o_wait FROM {{s}}.semaphore_check({k}, {h}, 3, 1000, true)"
        )))
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(told.0, 6, "held: {told:?}");
        let left = Duration::from_secs_f64(told.1.unwrap());
        assert!(
            left > bound / 2 && left <= bound,
            "told to wait {left:?} of a {bound:?} lock-delay"
        );
        let other = backend
            .session(SessionOptions::with_ttl(bound))
            .await
            .unwrap();
        let o = other.id().0 as i64;
        assert_eq!(
            commit_mode(&mut conn, &join(o, 4)).await.0,
            "6",
            "a join during the lock-delay leaves nothing behind"
        );
        // Through the API: granted once the lock-delay has passed, not before.
        let name = Name::new("n").unwrap();
        sqlx::query(&leave(h, 3)).execute(&mut conn).await.unwrap();
        let guard = within(
            bound * 3,
            "the lock after the lock-delay",
            backend.locker(&other, name).unwrap().lock(),
        )
        .await
        .unwrap();
        assert!(
            crashed.elapsed() >= bound - Duration::from_millis(100),
            "granted {:?} after the crash, within the {bound:?} lock-delay",
            crashed.elapsed()
        );
        assert_eq!(
            commit_mode(&mut conn, &join(h, 5)).await,
            ("0".into(), "off".into()),
            "a wait behind the new holder"
        );
        guard.unlock().await.unwrap();
        for session in [holder, waiter, other] {
            session.close().await.unwrap();
        }
        sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&mut conn)
            .await
            .unwrap();
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
            // A connection the postmaster's reset ends too: the crash is under way
            // once it fails (the kill alone does not say when the reset starts).
            let mut witness = PgConnection::connect_with(&options).await.unwrap();
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
            within(
                Duration::from_secs(30),
                "the reset ending the witness",
                async {
                    while sqlx::query("SELECT 1").execute(&mut witness).await.is_ok() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                },
            )
            .await;
            // Recovery: the server answers again.
            let count = backend.shared.sql(
                "SELECT count(*) FROM {s}.line_entries WHERE session_id = $1 AND NOT cancelled",
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
            // A pooled connection the crash ended unnoticed fails the first statement
            // on it with a transient error (see `connection::liveness`): the lock and
            // the session then end with the session's short TTL instead.
            if let Err(error) = guard.unlock().await {
                assert!(error.is_transient(), "unlocking after a crash: {error}");
            }
            if let Err(error) = next.close().await {
                assert!(error.is_transient(), "closing after a crash: {error}");
            }
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
