//! Elections: the interactive demo scripted over standard input, two candidates in two
//! processes, `elect NAME VALUE` and `elect --listen`, and `elect NAME VALUE -- CMD`
//! (with and without `--once`) across a session revoked by the store.
#![cfg(unix)]

use crate::common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{field, memory, number, servers, unique, Backend, Proc, DEADLINE};
use distsync::session::SessionId;
use distsync::store::status::LineKind;

fn scripted_session(backend: &Backend) {
    let name = unique("interactive-election");
    let mut repl = Proc::spawn(Some(&backend.url), &["interactive", "election", &name]);
    let label = backend.label;

    repl.send("elect a");
    assert_eq!(repl.line(), "campaigning value=a", "{label}");
    let elected = repl.expect("elected value=a term=");
    let (term, key) = (number(&elected, "term"), field(&elected, "key").to_owned());
    // The key's layout is the backend's (etcd and memory: `<name>/<lease hex>`).
    assert!(!key.is_empty(), "{label}: {elected}");

    repl.send("query");
    assert_eq!(
        repl.line(),
        format!("current leader value=a term={term} key={key}"),
        "{label}"
    );
    repl.send("proclaim b");
    assert_eq!(repl.line(), "proclaimed value=b", "{label}");
    repl.send("query");
    assert_eq!(
        repl.line(),
        format!("current leader value=b term={term} key={key}"),
        "{label}"
    );
    repl.send("rev");
    assert_eq!(repl.line(), format!("current rev={term}"), "{label}");
    repl.send("resign");
    assert_eq!(repl.line(), "resigned", "{label}");
    repl.send("query");
    assert_eq!(repl.line(), "no leader", "{label}");
    repl.send("proclaim c");
    assert_eq!(repl.line(), "error: proclaim: not leader", "{label}");
    repl.send("rev");
    assert_eq!(repl.line(), "current rev=0", "{label}");
    repl.send("nonsense");
    assert_eq!(repl.line(), "unknown action: nonsense", "{label}");

    repl.close_stdin();
    assert_eq!(repl.wait(), 0, "{label}: {}", repl.stderr());
    assert!(repl.rest().is_empty(), "{label}");
}

#[test]
fn an_interactive_election_scripted_over_stdin() {
    scripted_session(&memory());
    for server in servers() {
        scripted_session(&server);
    }
}

#[test]
fn default_values_are_the_go_demos() {
    let mut repl = Proc::spawn(Some("memory://"), &["repl", "election", "e", "--id", "7"]);
    repl.send("elect");
    assert_eq!(repl.line(), "campaigning value=value-7-0");
    repl.expect("elected value=value-7-0 term=");
    repl.send("proclaim");
    assert_eq!(repl.line(), "proclaimed value=value-7-1");
    repl.send("elect");
    assert_eq!(repl.line(), "error: elect: already leader");
    repl.close_stdin();
    assert_eq!(repl.wait(), 0, "{}", repl.stderr());
}

#[test]
fn two_terminals_play_the_election_demo() {
    for server in servers() {
        let label = server.label;
        let name = unique("two-candidates");
        let url = Some(server.url.as_str());
        let mut first = Proc::spawn(url, &["interactive", "election", &name]);
        first.send("elect a");
        first.expect("campaigning value=a");
        let first_term = number(&first.expect("elected value=a term="), "term");

        let mut second = Proc::spawn(url, &["interactive", "election", &name]);
        second.send("elect b");
        second.expect("campaigning value=b");
        second.send("query");
        second.expect(&format!("current leader value=a term={first_term} "));
        second.send("watch");
        assert_eq!(second.line(), "watching", "{label}");
        second.expect(&format!("leader changed value=a term={first_term} "));
        second.quiet();

        first.send("resign");
        assert_eq!(first.line(), "resigned", "{label}");
        // The campaign's result and the watch's line come from two tasks: either order.
        let mut lines = [second.line(), second.line()];
        lines.sort();
        assert!(
            lines[0].starts_with("elected value=b term="),
            "{label}: {lines:?}"
        );
        assert!(
            lines[1].starts_with("leader changed value=b term="),
            "{label}: {lines:?}"
        );
        let second_term = number(&lines[0], "term");
        assert_eq!(number(&lines[1], "term"), second_term, "{label}");
        assert!(
            second_term > first_term,
            "{label}: {first_term} then {second_term}"
        );

        first.send("query");
        first.expect(&format!("current leader value=b term={second_term} "));
        first.close_stdin();
        second.close_stdin();
        assert_eq!(first.wait(), 0, "{label}: {}", first.stderr());
        assert_eq!(second.wait(), 0, "{label}: {}", second.stderr());
    }
}

