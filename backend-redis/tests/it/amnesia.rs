//! The lock-delay after the store forgets (`src/amnesia.rs`): on a private
//! `redis-server` without persistence, restarted while a holder holds, a new contender
//! is granted only after the old holder's `lost()` fired and after `max_session_ttl`
//! from the server's start, with a greater fencing token; on a long-running server a
//! new name waits for nothing; a session above the bound is refused.
//!
//! Runs when `DISTSYNC_REDIS_URL` is set (the test servers are installed); skipped
//! loudly otherwise, a failure under `CI=true`.

use crate::support;
use distsync_core::Primitives;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use distsync_core::{Error, LockGuard, Locker};
use tokio::time::Instant;

use support::PrivateRedis;

/// The bound on session TTLs the tests give, short so that the lock-delay is too.
const BOUND: Duration = Duration::from_secs(3);

async fn within<T>(limit: Duration, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(limit, future)
        .await
        .expect("did not finish in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_without_persistence_nobody_is_granted_before_the_old_holder_lost() {
    if support::server_url().is_none() {
        return;
    }
    let mut server = tokio::task::spawn_blocking(|| PrivateRedis::start(&[]))
        .await
        .unwrap();
    let url = server.url("?max_session_ttl=3s");
    let coordinator = distsync::connect(&url).await.unwrap();

    // The server is brand new: the first grant of a name waits out the rest of the
    // bound (the server may have held sessions before it started, as far as it knows).
    let holder = coordinator
        .session_with(distsync_core::SessionOptions::with_ttl(
            Duration::from_millis(1500),
        ))
        .await
        .unwrap();
    let guard = within(
        BOUND + Duration::from_secs(5),
        coordinator.locker(&holder, "l").unwrap().lock(),
    )
    .await
    .unwrap();
    let token_before = guard.token();

    // When the old holder learns it lost the lock.
    let lost_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let watching = {
        let lost_at = Arc::clone(&lost_at);
        let lost = guard.lost();
        tokio::spawn(async move {
            lost.await;
            *lost_at.lock().unwrap() = Some(Instant::now());
        })
    };

    let stopped_at = Instant::now();
    server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .unwrap();

    // The restarted server is empty, its uptime below the bound: a try is refused
    // while the lock-delay runs, then a waiter is granted once it ended.
    // The first command after the restart may meet the broken connection; the
    // connection manager reconnects behind it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let contender = loop {
        match coordinator
            .session_with(distsync_core::SessionOptions::with_ttl(
                Duration::from_millis(1500),
            ))
            .await
        {
            Ok(session) => break session,
            Err(Error::Connection { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("{error}"),
        }
    };
    let locker = coordinator.locker(&contender, "l").unwrap();
    if stopped_at.elapsed() < BOUND - Duration::from_millis(500) {
        assert!(locker.try_lock().await.unwrap().is_none());
    }
    let granted = within(BOUND + Duration::from_secs(5), locker.lock())
        .await
        .unwrap();
    let granted_at = Instant::now();

    let lost_at = lost_at
        .lock()
        .unwrap()
        .expect("the old holder's lost() fired before the new grant");
    assert!(lost_at <= granted_at);
    // The server started after `stopped_at`, and nothing is granted before it has
    // been up for the bound.
    assert!(
        granted_at.duration_since(stopped_at) >= BOUND,
        "granted {:?} after the restart began, within the lock-delay of {BOUND:?}",
        granted_at.duration_since(stopped_at)
    );
    assert!(
        granted.token() > token_before,
        "{:?} is not above {:?}",
        granted.token(),
        token_before
    );
    watching.await.unwrap();
    granted.unlock().await.unwrap();
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_brand_new_server_every_kind_of_grant_waits_out_the_bound() {
    if support::server_url().is_none() {
        return;
    }
    let starting = Instant::now();
    let server = tokio::task::spawn_blocking(|| PrivateRedis::start(&[]))
        .await
        .unwrap();
    let coordinator = distsync::connect(&server.url("?max_session_ttl=3s"))
        .await
        .unwrap();
    let session = coordinator
        .session_with(distsync_core::SessionOptions::with_ttl(
            Duration::from_secs(3),
        ))
        .await
        .unwrap();
    let limit = BOUND + Duration::from_secs(5);
    let rwlock = coordinator.rwlock(&session, "rw").unwrap();
    let semaphore = coordinator.semaphore(&session, "s", 2).unwrap();
    let election = coordinator.election(&session, "e").unwrap();
    // Each grant is timed on its own: the server started after `starting`, and
    // nothing is granted before it has been up for the bound.
    let ((write, write_at), (permit, permit_at), (leadership, leader_at)) = within(limit, async {
        tokio::join!(
            async { (rwlock.write().await, starting.elapsed()) },
            async { (semaphore.acquire().await, starting.elapsed()) },
            async { (election.campaign("me").await, starting.elapsed()) },
        )
    })
    .await;
    // A grant first, then its time (an error comes back at once).
    let (write, permit, leadership) = (
        write.expect("the write lock"),
        permit.expect("the permit"),
        leadership.expect("the leadership"),
    );
    for (what, at) in [
        ("the write lock", write_at),
        ("the permit", permit_at),
        ("the leadership", leader_at),
    ] {
        assert!(
            at >= BOUND,
            "{what} was granted {at:?} after the server started"
        );
    }
    write.unlock().await.unwrap();
    permit.release().await.unwrap();
    leadership.resign().await.unwrap();
    drop(server);
}

#[tokio::test]
async fn a_new_name_on_a_long_running_server_waits_for_nothing() {
    let Some(server) = support::server_url() else {
        return;
    };
    // The shared test server has been up for more than two seconds by the time any test
    // runs (the connection below needs it answering already).
    let namespace = support::unique_namespace("amnesia");
    let url = format!(
        "{}&max_session_ttl=2s",
        support::with_namespace(&server, &namespace)
    );
    let coordinator = distsync::connect(&url).await.unwrap();
    let session = coordinator
        .session_with(distsync_core::SessionOptions::with_ttl(
            Duration::from_secs(2),
        ))
        .await
        .unwrap();
    let started = Instant::now();
    let guard = coordinator
        .locker(&session, "fresh")
        .unwrap()
        .try_lock()
        .await
        .unwrap()
        .expect("granted at once");
    assert!(started.elapsed() < Duration::from_secs(1));
    guard.unlock().await.unwrap();
}

#[tokio::test]
async fn a_session_above_the_bound_is_refused() {
    let Some(server) = support::server_url() else {
        return;
    };
    let namespace = support::unique_namespace("amnesia");
    let url = format!(
        "{}&max_session_ttl=2s",
        support::with_namespace(&server, &namespace)
    );
    let coordinator = distsync::connect(&url).await.unwrap();
    let refused = coordinator
        .session_with(distsync_core::SessionOptions::with_ttl(
            Duration::from_secs(3),
        ))
        .await;
    assert!(
        matches!(refused, Err(Error::InvalidArgument(_))),
        "{refused:?}"
    );
    let at_the_bound = coordinator
        .session_with(distsync_core::SessionOptions::with_ttl(
            Duration::from_secs(2),
        ))
        .await;
    assert!(at_the_bound.is_ok(), "{at_the_bound:?}");
}

#[tokio::test]
async fn the_lock_delay_declares_holds_exclusive_across_a_restart_and_data_still_lost() {
    let Some(server) = support::server_url() else {
        return;
    };
    // The shared server without the options its URL may carry, the lock-delay off.
    let bare = server
        .split_once('?')
        .map_or(server.as_str(), |(base, _)| base);
    let namespace = support::unique_namespace("amnesia");
    let without = distsync_redis::backend(&format!(
        "{}&max_session_ttl=off",
        support::with_namespace(bare, &namespace)
    ))
    .await
    .unwrap();
    let with = distsync_redis::backend(&format!(
        "{}&max_session_ttl=2s",
        support::with_namespace(bare, &namespace)
    ))
    .await
    .unwrap();
    // The test server runs without persistence: only the lock-delay gives it.
    assert!(!without.capabilities().exclusive_across_restart);
    assert!(with.capabilities().exclusive_across_restart);
    // Holds, not data: queue items and STM keys are lost with a restart all the same.
    assert!(!with.capabilities().survives_restart);
    assert_eq!(
        with.capabilities(),
        &without
            .capabilities()
            .clone()
            .with_exclusive_across_restart(true)
    );
}

/// A waiter line whose marker another server set (its recorded replication id is not
/// this server's, as on a replica promoted without acknowledgement) grants nothing
/// for the bound, then grants a token above every earlier one, and records this
/// server's id.
#[tokio::test]
async fn a_line_marked_under_another_replication_id_waits_out_the_bound() {
    let Some(server) = support::server_url() else {
        return;
    };
    let bare = server
        .split_once('?')
        .map_or(server.as_str(), |(base, _)| base);
    let namespace = support::unique_namespace("amnesia");
    let url = format!(
        "{}&max_session_ttl=2s",
        support::with_namespace(bare, &namespace)
    );
    let coordinator = distsync::connect(&url).await.unwrap();
    let session = coordinator
        .session_with(distsync_core::SessionOptions::with_ttl(
            Duration::from_secs(2),
        ))
        .await
        .unwrap();
    let locker = coordinator.locker(&session, "promoted").unwrap();
    let first = locker.try_lock().await.unwrap().expect("granted at once");
    let token_before = first.token();
    first.unlock().await.unwrap();

    // The line as a promoted replica has it: its marker, set under another id (which
    // the marker's value records after the time grants are allowed from).
    let mut raw = redis::Client::open(bare)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let marker_key = format!("{{{namespace}promoted}}:lock:epoch");
    let other = "0123456789abcdef0123456789abcdef01234567";
    let _: () = redis::cmd("SET")
        .arg(&marker_key)
        .arg(format!("0:{other}"))
        .query_async(&mut raw)
        .await
        .unwrap();

    let seen = Instant::now();
    let granted = granted_after_the_delay(
        &*locker,
        seen,
        "granted while the lock-delay after the promotion runs",
    )
    .await;
    assert!(
        granted.token() > token_before,
        "{:?} is not above {:?}",
        granted.token(),
        token_before
    );
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut raw)
        .await
        .unwrap();
    let marker: String = redis::cmd("GET")
        .arg(&marker_key)
        .query_async(&mut raw)
        .await
        .unwrap();
    let (at, recorded) = marker
        .split_once(':')
        .unwrap_or_else(|| panic!("{marker:?} records no replication id"));
    assert!(at.parse::<u64>().is_ok(), "{marker:?}");
    assert_ne!(recorded, other);
    assert!(
        info.contains(&format!("master_replid:{recorded}")),
        "{recorded} is not this server's replication id"
    );
    granted.unlock().await.unwrap();
}

/// A raw connection to `port`, to look at a server and reconfigure it.
/// The grant of `locker` while the lock-delay of a promotion seen at `seen` (bound 2 s)
/// runs: `try_lock` is refused (`refused_at_once` says otherwise), and `lock` is
/// granted only once the bound has passed since `seen`.
async fn granted_after_the_delay(
    locker: &dyn Locker,
    seen: Instant,
    refused_at_once: &str,
) -> LockGuard {
    assert!(
        locker.try_lock().await.unwrap().is_none(),
        "{refused_at_once}"
    );
    let granted = within(BOUND + Duration::from_secs(5), locker.lock())
        .await
        .unwrap();
    assert!(
        seen.elapsed() >= Duration::from_millis(1900),
        "granted {:?} after the promotion was seen, within the bound of 2 s",
        seen.elapsed()
    );
    granted
}

async fn raw_connection(port: u16) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/0"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn info_replication(conn: &mut redis::aio::MultiplexedConnection) -> String {
    redis::cmd("INFO")
        .arg("replication")
        .query_async(conn)
        .await
        .unwrap()
}

/// On a replica promoted since it started (behind a Sentinel, the client watching for
/// failovers), a new name waits only until the bound after the promotion was first
/// seen, and that sighting is kept on the server for every client: a new name within
/// the window waits, one after it, of another client, is granted at once, for the fair
/// lock and the unfair one alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_promotion_new_names_wait_only_within_the_bound_of_its_first_sighting() {
    if support::server_url().is_none() {
        return;
    }
    let (primary, replica) = tokio::task::spawn_blocking(|| {
        let primary = PrivateRedis::start(&[]);
        let of = primary.port().to_string();
        let replica = PrivateRedis::start(&["--replicaof", "127.0.0.1", &of]);
        (primary, replica)
    })
    .await
    .unwrap();
    let mut raw = raw_connection(replica.port()).await;
    within(Duration::from_secs(20), async {
        while !info_replication(&mut raw)
            .await
            .contains("master_link_status:up")
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query_async(&mut raw)
        .await
        .unwrap();
    let info = info_replication(&mut raw).await;
    assert!(info.contains("role:master"), "{info}");
    assert!(
        !info.contains("second_repl_offset:-1"),
        "not promoted: {info}"
    );
    let replid = info
        .lines()
        .find_map(|line| line.strip_prefix("master_replid:"))
        .unwrap()
        .trim()
        .to_owned();
    let port = replica.port();
    let sentinel = tokio::task::spawn_blocking(move || PrivateRedis::sentinel("promoted", port))
        .await
        .unwrap();

    let namespace = support::unique_namespace("promotion");
    let url = format!(
        "redis+sentinel://127.0.0.1:{}/promoted/0?wait_replicas=0&max_session_ttl=2s&namespace={namespace}",
        sentinel.port()
    );
    let client = || async {
        let coordinator = distsync::connect(&url).await.unwrap();
        let session = coordinator
            .session_with(distsync_core::SessionOptions::with_ttl(
                Duration::from_secs(2),
            ))
            .await
            .unwrap();
        (coordinator, session)
    };
    let (first, first_session) = client().await;
    let (second, second_session) = client().await;

    // The first new name after the promotion records its sighting and waits the bound.
    let seen = Instant::now();
    assert!(
        first
            .locker(&first_session, "first")
            .unwrap()
            .try_lock()
            .await
            .unwrap()
            .is_none(),
        "granted at once on a server just promoted"
    );
    let record: String = redis::cmd("GET")
        .arg(format!("{{{namespace}promoted}}"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(
        record.starts_with(&format!("{replid}:")),
        "{record:?} does not record the promoted server's id {replid}"
    );
    // Another client's new name, within the window, waits what is left of it.
    let within_window = second.locker(&second_session, "second").unwrap();
    let granted = granted_after_the_delay(
        &*within_window,
        seen,
        "granted within the bound of the promotion's first sighting",
    )
    .await;
    granted.unlock().await.unwrap();

    // The window is over (the grant above came at its end): a new client's new names
    // are granted at once, fair and unfair.
    let (third, third_session) = client().await;
    let started = Instant::now();
    let fair = third
        .locker(&third_session, "third")
        .unwrap()
        .try_lock()
        .await
        .unwrap()
        .expect("a new name after the window waits for nothing");
    let unfair = third
        .locker_with(
            &third_session,
            "fourth",
            distsync_core::LockOptions::new().unfair(),
        )
        .unwrap()
        .try_lock()
        .await
        .unwrap()
        .expect("a new name after the window waits for nothing (unfair lock)");
    assert!(started.elapsed() < Duration::from_secs(1));
    fair.unlock().await.unwrap();
    unfair.unlock().await.unwrap();
    drop((sentinel, replica, primary));
}
