//! A store that forgot (see the crate docs, "When the store forgets"), on a private
//! PostgreSQL cluster (the conformance suite's, `distsync_conformance::faults::private`)
//! wiped with a fresh `initdb` at the same address, or a schema dropped under its
//! clients on the test server: the holder's client tells it, its sessions are lost,
//! its grants wait the lock-delay, and tokens keep growing; a bound on session TTLs
//! (`max_session_ttl=`) makes a client that never knew the old store wait too.
//!
//! Runs when `DISTSYNC_POSTGRES_URL` is set (the test servers are installed); skipped
//! loudly otherwise, a failure under `CI=true`.

use distsync_core::Primitives;
use std::time::{Duration, Instant};

use distsync_conformance::faults::private;
use distsync_conformance::{connector, server_url, StoreKind};
use distsync_core::{Backend, Error, Name, SessionOptions};

async fn within<T>(limit: Duration, what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {limit:?}"))
}

fn name(text: &str) -> Name {
    Name::new(text).unwrap()
}

/// A private server, or `None` when the test servers are not set up.
async fn private_server() -> Option<Box<dyn distsync_conformance::faults::PrivateServer>> {
    server_url("DISTSYNC_POSTGRES_URL")?;
    if let Err(reason) = private::available(StoreKind::Postgres) {
        panic!("the PostgreSQL test server is set but no private one can be started: {reason}");
    }
    let connect = connector(|url| async move { distsync_postgres::backend(&url).await });
    Some(private::start(StoreKind::Postgres, connect).await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wiped_store_is_told_its_sessions_lost_and_tokens_keep_growing() {
    let Some(mut server) = private_server().await else {
        return;
    };
    let holder_client = distsync_postgres::backend(server.url()).await.unwrap();
    let ttl = Duration::from_secs(3);
    let holder = holder_client
        .session(SessionOptions::with_ttl(ttl))
        .await
        .unwrap();
    let guard = holder_client
        .locker(&holder, name("forgotten"))
        .unwrap()
        .lock()
        .await
        .unwrap();
    let first = guard.token();

    server.stop().await.unwrap();
    server.wipe().await.unwrap();
    let starting = Instant::now();
    server.start().await.unwrap();
    // The marker, looked for from the moment the server is back: the holder's client
    // writes it once it finds the store forgot, which can come before anything below
    // returns.
    let store = distsync_postgres::sqlx::PgPool::connect(server.url())
        .await
        .unwrap();
    let marker = tokio::spawn({
        let store = store.clone();
        async move {
            loop {
                let offset: Option<i64> = distsync_postgres::sqlx::query_scalar(
                    "SELECT token_offset FROM distsync.epoch_marker",
                )
                .fetch_optional(&store)
                .await
                .unwrap_or(None);
                if let Some(offset) = offset {
                    return offset;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });

    // A client that never knew the old store (no bound): it creates the schema again,
    // and leaves the missing marker alone.
    let newcomer_client = distsync_postgres::backend(server.url()).await.unwrap();
    // The holder's session is lost (at its deadline while the server was down, or at
    // the renewal that finds its row gone), and its client, once the store answers,
    // finds the system_identifier changed and writes the marker with its offset.
    within(ttl * 3, "the holder's lost() after the wipe", guard.lost()).await;
    assert!(holder.is_lost(), "the holder's session outlived the wipe");
    let offset = within(ttl * 3, "the holder's client writing the marker", marker)
        .await
        .unwrap();
    assert!(
        u64::try_from(offset).unwrap() >= first.0,
        "the marker's offset {offset} is below the holder's token {first}"
    );
    assert!(
        guard.unlock().await.is_err(),
        "an unlock of a hold the store forgot succeeded"
    );

    // Grants through the holder's client wait out the lock-delay (the longest TTL)
    // from its detection, which comes after the server started again: a grant less
    // than the TTL after `start()` was called came too early, and a test process
    // starved meanwhile only measures the wait longer.
    let again = holder_client
        .session(SessionOptions::with_ttl(ttl))
        .await
        .unwrap();
    let regrant = within(
        ttl * 4,
        "a grant through the holder's client after its lock-delay",
        holder_client.locker(&again, name("other")).unwrap().lock(),
    )
    .await
    .unwrap();
    let waited = starting.elapsed();
    assert!(
        waited >= ttl,
        "granted {waited:?} after the server started again, within the lock-delay of {ttl:?}"
    );
    store.close().await;
    assert!(
        regrant.token() > first,
        "the holder's client handed out {} after {first}",
        regrant.token()
    );

    // The holder's client raised the store's counters: the newcomer's tokens continue
    // above the holder's.
    let newcomer = newcomer_client
        .session(SessionOptions::with_ttl(ttl))
        .await
        .unwrap();
    let granted = within(
        ttl * 4,
        "the newcomer's grant",
        newcomer_client
            .locker(&newcomer, name("forgotten"))
            .unwrap()
            .lock(),
    )
    .await
    .unwrap();
    assert!(
        granted.token() > first,
        "the token went back across the wipe: {} after {first}",
        granted.token()
    );
    granted.unlock().await.unwrap();
    regrant.unlock().await.unwrap();
    newcomer.close().await.unwrap();
    again.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_bound_a_new_client_waits_out_a_store_found_without_its_marker() {
    let Some(server) = private_server().await else {
        return;
    };
    let bound = Duration::from_secs(2);
    let bounded_url = format!("{}?max_session_ttl=2s", server.url());
    let connected = Instant::now();
    let client = distsync_postgres::backend(&bounded_url).await.unwrap();
    assert!(client.capabilities().exclusive_across_restart);
    assert!(
        !distsync_postgres::backend(server.url())
            .await
            .unwrap()
            .capabilities()
            .exclusive_across_restart,
        "a client without the bound declares exclusive_across_restart"
    );
    // A session longer than the bound is refused: the lock-delay would not cover it.
    match client
        .session(SessionOptions::with_ttl(bound + Duration::from_secs(1)))
        .await
    {
        Err(Error::InvalidArgument(message)) => assert!(message.contains("max_session_ttl")),
        other => panic!("a session above the bound gave {:?}", other.map(|s| s.id())),
    }
    let session = client
        .session(SessionOptions::with_ttl(bound))
        .await
        .unwrap();
    // The store had no marker: a store that forgot, as far as this client can tell, so
    // its first grant waits the bound.
    let guard = within(
        bound * 4,
        "the first grant",
        client.locker(&session, name("first")).unwrap().try_lock(),
    )
    .await
    .unwrap()
    .expect("the lock is free");
    assert!(
        connected.elapsed() >= bound - Duration::from_millis(100),
        "granted {:?} after connecting, within the bound {bound:?}",
        connected.elapsed()
    );
    guard.unlock().await.unwrap();
    // Once the store's lock-delay has passed, a new client grants at once.
    let later = distsync_postgres::backend(&bounded_url).await.unwrap();
    let other = later
        .session(SessionOptions::with_ttl(bound))
        .await
        .unwrap();
    let asked = Instant::now();
    let guard = later
        .locker(&other, name("first"))
        .unwrap()
        .try_lock()
        .await
        .unwrap()
        .expect("the lock is free");
    assert!(
        asked.elapsed() < bound,
        "a client of a store past its lock-delay waited {:?}",
        asked.elapsed()
    );
    guard.unlock().await.unwrap();
    other.close().await.unwrap();
    session.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_schema_is_told_and_a_later_client_waits_out_the_lock_delay() {
    let Some(url) = server_url("DISTSYNC_POSTGRES_URL") else {
        return;
    };
    let schema = format!(
        "amnesia_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let separator = if url.contains('?') { '&' } else { '?' };
    let bounded_url = format!("{url}{separator}schema={schema}&max_session_ttl=2s");
    let client = distsync_postgres::backend(&bounded_url).await.unwrap();
    let ttl = Duration::from_secs(2);
    let session = client.session(SessionOptions::with_ttl(ttl)).await.unwrap();
    let guard = within(
        ttl * 4,
        "the holder's grant",
        client.locker(&session, name("kept")).unwrap().lock(),
    )
    .await
    .unwrap();
    let first = guard.token();

    let admin = distsync_postgres::sqlx::PgPool::connect(&url)
        .await
        .unwrap();
    distsync_postgres::sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(&admin)
        .await
        .unwrap();
    within(ttl * 3, "the holder's lost() after the drop", guard.lost()).await;
    // The holder's client wrote the schema, the token floor and a marker whose
    // lock-delay a client connecting now waits out too.
    let later = distsync_postgres::backend(&bounded_url).await.unwrap();
    let other = later.session(SessionOptions::with_ttl(ttl)).await.unwrap();
    let asked = Instant::now();
    let granted = within(
        ttl * 4,
        "the later client's grant",
        later.locker(&other, name("kept")).unwrap().lock(),
    )
    .await
    .unwrap();
    assert!(
        asked.elapsed() >= Duration::from_millis(500),
        "a client connecting during the lock-delay was granted after {:?}",
        asked.elapsed()
    );
    assert!(
        granted.token() > first,
        "the token went back across the dropped schema: {} after {first}",
        granted.token()
    );
    granted.unlock().await.unwrap();
    other.close().await.unwrap();
    distsync_postgres::sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
}

#[tokio::test]
async fn a_bad_bound_is_a_typed_error_without_the_password() {
    for bad in ["0", "soon", "500ms", "-1s", "2d"] {
        let url = format!("postgres://app:pw-a11@127.0.0.1:1/db?max_session_ttl={bad}");
        match distsync_postgres::backend(&url).await {
            Err(error @ Error::InvalidUrl { .. }) => {
                let shown = format!("{error} {error:?}");
                assert!(shown.contains("max_session_ttl"), "{shown}");
                assert!(!shown.contains("pw-a11"), "{shown}");
            }
            other => panic!("{bad:?} gave {:?}", other.map(|_| ())),
        }
    }
    let config =
        distsync_postgres::PostgresConfig::parse("postgres://app@127.0.0.1/db?max_session_ttl=1m")
            .unwrap();
    assert_eq!(config.max_session_ttl(), Some(Duration::from_secs(60)));
    assert!(
        distsync_postgres::capabilities_with_bound(config.max_session_ttl())
            .exclusive_across_restart
    );
    assert!(!distsync_postgres::capabilities().exclusive_across_restart);
}
