//! `distsync migrate` end to end: the real binary copying between real servers, each test
//! in namespaces of its own (etcd `/<ns>`, Redis `?namespace=<ns>:`, PostgreSQL
//! `?schema=<ns>`, MySQL `?table_prefix=<ns>_`, NATS `?bucket=<ns>`), which it deletes
//! afterwards where the server's command line tool is installed.
#![cfg(unix)]

use crate::common;

use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use common::{run, servers, Backend, Proc};

/// Pushed in this order...
const PUSHED: [(&str, u16); 7] = [
    ("b1", 1),
    ("a1", 0),
    ("c1", 9),
    ("b2", 1),
    ("a2", 0),
    ("with space", 0),
    ("b3", 1),
];
/// ... and popped in this one: lower priority first, FIFO within a priority.
const POPPED: [&str; 7] = ["a1", "a2", "with space", "b1", "b2", "b3", "c1"];

/// A store in a namespace of its own on one of the test servers.
struct Store {
    label: &'static str,
    url: String,
    server: String,
    namespace: String,
}

impl Store {
    fn new(server: &Backend, what: &str) -> Store {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        // Letters, digits and `_` only: valid as an etcd namespace, a Redis prefix, a
        // PostgreSQL schema (at most 63 bytes), a ZooKeeper chroot and a MySQL table
        // prefix.
        // Short enough for a MySQL table prefix (32 bytes with its `_`): the pid and
        // the clock's low 36 bits keep runs apart.
        let namespace = format!(
            "m_{what}_{:x}{:09x}",
            std::process::id(),
            nanos & 0xf_ffff_ffff
        );
        let base = server.url.trim_end_matches('/');
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = match server.label {
            "etcd" | "zookeeper" => format!("{base}/{namespace}"),
            "redis" => format!("{base}{separator}namespace={namespace}:"),
            "postgres" => format!("{base}{separator}schema={namespace}"),
            "mysql" => format!("{base}{separator}table_prefix={namespace}_"),
            "nats" => format!("{base}{separator}bucket={namespace}"),
            other => panic!("no namespaces for {other}"),
        };
        Store {
            label: server.label,
            url,
            server: server.url.clone(),
            namespace,
        }
    }

    /// Runs `distsync --backend <this store> ARGS`, which must succeed; its lines.
    fn ok(&self, args: &[&str]) -> Vec<String> {
        let (code, lines, stderr) = run(Some(&self.url), args);
        assert_eq!(code, 0, "{}: distsync {args:?}: {stderr}", self.label);
        lines
    }

    /// Every item of `queue`, popped with `--no-wait` until it is empty.
    fn pop_all(&self, queue: &str) -> Vec<String> {
        let mut items = Vec::new();
        loop {
            let (code, lines, stderr) = run(Some(&self.url), &["queue", queue, "pop", "--no-wait"]);
            match code {
                0 => items.extend(lines),
                1 if stderr.contains("empty") => return items,
                _ => panic!("{}: pop exited {code}: {stderr}", self.label),
            }
            assert!(items.len() <= PUSHED.len(), "{}: {items:?}", self.label);
        }
    }

    /// The result line of a dry-run migration of this store: what it holds.
    fn contents(&self) -> String {
        let (code, lines, stderr) = run(
            None,
            &[
                "migrate",
                "--from",
                &self.url,
                "--to",
                "memory://",
                "--dry-run",
            ],
        );
        assert_eq!(code, 0, "{}: {stderr}", self.label);
        assert_eq!(lines.len(), 2, "{}: {lines:?}", self.label);
        lines[0].clone()
    }
}

