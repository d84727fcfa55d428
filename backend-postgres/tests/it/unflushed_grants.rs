//! Unflushed grants (`grants=unflushed`, see the crate docs) across a power loss of a
//! private PostgreSQL at production settings (`fsync` on) whose data directory is on a
//! loop disk (the conformance suite's, `distsync_conformance::faults::private`): a grant
//! whose commit the power loss dropped is lost to its holder (`lost()`) before anyone
//! else is granted, nothing is granted before the lock-delay ends, and tokens continue
//! above the holder's. Also the option's typed errors.
//!
//! Runs when `DISTSYNC_POSTGRES_URL` is set and a loop disk can be made (root, loop
//! devices); skipped loudly otherwise, a failure under `CI=true`.

use distsync_core::Primitives;
use std::time::{Duration, Instant};

use distsync_conformance::faults::private::{self, Durability};
use distsync_conformance::faults::{loop_disk, PrivateServer};
use distsync_conformance::{connector, server_url, StoreKind};
use distsync_core::{Backend, Error, Name, SessionOptions};
use distsync_postgres::sqlx;

use crate::support::within;

/// The bound on session TTLs, the lock-delay after the crash: also the sessions' TTL,
/// long enough that the holder's session outlives the power loss and the restart (two to
/// four seconds here) and learns of the lost grant from the crash sentinel, not from its
/// client-side deadline (at least two thirds of the TTL, less the margin, away; here
/// nine seconds).
const BOUND: Duration = Duration::from_secs(15);

/// How many power losses may pass before one drops a grant: a synchronous commit of
/// anything else (a renewal, every third of the TTL) flushes the grant with it, and the WAL
/// writer flushes it within its delay; the power goes within milliseconds of the grant.
const TRIES: u32 = 4;

async fn loop_disk_server() -> Option<Box<dyn PrivateServer>> {
    server_url("DISTSYNC_POSTGRES_URL")?;
    if let Err(reason) = private::available(StoreKind::Postgres).and(loop_disk::available()) {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("no private PostgreSQL on a loop disk can be started: {reason}");
        }
        eprintln!("SKIPPED: no private PostgreSQL on a loop disk can be started: {reason}");
        return None;
    }
    let connect = connector(|url| async move { distsync_postgres::backend(&url).await });
    Some(
        private::start_on_loop_disk(StoreKind::Postgres, connect, "", Durability::Default)
            .await
            .unwrap(),
    )
}

