//! `distsync status [PREFIX] [--format text|json]`: a held lock, its two waiters in
//! the order they are served, and a leader, on every server backend.
#![cfg(unix)]

use crate::common;

use std::time::Instant;

use common::{field, memory, number, servers, unique, Proc, DEADLINE};
use serde_json::Value;

/// `distsync status PREFIX --format json`, parsed.
fn json_status(url: &str, prefix: &str) -> Value {
    let (code, lines, stderr) = common::run(Some(url), &["status", prefix, "--format", "json"]);
    assert_eq!(code, 0, "status failed: {stderr}");
    assert_eq!(lines.len(), 1, "one JSON line: {lines:?}");
    serde_json::from_str(&lines[0]).unwrap_or_else(|error| panic!("{error}: {}", lines[0]))
}

/// The line of `kind` named `name` in a JSON report.
fn line<'a>(report: &'a Value, kind: &str, name: &str) -> Option<&'a Value> {
    report["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .find(|line| line["kind"] == kind && line["name"] == name)
}

/// Polls (bounded by [`DEADLINE`]) until the lock `name` shows `waiters` waiters: a
/// waiter's entry appears in the store once its process has joined the line.
fn until_waiters(url: &str, prefix: &str, name: &str, waiters: usize) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let report = json_status(url, prefix);
        let seen = line(&report, "lock", name)
            .and_then(|line| line["waiters"].as_array())
            .map_or(0, Vec::len);
        if seen == waiters {
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "never saw {waiters} waiters on {name}: {report}"
        );
    }
}

#[test]
fn status_shows_a_held_lock_two_waiters_in_order_and_a_leader() {
    for server in servers() {
        let label = server.label;
        let url = server.url.as_str();
        let base = format!("{}/", unique("status"));
        let lock = format!("{base}jobs");
        let election = format!("{base}leader");
        let hold = ["lock", lock.as_str(), "--", "sh", "-c", "read line"];

        let mut holder = Proc::spawn(Some(url), &hold);
        let held = holder.expect(&format!("{lock} key="));
        let mut first = Proc::spawn(Some(url), &hold);
        until_waiters(url, &base, &lock, 1);
        let mut second = Proc::spawn(Some(url), &hold);
        until_waiters(url, &base, &lock, 2);
        let mut leader = Proc::spawn(Some(url), &["elect", &election, "node-1"]);
        let elected = leader.expect(&format!("leader {election} value=node-1 term="));

        let report = json_status(url, &base);
        assert_eq!(report["backend"], label, "{report}");
        assert_eq!(report["prefix"], base.as_str());
        let locked = line(&report, "lock", &lock).unwrap_or_else(|| panic!("{label}: {report}"));
        let holders = locked["holders"].as_array().unwrap();
        assert_eq!(holders.len(), 1, "{label}: {locked}");
        assert_eq!(holders[0]["key"], field(&held, "key"), "{label}: {locked}");
        assert_eq!(
            holders[0]["token"],
            number(&held, "token"),
            "{label}: {locked}"
        );
        let waiters = locked["waiters"].as_array().unwrap();
        assert_eq!(waiters.len(), 2, "{label}: {locked}");
        assert!(
            waiters.iter().all(|w| w["token"].is_null()),
            "{label}: {locked}"
        );
        let (first_key, second_key) = (
            waiters[0]["key"].as_str().unwrap().to_owned(),
            waiters[1]["key"].as_str().unwrap().to_owned(),
        );
        let elect = line(&report, "election", &election)
            .unwrap_or_else(|| panic!("{label}: no election line: {report}"));
        assert_eq!(elect["leader"]["value"], "node-1", "{label}: {elect}");
        assert_eq!(
            elect["leader"]["term"],
            number(&elected, "term"),
            "{label}: {elect}"
        );

        // The text form: aligned rows under the header.
        let (code, rows, stderr) = common::run(Some(url), &["status", &base]);
        assert_eq!(code, 0, "{label}: {stderr}");
        assert!(rows[0].starts_with("KIND "), "{label}: {rows:#?}");
        let cells: Vec<Vec<&str>> = rows
            .iter()
            .map(|row| row.split_whitespace().collect())
            .collect();
        let row = |role: &str, name: &str| {
            cells
                .iter()
                .find(|cells| cells.get(1) == Some(&name) && cells.get(2) == Some(&role))
                .unwrap_or_else(|| panic!("{label}: no {role} row for {name}: {rows:#?}"))
        };
        let token = number(&held, "token").to_string();
        assert_eq!(row("holder", &lock)[4], token, "{label}");
        assert_eq!(row("holder", &lock)[6], field(&held, "key"), "{label}");
        assert_eq!(row("waiter-1", &lock)[6], first_key, "{label}");
        assert_eq!(row("waiter-2", &lock)[6], second_key, "{label}");
        assert_eq!(row("leader", &election)[7], "value=node-1", "{label}");
        let role_column = rows[0].find("ROLE").unwrap();
        for row in &rows[1..] {
            assert_eq!(row.as_bytes()[role_column - 1], b' ', "{label}: {row}");
            assert_ne!(row.as_bytes()[role_column], b' ', "{label}: {row}");
        }

        // Served in the order shown: the first waiter, then the second.
        holder.send("done");
        assert_eq!(holder.wait(), 0, "{label}: {}", holder.stderr());
        let got = first.expect(&format!("{lock} key="));
        assert_eq!(field(&got, "key"), first_key, "{label}");
        let report = until_waiters(url, &base, &lock, 1);
        let locked = line(&report, "lock", &lock).unwrap();
        assert_eq!(locked["holders"][0]["key"], first_key.as_str(), "{label}");
        assert_eq!(locked["waiters"][0]["key"], second_key.as_str(), "{label}");
        first.send("done");
        assert_eq!(first.wait(), 0, "{label}: {}", first.stderr());
        let got = second.expect(&format!("{lock} key="));
        assert_eq!(field(&got, "key"), second_key, "{label}");
        second.send("done");
        assert_eq!(second.wait(), 0, "{label}: {}", second.stderr());
        leader.signal(libc::SIGINT);
        assert_eq!(leader.wait(), 130, "{label}: {}", leader.stderr());

        // Once everyone has gone, nothing is left under the prefix.
        let report = json_status(url, &base);
        assert_eq!(
            report["lines"],
            Value::Array(Vec::new()),
            "{label}: {report}"
        );
    }
}