impl Drop for Store {
    /// Deletes the namespace with the server's command line tool, if installed.
    fn drop(&mut self) {
        let ns = &self.namespace;
        let deleted = match self.label {
            "etcd" => {
                let endpoints = self.server.trim_start_matches("etcd://");
                let endpoints = endpoints.split('/').next().unwrap_or(endpoints);
                [format!("{ns}/"), format!("__{ns}/")].iter().all(|prefix| {
                    quietly(
                        "etcdctl",
                        &["--endpoints", endpoints, "del", "--prefix", prefix],
                    )
                })
            }
            "redis" => {
                let pattern = format!("{{{ns}:*");
                match output(
                    "redis-cli",
                    &["-u", &self.server, "--scan", "--pattern", &pattern],
                ) {
                    Some(keys) if keys.is_empty() => true,
                    Some(keys) => {
                        let mut args = vec!["-u", self.server.as_str(), "UNLINK"];
                        args.extend(keys.lines());
                        quietly("redis-cli", &args)
                    }
                    None => false,
                }
            }
            "postgres" => quietly(
                "psql",
                &[
                    &self.server,
                    "-qc",
                    &format!("DROP SCHEMA IF EXISTS \"{ns}\" CASCADE"),
                ],
            ),
            "mysql" => drop_mysql_tables(&self.server, ns),
            // A bucket is one stream on the suite's own server, which goes with the
            // server; no NATS tool is installed to delete it sooner.
            "nats" => true,
            _ => true,
        };
        if !deleted {
            eprintln!(
                "note: could not delete the test namespace {ns} of {}",
                self.label
            );
        }
    }
}