/// A pool on the private server, tried until the server answers (it is recovering).
async fn store(url: &str) -> sqlx::PgPool {
    within(Duration::from_secs(60), "the server back", async {
        loop {
            if let Ok(pool) = sqlx::PgPool::connect(url).await {
                if sqlx::query("SELECT 1").execute(&pool).await.is_ok() {
                    return pool;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grant_a_power_loss_drops_is_lost_to_its_holder_before_anyone_is_granted() {
    let Some(mut server) = loop_disk_server().await else {
        return;
    };
    let url = format!(
        "{}?max_session_ttl={}ms&grants=unflushed",
        server.url(),
        BOUND.as_millis()
    );
    let holder_client = distsync_postgres::backend(&url).await.unwrap();
    let other_client = distsync_postgres::backend(&url).await.unwrap();
    assert!(
        !holder_client.capabilities().survives_failover,
        "unflushed grants do not wait for a standby"
    );
    let facts = holder_client.describe_store().await.unwrap();
    assert!(
        facts
            .iter()
            .any(|(key, value)| key == "grants" && value.starts_with("unflushed")),
        "{facts:?}"
    );
    let name = Name::new("hot").unwrap();
    let entries = "SELECT count(*) FROM distsync.line_entries \
                   WHERE session_id = $1 AND token = $2";
    for attempt in 1..=TRIES {
        // A small margin: the deadline as far off as the TTL allows.
        let holder = holder_client
            .session(SessionOptions::with_ttl(BOUND).margin(Duration::from_secs(1)))
            .await
            .unwrap();
        let locker = holder_client.locker(&holder, name.clone()).unwrap();
        // A few cycles first: the hot lock, and tokens above the first.
        for _ in 0..3 {
            within(BOUND * 4, "a cycle", locker.lock())
                .await
                .unwrap()
                .unlock()
                .await
                .unwrap();
        }
        let guard = within(BOUND * 4, "the grant", locker.lock()).await.unwrap();
        let token = guard.token();
        // The session's client-side deadline as it stands: a lost() after it would be
        // the deadline's, not the sentinel's.
        let deadline = holder.health().valid_until().unwrap();
        let lost = tokio::spawn({
            let guard_lost = guard.lost();
            async move {
                guard_lost.await;
                Instant::now()
            }
        });
        let powered_off = Instant::now();
        server.lose_power().await.unwrap();
        // The lock-delay counts from the first client to find the crash sentinel gone,
        // which may be before `start` returns (it waits for the server's readiness on a
        // poll): the server can be back no earlier than `starting`, so the delay is
        // judged from there.
        let starting = Instant::now();
        server.start().await.unwrap();
        let back = Instant::now();
        let store = store(server.url()).await;
        let kept: i64 = sqlx::query_scalar(entries)
            .bind(holder.id().0 as i64)
            .bind(token.0 as i64)
            .fetch_one(&store)
            .await
            .unwrap();
        store.close().await;
        if kept == 1 {
            // Flushed before the power went. Its client cannot tell it from a lost one:
            // its holder is lost all the same (and the next attempt's session opens
            // once the client has seen the crash).
            eprintln!("attempt {attempt}: the grant was flushed before the power loss");
            within(BOUND * 2, "the holder's lost() after the crash", lost)
                .await
                .unwrap();
            let _ = holder.close().await;
            continue;
        }
        // The grant is gone from the store, its session is not: the holder learns it.
        let (granted_at, next) = within(BOUND * 6, "the next grant after the crash", async {
            loop {
                let session = match other_client.session(SessionOptions::with_ttl(BOUND)).await {
                    Ok(session) => session,
                    Err(error) if error.is_transient() => continue,
                    Err(error) => panic!("opening a session: {error}"),
                };
                match other_client
                    .locker(&session, name.clone())
                    .unwrap()
                    .lock()
                    .await
                {
                    Ok(next) => break (Instant::now(), (session, next)),
                    Err(error) if error.is_transient() => continue,
                    Err(error) => panic!("locking: {error}"),
                }
            }
        })
        .await;
        let lost_at = within(BOUND * 2, "the holder's lost()", lost)
            .await
            .unwrap();
        assert!(
            lost_at <= granted_at,
            "the next holder was granted {:?} before the holder's lost()",
            lost_at - granted_at
        );
        assert!(
            granted_at - starting >= BOUND - Duration::from_millis(100),
            "granted {:?} after the server was started, within the {BOUND:?} lock-delay",
            granted_at - starting
        );
        let (session, next) = next;
        assert!(
            next.token() > token,
            "the token went back across the crash: {} after the holder's {token}",
            next.token()
        );
        assert!(
            holder.is_lost(),
            "the holder's session outlived its lost grant"
        );
        // Told by the crash sentinel at the first renewal after the restart, before the
        // session's own deadline.
        assert!(
            lost_at < deadline,
            "lost() {:?} after the session's deadline: not told by the crash sentinel",
            lost_at - deadline
        );
        eprintln!(
            "attempt {attempt}: grant {token} lost in the power loss (down {:?}); lost() \
             {:?} after the server came back, the next grant {:?} after, with token {}",
            back - powered_off,
            lost_at.saturating_duration_since(back),
            granted_at - back,
            next.token()
        );
        next.unlock().await.unwrap();
        session.close().await.unwrap();
        return;
    }
    panic!("no grant of {TRIES} was dropped by a power loss taken right after it");
}

#[tokio::test(flavor = "multi_thread")]
async fn unflushed_grants_need_a_bound_and_a_known_mode() {
    let Some(url) = server_url("DISTSYNC_POSTGRES_URL") else {
        return;
    };
    // A schema of its own: the grant gate of a schema is the lock-delay of every client
    // of it, which the shared default schema's other clients (their longest session
    // TTL, a crash sentinel found gone) would set for this one.
    let separator = if url.contains('?') { '&' } else { '?' };
    let schema = format!("unflushed_bound_{}", std::process::id());
    let url = format!("{url}{separator}schema={schema}");
    let separator = '&';
    // Refused before connecting: the lock-delay after a crash needs the bound.
    match distsync_postgres::backend(&format!("{url}{separator}grants=unflushed")).await {
        Err(Error::InvalidArgument(reason)) => {
            assert!(reason.contains("max_session_ttl"), "{reason}")
        }
        other => panic!("grants=unflushed without a bound gave {:?}", other.err()),
    }
    let coded = distsync_postgres::PostgresConfig::parse(&url)
        .unwrap()
        .with_unflushed_grants(true);
    assert!(matches!(
        distsync_postgres::backend_with_config(&coded).await,
        Err(Error::InvalidArgument(_))
    ));
    match distsync_postgres::backend(&format!(
        "{url}{separator}grants=sometimes&max_session_ttl=5s"
    ))
    .await
    {
        Err(Error::InvalidUrl { reason, .. }) => assert!(reason.contains("grants"), "{reason}"),
        other => panic!("grants=sometimes gave {:?}", other.err()),
    }
    // With the bound: a lock cycle, and the default still durable.
    let unflushed =
        distsync_postgres::backend_with_config(&coded.with_max_session_ttl(Duration::from_secs(5)))
            .await
            .unwrap();
    let session = unflushed
        .session(SessionOptions::with_ttl(Duration::from_secs(5)))
        .await
        .unwrap();
    let guard = within(
        Duration::from_secs(15),
        "a lock under unflushed grants",
        unflushed
            .locker(&session, crate::support::unique("unflushed"))
            .unwrap()
            .lock(),
    )
    .await
    .unwrap();
    guard.unlock().await.unwrap();
    session.close().await.unwrap();
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(unflushed.pool())
        .await
        .unwrap();
}

/// After a crash (the sentinel row gone, as recovery leaves it), every grant path asks
/// again after the lock-delay instead of failing: a lock, a try, a read and a write
/// lock, a permit, a candidacy, the unfair lock, and a waiter whose grant by a release
/// the gate withheld. Each runs on a client of its own, connected before the crash and
/// granted nothing yet: a client granted something before a crash loses its sessions
/// when its heartbeat reads the sentinel (the first test).
#[tokio::test(flavor = "multi_thread")]
async fn every_grant_path_waits_out_the_lock_delay_after_a_crash() {
    let Some(url) = server_url("DISTSYNC_POSTGRES_URL") else {
        return;
    };
    let separator = if url.contains('?') { '&' } else { '?' };
    let bound = Duration::from_secs(2);
    let schema = format!("unflushed_paths_{}", std::process::id());
    let url = format!(
        "{url}{separator}schema={schema}&grants=unflushed&max_session_ttl={}ms",
        bound.as_millis()
    );
    let store = sqlx::PgPool::connect(&url).await.unwrap();
    let limit = bound * 4;
    let name = |what: &str| Name::new(what).unwrap();
    let client = || async {
        let client = distsync_postgres::backend(&url).await.unwrap();
        let session = client
            .session(SessionOptions::with_ttl(bound))
            .await
            .unwrap();
        (client, session)
    };
    let crash = || async {
        sqlx::query(&format!("DELETE FROM {schema}.grant_sentinel"))
            .execute(&store)
            .await
            .unwrap();
        Instant::now()
    };
    let waited = |what: &str, since: Instant| {
        let waited = since.elapsed();
        assert!(
            waited >= bound - Duration::from_millis(100),
            "{what}: granted {waited:?} after the crash, within the {bound:?} lock-delay"
        );
    };

    // A waiter whose grant the release would make: withheld, then its own check.
    let (holding, holder_session) = client().await;
    let (waiting, waiter_session) = client().await;
    let holder = within(limit, "the first lock", async {
        holding
            .locker(&holder_session, name("l"))
            .unwrap()
            .lock()
            .await
    })
    .await
    .unwrap();
    let waiter = {
        let locker = waiting.locker(&waiter_session, name("l")).unwrap();
        tokio::spawn(async move { locker.lock().await })
    };
    within(limit, "the waiter in line", async {
        let locker = holding.locker(&holder_session, name("l")).unwrap();
        while locker.contenders().await.unwrap() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let since = crash().await;
    // The holder's client may already have read the sentinel gone and lost its
    // sessions: then their end releases the entry instead.
    let _ = holder.unlock().await;
    let granted = within(limit, "the waiter", waiter).await.unwrap().unwrap();
    waited("a waiter let in by a release", since);
    granted.unlock().await.unwrap();

    let (trying, session) = client().await;
    let since = crash().await;
    let guard = within(limit, "try_lock", async {
        trying.locker(&session, name("t")).unwrap().try_lock().await
    })
    .await
    .unwrap()
    .expect("free");
    waited("try_lock", since);
    guard.unlock().await.unwrap();

    let (reading, session) = client().await;
    let since = crash().await;
    let read = within(
        limit,
        "read",
        reading.rwlock(&session, name("rw")).unwrap().read(),
    )
    .await
    .unwrap();
    waited("read", since);
    read.unlock().await.unwrap();

    let (writing, session) = client().await;
    let since = crash().await;
    let write = within(
        limit,
        "write",
        writing.rwlock(&session, name("rw")).unwrap().write(),
    )
    .await
    .unwrap();
    waited("write", since);
    write.unlock().await.unwrap();

    let (permits, session) = client().await;
    let semaphore = permits
        .semaphore(&session, name("s"), std::num::NonZeroUsize::new(2).unwrap())
        .unwrap();
    let since = crash().await;
    let permit = within(limit, "a permit", semaphore.acquire())
        .await
        .unwrap();
    waited("a permit", since);
    permit.release().await.unwrap();

    let (candidate, session) = client().await;
    let election = candidate.election(&session, name("e")).unwrap();
    let since = crash().await;
    let leadership = within(limit, "a campaign", election.campaign("me"))
        .await
        .unwrap();
    waited("a campaign", since);
    leadership.resign().await.unwrap();

    let (barging, session) = client().await;
    let unfair = barging.unfair_locker(&session, name("u")).unwrap();
    let since = crash().await;
    let guard = within(limit, "the unfair lock", unfair.lock())
        .await
        .unwrap();
    waited("the unfair lock", since);
    let token = guard.token();
    guard.unlock().await.unwrap();
    // Outside a lock-delay: no wait, and tokens go on.
    let since = Instant::now();
    let again = within(limit, "the unfair lock again", unfair.lock())
        .await
        .unwrap();
    assert!(since.elapsed() < bound / 2, "waited {:?}", since.elapsed());
    assert!(again.token() > token);
    again.unlock().await.unwrap();

    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&store)
        .await
        .unwrap();
}
