//! `distsync schedule`: three processes, killed and restarted, run a command once per
//! occurrence on a real server.
#![cfg(unix)]

use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{command, servers, unique, Proc};

const INTERVAL_MS: u64 = 1000;
const AT_LEAST_MS: u64 = 800;
/// How long after a kill an occurrence may be missed: the killed runner's lock lingers
/// for its session's TTL (`--at-most 2s`, at least the backend's minimum: 2 s on etcd),
/// and an occurrence that falls then is skipped.
const AFTER_KILL_MS: u64 = 3500;
/// How long before a kill an occurrence may be missed: the killed process may have
/// claimed it (the claim is the store's record that it ran) and died before its CMD
/// wrote anything; its CMD then never runs, as the watchdog stops it with its
/// `distsync`. One interval covers the claim and the start of CMD.
const BEFORE_KILL_MS: u64 = INTERVAL_MS;
/// How long a started process may take to connect and join before it counts as live.
const SETTLE_MS: u64 = 2000;

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// A `distsync schedule` process, appending `occurrence token replica start-ms` to
/// `file` for each run, the start as the job's record has it.
fn start(url: &str, name: &str, file: &str, replica: usize) -> (Proc, u64) {
    let script = format!(
        "echo \"$DISTSYNC_OCCURRENCE_MS $DISTSYNC_FENCING_TOKEN $REPLICA $DISTSYNC_STARTED_MS\" \
         >> {file}"
    );
    let at_least = format!("{AT_LEAST_MS}ms");
    let args = [
        "schedule",
        name,
        "1s",
        "--at-most",
        "2s",
        "--at-least",
        &at_least,
        "--skip-after",
        "900ms",
        "--",
        "sh",
        "-c",
        &script,
    ];
    let mut command = command(Some(url), &args);
    command.env("REPLICA", replica.to_string());
    (Proc::start(command, &args), now_ms())
}

type Procs = Vec<Option<(Proc, u64)>>;

/// SIGKILLs process `index`, recording its live window and the kill.
fn kill(procs: &mut Procs, index: usize, live: &mut Vec<(u64, u64)>, kills: &mut Vec<u64>) {
    let (proc, started) = procs[index].take().unwrap();
    proc.signal(libc::SIGKILL);
    let at = now_ms();
    kills.push(at);
    live.push((started + SETTLE_MS, at));
}

#[test]
fn three_processes_killed_and_restarted_run_each_occurrence_once() {
    let Some(server) = servers().into_iter().next() else {
        return;
    };
    let url = server.url.as_str();
    let name = unique("schedule");
    let dir = std::env::temp_dir().join(format!("distsync-schedule-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("runs");
    let _ = std::fs::remove_file(&file);
    let path = file.to_str().unwrap().to_owned();

    // Live windows (from settled to killed) and kill times.
    let mut live: Vec<(u64, u64)> = Vec::new();
    let mut kills: Vec<u64> = Vec::new();
    let mut procs: Procs = (0..3).map(|i| Some(start(url, &name, &path, i))).collect();
    let pause = |ms: u64| std::thread::sleep(Duration::from_millis(ms));

    pause(4000);
    kill(&mut procs, 0, &mut live, &mut kills);
    pause(1000);
    procs[0] = Some(start(url, &name, &path, 3));
    pause(3000);
    kill(&mut procs, 1, &mut live, &mut kills);
    kill(&mut procs, 2, &mut live, &mut kills);
    pause(1500);
    procs[1] = Some(start(url, &name, &path, 4));
    procs[2] = Some(start(url, &name, &path, 5));
    pause(3000);
    kill(&mut procs, 0, &mut live, &mut kills);
    pause(3500);
    let end = now_ms();
    for slot in &mut procs {
        if let Some((mut proc, started)) = slot.take() {
            proc.signal(libc::SIGTERM);
            assert_eq!(proc.wait(), 130, "{}", proc.stderr());
            live.push((started + SETTLE_MS, end));
        }
    }

    let text = std::fs::read_to_string(&file).unwrap_or_default();
    let mut runs: BTreeMap<u64, (u64, String, u64)> = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(
            fields.len(),
            4,
            "{}: bad line {line:?} in\n{text}",
            server.label
        );
        let occurrence: u64 = fields[0].parse().unwrap();
        let token: u64 = fields[1].parse().unwrap();
        let started: u64 = fields[3].parse().unwrap();
        let earlier = runs.insert(occurrence, (token, fields[2].to_owned(), started));
        assert!(
            earlier.is_none(),
            "{}: occurrence {occurrence} ran twice:\n{text}",
            server.label
        );
    }
    assert!(
        runs.len() >= 8,
        "{}: only {} runs:\n{text}",
        server.label,
        runs.len()
    );
    let ordered: Vec<_> = runs.iter().collect();
    for pair in ordered.windows(2) {
        let ((_, (token_a, _, start_a)), (_, (token_b, _, start_b))) = (pair[0], pair[1]);
        assert!(
            token_a < token_b,
            "{}: tokens did not grow:\n{text}",
            server.label
        );
        // The starts the claims recorded: what `--at-least` is judged by.
        assert!(
            start_b.saturating_sub(*start_a) >= AT_LEAST_MS,
            "{}: two runs closer than --at-least:\n{text}",
            server.label
        );
    }
    // Every occurrence that fell while a settled process was alive, away from the
    // kills (one interval before each, the lingering TTL after), ran.
    let first = live.iter().map(|window| window.0).min().unwrap();
    let mut occurrence = first.div_ceil(INTERVAL_MS) * INTERVAL_MS;
    while occurrence < end {
        let covered = live
            .iter()
            .any(|&(from, to)| from <= occurrence && occurrence + 1000 <= to);
        let near_a_kill = kills
            .iter()
            .any(|&at| at <= occurrence + BEFORE_KILL_MS && occurrence <= at + AFTER_KILL_MS);
        if covered && !near_a_kill {
            assert!(
                runs.contains_key(&occurrence),
                "{}: occurrence {occurrence} was skipped while a process was alive \
                 (live {live:?}, kills {kills:?}):\n{text}",
                server.label
            );
        }
        occurrence += INTERVAL_MS;
    }
    eprintln!(
        "{}: {} runs, kills at {kills:?}:\n{text}",
        server.label,
        runs.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
