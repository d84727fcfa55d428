//! Two `distsync` processes sharing a lock or a read-write lock on a real server.
#![cfg(unix)]

mod common;

use common::{field, number, servers, unique, Proc};

/// A command that waits for one line on its standard input (inherited from distsync),
/// then exits with 7.
const WAIT_FOR_A_LINE: &str = "read line; exit 7";

#[test]
fn a_second_process_waits_until_the_first_command_exits() {
    for server in servers() {
        let name = unique("lock-two-processes");
        let url = Some(server.url.as_str());
        let mut first = Proc::spawn(url, &["lock", &name, "--", "sh", "-c", WAIT_FOR_A_LINE]);
        let held = first.expect(&format!("{name} key="));
        let first_token = number(&held, "token");

        let mut second = Proc::spawn(
            url,
            &[
                "lock",
                &name,
                "--",
                "sh",
                "-c",
                "echo \"cmd $DISTSYNC_LOCK_KEY $DISTSYNC_FENCING_TOKEN\"",
            ],
        );
        second.quiet();

        first.send("done");
        assert_eq!(first.wait(), 7, "{}: {}", server.label, first.stderr());

        let granted = second.expect(&format!("{name} key="));
        let second_token = number(&granted, "token");
        assert!(
            second_token > first_token,
            "{}: tokens must increase: {first_token} then {second_token}",
            server.label
        );
        assert_ne!(
            field(&granted, "key"),
            field(&held, "key"),
            "{}",
            server.label
        );
        assert_eq!(
            second.line(),
            format!("cmd {} {second_token}", field(&granted, "key")),
            "{}",
            server.label
        );
        assert_eq!(second.wait(), 0, "{}: {}", server.label, second.stderr());
    }
}

#[test]
fn an_interrupted_holder_releases_before_exiting() {
    for server in servers() {
        let name = unique("lock-interrupted");
        let url = Some(server.url.as_str());
        let mut holder = Proc::spawn(url, &["lock", &name]);
        holder.expect(&format!("{name} key="));
        let mut waiter = Proc::spawn(url, &["lock", &name, "--", "true"]);
        waiter.quiet();
        holder.signal(libc::SIGINT);
        assert_eq!(holder.wait(), 130, "{}: {}", server.label, holder.stderr());
        // Released at once, not after the session's TTL: the waiter gets it well within
        // the deadline, and exits with `true`'s code.
        waiter.expect(&format!("{name} key="));
        assert_eq!(waiter.wait(), 0, "{}: {}", server.label, waiter.stderr());
    }
}

#[test]
fn readers_share_and_a_writer_waits_for_both() {
    for server in servers() {
        let name = unique("rwlock-two-processes");
        let url = Some(server.url.as_str());
        let mut first = Proc::spawn(url, &["rwlock", &name, "read"]);
        let read = first.expect(&format!("{name} key="));
        assert!(!read.contains("token="), "{read}");
        let mut second = Proc::spawn(url, &["rwlock", &name, "read"]);
        second.expect(&format!("{name} key="));

        let mut writer = Proc::spawn(
            url,
            &[
                "rwlock",
                &name,
                "write",
                "--",
                "sh",
                "-c",
                "echo \"cmd $DISTSYNC_FENCING_TOKEN\"",
            ],
        );
        writer.quiet();
        first.signal(libc::SIGTERM);
        assert_eq!(first.wait(), 130, "{}: {}", server.label, first.stderr());
        writer.quiet();
        second.signal(libc::SIGTERM);
        assert_eq!(second.wait(), 130, "{}: {}", server.label, second.stderr());

        let granted = writer.expect(&format!("{name} key="));
        let token = number(&granted, "token");
        assert_eq!(writer.line(), format!("cmd {token}"), "{}", server.label);
        assert_eq!(writer.wait(), 0, "{}: {}", server.label, writer.stderr());
    }
}
