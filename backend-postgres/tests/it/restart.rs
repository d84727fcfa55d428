//! Behaviour across a server restart, and what needs a superuser, on a private
//! PostgreSQL cluster (the conformance suite's, `distsync_conformance::faults::private`).
//! The suite's restart cases check
//! that durable state survives and that sessions end; this checks what is particular to
//! this backend: waits on durable state (a blocked `dequeue`, a barrier `wait`) ride
//! out the restart and resume, sessions and their holds (rows) survive a restart shorter
//! than their TTL, and the fencing counter survives it.
//!
//! Runs when `DISTSYNC_POSTGRES_URL` is set (the test servers are installed); skipped
//! loudly otherwise, a failure under `CI=true`.

use distsync_core::Primitives;
use std::time::Duration;

use distsync_conformance::faults::private;
use distsync_conformance::{connector, server_url, StoreKind};
use distsync_core::{Backend, Name, SessionOptions};

async fn within<T>(limit: Duration, what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {limit:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_ends_sessions_while_durable_waits_resume() {
    if server_url("DISTSYNC_POSTGRES_URL").is_none() {
        return;
    }
    if let Err(reason) = private::available(StoreKind::Postgres) {
        panic!("the PostgreSQL test server is set but no private one can be started: {reason}");
    }
    let connect = connector(|url| async move { distsync_postgres::backend(&url).await });
    let mut server = private::start(StoreKind::Postgres, connect).await.unwrap();
    let backend = distsync_postgres::backend(server.url()).await.unwrap();
    let name = |s: &str| Name::new(s).unwrap();

    // A TTL longer than the restart: the session's row is durable, and so are its
    // holds (rows, not connections).
    let ttl = Duration::from_secs(30);
    let session = backend
        .session(SessionOptions::with_ttl(ttl))
        .await
        .unwrap();
    let guard = backend
        .locker(&session, name("mutex"))
        .unwrap()
        .lock()
        .await
        .unwrap();
    let barrier = backend.barrier(name("gate")).unwrap();
    barrier.hold().await.unwrap();
    let consumer = {
        let queue = backend.queue(name("later")).unwrap();
        tokio::spawn(async move { queue.dequeue().await })
    };
    let passer = {
        let gate = backend.barrier(name("gate")).unwrap();
        tokio::spawn(async move { gate.wait().await })
    };

    server.stop().await.unwrap();
    server.start().await.unwrap();

    // The session survived (its row did; renewals resume on new connections), and so
    // did its hold: nobody else is granted the lock.
    let rival_session = backend.session(SessionOptions::default()).await.unwrap();
    let rival = backend.locker(&rival_session, name("mutex")).unwrap();
    assert!(
        rival.try_lock().await.unwrap().is_none(),
        "the lock was granted to another across the restart"
    );
    within(
        Duration::from_secs(10),
        "a renewal after the restart",
        async {
            let renewed_from = std::time::Instant::now();
            loop {
                if let distsync_core::SessionHealth::Healthy { valid_until } = session.health() {
                    if valid_until > renewed_from + ttl / 2 {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        },
    )
    .await;
    assert!(!guard.is_lost(), "the session was lost across the restart");
    let stale_token = guard.token();
    guard.unlock().await.unwrap();
    rival_session.close().await.unwrap();

    // Waits on durable state rode out the restart.
    backend
        .queue(name("later"))
        .unwrap()
        .enqueue("after")
        .await
        .unwrap();
    let item = within(Duration::from_secs(10), "the blocked dequeue", consumer)
        .await
        .unwrap();
    assert_eq!(item.unwrap(), "after");
    assert!(
        !passer.is_finished(),
        "wait() passed a barrier that is still held"
    );
    barrier.release().await.unwrap();
    within(Duration::from_secs(10), "the barrier wait", passer)
        .await
        .unwrap()
        .unwrap();

    // The lock is free again after the clean unlock, and its fencing counter survived.
    let again = backend.session(SessionOptions::default()).await.unwrap();
    let next = within(
        ttl * 3,
        "the lock of a lost session after its lease",
        backend.locker(&again, name("mutex")).unwrap().lock(),
    )
    .await
    .unwrap();
    assert!(next.token() > stale_token);
    next.unlock().await.unwrap();
    again.close().await.unwrap();
}

/// The command that stops the private server at `url` with `pg_ctl stop -m immediate`
/// (a crash, as far as the data is concerned: no checkpoint, unwritten WAL lost), as the
/// `postgres` user when running as root. The data directory and the binaries are read
/// from the server itself.
async fn immediate_stop_command(url: &str) -> std::process::Command {
    let superuser = url.replacen("postgres://distsync@", "postgres://postgres@", 1);
    let pool = sqlx::PgPool::connect(&superuser).await.unwrap();
    let data: String = sqlx::query_scalar("SHOW data_directory")
        .fetch_one(&pool)
        .await
        .unwrap();
    let bin: String = sqlx::query_scalar("SELECT setting FROM pg_config() WHERE name = 'BINDIR'")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    let pg_ctl = std::path::Path::new(&bin).join("pg_ctl");
    let as_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|out| out.stdout.starts_with(b"0\n"))
        .unwrap_or(false);
    let mut command = if as_root {
        let mut command = std::process::Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(&pg_ctl);
        command
    } else {
        std::process::Command::new(&pg_ctl)
    };
    command
        .arg("-D")
        .arg(&data)
        .args(["-m", "immediate", "-w", "-t", "60", "stop"])
        .stdout(std::process::Stdio::null());
    command
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_and_session_ids_survive_an_immediate_shutdown() {
    if server_url("DISTSYNC_POSTGRES_URL").is_none() {
        return;
    }
    if let Err(reason) = private::available(StoreKind::Postgres) {
        panic!("the PostgreSQL test server is set but no private one can be started: {reason}");
    }
    let connect = connector(|url| async move { distsync_postgres::backend(&url).await });
    // The private server runs with synchronous_commit = off and fsync = off: what the
    // backend commits survives only because it asks for synchronous commits itself.
    let mut server = private::start(StoreKind::Postgres, connect).await.unwrap();
    let backend = distsync_postgres::backend(server.url()).await.unwrap();
    let name = Name::new("fenced").unwrap();
    let ttl = Duration::from_secs(1);
    let mut ids = Vec::new();
    let mut last = None;
    for _ in 0..5 {
        let session = backend
            .session(SessionOptions::with_ttl(ttl))
            .await
            .unwrap();
        ids.push(session.id());
        let guard = backend
            .locker(&session, name.clone())
            .unwrap()
            .lock()
            .await
            .unwrap();
        last = Some(guard.token());
        guard.unlock().await.unwrap();
        session.close().await.unwrap();
    }
    let last = last.unwrap();
    // A holder granted right before the crash: the server's WAL writer flushes
    // asynchronous commits every 200 ms, so only a synchronous commit keeps this grant.
    let mut stop = immediate_stop_command(server.url()).await;
    let holder = backend
        .session(SessionOptions::with_ttl(ttl))
        .await
        .unwrap();
    ids.push(holder.id());
    let locker = backend.locker(&holder, name.clone()).unwrap();
    let held = locker.lock().await.unwrap();
    assert!(held.token() > last);
    let status = tokio::task::spawn_blocking(move || stop.status())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "pg_ctl stop -m immediate failed: {status}"
    );
    within(
        Duration::from_secs(1),
        "lost() after the server went away",
        held.lost(),
    )
    .await;
    server.start().await.unwrap();

    let backend = distsync_postgres::backend(server.url()).await.unwrap();
    let session = backend.session(SessionOptions::default()).await.unwrap();
    assert!(
        !ids.contains(&session.id()),
        "session id {} handed out again after the crash",
        session.id()
    );
    let next = within(
        Duration::from_secs(10),
        "the lock after the restart",
        backend.locker(&session, name).unwrap().lock(),
    )
    .await
    .unwrap();
    assert!(
        next.token() > held.token(),
        "fencing token went backwards across an immediate shutdown: {} after {}",
        next.token(),
        held.token()
    );
    eprintln!(
        "tokens across pg_ctl stop -m immediate: {} before, {} after",
        held.token(),
        next.token()
    );
    next.unlock().await.unwrap();
    session.close().await.unwrap();
}

/// Processes of different roles may share the schema (no role ends another's backends).
#[tokio::test(flavor = "multi_thread")]
async fn a_role_that_cannot_end_other_sessions_connects() {
    if server_url("DISTSYNC_POSTGRES_URL").is_none() {
        return;
    }
    if let Err(reason) = private::available(StoreKind::Postgres) {
        panic!("the PostgreSQL test server is set but no private one can be started: {reason}");
    }
    let connect = connector(|url| async move { distsync_postgres::backend(&url).await });
    let server = private::start(StoreKind::Postgres, connect).await.unwrap();
    let owner = distsync_postgres::backend(server.url()).await.unwrap();
    let session = owner.session(SessionOptions::default()).await.unwrap();
    let superuser = server
        .url()
        .replacen("postgres://distsync@", "postgres://postgres@", 1);
    let admin = sqlx::PgPool::connect(&superuser).await.unwrap();
    for statement in [
        "CREATE ROLE intruder LOGIN",
        "GRANT USAGE ON SCHEMA distsync TO intruder",
        "GRANT SELECT ON distsync.layout TO intruder",
    ] {
        sqlx::query(statement).execute(&admin).await.unwrap();
    }
    let intruder = server
        .url()
        .replacen("postgres://distsync@", "postgres://intruder@", 1);
    // TTLs are enforced by rows expiring, never by ending other backends: no
    // pg_signal_backend is needed to share the schema with another role's sessions.
    distsync_postgres::backend(&intruder)
        .await
        .expect("a role that cannot end other roles' connections may connect");
    admin.close().await;
    session.close().await.unwrap();
}
