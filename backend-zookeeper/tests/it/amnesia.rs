//! A store that forgot (see the crate docs, "When the store forgets"), on a private
//! ZooKeeper (the conformance suite's, `distsync_conformance::faults::private`) whose
//! data directory is wiped before it starts again at the same address: the holder's
//! client tells it once its session is lost and writes its token offset into the
//! marker, and a client with a bound on session TTLs (`max_session_ttl=`) that never
//! knew the old store waits out the bound before its first grant, its tokens above the
//! old holder's. On the test server, under a root of its own: a store without a marker
//! makes a bounded client wait, a client arriving after the bound does not, and the
//! hold node is written before the marker, so no client finds the marker without it.
//!
//! Runs when `DISTSYNC_ZOOKEEPER_URL` is set (the test servers are installed); skipped
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

/// `url` with `query` added.
fn with_query(url: &str, query: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{query}")
}

/// A private server, or `None` when the test servers are not set up.
async fn private_server() -> Option<Box<dyn distsync_conformance::faults::PrivateServer>> {
    server_url("DISTSYNC_ZOOKEEPER_URL")?;
    if let Err(reason) = private::available(StoreKind::Zookeeper) {
        panic!("the ZooKeeper test server is set but no private one can be started: {reason}");
    }
    let connect = connector(|url| async move { distsync_zookeeper::backend(&url).await });
    Some(private::start(StoreKind::Zookeeper, connect).await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wiped_store_is_told_and_a_bounded_newcomer_waits_with_tokens_above() {
    let Some(mut server) = private_server().await else {
        return;
    };
    let bound = Duration::from_secs(3);
    let bounded_url = with_query(server.url(), "max_session_ttl=3s");
    let holder_client = distsync_zookeeper::backend(&bounded_url).await.unwrap();
    let holder = holder_client
        .session(SessionOptions::with_ttl(bound))
        .await
        .unwrap();
    // A brand-new store has no marker: the first grant waits the bound.
    let guard = within(
        bound * 4,
        "the holder's first grant",
        holder_client
            .locker(&holder, name("forgotten"))
            .unwrap()
            .lock(),
    )
    .await
    .unwrap();
    let first = guard.token();

    server.stop().await.unwrap();
    server.wipe().await.unwrap();
    server.start().await.unwrap();
    let back = Instant::now();

    let newcomer_client = distsync_zookeeper::backend(&bounded_url).await.unwrap();
    let newcomer = newcomer_client
        .session(SessionOptions::with_ttl(bound))
        .await
        .unwrap();
    let granted = within(
        bound * 6,
        "the newcomer's grant",
        newcomer_client
            .locker(&newcomer, name("forgotten"))
            .unwrap()
            .lock(),
    )
    .await
    .unwrap();
    assert!(
        holder.is_lost(),
        "the newcomer was granted {:?} after the wiped store came back, before the \
         holder's lost()",
        back.elapsed()
    );
    assert!(
        back.elapsed() >= bound - Duration::from_millis(100),
        "the newcomer was granted {:?} after the store came back, within the bound",
        back.elapsed()
    );
    assert!(
        granted.token() > first,
        "the token went back across the wipe: {} after {first}",
        granted.token()
    );
    assert!(
        guard.unlock().await.is_err(),
        "an unlock of a hold the store forgot succeeded"
    );

    // The holder's client saw the store forget: its next grant waits out its own
    // lock-delay and hands out tokens above its old one.
    let again = holder_client
        .session(SessionOptions::with_ttl(bound))
        .await
        .unwrap();
    let regrant = within(
        bound * 4,
        "a grant through the holder's client",
        holder_client.locker(&again, name("other")).unwrap().lock(),
    )
    .await
    .unwrap();
    assert!(
        regrant.token() > first,
        "the holder's client handed out {} after {first}",
        regrant.token()
    );
    granted.unlock().await.unwrap();
    regrant.unlock().await.unwrap();
    newcomer.close().await.unwrap();
    again.close().await.unwrap();
}

/// Waits, for at most `limit`, until the node at `path` is gone.
async fn until_gone(zk: &zookeeper_client::Client, path: &str, limit: Duration) {
    within(limit, "the node ending with its session", async {
        loop {
            match zk.check_and_watch_stat(path).await.unwrap() {
                (None, _) => break,
                (Some(_), watcher) => {
                    watcher.changed().await;
                }
            }
        }
    })
    .await;
}

/// The test server's hosts and a root of the test's own (no marker there yet).
fn own_root(url: &str, test: &str) -> (String, String) {
    let config: distsync_zookeeper::ZkConfig = url.parse().unwrap();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let root = format!("/distsync-{test}-{}-{nanos}", std::process::id());
    (config.hosts().join(","), root)
}

/// A client that finds the marker missing writes the hold node before the marker, so
/// that no client finds the new marker without the hold node and grants before the
/// bound: watched from another client, the hold node is there as soon as the marker is.
#[tokio::test(flavor = "multi_thread")]
async fn the_hold_node_is_there_before_the_marker_it_comes_with() {
    let Some(url) = server_url("DISTSYNC_ZOOKEEPER_URL") else {
        return;
    };
    let (hosts, root) = own_root(&url, "amnesia-order");
    let bound = Duration::from_secs(2);
    let zk = zookeeper_client::Client::connector()
        .with_session_timeout(Duration::from_secs(4))
        .connect(&hosts)
        .await
        .unwrap();
    let marker = format!("{root}/amnesia");
    let hold = format!("{root}/amnesia-hold");
    let (absent, created) = zk.check_and_watch_stat(&marker).await.unwrap();
    assert!(absent.is_none(), "a marker under a new root");

    let bounded_url = format!("zk://{hosts}{root}?max_session_ttl=2s");
    let opening = tokio::spawn(async move {
        let client = distsync_zookeeper::backend(&bounded_url).await.unwrap();
        let session = client
            .session(SessionOptions::with_ttl(bound))
            .await
            .unwrap();
        session.close().await.unwrap();
    });
    within(bound * 4, "the marker's create", created.changed()).await;
    // This client's reads see at least the state its watch reported.
    assert!(
        zk.check_stat(&hold).await.unwrap().is_some(),
        "the marker was written before its hold node: a newcomer could read it, find no \
         hold node and grant within the bound"
    );
    within(bound * 4, "the first session", opening)
        .await
        .unwrap();

    until_gone(&zk, &hold, bound * 10).await;
    for path in ["/amnesia", ""] {
        let _ = zk.delete(&format!("{root}{path}"), None).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_bound_a_new_client_waits_out_a_store_found_without_its_marker() {
    let Some(url) = server_url("DISTSYNC_ZOOKEEPER_URL") else {
        return;
    };
    let (hosts, root) = own_root(&url, "amnesia-test");
    let bounded_url = format!("zk://{hosts}{root}?max_session_ttl=2s");
    let bound = Duration::from_secs(2);

    let connected = Instant::now();
    let client = distsync_zookeeper::backend(&bounded_url).await.unwrap();
    assert!(client.capabilities().exclusive_across_restart);
    assert!(client.capabilities().session_bound);
    assert!(
        !distsync_zookeeper::capabilities().exclusive_across_restart,
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
    // No marker: a store that forgot, as far as this client can tell, so its first
    // grant waits the bound.
    let guard = within(
        bound * 4,
        "the first grant",
        client.locker(&session, name("first")).unwrap().lock(),
    )
    .await
    .unwrap();
    assert!(
        connected.elapsed() >= bound - Duration::from_millis(100),
        "granted {:?} after connecting, within the bound {bound:?}",
        connected.elapsed()
    );
    guard.unlock().await.unwrap();
    session.close().await.unwrap();

    // The marker is there and the hold node lives for the bound past its writer's
    // connection; once it is gone, a new client grants at once.
    let zk = zookeeper_client::Client::connector()
        .with_session_timeout(Duration::from_secs(4))
        .connect(&hosts)
        .await
        .unwrap();
    let (marker, _) = zk.get_data(&format!("{root}/amnesia")).await.unwrap();
    let marker = String::from_utf8(marker).unwrap();
    assert!(marker.contains("ttl_ms=2000"), "marker {marker}");
    until_gone(&zk, &format!("{root}/amnesia-hold"), bound * 10).await;
    let later = distsync_zookeeper::backend(&bounded_url).await.unwrap();
    let other = later
        .session(SessionOptions::with_ttl(bound))
        .await
        .unwrap();
    let asked = Instant::now();
    let guard = within(
        bound * 4,
        "a later client's grant",
        later.locker(&other, name("first")).unwrap().lock(),
    )
    .await
    .unwrap();
    let waited = asked.elapsed();
    assert!(
        waited < bound / 2,
        "a client made after the hold node ended waited {waited:?}"
    );
    guard.unlock().await.unwrap();
    other.close().await.unwrap();
    // The test's nodes, children first (the hold node has gone).
    for path in ["/lock/first", "/lock", "/amnesia", ""] {
        let _ = zk.delete(&format!("{root}{path}"), None).await;
    }
}
