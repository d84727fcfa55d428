//! etcd's Go `concurrency.Mutex` as the bench's peer, against the test etcd and the Go
//! peer program of `scripts/servers.sh` (`DISTSYNC_ETCD_URL`, `DISTSYNC_GO_PEER`; both
//! required under `CI=true`): its cycles and hand-offs are timed in Go and come back
//! as figures, and the peer leaves cleanly.
#![cfg(feature = "etcd")]

use std::time::Duration;

use clap::Parser;
use distsync_bench::args::{Args, Plan};
use distsync_bench::peers::go_mutex;

/// The test etcd's URL, when it and the Go peer are there.
fn etcd_and_peer() -> Option<String> {
    let url = std::env::var("DISTSYNC_ETCD_URL")
        .ok()
        .filter(|url| !url.is_empty());
    let peer = std::env::var_os(go_mutex::PEER_VARIABLE).filter(|peer| !peer.is_empty());
    match (url, peer) {
        (Some(url), Some(_)) => Some(url),
        _ if std::env::var("CI").as_deref() == Ok("true") => panic!(
            "CI=true: DISTSYNC_ETCD_URL and {} must be set (scripts/servers.sh env)",
            go_mutex::PEER_VARIABLE
        ),
        _ => None,
    }
}

fn name(what: &str) -> String {
    format!("bench-test/go-peer/{what}/{}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_go_mutex_times_its_own_cycles() {
    let Some(url) = etcd_and_peer() else { return };
    let mut contender = go_mutex::start(&url, &name("cycle"))
        .await
        .map_err(|(_, _, error)| error.to_string())
        .expect("the Go peer starts");
    assert_eq!(contender.label, go_mutex::LABEL);
    assert!(
        contender.cycler.own_time().is_none(),
        "no figure before a cycle"
    );
    for _ in 0..5 {
        contender
            .cycler
            .cycle()
            .await
            .expect("a Lock + Unlock in Go");
        let took = contender
            .cycler
            .own_time()
            .expect("Go's figure for the cycle");
        assert!(
            took > Duration::ZERO && took < Duration::from_secs(10),
            "{took:?}"
        );
    }
    contender.cycler.close().await.expect("the peer leaves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_go_mutex_hands_off_as_the_bench_asks() {
    let Some(url) = etcd_and_peer() else { return };
    let plan = Plan::from_args(&Args::parse_from([
        "distsync-bench",
        "--handoffs",
        "6",
        "--settle-ms",
        "5",
        "--case-secs",
        "30",
    ]));
    let result = go_mutex::handoff(&url, &name("handoff"), 2, &plan).await;
    assert_eq!(result.error, None);
    assert_eq!(result.peer.as_deref(), Some(go_mutex::HANDOFF_LABEL));
    assert_eq!(result.waiters, 2);
    // Exactly the hand-offs asked for: the first three (each participant's first grant)
    // are not counted, and none after the stop.
    assert_eq!(result.samples.len(), 6);
    let summary = result.samples.summary().expect("samples");
    assert!(summary.p50 > Duration::ZERO, "{summary:?}");
}
