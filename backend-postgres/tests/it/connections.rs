//! Connections proportional to the process, not to its holds: one
//! backend with 500 sessions each holding a lock, and 100 more sessions waiting on some
//! of those locks, keeps at most its bound of connections to the server (pool 8, holds
//! 8, reaper 2, one listener: 19). The connections counted are this process's: the
//! server's `pg_stat_activity` rows whose client port is one of this process's TCP
//! sockets (from `/proc/self`), so other suites using the same server at the same time
//! do not count. Not timed (the bench reports figures: `distsync-bench --cases scale`).
//! Against the server named by `DISTSYNC_POSTGRES_URL` (skipped loudly when unset; a
//! failure under `CI=true`).

use distsync_core::Primitives;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use distsync_conformance::server_url;
use distsync_core::{Backend, Name, SessionOptions};
use sqlx::{Connection, PgConnection};
use tokio::time::Instant;

/// Pool 8 + holds 8 + reaper 2 + the listener (see the crate docs).
const BOUND: i64 = 19;

/// The socket inodes of this process (`/proc/self/fd/* -> socket:[inode]`).
fn socket_inodes() -> HashSet<u64> {
    let mut inodes = HashSet::new();
    for fd in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        if let Ok(target) = std::fs::read_link(fd.path()) {
            let target = target.to_string_lossy().into_owned();
            if let Some(inode) = target
                .strip_prefix("socket:[")
                .and_then(|rest| rest.strip_suffix(']'))
            {
                inodes.extend(inode.parse::<u64>().ok());
            }
        }
    }
    inodes
}

/// The local ports of this process's TCP connections (IPv4 and IPv6).
fn local_ports() -> Vec<i32> {
    let inodes = socket_inodes();
    let mut ports = Vec::new();
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(inode)) = (fields.get(1), fields.get(9)) else {
                continue;
            };
            if !inode
                .parse::<u64>()
                .is_ok_and(|inode| inodes.contains(&inode))
            {
                continue;
            }
            if let Some(port) = local
                .rsplit(':')
                .next()
                .and_then(|hex| i32::from_str_radix(hex, 16).ok())
            {
                ports.push(port);
            }
        }
    }
    ports
}

/// The server's sessions opened by this process, less `probe` (the counting
/// connection itself).
async fn connections_of_this_process(probe: &mut PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE client_port = ANY($1) AND pid <> pg_backend_pid() \
           AND datname = current_database()",
    )
    .bind(local_ports())
    .fetch_one(probe)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn five_hundred_holds_and_a_hundred_waiters_stay_within_the_connection_bound() {
    let Some(url) = server_url("DISTSYNC_POSTGRES_URL") else {
        return;
    };
    let mut probe = PgConnection::connect(&url).await.unwrap();
    assert_eq!(
        connections_of_this_process(&mut probe).await,
        0,
        "the count sees connections before the backend exists: it is not this process's"
    );
    let backend = Arc::new(distsync_postgres::backend(&url).await.unwrap());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("pgtest/connections/{nanos:x}-{}", std::process::id());
    let options = SessionOptions::with_ttl(Duration::from_secs(30));

    let mut holders = Vec::new();
    let mut guards = Vec::new();
    let mut most = 0;
    for i in 0..500 {
        let session = backend.session(options.clone()).await.unwrap();
        let name = Name::new(format!("{prefix}/{i}")).unwrap();
        guards.push(
            backend
                .locker(&session, name)
                .unwrap()
                .lock()
                .await
                .unwrap(),
        );
        holders.push(session);
        if i % 50 == 0 {
            most = most.max(connections_of_this_process(&mut probe).await);
        }
    }
    // 100 waiters, one on each of the first 100 locks, all blocked at once.
    let mut waiting = Vec::new();
    let mut waiters = Vec::new();
    for i in 0..100 {
        let session = backend.session(options.clone()).await.unwrap();
        let locker = backend
            .locker(&session, Name::new(format!("{prefix}/{i}")).unwrap())
            .unwrap();
        waiting.push(tokio::spawn(async move { locker.lock().await }));
        waiters.push(session);
    }
    let schema = backend.schema().to_owned();
    let queued = format!(
        "SELECT count(*) FROM {schema}.semaphore_entries e \
         JOIN {schema}.lock_names n ON n.id = e.name_id \
         WHERE n.name LIKE $1 AND e.token IS NULL AND NOT e.cancelled"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n: i64 = sqlx::query_scalar(&queued)
            .bind(format!("{prefix}/%"))
            .fetch_one(&mut probe)
            .await
            .unwrap();
        if n == 100 {
            break;
        }
        assert!(Instant::now() < deadline, "only {n} of 100 waiters queued");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let now = connections_of_this_process(&mut probe).await;
    eprintln!(
        "connections of this process: {now} now, {} at most while holding",
        most.max(now)
    );
    most = most.max(now);
    assert!(
        now > 0,
        "no connection of this process is counted: the measure is broken"
    );
    assert!(
        most <= BOUND,
        "500 holds and 100 waiters used {most} connections (bound {BOUND})"
    );
    assert!(
        waiting.iter().all(|wait| !wait.is_finished()),
        "a waiter was granted a held lock"
    );
    // The waiters are served once the holders let go, still within the bound.
    for guard in guards.drain(..100) {
        guard.unlock().await.unwrap();
    }
    for wait in waiting {
        tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .expect("a waiter was not granted after the release")
            .unwrap()
            .unwrap()
            .unlock()
            .await
            .unwrap();
    }
    let after = connections_of_this_process(&mut probe).await;
    assert!(
        after <= BOUND,
        "{after} connections after the hand-offs (bound {BOUND})"
    );
    drop(guards);
    for session in holders.into_iter().chain(waiters) {
        session.close().await.unwrap();
    }
}
