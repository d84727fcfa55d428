//! distsync's ZooKeeper election against Apache Curator's own `LeaderLatch`, run by
//! the Java peer (interop/curator-peer, built by scripts/curator-peer.sh, its launcher
//! in `DISTSYNC_CURATOR_PEER`) on the same server (`DISTSYNC_ZOOKEEPER_URL`): a Rust
//! candidate and a Java latch on one path elect one leader between them, in both
//! orders; Curator's `getLeader()` reports the Rust leader's campaign value, a Rust
//! proclaim leaves the Java latch waiting behind the leader able to take over, and
//! Rust's `leader()` and `observe()` report the Java leader with its node's czxid as
//! the term. Curator's `LeaderSelector`, an `InterProcessMutex` underneath, excludes
//! with a distsync lock given its path.
//!
//! Skipped loudly when either variable is unset (`scripts/servers.sh up` builds the
//! peer, `scripts/servers.sh env` exports both); a failure under `CI=true`.

use crate::common;

use common::{setup, unique, JavaPeer, Setup, SETTLE, STEP};
use distsync_core::{Bytes, FencingToken, Name};
use futures::StreamExt;
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_leader_holds_a_curator_latch_back_until_it_resigns() {
    let Some(setup) = setup() else { return };
    let name = unique("election-rust-leads");
    let coordinator = distsync::connect(&setup.url).await.unwrap();
    let session = coordinator.session().await.unwrap();
    let election = coordinator
        .backend()
        .election(&session, Name::new(&name).unwrap())
        .unwrap();
    let leadership = timeout(STEP, election.campaign(Bytes::from_static(b"rust-1")))
        .await
        .expect("an unopposed campaign is prompt")
        .unwrap();
    assert_eq!(curator_leader(&setup, &name).await, "leader rust-1");

    let mut java = JavaPeer::start(&setup, "latch", &node(&setup, &name), &["java-1"]);
    java.said("started").await;
    java.stays_silent("the Rust candidate leads").await;
    // A proclaim leaves the leader's node as it is: Curator's latch behind it watches
    // that node for its deletion only.
    leadership.proclaim("rust-2").await.unwrap();
    assert_eq!(
        curator_leader(&setup, &name).await,
        "leader rust-1",
        "Curator's getLeader() reports the campaign value"
    );
    let current = election.leader().await.unwrap().expect("the Rust leader");
    assert_eq!(current.value.as_ref(), b"rust-2");

    let mut observed = election.observe();
    let first = timeout(STEP, observed.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (first.value.as_ref(), first.term),
        (&b"rust-2"[..], leadership.term())
    );
    let rust_term = leadership.term();
    leadership.resign().await.unwrap();

    let java_term = java_leads(&mut java).await;
    assert!(
        java_term > rust_term,
        "the Java leader's term {java_term} is not above the Rust leader's {rust_term}"
    );
    let next = timeout(STEP, observed.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (next.value.as_ref(), next.term),
        (&b"java-1"[..], java_term),
        "observe() reports the Java leader after the Rust one"
    );
    let current = election.leader().await.unwrap().expect("a leader");
    assert_eq!(
        (current.value.as_ref(), current.term),
        (&b"java-1"[..], java_term)
    );

    java.release().await;
    java.said("closed").await;
    java.exits().await;
    assert_eq!(election.leader().await.unwrap(), None);
    assert_eq!(curator_leader(&setup, &name).await, "none");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_curator_leader_holds_a_rust_candidate_back_until_it_closes() {
    let Some(setup) = setup() else { return };
    let name = unique("election-java-leads");
    let mut java = JavaPeer::start(&setup, "latch", &node(&setup, &name), &["java-1"]);
    java.said("started").await;
    let java_term = java_leads(&mut java).await;

    let coordinator = distsync::connect(&setup.url).await.unwrap();
    let session = coordinator.session().await.unwrap();
    let election = coordinator
        .backend()
        .election(&session, Name::new(&name).unwrap())
        .unwrap();
    let current = election.leader().await.unwrap().expect("the Java leader");
    assert_eq!(
        (current.value.as_ref(), current.term),
        (&b"java-1"[..], java_term)
    );
    let mut observed = election.observe();
    let first = timeout(STEP, observed.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (first.value.as_ref(), first.term),
        (&b"java-1"[..], java_term)
    );

    let campaign = tokio::spawn(async move {
        let leadership = election.campaign(Bytes::from_static(b"rust-1")).await;
        (leadership, election)
    });
    tokio::time::sleep(SETTLE).await;
    assert!(
        !campaign.is_finished(),
        "the Rust candidate was elected while the Java latch leads"
    );
    assert_eq!(curator_leader(&setup, &name).await, "leader java-1");

    java.release().await;
    java.said("closed").await;
    java.exits().await;
    let (leadership, election) = timeout(STEP, campaign)
        .await
        .expect("the Rust candidate is elected once the Java latch closed")
        .unwrap();
    let leadership = leadership.unwrap();
    assert!(
        leadership.term() > java_term,
        "the Rust leader's term {} is not above the Java leader's {java_term}",
        leadership.term()
    );
    assert_eq!(curator_leader(&setup, &name).await, "leader rust-1");
    let next = timeout(STEP, observed.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (next.value.as_ref(), next.term),
        (&b"rust-1"[..], leadership.term())
    );

    // A second Java latch now waits behind the Rust leader, and leads after it.
    let mut second = JavaPeer::start(&setup, "latch", &node(&setup, &name), &["java-2"]);
    second.said("started").await;
    second.stays_silent("the Rust candidate leads").await;
    let rust_term = leadership.term();
    leadership.resign().await.unwrap();
    let second_term = java_leads(&mut second).await;
    assert!(second_term > rust_term);
    let current = election
        .leader()
        .await
        .unwrap()
        .expect("the second Java leader");
    assert_eq!(current.value.as_ref(), b"java-2");
    second.release().await;
    second.said("closed").await;
    second.exits().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_curator_leader_selector_is_a_mutex_shared_with_a_rust_lock() {
    let Some(setup) = setup() else { return };
    let name = unique("selector-as-lock");
    let path = common::node(&setup, "lock", &name);
    let coordinator = distsync::connect(&setup.url).await.unwrap();
    let session = coordinator.session().await.unwrap();
    let locker = coordinator.locker(&session, &name).unwrap();
    let guard = locker.lock().await.unwrap();
    let mut java = JavaPeer::start(&setup, "selector", &path, &["java-1"]);
    java.said("started").await;
    java.stays_silent("the Rust lock is held").await;
    guard.unlock().await.unwrap();
    java.said("leader").await;
    assert!(
        locker.try_lock().await.unwrap().is_none(),
        "the Rust lock was granted while Curator's LeaderSelector leads"
    );
    let waiter = tokio::spawn(async move { locker.lock().await });
    tokio::time::sleep(SETTLE).await;
    assert!(
        !waiter.is_finished(),
        "the Rust lock was granted while Curator leads"
    );
    java.release().await;
    java.said("released").await;
    java.exits().await;
    let guard = timeout(STEP, waiter)
        .await
        .expect("the Rust lock is granted once the selector gave up leadership")
        .unwrap()
        .unwrap();
    guard.unlock().await.unwrap();
}

/// Waits for the Java latch's `leader <czxid>` line; returns the czxid as a term.
async fn java_leads(java: &mut JavaPeer) -> FencingToken {
    let line = java.next_line().await;
    let czxid = line
        .strip_prefix("leader ")
        .and_then(|czxid| czxid.parse().ok())
        .unwrap_or_else(|| panic!("expected `leader <czxid>`, got {line:?}"));
    FencingToken(czxid)
}

/// What Curator's `LeaderLatch.getLeader()` reports: `leader <id>` or `none`.
async fn curator_leader(setup: &Setup, name: &str) -> String {
    let mut peer = JavaPeer::start(setup, "latch-leader", &node(setup, name), &[]);
    let line = peer.next_line().await;
    peer.exits().await;
    line
}

/// The election's node, as Curator is given it.
fn node(setup: &Setup, name: &str) -> String {
    common::node(setup, "election", name)
}