/// Drops the tables of the prefix `<ns>_` with the `mariadb` client, logging in as
/// `server` (`mysql://user:password@host:port/db`) says; whether it could.
fn drop_mysql_tables(server: &str, ns: &str) -> bool {
    let Some(rest) = server.strip_prefix("mysql://") else {
        return false;
    };
    let rest = rest.split('?').next().unwrap_or(rest);
    let Some((login, place)) = rest.rsplit_once('@') else {
        return false;
    };
    let (user, password) = login.split_once(':').unwrap_or((login, ""));
    let Some((address, database)) = place.split_once('/') else {
        return false;
    };
    let (host, port) = address.split_once(':').unwrap_or((address, "3306"));
    let tables: Vec<String> = ["meta", "kv", "log", "leases"]
        .iter()
        .map(|table| format!("{ns}_{table}"))
        .collect();
    Command::new("mariadb")
        .args([
            "--no-defaults",
            "-h",
            host,
            "-P",
            port,
            "-u",
            user,
            database,
            "-e",
        ])
        .arg(format!("DROP TABLE IF EXISTS {}", tables.join(", ")))
        // The password through the environment, not the command line.
        .env("MYSQL_PWD", password)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Runs a tool, discarding its output; whether it ran and succeeded.
fn quietly(program: &str, args: &[&str]) -> bool {
    output(program, args).is_some()
}

/// A tool's standard output, if it ran and succeeded.
fn output(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The test server labelled `label`, if its URL is set (and its feature compiled in).
fn server(label: &str) -> Option<Backend> {
    let found = servers().into_iter().find(|server| server.label == label);
    if found.is_none() {
        eprintln!("\n!!! no {label} server: SKIPPING this migration test !!!\n");
    }
    found
}

/// `distsync migrate --from FROM --to TO [extra]`: exit code, lines, standard error.
fn migrate(from: &Store, to: &Store, extra: &[&str]) -> (i32, Vec<String>, String) {
    let mut args = vec!["migrate", "--from", &from.url, "--to", &to.url];
    args.extend(extra);
    run(None, &args)
}

/// Fills `source` with a queue of mixed priorities, three STM keys and a held barrier,
/// copies it to `there`, then from `there` to a fresh namespace of `source`'s server,
/// and pops every copy in the source's order.
fn round_trip(first: &Backend, second: &Backend) {
    let source = Store::new(first, "src");
    let there = Store::new(second, "dst");
    let back = Store::new(first, "back");
    for (item, priority) in PUSHED {
        source.ok(&[
            "queue",
            "jobs",
            "push",
            item,
            "--priority",
            &priority.to_string(),
        ]);
    }
    source.ok(&[
        "stm-bank",
        "--accounts",
        "3",
        "--workers",
        "1",
        "--transfers",
        "2",
    ]);
    source.ok(&["barrier", "gate", "hold"]);
    assert_eq!(source.ok(&["counter", "site/visits", "add", "41"]), ["41"]);
    assert_eq!(
        source.ok(&["latch", "deploy/ready", "3", "count-down"]),
        ["2"]
    );
    let expected = "queues=1 items=7 stm_keys=3 barriers=1 counters=1 latches=1 active_holds=0";

    let (code, lines, stderr) = migrate(&source, &there, &[]);
    assert_eq!(code, 0, "{} -> {}: {stderr}", source.label, there.label);
    assert_eq!(
        lines,
        [format!("{expected} dry_run=false"), "verified".into()]
    );
    let (code, lines, stderr) = migrate(&there, &back, &[]);
    assert_eq!(code, 0, "{} -> {}: {stderr}", there.label, back.label);
    assert_eq!(
        lines,
        [format!("{expected} dry_run=false"), "verified".into()]
    );

    assert_eq!(back.contents(), format!("{expected} dry_run=true"));
    assert_eq!(
        back.pop_all("jobs"),
        POPPED,
        "{} -> {} -> {}",
        source.label,
        there.label,
        back.label
    );
    assert_eq!(
        there.pop_all("jobs"),
        POPPED,
        "{} -> {}",
        source.label,
        there.label
    );
    // The source is left as it was.
    assert_eq!(source.ok(&["queue", "jobs", "len"]), ["7"]);

    // The counter and the latch arrived at their values, on both stores.
    for store in [&there, &back] {
        assert_eq!(
            store.ok(&["counter", "site/visits"]),
            ["41"],
            "{}",
            store.label
        );
        let count = store.ok(&["latch", "deploy/ready", "3", "count"]);
        assert_eq!(count, ["2"], "{}", store.label);
    }
    // Another run into a store that has them finds them at the source's values
    // already, and leaves them (the queue is appended to again).
    let (code, lines, stderr) = migrate(&source, &there, &[]);
    assert_eq!(
        code, 0,
        "{} -> {} again: {stderr}",
        source.label, there.label
    );
    assert_eq!(lines[1], "verified");
    assert_eq!(there.ok(&["counter", "site/visits"]), ["41"]);
    assert_eq!(there.ok(&["latch", "deploy/ready", "3", "count"]), ["2"]);
    // A destination counter at another value stops the next migration.
    assert_eq!(there.ok(&["counter", "site/visits", "add", "1"]), ["42"]);
    let (code, lines, stderr) = migrate(&source, &there, &["--dry-run"]);
    assert_eq!(code, 4, "{stderr}");
    assert!(lines.is_empty(), "{lines:?}");
    assert!(stderr.contains("site/visits"), "{stderr}");

    // The barrier arrived held: a waiter blocks until it is released.
    let mut waiter = Proc::spawn(Some(&back.url), &["barrier", "gate", "wait"]);
    waiter.quiet();
    back.ok(&["barrier", "gate", "release"]);
    assert_eq!(waiter.line(), "passed");
    assert_eq!(waiter.wait(), 0, "{}", waiter.stderr());
}

#[test]
fn etcd_to_postgres_and_back_preserves_queue_order() {
    let (Some(etcd), Some(postgres)) = (server("etcd"), server("postgres")) else {
        return;
    };
    round_trip(&etcd, &postgres);
}

#[test]
fn redis_to_postgres_and_back_preserves_queue_order() {
    let (Some(redis), Some(postgres)) = (server("redis"), server("postgres")) else {
        return;
    };
    round_trip(&redis, &postgres);
}

#[test]
fn postgres_to_redis_and_back_preserves_queue_order() {
    let (Some(postgres), Some(redis)) = (server("postgres"), server("redis")) else {
        return;
    };
    round_trip(&postgres, &redis);
}

#[test]
fn a_lock_held_by_another_process_refuses_the_migration_unless_forced() {
    for server in servers() {
        let label = server.label;
        let source = Store::new(&server, "held");
        let target = Store::new(&server, "target");
        source.ok(&["queue", "jobs", "push", "x"]);
        let mut holder = Proc::spawn(Some(&source.url), &["lock", "busy"]);
        holder.expect("busy key=");

        let (code, lines, stderr) = migrate(&source, &target, &[]);
        assert_eq!(code, 4, "{label}: {stderr}");
        assert!(lines.is_empty(), "{label}: {lines:?}");
        assert!(stderr.contains("1 active hold "), "{label}: {stderr}");
        assert!(
            stderr.contains("busy"),
            "{label}: the example key: {stderr}"
        );
        assert!(stderr.contains("--force"), "{label}: {stderr}");
        assert_eq!(target.ok(&["queue", "jobs", "len"]), ["0"], "{label}");

        // A dry run is refused the same way.
        let (code, _, stderr) = migrate(&source, &target, &["--dry-run"]);
        assert_eq!(code, 4, "{label}: {stderr}");

        let (code, lines, stderr) = migrate(&source, &target, &["--force"]);
        assert_eq!(code, 0, "{label}: {stderr}");
        assert_eq!(
            lines,
            [
                "queues=1 items=1 stm_keys=0 barriers=0 counters=0 latches=0 active_holds=1 dry_run=false",
                "verified"
            ],
            "{label}"
        );
        assert_eq!(target.ok(&["queue", "jobs", "len"]), ["1"], "{label}");

        holder.signal(libc::SIGINT);
        assert_eq!(holder.wait(), 130, "{label}: {}", holder.stderr());
        assert_eq!(
            source.contents(),
            "queues=1 items=1 stm_keys=0 barriers=0 counters=0 latches=0 active_holds=0 dry_run=true",
            "{label}: released once the holder is gone"
        );
    }
}

#[test]
fn a_dry_run_writes_nothing() {
    for server in servers() {
        let label = server.label;
        let source = Store::new(&server, "dry");
        let target = Store::new(&server, "drytarget");
        source.ok(&["queue", "jobs", "push", "x", "--priority", "3"]);
        source.ok(&["queue", "mail", "push", "y"]);
        source.ok(&["barrier", "gate", "hold"]);

        let (code, lines, stderr) = migrate(&source, &target, &["--dry-run"]);
        assert_eq!(code, 0, "{label}: {stderr}");
        assert_eq!(
            lines,
            [
                "queues=2 items=2 stm_keys=0 barriers=1 counters=0 latches=0 active_holds=0 dry_run=true",
                "dry run: nothing written"
            ],
            "{label}"
        );
        assert_eq!(
            target.contents(),
            "queues=0 items=0 stm_keys=0 barriers=0 counters=0 latches=0 active_holds=0 dry_run=true",
            "{label}"
        );
        assert_eq!(source.ok(&["queue", "jobs", "len"]), ["1"], "{label}");
    }
}

#[test]
fn bad_urls_and_arguments_are_usage_errors() {
    let (code, lines, stderr) = run(
        None,
        &["migrate", "--from", "zookeeper://h:1", "--to", "memory://"],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(lines.is_empty(), "{lines:?}");
    assert!(
        stderr.contains("--from") && stderr.contains("invalid url"),
        "{stderr}"
    );

    let (code, _, stderr) = run(
        None,
        &["migrate", "--from", "memory://", "--to", "not a url"],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--to"), "{stderr}");

    let (code, _, stderr) = run(None, &["migrate", "--from", "memory://"]);
    assert_eq!(code, 2, "{stderr}");

    let same = "redis://127.0.0.1:1";
    let (code, _, stderr) = run(None, &["migrate", "--from", same, "--to", same]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("same store"), "{stderr}");
}

#[test]
fn migrate_needs_no_backend_flag() {
    let (code, lines, stderr) = run(
        None,
        &["migrate", "--from", "memory://", "--to", "memory://"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        lines,
        [
            "queues=0 items=0 stm_keys=0 barriers=0 counters=0 latches=0 active_holds=0 dry_run=false",
            "verified"
        ]
    );
}

impl Store {
    /// This store with `layout=go` (an etcd store).
    fn in_gos_layout(mut self) -> Store {
        self.url.push_str("?layout=go");
        self
    }
}

#[test]
fn etcd_in_gos_layout_to_postgres_and_back_preserves_queue_order() {
    let (Some(etcd), Some(postgres)) = (server("etcd"), server("postgres")) else {
        return;
    };
    let source = Store::new(&etcd, "gosrc").in_gos_layout();
    let there = Store::new(&postgres, "godst");
    let back = Store::new(&etcd, "goback").in_gos_layout();
    for (item, priority) in PUSHED {
        let priority = priority.to_string();
        source.ok(&["queue", "jobs", "push", item, "--priority", &priority]);
    }
    source.ok(&["barrier", "gate", "hold"]);
    let expected = "queues=1 items=7 stm_keys=0 barriers=1 counters=0 latches=0 active_holds=0";
    for (from, to) in [(&source, &there), (&there, &back)] {
        let (code, lines, stderr) = migrate(from, to, &[]);
        assert_eq!(code, 0, "{} -> {}: {stderr}", from.url, to.url);
        assert_eq!(
            lines,
            [format!("{expected} dry_run=false"), "verified".into()]
        );
    }
    assert_eq!(back.pop_all("jobs"), POPPED);
    assert_eq!(source.pop_all("jobs"), POPPED);
}

/// One process of the Go peer (etcd's own Go recipes, `interop/etcd-go-peer`), fed
/// every command at once; its replies, which must all be `ok`.
fn go_peer(etcd: &Backend, namespace: &str, commands: &[String]) -> Option<Vec<String>> {
    use std::io::Write;

    let var = distsync_conformance::faults::GO_PEER_VAR;
    let Some(program) = std::env::var_os(var).filter(|p| !p.is_empty()) else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "{var} is unset but CI=true (scripts/go-peer.sh build)"
        );
        eprintln!("\n!!! {var} is unset: SKIPPING the Go migration test !!!\n");
        return None;
    };
    let endpoints = etcd.url.trim_start_matches("etcd://");
    let endpoints = endpoints.split(['/', '?']).next().unwrap_or(endpoints);
    let mut child = Command::new(program)
        .args([
            "--endpoints",
            endpoints,
            "--namespace",
            &format!("{namespace}/"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the Go peer starts");
    let mut stdin = child.stdin.take().expect("stdin");
    for command in commands {
        writeln!(stdin, "{command}").expect("writing to the Go peer");
    }
    drop(stdin);
    let output = child.wait_with_output().expect("the Go peer ends");
    let lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        lines.first().map(String::as_str),
        Some("ready"),
        "{lines:?}"
    );
    let replies = lines[1..].to_vec();
    assert_eq!(replies.len(), commands.len(), "{commands:?} -> {replies:?}");
    assert!(
        replies.iter().all(|reply| reply.starts_with("ok")),
        "{commands:?} -> {replies:?}"
    );
    Some(replies)
}

#[test]
fn state_written_by_gos_recipes_migrates_off_etcd_and_back_to_them() {
    let (Some(etcd), Some(redis)) = (server("etcd"), server("redis")) else {
        return;
    };
    let source = Store::new(&etcd, "gowrote").in_gos_layout();
    let there = Store::new(&redis, "fromgo");
    let back = Store::new(&etcd, "togo").in_gos_layout();
    let commands: Vec<String> = [
        "enqueue plain g1",
        "enqueue plain g2",
        "enqueue plain g3",
        "penqueue ranked 2 p2",
        "penqueue ranked 0 p0",
        "penqueue ranked 1 p1",
        "stm-put acct/a 100",
        "barrier-hold gate",
    ]
    .map(String::from)
    .to_vec();
    if go_peer(&etcd, &source.namespace, &commands).is_none() {
        return;
    }
    let expected = "queues=2 items=6 stm_keys=1 barriers=1 counters=0 latches=0 active_holds=0";
    assert_eq!(source.contents(), format!("{expected} dry_run=true"));
    for (from, to) in [(&source, &there), (&there, &back)] {
        let (code, lines, stderr) = migrate(from, to, &[]);
        assert_eq!(code, 0, "{} -> {}: {stderr}", from.url, to.url);
        assert_eq!(
            lines,
            [format!("{expected} dry_run=false"), "verified".into()]
        );
    }
    assert_eq!(there.pop_all("plain"), ["g1", "g2", "g3"]);
    assert_eq!(there.pop_all("ranked"), ["p0", "p1", "p2"]);
    // Go's recipes read what distsync wrote back into Go's layout.
    let reads: Vec<String> = [
        "dequeue plain",
        "dequeue plain",
        "dequeue plain",
        "pdequeue ranked",
        "pdequeue ranked",
        "pdequeue ranked",
        "stm-get acct/a",
    ]
    .map(String::from)
    .to_vec();
    let replies = go_peer(&etcd, &back.namespace, &reads).expect("the Go peer ran above");
    assert_eq!(
        replies,
        ["ok g1", "ok g2", "ok g3", "ok p0", "ok p1", "ok p2", "ok 100"]
    );
}
