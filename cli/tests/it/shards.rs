//! `distsync shards` and `distsync group` on a real server: two processes share a
//! group's shards, `group members` and `status` show them, and when one is SIGKILLed the
//! other comes to own every shard, its command started again with them.
#![cfg(unix)]

use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{run, servers, unique, Proc};

const COUNT: u32 = 8;

/// The owner of each shard as `distsync status NAME` shows it.
fn owners(url: &str, name: &str) -> BTreeMap<u32, String> {
    let (code, lines, stderr) = run(Some(url), &["status", name]);
    assert_eq!(code, 0, "status failed: {stderr}");
    lines
        .iter()
        .filter(|line| line.starts_with("shard "))
        .filter_map(|line| {
            // Holders only: a waiter's role is `N:waiter-K`.
            let shard = line.split_whitespace().nth(2)?.parse().ok()?;
            Some((shard, common::field(line, "owner").to_owned()))
        })
        .collect()
}

/// Polls `status` until `done` holds for the owners, with a deadline.
fn until(
    url: &str,
    name: &str,
    what: &str,
    done: impl Fn(&BTreeMap<u32, String>) -> bool,
) -> BTreeMap<u32, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = owners(url, name);
        if done(&now) {
            return now;
        }
        assert!(Instant::now() < deadline, "never {what}: {now:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A `distsync shards` member whose command appends `member shards tokens` to `file`
/// and runs until its parent is gone.
fn member(url: &str, name: &str, id: &str, file: &str) -> Proc {
    let script = format!(
        "echo \"$DISTSYNC_MEMBER $DISTSYNC_SHARDS $DISTSYNC_SHARD_TOKENS\" >> {file}; \
         while kill -0 $PPID 2>/dev/null; do sleep 0.1; done"
    );
    let count = COUNT.to_string();
    let metadata = format!("addr-{id}");
    let args = [
        "--ttl",
        "2s",
        "shards",
        name,
        &count,
        "--member",
        id,
        "--metadata",
        &metadata,
        "--poll",
        "200ms",
        "--",
        "sh",
        "-c",
        &script,
    ];
    Proc::spawn(Some(url), &args)
}

#[test]
fn two_members_share_the_shards_and_a_survivor_takes_a_killed_ones() {
    let Some(server) = servers().into_iter().next() else {
        return;
    };
    let url = server.url.as_str();
    let name = unique("shards");
    let dir = std::env::temp_dir().join(format!("distsync-shards-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("runs");
    let _ = std::fs::remove_file(&file);
    let path = file.to_str().unwrap().to_owned();

    let mut a = member(url, &name, "a", &path);
    let b = member(url, &name, "b", &path);
    let shared = until(url, &name, "shared half and half", |owners| {
        owners.len() == COUNT as usize
            && owners.values().filter(|owner| *owner == "a").count() == COUNT as usize / 2
    });
    assert!(
        shared.values().all(|owner| owner == "a" || owner == "b"),
        "{shared:?}"
    );

    let (code, lines, stderr) = run(Some(url), &["group", &name, "members"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("member a ") && lines[0].ends_with("metadata=addr-a"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("member b ") && lines[1].ends_with("metadata=addr-b"),
        "{lines:?}"
    );

    b.signal(libc::SIGKILL);
    until(url, &name, "all owned by a", |owners| {
        owners.len() == COUNT as usize && owners.values().all(|owner| owner == "a")
    });
    let (_, lines, _) = run(Some(url), &["group", &name, "members"]);
    assert_eq!(
        lines.len(),
        1,
        "the killed member is still listed: {lines:?}"
    );

    // a's command ran with its half, then again with every shard; the shards that were
    // b's came with higher tokens than b's.
    let deadline = Instant::now() + Duration::from_secs(10);
    let runs = loop {
        let runs = std::fs::read_to_string(&file).unwrap_or_default();
        let all = (0..COUNT)
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(",");
        if runs
            .lines()
            .any(|line| line.starts_with(&format!("a {all} ")))
        {
            break runs;
        }
        assert!(
            Instant::now() < deadline,
            "a never ran with every shard: {runs}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let tokens = |line: &str| -> BTreeMap<u32, u64> {
        line.split_whitespace()
            .nth(2)
            .unwrap_or("")
            .split(',')
            .filter_map(|pair| {
                let (shard, token) = pair.split_once(':')?;
                Some((shard.parse().ok()?, token.parse().ok()?))
            })
            .collect()
    };
    let last_b = runs.lines().rfind(|l| l.starts_with("b ")).expect("b ran");
    let last_a = runs.lines().rfind(|l| l.starts_with("a ")).expect("a ran");
    let (before, after) = (tokens(last_b), tokens(last_a));
    for (shard, token) in &before {
        assert!(
            after[shard] > *token,
            "shard {shard}: token {} after b's {token}",
            after[shard]
        );
    }
    a.signal(libc::SIGTERM);
    assert_eq!(a.wait(), 130, "a interrupted exits 130: {}", a.stderr());
    let _ = std::fs::remove_dir_all(&dir);
}
