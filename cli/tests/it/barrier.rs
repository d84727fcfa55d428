//! `distsync barrier` and `distsync double-barrier` across processes on a real server.
#![cfg(unix)]

use crate::common;

use common::{run, servers, unique, Proc};

#[test]
fn waiters_pass_when_the_barrier_is_released() {
    for server in servers() {
        let label = server.label;
        let name = unique("barrier");
        let url = Some(server.url.as_str());
        assert_eq!(run(url, &["barrier", &name, "hold"]).1, ["held"], "{label}");
        let mut waiter = Proc::spawn(url, &["barrier", &name, "wait"]);
        waiter.quiet();
        assert_eq!(
            run(url, &["barrier", &name, "release"]).1,
            ["released"],
            "{label}"
        );
        assert_eq!(waiter.line(), "passed", "{label}");
        assert_eq!(waiter.wait(), 0, "{label}: {}", waiter.stderr());
        // Not held: wait returns at once.
        assert_eq!(
            run(url, &["barrier", &name, "wait"]).1,
            ["passed"],
            "{label}"
        );
    }
}

#[test]
fn a_double_barrier_lets_its_participants_enter_and_leave_together() {
    for server in servers() {
        let label = server.label;
        let name = unique("double-barrier");
        let url = Some(server.url.as_str());
        let mut first = Proc::spawn(url, &["double-barrier", &name, "2"]);
        first.quiet();
        let mut second = Proc::spawn(url, &["double-barrier", &name, "2"]);
        assert_eq!(first.line(), "entered", "{label}");
        assert_eq!(second.line(), "entered", "{label}");

        first.send("leave");
        first.quiet();
        second.close_stdin();
        assert_eq!(first.line(), "left", "{label}");
        assert_eq!(second.line(), "left", "{label}");
        assert_eq!(first.wait(), 0, "{label}: {}", first.stderr());
        assert_eq!(second.wait(), 0, "{label}: {}", second.stderr());
    }
}