#[test]
fn elect_holds_until_interrupted_and_listen_prints_every_leader() {
    for server in servers() {
        let label = server.label;
        let name = unique("elect-listen");
        let url = Some(server.url.as_str());
        let mut listener = Proc::spawn(url, &["elect", "--listen", &name]);
        listener.quiet();

        let mut one = Proc::spawn(url, &["elect", &name, "one"]);
        let elected = one.expect(&format!("leader {name} value=one term="));
        let one_term = number(&elected, "term");
        assert_eq!(listener.line(), format!("one term={one_term}"), "{label}");

        let mut two = Proc::spawn(url, &["elect", &name, "two"]);
        two.quiet();
        one.signal(libc::SIGINT);
        assert_eq!(one.wait(), 130, "{label}: {}", one.stderr());
        let elected = two.expect(&format!("leader {name} value=two term="));
        let two_term = number(&elected, "term");
        assert!(two_term > one_term, "{label}: {one_term} then {two_term}");
        assert_eq!(listener.line(), format!("two term={two_term}"), "{label}");

        two.signal(libc::SIGTERM);
        assert_eq!(two.wait(), 130, "{label}: {}", two.stderr());
        listener.signal(libc::SIGINT);
        assert_eq!(listener.wait(), 130, "{label}: {}", listener.stderr());
    }
}

/// CMD for the leader tests, run as `sh -c CMD_SCRIPT sh VALUE FILE`: appends
/// `start VALUE TERM` to FILE (TERM from the environment distsync gives it) and prints
/// `started VALUE`; on SIGTERM or SIGINT appends `stop VALUE`, prints `stopped VALUE`
/// and exits 0. FILE is shared by every candidate, so its order is the order in which
/// the commands really started and stopped. The trap comes first: a test signals the
/// command as soon as it reads `started VALUE`, and a shell that has not yet set its
/// trap dies of the signal without a word.
const CMD_SCRIPT: &str = r#"
trap 'echo "stop $1" >> "$2"; echo "stopped $1"; exit 0' TERM INT
echo "start $1 $DISTSYNC_FENCING_TOKEN" >> "$2"
echo "started $1"
while :; do sleep 0.05; done
"#;

/// A fresh file for [`CMD_SCRIPT`]'s markers, removed when dropped.
struct Markers(PathBuf);

impl Markers {
    fn new(what: &str) -> Markers {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        let path = std::env::temp_dir().join(format!(
            "distsync-{what}-{}-{nanos}.log",
            std::process::id()
        ));
        std::fs::write(&path, "").unwrap();
        Markers(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }

    /// The file's lines once it has `count` of them, polled until [`DEADLINE`].
    fn wait_for(&self, count: usize) -> Vec<String> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let lines = read_lines(&self.0);
            if lines.len() >= count {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "{count} markers expected within {DEADLINE:?}, found {lines:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Markers {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `distsync elect NAME VALUE [extra...] -- sh -c CMD_SCRIPT sh VALUE FILE`.
fn candidate(url: &str, name: &str, value: &str, extra: &[&str], markers: &Markers) -> Proc {
    let mut args = vec!["elect"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[name, value, "--", "sh", "-c", CMD_SCRIPT, "sh", value]);
    args.push(markers.path());
    Proc::spawn(Some(url), &args)
}

/// The servers on which a test process can end another process's session: every one
/// but ZooKeeper, where only a session's owner (who has its password) can end it. The
/// loss of a ZooKeeper leadership is measured by the conformance rows instead
/// (`election_*` on the zookeeper column), through a fault session of the same process.
fn servers_that_revoke() -> Vec<Backend> {
    servers()
        .into_iter()
        .filter(|server| server.label != "zookeeper")
        .collect()
}

/// Ends the session of the election's leader from the store's side, as an operator
/// would: its id comes from the store's status report.
fn revoke_leader(url: &str, name: &str) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let coordinator = distsync::connect(url).await.unwrap();
        let report = coordinator.status(name).await.unwrap();
        let line = report
            .lines
            .iter()
            .find(|line| line.kind == LineKind::Election && line.name == name)
            .unwrap_or_else(|| panic!("no election {name} in {report:?}"));
        let session = line.holders[0]
            .session
            .as_deref()
            .unwrap_or_else(|| panic!("no session recorded for the leader: {line:?}"));
        let id = u64::from_str_radix(session, 16).unwrap();
        coordinator
            .backend()
            .revoke_session(SessionId(id))
            .await
            .unwrap();
    });
}

