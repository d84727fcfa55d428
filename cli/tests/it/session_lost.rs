//! A session ended from the server side while `distsync lock` holds: CMD is sent
//! SIGTERM and distsync exits with 3. On etcd, where the lock key names the lease
//! (`<name>/<lease id in hex>`), so the test can revoke it as an operator would.
#![cfg(unix)]

use crate::common;

use common::{field, unique, Proc};
use distsync::session::SessionId;

/// The etcd server, when this build can reach it and its URL is set.
fn etcd() -> Option<String> {
    if !cfg!(feature = "etcd") {
        eprintln!("\n!!! distsync-cli built without the `etcd` feature: SKIPPING. !!!\n");
        return None;
    }
    distsync_conformance::server_url("DISTSYNC_ETCD_URL")
}

/// Revokes the lease named at the end of an etcd lock key.
async fn revoke(url: &str, key: &str) {
    let hex = key.rsplit('/').next().unwrap();
    let lease = u64::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("no lease in {key}"));
    let coordinator = distsync::connect(url).await.unwrap();
    coordinator
        .backend()
        .revoke_session(SessionId(lease))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn losing_the_session_terminates_the_command_and_exits_3() {
    let Some(url) = etcd() else { return };
    let name = unique("session-lost-cmd");
    let mut holder = Proc::spawn(
        Some(&url),
        &[
            "lock",
            &name,
            "--ttl",
            "3s",
            "--",
            "sh",
            "-c",
            "trap 'echo got-term; exit 0' TERM; echo ready; while :; do sleep 0.05; done",
        ],
    );
    let held = holder.expect(&format!("{name} key="));
    holder.expect("ready");
    revoke(&url, field(&held, "key")).await;
    assert_eq!(holder.line(), "got-term");
    // CMD exited 0, but it ran unprotected for a while: the exit code says so.
    assert_eq!(holder.wait(), 3, "{}", holder.stderr());
    assert!(
        holder.stderr().contains("session lost"),
        "{}",
        holder.stderr()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn losing_the_session_of_a_plain_holder_exits_3() {
    let Some(url) = etcd() else { return };
    let name = unique("session-lost-hold");
    let mut holder = Proc::spawn(Some(&url), &["lock", &name, "--ttl", "3s"]);
    let held = holder.expect(&format!("{name} key="));
    revoke(&url, field(&held, "key")).await;
    assert_eq!(holder.wait(), 3, "{}", holder.stderr());
    assert!(
        holder.stderr().contains("session lost"),
        "{}",
        holder.stderr()
    );
}
