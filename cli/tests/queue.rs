//! `distsync queue` across processes on a real server.
#![cfg(unix)]

mod common;

use common::{run, servers, unique, Proc};

#[test]
fn push_pop_and_len_across_processes() {
    for server in servers() {
        let label = server.label;
        let name = unique("queue");
        let url = Some(server.url.as_str());
        let ok = |args: &[&str]| {
            let (code, lines, stderr) = run(url, args);
            assert_eq!(code, 0, "{label}: distsync {args:?}: {stderr}");
            lines
        };
        assert!(ok(&["queue", &name, "push", "first"]).is_empty(), "{label}");
        ok(&["queue", &name, "push", "later", "--priority", "9"]);
        ok(&["queue", &name, "push", "second"]);
        ok(&["queue", &name, "push", "urgent", "--priority", "0"]);
        assert_eq!(ok(&["queue", &name, "len"]), ["4"], "{label}");
        for expected in ["first", "second", "urgent", "later"] {
            assert_eq!(ok(&["queue", &name, "pop"]), [expected], "{label}");
        }
        assert_eq!(ok(&["queue", &name, "len"]), ["0"], "{label}");

        let (code, lines, stderr) = run(url, &["queue", &name, "pop", "--no-wait"]);
        assert_eq!(code, 1, "{label}: {stderr}");
        assert!(lines.is_empty(), "{label}: {lines:?}");
        assert!(stderr.contains("empty"), "{label}: {stderr}");
    }
}

#[test]
fn a_blocking_pop_waits_for_a_push_from_another_process() {
    for server in servers() {
        let label = server.label;
        let name = unique("queue-blocking");
        let url = Some(server.url.as_str());
        let mut consumer = Proc::spawn(url, &["queue", &name, "pop"]);
        consumer.quiet();
        let (code, _, stderr) = run(url, &["queue", &name, "push", "hello world"]);
        assert_eq!(code, 0, "{label}: {stderr}");
        assert_eq!(consumer.line(), "hello world", "{label}");
        assert_eq!(consumer.wait(), 0, "{label}: {}", consumer.stderr());
    }
}

#[test]
fn receive_prints_and_acknowledges() {
    for server in servers() {
        let label = server.label;
        let name = unique("queue-receive");
        let url = Some(server.url.as_str());
        let ok = |args: &[&str]| {
            let (code, lines, stderr) = run(url, args);
            assert_eq!(code, 0, "{label}: distsync {args:?}: {stderr}");
            lines
        };
        ok(&["queue", &name, "push", "first"]);
        ok(&["queue", &name, "push", "second"]);
        assert_eq!(ok(&["queue", &name, "receive"]), ["first"], "{label}");
        assert_eq!(ok(&["queue", &name, "len"]), ["1"], "{label}: acknowledged");
        assert_eq!(
            ok(&["queue", &name, "receive", "--no-wait"]),
            ["second"],
            "{label}"
        );
        let (code, lines, stderr) = run(url, &["queue", &name, "receive", "--no-wait"]);
        assert_eq!(code, 1, "{label}: {stderr}");
        assert!(lines.is_empty(), "{label}: {lines:?}");
        assert!(stderr.contains("empty"), "{label}: {stderr}");
    }
}