/// Polls (bounded by [`DEADLINE`]) until `proc`'s standard error contains `needle`.
fn stderr_says(proc: &Proc, needle: &str) {
    let deadline = Instant::now() + DEADLINE;
    while !proc.stderr().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} on standard error within {DEADLINE:?}: {}",
            proc.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `--prefer` and `--hand-over-on-request`: c, behind b in line, asks to be preferred;
/// the leader a stops its command, hands over to c (b steps back) and exits with its
/// command's code; c leads in a higher term while b still waits.
#[test]
fn a_preferred_candidate_is_handed_the_leadership() {
    for server in servers() {
        let label = server.label;
        let url = server.url.as_str();
        let name = unique("elect-prefer");
        let markers = Markers::new("elect-prefer");

        let mut a = candidate(url, &name, "a", &["--hand-over-on-request"], &markers);
        let first = number(&a.expect(&format!("leader {name} value=a term=")), "term");
        assert_eq!(a.line(), "started a", "{label}");
        let mut b = candidate(url, &name, "b", &[], &markers);
        b.quiet();
        let mut c = candidate(url, &name, "c", &["--prefer"], &markers);

        let second = number(&c.expect(&format!("leader {name} value=c term=")), "term");
        assert!(second > first, "{label}: {first} then {second}");
        assert_eq!(c.line(), "started c", "{label}");
        assert_eq!(a.line(), "stopped a", "{label}: {}", a.stderr());
        // CMD_SCRIPT exits 0 on SIGTERM: the leader exits with its command's code.
        assert_eq!(a.wait(), 0, "{label}: {}", a.stderr());
        // b stepped back for c and waits behind it.
        b.quiet();
        let lines = markers.wait_for(3);
        assert_eq!(
            lines,
            [
                format!("start a {first}"),
                "stop a".to_owned(),
                format!("start c {second}")
            ],
            "{label}: the command stops before the successor's starts"
        );

        for (proc, value) in [(&mut c, "c"), (&mut b, "b")] {
            proc.signal(libc::SIGINT);
            if value == "c" {
                assert_eq!(proc.line(), "stopped c", "{label}");
            }
            assert_eq!(proc.wait(), 130, "{label}: {}", proc.stderr());
        }
    }
}

