//! A `distsync lock NAME -- CMD` holder cut off from the store (through a proxy that
//! goes silent, or resets every connection) stops its CMD before another client's CMD
//! starts on the same lock: end to end, with real processes and real servers.
#![cfg(unix)]

use crate::common;

use std::path::Path;

use common::{unique, Proc};
use distsync_conformance::faults::proxy::Proxy;
use distsync_conformance::faults::PartitionMode;

/// The lines of the shared log, in order.
fn log_lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

async fn cut_off_holder_stops_before_the_next_holder_starts(url: &str, mode: PartitionMode) {
    let coordinator = distsync::connect(url).await.expect("connecting");
    if !coordinator.capabilities().partition_safe {
        eprintln!(
            "{url}: the backend does not declare partition_safe; skipping {mode:?} (the matrix shows it)"
        );
        return;
    }
    let (proxy, proxied) = Proxy::front(url).await.unwrap();
    let dir = std::env::temp_dir().join(unique("distsync-partition"));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("log");
    let name = unique("partition-cmd");
    let holder_cmd = format!(
        "trap 'echo A-stop >> {log}; exit 0' TERM; echo A-start >> {log}; echo ready; while :; do sleep 0.05; done",
        log = log.display()
    );
    let mut holder = Proc::spawn(
        Some(&proxied),
        &[
            "lock",
            &name,
            "--ttl",
            "3s",
            "--grace",
            "1s",
            "--",
            "sh",
            "-c",
            &holder_cmd,
        ],
    );
    holder.expect(&format!("{name} key="));
    holder.expect("ready");
    let waiter_cmd = format!("echo B-start >> {}", log.display());
    let mut waiter = Proc::spawn(
        Some(url),
        &["lock", &name, "--ttl", "3s", "--", "sh", "-c", &waiter_cmd],
    );
    waiter.quiet();
    proxy.set(mode);
    assert_eq!(waiter.wait(), 0, "{}", waiter.stderr());
    assert_eq!(holder.wait(), 3, "{}", holder.stderr());
    assert_eq!(
        log_lines(&log),
        ["A-start", "A-stop", "B-start"],
        "{mode:?} on {url}: the holder's CMD must stop before the next holder's CMD starts; holder said: {}",
        holder.stderr()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silently_partitioned_holder_stops_its_command_first() {
    for server in common::servers() {
        cut_off_holder_stops_before_the_next_holder_starts(&server.url, PartitionMode::Silent)
            .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_holder_whose_connections_reset_stops_its_command_first() {
    for server in common::servers() {
        cut_off_holder_stops_before_the_next_holder_starts(&server.url, PartitionMode::Reset).await;
    }
}
