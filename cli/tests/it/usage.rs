//! The binary's contract with scripts: exit codes, error messages, output lines, on
//! the in-process memory backend (no server needed).
#![cfg(unix)]

use crate::common;

use common::{command, field, number, run, unique, Proc};

#[test]
fn missing_backend_is_a_usage_error_naming_the_flag_and_the_variable() {
    let (code, lines, stderr) = run(None, &["lock", "a"]);
    assert_eq!(code, 2, "stderr: {stderr}");
    assert!(lines.is_empty(), "{lines:?}");
    assert!(stderr.contains("--backend"), "{stderr}");
    assert!(stderr.contains("DISTSYNC_URL"), "{stderr}");
}

#[test]
fn the_backend_can_come_from_the_environment() {
    let mut distsync = command(None, &["queue", "q", "len"]);
    distsync.env("DISTSYNC_URL", "memory://");
    let output = distsync.output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "0\n");
}

#[test]
fn the_backend_can_come_from_a_file_and_its_password_is_never_printed() {
    let dir = std::env::temp_dir().join(unique("distsync-url-file").replace('/', "-"));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good");
    std::fs::write(&good, "memory://\n").unwrap();
    let output = command(
        None,
        &[
            "--backend-file",
            good.to_str().unwrap(),
            "queue",
            "q",
            "len",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "0\n");

    // A URL the backend refuses: the error names it, with the password masked.
    let bad = dir.join("bad");
    std::fs::write(&bad, "memory://user:s3cret@shared?x=1\n").unwrap();
    let output = command(
        None,
        &["--backend-file", bad.to_str().unwrap(), "queue", "q", "len"],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("user:***@"), "{stderr}");
    assert!(
        !stderr.contains("s3cret"),
        "the password was printed: {stderr}"
    );

    let (code, _, stderr) = run(None, &["--backend-file", "/nonexistent/url", "lock", "a"]);
    assert_eq!(code, 2, "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_help_names_the_url_variable_but_never_shows_its_password() {
    for args in [
        &["--help"][..],
        &["lock", "--help"],
        &["queue", "q", "len", "-h"],
    ] {
        let mut distsync = command(None, args);
        distsync.env("DISTSYNC_URL", "redis://user:s3cret@127.0.0.1:1");
        distsync.env("DISTSYNC_URL_FILE", "/run/s3cret-url");
        let output = distsync.output().unwrap();
        let help = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {output:?}");
        assert!(help.contains("DISTSYNC_URL"), "{args:?}: {help}");
        assert!(
            !help.contains("s3cret"),
            "{args:?} printed the variable's value: {help}"
        );
    }
}

#[test]
fn an_invalid_name_is_a_usage_error_with_the_typed_message() {
    for args in [
        &["lock", "a//b"][..],
        &["queue", "/q", "len"],
        &["interactive", "election", "e/"],
    ] {
        let (code, _, stderr) = run(Some("memory://"), args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains("invalid name"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_bad_url_is_a_usage_error() {
    let (code, _, stderr) = run(Some("zookeeper://127.0.0.1:2181"), &["lock", "a"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("invalid url"), "{stderr}");
    assert!(stderr.contains("zookeeper"), "{stderr}");
}

#[cfg(not(feature = "etcd"))]
#[test]
fn a_backend_not_compiled_in_names_its_feature() {
    let (code, _, stderr) = run(Some("etcd://127.0.0.1:2379"), &["lock", "a"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("feature `etcd`"), "{stderr}");
}

#[test]
fn bad_arguments_are_usage_errors() {
    for args in [
        &["elect", "e"][..],
        &["rwlock", "r", "sideways"],
        &["lock", "a", "--ttl", "0"],
        &["lock", "a", "--ttl", "10x"],
        &["lock", "a", "--timeout", "0"],
        &["lock", "a", "--timeout", "1.5s"],
        &["lock", "a", "--timeout", "1s", "--no-wait"],
        &["lock", "a", "--grace", "-1"],
        &["queue", "q", "pop", "-0", "--format", "json"],
        &["queue", "q", "receive", "--format", "json", "--", "cat"],
        &["queue", "q", "push", "--format", "json", "not json"],
        &["queue", "q", "push", "--format", "json", "{\"base64\": 7}"],
        &["completions", "tcsh"],
    ] {
        let (code, _, stderr) = run(Some("memory://"), args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
    }
    let (code, _, stderr) = run(Some("memory://"), &["double-barrier", "d", "0"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("count"), "{stderr}");
}

#[test]
fn help_documents_the_exit_codes_and_every_url_form() {
    for flag in ["-h", "--help"] {
        let output = command(None, &[flag]).output().unwrap();
        assert_eq!(output.status.code(), Some(0));
        let help = String::from_utf8_lossy(&output.stdout);
        for needle in [
            "Exit codes:",
            "  0      success",
            "  1      nothing to take now or in time",
            "  2      bad arguments or configuration",
            "  3      the session was lost",
            "  4      the store or the operation failed",
            "  130    interrupted",
            "  CMD's  with `-- CMD`",
            "memory://",
            "etcd://",
            "redis://",
            "rediss://",
            "redis+sentinel://",
            "redis+cluster://",
            "postgres://",
        ] {
            assert!(help.contains(needle), "{flag} lacks {needle:?}:\n{help}");
        }
    }
    let output = command(None, &["--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for needle in [
        "DISTSYNC_URL",
        "--features full",
        "memory://NAME",
        "etcd://[user:password@]host:port[,host:port...][/namespace]",
        "layout=go",
        "rediss://[user[:password]@]host[:port][/db][?ca=PATH",
        "redis+sentinel://[user[:password]@]host[:port][,host[:port]...]/SERVICE",
        "wait_replicas=N",
        "redis+cluster://[user[:password]@]host[:port][,host[:port]...]",
        "postgres://[user[:password]@]host[:port]/database[?schema=S",
        "connect_timeout=DURATION",
        "`1500ms`, `2s`, `1m`",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
}

#[test]
fn completions_and_the_man_page_name_the_subcommands() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let output = command(None, &["completions", shell]).output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{shell}: {output:?}");
        let script = String::from_utf8_lossy(&output.stdout);
        assert!(script.contains("distsync"), "{shell}:\n{script}");
        for subcommand in ["double-barrier", "stm-bank", "receive"] {
            assert!(
                script.contains(subcommand),
                "{shell} lacks {subcommand}:\n{script}"
            );
        }
    }
    let output = command(None, &["man"]).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let page = String::from_utf8_lossy(&output.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH distsync 1"),
        "{page}"
    );
    for needle in [".TH distsync 1", "double\\-barrier", "queue", "Exit codes"] {
        assert!(
            page.contains(needle),
            "the man page lacks {needle:?}:\n{page}"
        );
    }
}

#[test]
fn nothing_to_take_is_exit_1_and_a_store_error_exit_4() {
    let name = unique("queue-empty");
    for args in [
        &["queue", &name, "pop", "--no-wait"][..],
        &["queue", &name, "receive", "--no-wait"],
    ] {
        let (code, lines, stderr) = run(Some("memory://"), args);
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert!(lines.is_empty(), "{args:?}: {lines:?}");
        assert!(
            stderr.contains(&format!("queue {name} is empty")),
            "{args:?}: {stderr}"
        );
    }
    for args in [
        &["queue", &name, "pop", "--timeout", "400ms"][..],
        &[
            "queue",
            &name,
            "receive",
            "--timeout",
            "400ms",
            "--",
            "sh",
            "-c",
            "echo ran",
        ],
    ] {
        let started = std::time::Instant::now();
        let (code, lines, stderr) = run(Some("memory://"), args);
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert!(
            lines.is_empty(),
            "{args:?}: the command must not run: {lines:?}"
        );
        assert!(
            stderr.contains("nothing received within 400ms"),
            "{args:?}: {stderr}"
        );
        assert!(
            started.elapsed() >= std::time::Duration::from_millis(400),
            "{args:?}: gave up after {:?}",
            started.elapsed()
        );
    }
}

#[cfg(feature = "redis")]
#[test]
fn a_store_that_refuses_the_connection_is_exit_4() {
    // A port nothing listens on: bound, then let go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}?connect_timeout=2s");
    let (code, lines, stderr) = run(Some(&url), &["queue", "q", "pop", "--no-wait"]);
    assert_eq!(code, 4, "{stderr}");
    assert!(lines.is_empty(), "{lines:?}");
    assert!(stderr.contains("connection"), "{stderr}");
}

#[test]
fn every_duration_flag_takes_units_and_refuses_a_bare_number() {
    let name = unique("durations");
    let (code, lines, stderr) = run(
        Some("memory://"),
        &[
            "--ttl",
            "1m",
            "--grace",
            "250ms",
            "lock",
            &name,
            "--timeout",
            "1500ms",
            "--",
            "true",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    // A bare number is refused on every flag, the message showing both spellings;
    // only `--grace 0` is taken.
    for (flag, value) in [("--ttl", "3"), ("--grace", "0.5"), ("--timeout", "400")] {
        let (code, _, stderr) = run(
            Some("memory://"),
            &["lock", &name, flag, value, "--", "true"],
        );
        assert_eq!(code, 2, "{flag} {value}: {stderr}");
        if value != "0.5" {
            assert!(
                stderr.contains(&format!("`{value}ms`")) && stderr.contains(&format!("`{value}s`")),
                "{flag} {value}: {stderr}"
            );
        }
    }
    let (code, _, stderr) = run(
        Some("memory://"),
        &["--grace", "0", "lock", &name, "--no-wait", "--", "true"],
    );
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn lock_runs_the_command_with_key_and_token_and_exits_with_its_code() {
    let name = unique("lock-cmd");
    let (code, lines, stderr) = run(
        Some("memory://"),
        &[
            "lock",
            &name,
            "--",
            "sh",
            "-c",
            "echo \"$DISTSYNC_LOCK_KEY $DISTSYNC_FENCING_TOKEN\"; exit 7",
        ],
    );
    assert_eq!(code, 7, "{stderr}");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with(&format!("{name} key=")), "{lines:?}");
    let (key, token) = (field(&lines[0], "key"), number(&lines[0], "token"));
    assert!(key.starts_with(&name), "{key}");
    assert_eq!(lines[1], format!("{key} {token}"));
}

#[test]
fn a_missing_command_exits_127_and_a_signal_128_plus_n() {
    let (code, _, stderr) = run(Some("memory://"), &["lock", "a", "--", "/nonexistent/cmd"]);
    assert_eq!(code, 127, "{stderr}");
    assert!(stderr.contains("/nonexistent/cmd"), "{stderr}");
    let (code, _, stderr) = run(
        Some("memory://"),
        &["lock", "a", "--", "sh", "-c", "kill -TERM $$"],
    );
    assert_eq!(code, 128 + 15, "{stderr}");
}

#[test]
fn interrupting_a_holder_exits_130() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let mut holder = Proc::spawn(Some("memory://"), &["lock", "held"]);
        holder.expect("held key=");
        holder.signal(signal);
        assert_eq!(holder.wait(), 130, "signal {signal}: {}", holder.stderr());
        assert!(holder.stderr().is_empty(), "{}", holder.stderr());
    }
}

#[test]
fn interrupting_the_command_forwards_the_signal_and_exits_130() {
    let mut holder = Proc::spawn(
        Some("memory://"),
        &[
            "lock",
            "held",
            "--",
            "sh",
            "-c",
            "trap 'echo got-term; exit 0' TERM; echo ready; while :; do sleep 0.05; done",
        ],
    );
    holder.expect("held key=");
    holder.expect("ready");
    holder.signal(libc::SIGTERM);
    holder.expect("got-term");
    assert_eq!(holder.wait(), 130, "{}", holder.stderr());
}

#[test]
fn queue_commands_print_stable_lines() {
    let mut repl = Proc::spawn(Some("memory://"), &["interactive", "queue", "q"]);
    for line in [
        "push a",
        "push low 9",
        "push b",
        "push",
        "len",
        "pop",
        "pop",
        "pop",
        "len",
        "frobnicate",
    ] {
        repl.send(line);
    }
    repl.close_stdin();
    assert_eq!(repl.wait(), 0, "{}", repl.stderr());
    assert_eq!(
        repl.rest(),
        [
            "pushed a",
            "pushed low",
            "pushed b",
            "must set value to push",
            "len 3",
            "popped a",
            "popped b",
            "popped low",
            "len 0",
            "unknown action: frobnicate",
        ]
    );
}

#[test]
fn the_lock_and_rwlock_demos_take_the_go_commands() {
    let mut lock = Proc::spawn(Some("memory://"), &["repl", "lock", "l"]);
    lock.send("lock");
    lock.expect("acquiring lock");
    let first = number(&lock.expect("acquired lock key=l/"), "token");
    lock.send("unlock");
    lock.expect("released lock");
    lock.send("lock");
    lock.expect("acquiring lock");
    let second = number(&lock.expect("acquired lock key=l/"), "token");
    assert!(second > first, "{second} > {first}");
    lock.close_stdin();
    assert_eq!(lock.wait(), 0, "{}", lock.stderr());

    let mut rwlock = Proc::spawn(Some("memory://"), &["repl", "rwlock", "rw"]);
    for line in ["r", "unlock", "w", "r", "unlock"] {
        rwlock.send(line);
    }
    rwlock.close_stdin();
    assert_eq!(rwlock.wait(), 0, "{}", rwlock.stderr());
    let lines = rwlock.rest();
    assert_eq!(lines.len(), 7, "{lines:?}");
    assert_eq!(lines[0], "acquiring read lock");
    assert!(
        lines[1].starts_with("acquired read lock key=/rwlock/rw/"),
        "{lines:?}"
    );
    assert!(!lines[1].contains("token="), "{lines:?}");
    assert_eq!(lines[2], "released read lock");
    assert_eq!(lines[3], "acquiring write lock");
    assert!(
        lines[4].starts_with("acquired write lock key=/rwlock/rw/"),
        "{lines:?}"
    );
    assert!(lines[4].contains(" token="), "{lines:?}");
    assert_eq!(lines[5], "error: already holding; unlock first");
    assert_eq!(lines[6], "released write lock");
}

#[test]
fn the_stm_bank_keeps_its_sum() {
    let (code, lines, stderr) = run(
        Some("memory://"),
        &["stm-bank", "--isolation", "serializable"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(lines.len(), 6, "{lines:?}");
    assert!(
        lines[0].starts_with("account accts/0 balance="),
        "{lines:?}"
    );
    let summary = &lines[5];
    assert_eq!(number(summary, "sum"), 500, "{summary}");
    assert_eq!(number(summary, "commits"), 1000, "{summary}");
    assert_eq!(field(summary, "isolation"), "Serializable");
    let balances: u64 = lines[..5].iter().map(|line| number(line, "balance")).sum();
    assert_eq!(balances, 500);
}

#[test]
fn the_double_barrier_enters_and_leaves_on_a_line() {
    let mut participant = Proc::spawn(Some("memory://"), &["double-barrier", "d", "1"]);
    participant.expect("entered");
    participant.quiet();
    participant.send("");
    participant.expect("left");
    assert_eq!(participant.wait(), 0, "{}", participant.stderr());
}