#[test]
fn the_command_runs_only_while_leader_and_the_loser_campaigns_again() {
    for server in servers_that_revoke() {
        let label = server.label;
        let url = server.url.as_str();
        let name = unique("elect-cmd");
        let markers = Markers::new("elect-cmd");

        let mut a = candidate(url, &name, "a", &[], &markers);
        let first = number(&a.expect(&format!("leader {name} value=a term=")), "term");
        assert_eq!(a.line(), "started a", "{label}");
        let mut b = candidate(url, &name, "b", &[], &markers);
        // b campaigns behind a: neither its leader line nor its command comes.
        b.quiet();
        assert_eq!(
            read_lines(&markers.0),
            [format!("start a {first}")],
            "{label}"
        );

        revoke_leader(url, &name);
        assert_eq!(a.line(), "stopped a", "{label}: {}", a.stderr());
        let second = number(&b.expect(&format!("leader {name} value=b term=")), "term");
        assert!(second > first, "{label}: {first} then {second}");
        assert_eq!(b.line(), "started b", "{label}");
        stderr_says(&a, &format!("lost leadership of {name} (term {first})"));
        // a is a candidate again, not gone: it waits behind b.
        a.quiet();

        // b ends (SIGTERM reaches its command, which stops before b resigns): a wins a
        // new term and runs its command again.
        b.signal(libc::SIGTERM);
        assert_eq!(b.line(), "stopped b", "{label}");
        assert_eq!(b.wait(), 130, "{label}: {}", b.stderr());
        let third = number(&a.expect(&format!("leader {name} value=a term=")), "term");
        assert!(third > second, "{label}: {second} then {third}");
        assert_eq!(a.line(), "started a", "{label}");

        let lines = markers.wait_for(5);
        assert_eq!(lines[0], format!("start a {first}"), "{label}: {lines:?}");
        // A store-side revocation hands b the leadership at once while a learns of it
        // by notification: a's stop and b's start may come in either order.
        let mut middle = [lines[1].clone(), lines[2].clone()];
        middle.sort();
        assert_eq!(
            middle,
            [format!("start b {second}"), "stop a".to_owned()],
            "{label}: {lines:?}"
        );
        // A resignation comes only after the command has exited.
        assert_eq!(
            lines[3..],
            ["stop b".to_owned(), format!("start a {third}")],
            "{label}"
        );

        a.signal(libc::SIGINT);
        assert_eq!(a.line(), "stopped a", "{label}");
        assert_eq!(a.wait(), 130, "{label}: {}", a.stderr());
        assert_eq!(markers.wait_for(6).len(), 6, "{label}");
    }
}

#[test]
fn once_exits_with_3_when_leadership_is_lost() {
    for server in servers_that_revoke() {
        let label = server.label;
        let url = server.url.as_str();

        let name = unique("elect-once-cmd");
        let markers = Markers::new("elect-once");
        let mut leader = candidate(url, &name, "a", &["--once"], &markers);
        leader.expect(&format!("leader {name} value=a term="));
        assert_eq!(leader.line(), "started a", "{label}");
        revoke_leader(url, &name);
        assert_eq!(leader.line(), "stopped a", "{label}");
        // CMD exited 0, but it ran unprotected for a while: the exit code says so.
        assert_eq!(leader.wait(), 3, "{label}: {}", leader.stderr());
        assert!(
            leader.stderr().contains("session lost"),
            "{label}: {}",
            leader.stderr()
        );

        let name = unique("elect-once-hold");
        let mut holder = Proc::spawn(Some(url), &["elect", "--once", &name, "a"]);
        holder.expect(&format!("leader {name} value=a term="));
        revoke_leader(url, &name);
        assert_eq!(holder.wait(), 3, "{label}: {}", holder.stderr());
        assert!(holder.rest().is_empty(), "{label}");
    }
}

#[test]
fn without_once_a_plain_leader_is_elected_again_after_a_loss() {
    for server in servers_that_revoke() {
        let label = server.label;
        let name = unique("elect-again");
        let mut holder = Proc::spawn(Some(&server.url), &["elect", &name, "a"]);
        let first = number(
            &holder.expect(&format!("leader {name} value=a term=")),
            "term",
        );
        revoke_leader(&server.url, &name);
        let second = number(
            &holder.expect(&format!("leader {name} value=a term=")),
            "term",
        );
        assert!(second > first, "{label}: {first} then {second}");
        stderr_says(
            &holder,
            &format!("lost leadership of {name} (term {first})"),
        );
        // A candidate interrupted while it waits withdraws and exits with 130.
        let mut waiter = Proc::spawn(Some(&server.url), &["elect", &name, "w"]);
        waiter.quiet();
        waiter.signal(libc::SIGINT);
        assert_eq!(waiter.wait(), 130, "{label}: {}", waiter.stderr());
        assert!(waiter.rest().is_empty(), "{label}");
        holder.signal(libc::SIGTERM);
        assert_eq!(holder.wait(), 130, "{label}: {}", holder.stderr());
    }
}

