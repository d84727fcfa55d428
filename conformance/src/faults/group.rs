//! What the shared Redis groups of `scripts/servers.sh` (the Sentinel group of
//! [`super::sentinel`], the Redis Cluster of [`super::redis_cluster`]) have in common:
//! the tools they need, running the script's commands, an exclusive turn at a group
//! across processes, and URLs with other query parameters.
//!
//! A group is shared by every process on the machine: a case that fails it over first
//! takes its [`Turn`], so that two test processes never fail one group over at once.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use distsync_core::Result;

use super::cluster::{servers_script, servers_script_ready};
use super::hook_error;
use super::tools::{require, run};

/// How long a case waits for its turn at a group.
const TURN_WAIT: Duration = Duration::from_secs(55);

/// The URL `url` with its query parameters `query` (`key=value&...`) set, replacing
/// any of the same name.
pub fn with_query(url: &str, query: &str) -> String {
    let (base, old) = url.split_once('?').unwrap_or((url, ""));
    let new: Vec<&str> = query.split('&').filter(|pair| !pair.is_empty()).collect();
    let key = |pair: &str| pair.split('=').next().unwrap_or_default().to_owned();
    let mut pairs: Vec<&str> = old
        .split('&')
        .filter(|pair| !pair.is_empty() && !new.iter().any(|n| key(n) == key(pair)))
        .collect();
    pairs.extend(new);
    if pairs.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", pairs.join("&"))
    }
}

/// Whether the tools a Redis group's hooks need are there (`bash`, `redis-cli`,
/// `scripts/servers.sh`), or why not.
pub(crate) fn redis_group_available() -> std::result::Result<(), String> {
    require("redis-cli", "redis-tools")?;
    servers_script_ready().map(drop)
}

/// Runs `scripts/servers.sh args...` (bounded, see [`super::tools::run`]) and returns
/// its standard output.
pub(crate) async fn servers(args: &[&str]) -> Result<String> {
    let bash = require("bash", "bash").map_err(|reason| hook_error("servers.sh", reason))?;
    let mut all = vec![servers_script().to_string_lossy().into_owned()];
    all.extend(args.iter().map(|arg| (*arg).to_owned()));
    Ok(run(&bash, all, &[]).await?.stdout)
}

/// The node number a `scripts/servers.sh` command printed (the last line that is a
/// number), checked to be `expected` when given.
pub(crate) fn printed_member(command: &str, out: &str, expected: Option<usize>) -> Result<usize> {
    let member = out
        .lines()
        .rev()
        .find_map(|line| line.trim().parse::<usize>().ok())
        .ok_or_else(|| hook_error(command, format!("printed no node number: {out:?}")))?;
    match expected {
        Some(expected) if expected != member => Err(hook_error(
            command,
            format!("acted on node {member}, not node {expected}"),
        )),
        _ => Ok(member),
    }
}

/// An exclusive turn at a group, across processes: a file in the temporary directory
/// holding the owner's pid, made whole in one step (a file of its own linked into
/// place, which fails when the turn is taken), so that it never exists without its pid;
/// a turn whose owner is gone, or that holds no pid (left by a writer that crashed, or
/// that a full disk stopped), is taken over. Removed when dropped.
pub(crate) struct Turn {
    path: PathBuf,
    group: &'static str,
}

impl Turn {
    /// Waits (at most [`TURN_WAIT`]) for the turn at `group` (a file name part:
    /// `sentinel`, `redis-cluster`).
    pub(crate) async fn take(group: &'static str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("distsync-{group}-failover.turn"));
        static TAKES: AtomicU64 = AtomicU64::new(0);
        let pid = std::process::id();
        let take = TAKES.fetch_add(1, Ordering::Relaxed);
        // Removed however this call ends (a cancelled wait included).
        let mine = Scratch(path.with_extension(format!("turn.{pid}.{take}")));
        std::fs::write(&mine.0, pid.to_string())
            .map_err(|error| hook_error(format!("writing the {group} turn"), error))?;
        let deadline = tokio::time::Instant::now() + TURN_WAIT;
        loop {
            match std::fs::hard_link(&mine.0, &path) {
                Ok(()) => return Ok(Self { path, group }),
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner = std::fs::read_to_string(&path).unwrap_or_default();
                    let alive = owner
                        .trim()
                        .parse::<u32>()
                        .is_ok_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
                    if !alive {
                        tracing::warn!(group, owner = owner.trim(), "taking over a stale turn");
                        let _ = std::fs::remove_file(&path);
                        continue;
                    }
                }
                Err(error) => return Err(hook_error(format!("taking the {group} turn"), error)),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(hook_error(
                    format!("waiting for the {group} turn"),
                    format!("another process held it for {TURN_WAIT:?}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A file of this process's, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_file(&self.path) {
            tracing::warn!(%error, group = self.group, "could not give back a turn");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_set_or_replaced() {
        assert_eq!(
            with_query(
                "redis+sentinel://h/s?wait_replicas=1&namespace=a:",
                "wait_replicas=0"
            ),
            "redis+sentinel://h/s?namespace=a:&wait_replicas=0"
        );
        assert_eq!(
            with_query("redis+sentinel://h/s", "x=1"),
            "redis+sentinel://h/s?x=1"
        );
        assert_eq!(
            with_query("redis+sentinel://h/s?x=1", ""),
            "redis+sentinel://h/s?x=1"
        );
    }

    #[test]
    fn printed_node_numbers_are_read_and_checked() {
        assert_eq!(printed_member("c", "3\n", None).unwrap(), 3);
        assert_eq!(printed_member("c", "2\n5\n", Some(5)).unwrap(), 5);
        assert!(printed_member("c", "", None).is_err());
        assert!(printed_member("c", "4\n", Some(1)).is_err());
    }

    #[tokio::test]
    async fn a_turn_is_exclusive_and_given_back() {
        let group = "test-turn-exclusive";
        let path = std::env::temp_dir().join(format!("distsync-{group}-failover.turn"));
        let _ = std::fs::remove_file(&path);
        let turn = Turn::take(group).await.unwrap();
        assert!(path.is_file());
        // Another taker waits while the turn is held.
        let waiting = tokio::time::timeout(Duration::from_millis(300), Turn::take(group)).await;
        assert!(
            waiting.is_err(),
            "a second turn was granted while the first was held"
        );
        drop(turn);
        assert!(!path.exists());
        let again = tokio::time::timeout(Duration::from_secs(5), Turn::take(group))
            .await
            .expect("the turn given back is taken again")
            .unwrap();
        drop(again);
        // Nothing of the takers is left behind, the cancelled one's included.
        let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.starts_with(&format!("distsync-{group}-")))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    /// A turn file without a pid (its writer crashed, or a full disk stopped it) or
    /// with the pid of a process that is gone is taken over at once.
    #[tokio::test]
    async fn a_turn_without_a_live_owner_is_taken_over() {
        let group = "test-turn-stale";
        let path = std::env::temp_dir().join(format!("distsync-{group}-failover.turn"));
        for stale in ["", "not a pid", "4294967295"] {
            std::fs::write(&path, stale).unwrap();
            let turn = tokio::time::timeout(Duration::from_secs(5), Turn::take(group))
                .await
                .unwrap_or_else(|_| panic!("a turn holding {stale:?} was not taken over"))
                .unwrap();
            assert_eq!(
                std::fs::read_to_string(&path).unwrap(),
                std::process::id().to_string()
            );
            drop(turn);
        }
    }
}
