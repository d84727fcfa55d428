//! `distsync` SIGKILLed alone (as the OOM killer or a supervisor that signals one PID
//! does) while CMD and a grandchild of CMD run: both stop well before the hold's TTL,
//! and the next holder's CMD starts only once they are gone. One test per command
//! that runs CMD under a hold, and `shards` with three members under kills.
#![cfg(unix)]

use crate::common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{command, run, servers, unique, Backend, Proc, DEADLINE};

/// The session TTL of the holders: what a dead `distsync`'s hold lingers for.
const TTL: &str = "6s";
/// How long CMD and its grandchild may outlive their SIGKILLed `distsync`: well under
/// [`TTL`]. They get SIGTERM from the watchdog as soon as it reads the pipe's end, so
/// this is the watchdog's wake-up and two exits, on a loaded machine.
const GONE_WITHIN: Duration = Duration::from_secs(2);

/// A test server, `preferred` if this run has it (the watchdog is the same on every
/// store; the tests spread over several so that each command meets a real one).
fn server(preferred: &str) -> Option<Backend> {
    let all = servers();
    all.iter()
        .find(|server| server.label == preferred)
        .or_else(|| all.first())
        .cloned()
}

/// A directory of its own for one test's records.
fn records(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(what).replace('/', "-"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A shell fragment that appends a line to `$d/overlaps` for every process named in a
/// `$d/*.pids` file (other than its own `$t.pids`) that still runs (a zombie has ended).
const CHECK_OTHERS: &str = r#"for f in "$d"/*.pids; do
  [ -e "$f" ] && [ "$f" != "$d/$t.pids" ] || continue
  read -r pids shards < "$f"
  for p in $pids; do
    if [ -r /proc/$p/stat ] && [ "$(cut -d' ' -f3 /proc/$p/stat)" != Z ]; then
      case ",$shards," in *,all,*) hit=1 ;; *) hit= ;; esac
      for s in $(echo "$mine" | tr , ' '); do case ",$shards," in *",$s,"*) hit=1 ;; esac; done
      [ -n "$hit" ] && echo "$t started while $p of $f ($shards) runs" >> "$d/overlaps"
    fi
  done
done"#;

/// CMD: checks that no earlier holder's processes run, then records its own pid and
/// a background grandchild's in `dir/<tag>.pids` (with the shards it owns, `all`
/// outside `shards`), and waits for the grandchild.
fn holder(dir: &Path, tag: &str) -> Vec<String> {
    let script = format!(
        "d='{}'; t=\"{tag}${{DISTSYNC_MEMBER:+-$$}}\"; mine=${{DISTSYNC_SHARDS-all}}\n\
         {CHECK_OTHERS}\n\
         sleep 300 & echo \"$$ $! $mine\" > \"$d/$t.tmp\" && mv \"$d/$t.tmp\" \"$d/$t.pids\"\n\
         wait",
        dir.display()
    );
    vec!["sh".into(), "-c".into(), script]
}

