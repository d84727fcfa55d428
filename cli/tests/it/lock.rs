//! Two `distsync` processes sharing a lock or a read-write lock on a real server.
#![cfg(unix)]

use crate::common;

use std::time::{Duration, Instant};

use common::{field, number, run, servers, unique, Proc};

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

#[test]
fn no_wait_and_timeout_give_up_with_exit_1_while_another_process_holds() {
    for server in servers() {
        let label = server.label;
        let name = unique("lock-give-up");
        let url = Some(server.url.as_str());
        let mut holder = Proc::spawn(url, &["lock", &name]);
        holder.expect(&format!("{name} key="));

        let (code, lines, stderr) = run(
            url,
            &["lock", &name, "--no-wait", "--", "sh", "-c", "echo ran"],
        );
        assert_eq!(code, 1, "{label}: {stderr}");
        assert!(
            lines.is_empty(),
            "{label}: no lock line, CMD not run: {lines:?}"
        );
        assert!(stderr.contains("held elsewhere"), "{label}: {stderr}");

        let started = Instant::now();
        let (code, lines, stderr) = run(
            url,
            &[
                "lock",
                &name,
                "--timeout",
                "700ms",
                "--",
                "sh",
                "-c",
                "echo ran",
            ],
        );
        assert_eq!(code, 1, "{label}: {stderr}");
        assert!(lines.is_empty(), "{label}: {lines:?}");
        assert!(
            stderr.contains("not acquired within 700ms"),
            "{label}: {stderr}"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(700),
            "{label}: gave up after {:?}, before the timeout",
            started.elapsed()
        );

        // A timeout long enough: acquired once the holder lets go.
        let mut waiter = Proc::spawn(
            url,
            &[
                "lock",
                &name,
                "--timeout",
                "30s",
                "--",
                "sh",
                "-c",
                "echo ran",
            ],
        );
        waiter.quiet();
        holder.signal(libc::SIGINT);
        assert_eq!(holder.wait(), 130, "{label}: {}", holder.stderr());
        waiter.expect(&format!("{name} key="));
        assert_eq!(waiter.line(), "ran", "{label}");
        assert_eq!(waiter.wait(), 0, "{label}: {}", waiter.stderr());

        // Free: --no-wait takes it at once.
        let (code, lines, stderr) = run(url, &["lock", &name, "--no-wait", "--", "true"]);
        assert_eq!(code, 0, "{label}: {stderr}");
        assert_eq!(lines.len(), 1, "{label}: {lines:?}");
    }
}

#[test]
fn write_locks_and_semaphores_give_up_too() {
    for server in servers() {
        let label = server.label;
        let url = Some(server.url.as_str());

        let rw = unique("rwlock-give-up");
        let mut reader = Proc::spawn(url, &["rwlock", &rw, "read"]);
        reader.expect(&format!("{rw} key="));
        let (code, _, stderr) = run(url, &["rwlock", &rw, "read", "--no-wait", "--", "true"]);
        assert_eq!(code, 0, "{label}: readers share: {stderr}");
        let (code, lines, stderr) = run(url, &["rwlock", &rw, "write", "--no-wait"]);
        assert_eq!(code, 1, "{label}: {stderr}");
        assert!(lines.is_empty(), "{label}: {lines:?}");
        let (code, _, stderr) = run(url, &["rwlock", &rw, "write", "--timeout", "300ms"]);
        assert_eq!(code, 1, "{label}: {stderr}");
        assert!(stderr.contains("not acquired within"), "{label}: {stderr}");

        let sem = unique("semaphore-give-up");
        let mut permit = Proc::spawn(url, &["semaphore", &sem, "1"]);
        permit.expect(&format!("{sem} key="));
        let (code, _, stderr) = run(url, &["semaphore", &sem, "1", "--no-wait", "--", "true"]);
        if code == 2 && stderr.contains("not supported") {
            eprintln!("{label} offers no semaphore: {stderr}");
        } else {
            assert_eq!(code, 1, "{label}: {stderr}");
            assert!(stderr.contains("no free permit"), "{label}: {stderr}");
        }
    }
}

/// `--lock-delay`: after a holder is killed (SIGKILL, no release), the next `distsync
/// lock` with the same delay is granted no sooner than the delay after the kill; after
/// its clean release the one after it is granted at once.
#[test]
fn lock_delay_withholds_the_grant_after_a_kill_only() {
    const DELAY: Duration = Duration::from_secs(3);
    for server in servers() {
        let name = unique("lock-delay");
        let url = Some(server.url.as_str());
        // A TTL that the waiting client's renewals keep alive on a loaded runner, where a
        // renewal can wait over a second for a CPU.
        let delayed = ["--ttl", "5s", "lock", &name, "--lock-delay", "3s", "--"];
        let holder_args = [&delayed[..], &["sh", "-c", WAIT_FOR_A_LINE]].concat();
        let mut holder = Proc::spawn(url, &holder_args);
        let held = holder.expect(&format!("{name} key="));
        let killed = Instant::now();
        holder.signal(libc::SIGKILL);

        let next_args = [&delayed[..], &["true"]].concat();
        let mut next = Proc::spawn(url, &next_args);
        let granted = next.expect(&format!("{name} key="));
        let took = killed.elapsed();
        assert!(
            took >= DELAY,
            "{}: granted {took:?} after the kill, inside the lock-delay",
            server.label
        );
        assert!(
            number(&granted, "token") > number(&held, "token"),
            "{}: {held} then {granted}",
            server.label
        );
        assert_eq!(next.wait(), 0, "{}: {}", server.label, next.stderr());

        let asked = Instant::now();
        let (code, lines, stderr) = run(url, &next_args);
        assert_eq!(code, 0, "{}: {stderr}", server.label);
        assert!(lines[0].starts_with(&format!("{name} key=")), "{lines:?}");
        assert!(
            asked.elapsed() < DELAY,
            "{}: granted {:?} after a clean release",
            server.label,
            asked.elapsed()
        );
    }
}

/// `--unfair`: the unfair lock excludes across processes, the fair lock of the same
/// name included, and its tokens keep growing.
#[test]
fn an_unfair_holder_excludes_unfair_and_fair_lockers() {
    for server in servers() {
        let name = unique("lock-unfair");
        let url = Some(server.url.as_str());
        let holder = ["lock", "--unfair", &name, "--", "sh", "-c", WAIT_FOR_A_LINE];
        let mut first = Proc::spawn(url, &holder);
        let first_token = number(&first.expect(&format!("{name} key=")), "token");
        let (code, _, stderr) = run(url, &["lock", "--unfair", &name, "--no-wait", "--", "true"]);
        assert_eq!(code, 1, "{}: {stderr}", server.label);
        let mut fair = Proc::spawn(url, &["lock", &name, "--", "true"]);
        fair.quiet();
        first.send("done");
        assert_eq!(first.wait(), 7, "{}: {}", server.label, first.stderr());
        let granted = number(&fair.expect(&format!("{name} key=")), "token");
        assert!(
            granted > first_token,
            "{}: tokens must increase: {first_token} then {granted}",
            server.label
        );
        assert_eq!(fair.wait(), 0, "{}: {}", server.label, fair.stderr());
    }
}