#[test]
fn an_empty_store_prints_the_header_only() {
    let (code, rows, stderr) = common::run(Some(&memory().url), &["status"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0].starts_with("KIND"), "{rows:?}");
    let (code, rows, stderr) = common::run(Some(&memory().url), &["status", "--format", "json"]);
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(&rows[0]).unwrap();
    assert_eq!(report["backend"], "memory");
    assert_eq!(report["lines"], Value::Array(Vec::new()));
}

/// Counters and latches in `distsync status`, on the servers whose backend reports them
/// (etcd, through the kv recipes; Redis and PostgreSQL list none, so they are skipped
/// here, and memory is one process only: the kv crate's unit test covers it).
#[test]
fn status_shows_counters_and_latches() {
    for server in servers() {
        let label = server.label;
        if label != "etcd" {
            eprintln!("{label}: status does not list counters and latches; skipped");
            continue;
        }
        let url = server.url.as_str();
        let base = format!("{}/", unique("status-counting"));
        let counter = format!("{base}visits");
        let latch = format!("{base}ready");
        let ok = |args: &[&str]| {
            let (code, lines, stderr) = common::run(Some(url), args);
            assert_eq!(code, 0, "{label}: distsync {args:?}: {stderr}");
            lines
        };
        ok(&["counter", &counter, "add", "42"]);
        ok(&["latch", &latch, "3", "count-down"]);

        let report = json_status(url, &base);
        assert_eq!(report["counters"][0]["name"], counter.as_str(), "{report}");
        assert_eq!(report["counters"][0]["value"], 42, "{report}");
        assert_eq!(report["latches"][0]["name"], latch.as_str(), "{report}");
        assert_eq!(report["latches"][0]["count"], 2, "{report}");
        assert_eq!(report["latches"][0]["initial"], 3, "{report}");

        let rows = ok(&["status", &base]);
        let cells: Vec<Vec<&str>> = rows
            .iter()
            .map(|row| row.split_whitespace().collect())
            .collect();
        assert!(
            cells
                .iter()
                .any(|cells| cells[..2] == ["counter", counter.as_str()]
                    && cells.last() == Some(&"value=42")),
            "{label}: {rows:#?}"
        );
        assert!(
            cells
                .iter()
                .any(|cells| cells[..2] == ["latch", latch.as_str()]
                    && cells.ends_with(&["count=2", "initial=3"])),
            "{label}: {rows:#?}"
        );
    }
}