/// The pids in `dir/<tag>.pids` (CMD's, then its grandchild's), once written.
fn pids(dir: &Path, tag: &str) -> Vec<i32> {
    let file = dir.join(format!("{tag}.pids"));
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Ok(text) = std::fs::read_to_string(&file) {
            return text
                .split_whitespace()
                .take(2)
                .map(|pid| pid.parse().unwrap())
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "{tag}'s CMD did not start within {DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `pid` runs (a zombie has ended; only its parent has not read its status).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

/// Waits until none of `pids` runs; panics after [`GONE_WITHIN`] from `killed`.
fn gone(pids: &[i32], killed: Instant, what: &str) -> Duration {
    loop {
        let alive: Vec<i32> = pids.iter().copied().filter(|&pid| running(pid)).collect();
        if alive.is_empty() {
            return killed.elapsed();
        }
        assert!(
            killed.elapsed() < GONE_WITHIN,
            "{what}: {alive:?} still run {GONE_WITHIN:?} after their distsync was SIGKILLed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What the `overlaps` file holds (empty: no CMD started while another's ran).
fn overlaps(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("overlaps")).unwrap_or_default()
}

/// `distsync [--ttl TTL] ARGS -- CMD` for holder `tag`.
fn start(server: &Backend, args: &[&str], dir: &Path, tag: &str) -> Proc {
    let cmd = holder(dir, tag);
    let mut all: Vec<&str> = vec!["--ttl", TTL];
    all.extend_from_slice(args);
    all.push("--");
    all.extend(cmd.iter().map(String::as_str));
    Proc::start(command(Some(&server.url), &all), &all)
}

/// Holder `a` runs CMD under `args`' hold, `b` waits for it; `a` is SIGKILLed alone.
/// CMD and its grandchild must be gone within [`GONE_WITHIN`], and `b`'s CMD must start
/// (when the store lets the hold go) with neither of them running.
fn next_holder_starts_after(server: &Backend, args: &[&str], what: &str) {
    let dir = records(what);
    let a = start(server, args, &dir, "a");
    let held = pids(&dir, "a");
    let mut b = start(server, args, &dir, "b");
    let killed = Instant::now();
    a.signal(libc::SIGKILL);
    let took = gone(&held, killed, what);
    let next = pids(&dir, "b");
    assert_eq!(
        overlaps(&dir),
        "",
        "{what} on {}: the next holder's CMD started beside the killed one's",
        server.label
    );
    eprintln!(
        "{what} on {}: CMD and grandchild gone {took:?} after the kill",
        server.label
    );
    b.signal(libc::SIGTERM);
    let code = b.wait();
    assert!(
        next.iter().all(|&pid| !running(pid)),
        "{what}: the second holder's CMD outlived it (exit {code})"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn lock_cmd_stops_when_distsync_is_killed() {
    let Some(server) = server("redis") else {
        return;
    };
    let name = unique("orphans-lock");
    next_holder_starts_after(&server, &["lock", &name], "lock");
}

#[test]
fn unfair_lock_cmd_stops_when_distsync_is_killed() {
    let Some(server) = server("etcd") else {
        return;
    };
    let name = unique("orphans-unfair");
    next_holder_starts_after(&server, &["lock", "--unfair", &name], "lock --unfair");
}

#[test]
fn elect_cmd_stops_when_distsync_is_killed() {
    let Some(server) = server("postgres") else {
        return;
    };
    let name = unique("orphans-elect");
    next_holder_starts_after(&server, &["elect", &name, "node"], "elect");
}

#[test]
fn rwlock_cmd_stops_when_distsync_is_killed() {
    let Some(server) = server("etcd") else {
        return;
    };
    let name = unique("orphans-rwlock");
    next_holder_starts_after(&server, &["rwlock", &name, "write"], "rwlock write");
}

#[test]
fn semaphore_cmd_stops_when_distsync_is_killed() {
    let Some(server) = server("zookeeper") else {
        return;
    };
    let name = unique("orphans-semaphore");
    next_holder_starts_after(&server, &["semaphore", &name, "1"], "semaphore");
}

#[test]
fn queue_receive_cmd_stops_when_distsync_is_killed() {
    let Some(server) = server("mysql") else {
        return;
    };
    let name = unique("orphans-queue");
    let (code, _, stderr) = run(Some(&server.url), &["queue", &name, "push", "item"]);
    assert_eq!(code, 0, "{stderr}");
    next_holder_starts_after(&server, &["queue", &name, "receive"], "queue receive");
}

/// A scheduled job whose CMD runs far longer than its TTL: the next occurrence's run
/// must not start beside the killed runner's.
#[test]
fn schedule_cmd_longer_than_its_ttl_stops_when_distsync_is_killed() {
    let Some(server) = server("redis") else {
        return;
    };
    let name = unique("orphans-schedule");
    next_holder_starts_after(
        &server,
        &["schedule", &name, "1s", "--at-most", TTL],
        "schedule",
    );
}

/// Three `distsync shards` members, one SIGKILLed alone every few seconds and started
/// again: every killed member's CMDs stop within [`GONE_WITHIN`], and no CMD ever
/// starts while another CMD owning one of its shards still runs.
#[test]
fn shards_under_kills_never_overlap() {
    let Some(server) = server("redis") else {
        return;
    };
    let name = unique("orphans-shards");
    let dir = records("orphans-shards");
    let args = ["shards", name.as_str(), "16"];
    let mut members: Vec<Proc> = (0..3)
        .map(|i| start(&server, &args, &dir, &format!("m{i}")))
        .collect();
    // Some CMD has started (a member may own no shard, and then runs none).
    wait_for_pids(&dir, 1);
    let mut stopped = 0;
    for round in 0..4 {
        // The live members take the dead one's shards once its TTL runs out, and the
        // restarted one takes some back.
        std::thread::sleep(Duration::from_secs(7));
        let victim = round % members.len();
        let held = member_pids(&dir, members[victim].id());
        let killed = Instant::now();
        members[victim].signal(libc::SIGKILL);
        gone(&held, killed, "shards");
        stopped += held.len() / 2;
        members[victim] = start(&server, &args, &dir, &format!("m{victim}"));
    }
    std::thread::sleep(Duration::from_secs(7));
    assert!(
        stopped > 0,
        "no killed member ran a CMD: the test proved nothing"
    );
    assert_eq!(
        overlaps(&dir),
        "",
        "shards on {}: a CMD started beside another owning its shards",
        server.label
    );
    for mut member in members {
        member.signal(libc::SIGTERM);
        member.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits until at least `count` CMDs have recorded themselves.
fn wait_for_pids(dir: &Path, count: usize) {
    let deadline = Instant::now() + DEADLINE;
    while std::fs::read_dir(dir)
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|entry| entry.path().extension().is_some_and(|ext| ext == "pids"))
        })
        .count()
        < count
    {
        assert!(Instant::now() < deadline, "fewer than {count} CMDs started");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The running CMDs (and grandchildren) of the member whose `distsync` is `pid`.
fn member_pids(dir: &Path, pid: u32) -> Vec<i32> {
    let mut held = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|ext| ext != "pids") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let pids: Vec<i32> = text
            .split_whitespace()
            .take(2)
            .filter_map(|pid| pid.parse().ok())
            .collect();
        if pids
            .first()
            .is_some_and(|&cmd| running(cmd) && parent(cmd) == Some(pid))
        {
            held.extend(pids);
        }
    }
    held
}

/// The parent of `pid`, from `/proc`.
fn parent(pid: i32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok()
}
