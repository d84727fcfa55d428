//! A store that forgot (see the crate docs, "When the store forgets"), on a private
//! nats-server (the conformance suite's, `distsync_conformance::faults::private`)
//! whose store directory is wiped before it starts again at the same address: the
//! holder's client tells it once its renewal fails or is refused and writes its token
//! offset into the marker, and a client with a bound on session TTLs
//! (`max_session_ttl=`) that never knew the old store waits out the bound before its
//! first grant, its token above the old holder's although the new stream's sequences
//! start again from 1.
//!
//! Runs when `DISTSYNC_NATS_URL` is set (the test servers are installed); skipped
//! loudly otherwise, a failure under `CI=true`.

use std::time::{Duration, Instant};

use distsync_conformance::faults::private;
use distsync_conformance::{connector, server_url, StoreKind};
use distsync_core::{Backend, Name, SessionOptions};

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
    server_url("DISTSYNC_NATS_URL")?;
    if let Err(reason) = private::available(StoreKind::Nats) {
        panic!("the NATS test server is set but no private one can be started: {reason}");
    }
    let connect = connector(|url| async move { distsync_nats::backend(&url).await });
    Some(private::start(StoreKind::Nats, connect).await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wiped_store_is_told_and_a_bounded_newcomer_waits_with_tokens_above() {
    let Some(mut server) = private_server().await else {
        return;
    };
    let bound = Duration::from_secs(3);
    let bounded_url = with_query(server.url(), "max_session_ttl=3s");
    let holder_client = distsync_nats::backend(&bounded_url).await.unwrap();
    assert!(holder_client.capabilities().exclusive_across_restart);
    let holder = holder_client
        .session(SessionOptions::with_ttl(bound))
        .await
        .unwrap();
    let locker = holder_client.locker(&holder, name("forgotten")).unwrap();
    // A brand-new store has no marker: the first grant waits the bound. Then some
    // cycles, so that the old stream's sequences are well above the sequences the
    // wiped server hands out first: a token that went back would show.
    let started = Instant::now();
    for _ in 0..30 {
        within(bound * 4, "a grant before the wipe", locker.lock())
            .await
            .unwrap()
            .unlock()
            .await
            .unwrap();
    }
    assert!(
        started.elapsed() >= bound - Duration::from_millis(100),
        "a new store's first grant came {:?} after the first session, within the bound",
        started.elapsed()
    );
    let guard = within(bound, "the holder's grant", locker.lock())
        .await
        .unwrap();
    let first = guard.token();

    server.stop().await.unwrap();
    server.wipe().await.unwrap();
    server.start().await.unwrap();
    let back = Instant::now();

    let newcomer_client = within(
        Duration::from_secs(30),
        "the newcomer connecting",
        distsync_nats::backend(&bounded_url),
    )
    .await
    .unwrap();
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

#[tokio::test(flavor = "multi_thread")]
async fn a_session_above_the_bound_is_refused() {
    let Some(url) = server_url("DISTSYNC_NATS_URL") else {
        return;
    };
    let client = distsync_nats::backend(&with_query(&url, "max_session_ttl=2s"))
        .await
        .unwrap();
    let refused = client
        .session(SessionOptions::with_ttl(Duration::from_secs(3)))
        .await;
    assert!(
        matches!(refused, Err(distsync_core::Error::InvalidArgument(_))),
        "a 3 s session under a 2 s bound: {refused:?}"
    );
}
