//! `distsync counter` and `distsync latch` across processes on a real server.
#![cfg(unix)]

use crate::common;

use common::{run, servers, unique, Proc};

#[test]
fn a_counter_is_read_added_to_and_swapped() {
    for server in servers() {
        let label = server.label;
        let name = unique("counter");
        let url = Some(server.url.as_str());
        assert_eq!(run(url, &["counter", &name]).1, ["0"], "{label}");
        assert_eq!(
            run(url, &["counter", &name, "add", "5"]).1,
            ["5"],
            "{label}"
        );
        assert_eq!(
            run(url, &["counter", &name, "add", "-7"]).1,
            ["-2"],
            "{label}"
        );
        let (code, lines, _) = run(url, &["counter", &name, "cas", "0", "9"]);
        assert_eq!((code, lines), (1, vec!["unchanged".to_owned()]), "{label}");
        let (code, lines, _) = run(url, &["counter", &name, "cas", "-2", "9"]);
        assert_eq!((code, lines), (0, vec!["swapped".to_owned()]), "{label}");
        assert_eq!(run(url, &["counter", &name, "get"]).1, ["9"], "{label}");
        let max = i64::MAX.to_string();
        let (code, _, stderr) = run(url, &["counter", &name, "add", &max]);
        assert_eq!(
            code, 2,
            "{label}: an overflowing add is a usage error: {stderr}"
        );
        assert_eq!(run(url, &["counter", &name]).1, ["9"], "{label}");
    }
}

#[test]
fn a_counter_watch_prints_each_change_from_another_process() {
    for server in servers() {
        let label = server.label;
        let name = unique("watched");
        let url = Some(server.url.as_str());
        let mut watcher = Proc::spawn(url, &["counter", &name, "watch", "--changes", "2"]);
        assert_eq!(watcher.line(), "0", "{label}");
        watcher.quiet();
        assert_eq!(
            run(url, &["counter", &name, "add", "3"]).1,
            ["3"],
            "{label}"
        );
        assert_eq!(watcher.line(), "3", "{label}");
        let (code, _, _) = run(url, &["counter", &name, "cas", "3", "-4"]);
        assert_eq!(code, 0, "{label}");
        assert_eq!(watcher.line(), "-4", "{label}");
        assert_eq!(watcher.wait(), 0, "{label}: {}", watcher.stderr());
    }
}

#[test]
fn a_latch_releases_its_waiter_at_zero() {
    for server in servers() {
        let label = server.label;
        let name = unique("latch");
        let url = Some(server.url.as_str());
        let mut waiter = Proc::spawn(url, &["latch", &name, "2", "wait"]);
        assert_eq!(
            run(url, &["latch", &name, "2", "count-down"]).1,
            ["1"],
            "{label}"
        );
        waiter.quiet();
        assert_eq!(
            run(url, &["latch", &name, "2", "count"]).1,
            ["1"],
            "{label}"
        );
        let (code, _, stderr) = run(url, &["latch", &name, "3", "count"]);
        assert_eq!(code, 2, "{label}: another count is a usage error: {stderr}");
        assert_eq!(
            run(url, &["latch", &name, "2", "count-down"]).1,
            ["0"],
            "{label}"
        );
        assert_eq!(waiter.line(), "open", "{label}");
        assert_eq!(waiter.wait(), 0, "{label}: {}", waiter.stderr());
    }
}