fn exit_codes_propagate(backend: &Backend) {
    let label = backend.label;
    let url = Some(backend.url.as_str());
    for once in [&[][..], &["--once"]] {
        let name = unique("elect-exit");
        let mut args = vec!["elect"];
        args.extend_from_slice(once);
        args.extend_from_slice(&[
            name.as_str(),
            "a",
            "--",
            "sh",
            "-c",
            "echo \"token=$DISTSYNC_FENCING_TOKEN election=$DISTSYNC_ELECTION\"; exit 7",
        ]);
        let (code, lines, stderr) = common::run(url, &args);
        assert_eq!(code, 7, "{label} {once:?}: {stderr}");
        assert_eq!(lines.len(), 2, "{label} {once:?}: {lines:?}");
        let term = number(&lines[0], "term");
        assert!(
            lines[0].starts_with(&format!("leader {name} value=a term=")),
            "{label}: {lines:?}"
        );
        assert_eq!(
            lines[1],
            format!("token={term} election={name}"),
            "{label} {once:?}"
        );
        assert!(stderr.is_empty(), "{label} {once:?}: {stderr}");

        // A CMD that cannot run ends the command as a shell would, campaigning no more.
        let name = unique("elect-missing");
        let mut args = vec!["elect"];
        args.extend_from_slice(once);
        args.extend_from_slice(&[name.as_str(), "a", "--", "/nonexistent/distsync-test-cmd"]);
        let (code, _, stderr) = common::run(url, &args);
        assert_eq!(code, 127, "{label} {once:?}: {stderr}");
    }
}

#[test]
fn the_commands_exit_code_is_elects() {
    exit_codes_propagate(&memory());
    for server in servers() {
        exit_codes_propagate(&server);
    }
}

/// A leader cut off from the store (a proxy that resets every connection) stops its
/// command before the other candidate's starts, then, once the store is reachable
/// again, campaigns again and runs its command on its next win.
#[test]
fn a_cut_off_leader_stops_its_command_first_and_campaigns_again_once_healed() {
    use distsync_conformance::faults::proxy::Proxy;
    use distsync_conformance::faults::PartitionMode;

    // The proxy's tasks run on this runtime's threads while the test blocks on lines.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for server in servers() {
        let label = server.label;
        let url = server.url.as_str();
        let coordinator = runtime.block_on(distsync::connect(url)).unwrap();
        if !coordinator.capabilities().partition_safe {
            eprintln!("{label}: the backend does not declare partition_safe; skipping");
            continue;
        }
        let (proxy, proxied) = runtime.block_on(Proxy::front(url)).unwrap();
        let name = unique("elect-partition");
        let markers = Markers::new("elect-partition");
        let short = ["--ttl", "3s", "--grace", "1s"];

        let mut a = candidate(&proxied, &name, "a", &short, &markers);
        let first = number(&a.expect(&format!("leader {name} value=a term=")), "term");
        assert_eq!(a.line(), "started a", "{label}");
        let mut b = candidate(url, &name, "b", &short, &markers);
        b.quiet();

        proxy.set(PartitionMode::Reset);
        let second = number(&b.expect(&format!("leader {name} value=b term=")), "term");
        assert_eq!(b.line(), "started b", "{label}");
        assert_eq!(
            markers.wait_for(3),
            [
                format!("start a {first}"),
                "stop a".to_owned(),
                format!("start b {second}")
            ],
            "{label}: a's command must stop before b's starts; a said: {}",
            a.stderr()
        );
        assert_eq!(a.line(), "stopped a", "{label}");
        stderr_says(&a, &format!("lost leadership of {name} (term {first})"));
        // a keeps trying to reach the store rather than exiting.
        a.quiet();

        proxy.heal();
        b.signal(libc::SIGTERM);
        assert_eq!(b.line(), "stopped b", "{label}");
        assert_eq!(b.wait(), 130, "{label}: {}", b.stderr());
        let third = number(&a.expect(&format!("leader {name} value=a term=")), "term");
        assert!(third > second, "{label}: {second} then {third}");
        assert_eq!(a.line(), "started a", "{label}");
        a.signal(libc::SIGINT);
        assert_eq!(a.wait(), 130, "{label}: {}", a.stderr());
    }
}
