//! A safe run leaves nothing behind on a shared store: two runs of the safe profile at
//! once against the shared Redis and PostgreSQL (the URLs of `scripts/servers.sh env`),
//! each under a namespace of its own, both pass, and afterwards nothing is left under
//! either namespace, counted with [`distsync_core::Backend::count_prefix`]. Other test
//! binaries share these servers: only the runs' own namespaces are ever removed.

use std::process::{Command, Output};

use distsync_core::Name;

/// The cases the runs start (`--case` matches substrings): those that write durable
/// state (queue items, barriers, STM keys, counters, latches, rate limiters) beside
/// locks, elections and semaphores, so the clean-up has something to remove, and one
/// through the partition proxy. The whole safe profile, run twice at once per store,
/// takes too long for a test; the child-process holders, whose 1 s sessions a loaded
/// machine can starve, have their own tests.
const CASES: [&str; 12] = [
    "lock_mutual_exclusion",
    "election_one_leader",
    "queue_fifo",
    "barrier_blocks_until_release",
    "double_barrier_enter_leave",
    "semaphore_bounded_holders",
    "stm_conflict_serializable",
    "counter_concurrent_adds",
    "counter_adds_across_partition",
    "latch_released_at_zero",
    "rate_limiter_contention",
    "stm_bank_serializable_snapshot",
];

fn namespace(store: &str, run: usize) -> Name {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    Name::new(format!(
        "conf/cleanup-test-{store}-{}-{nanos:x}-{run}",
        std::process::id()
    ))
    .expect("a valid name")
}

fn run(url: &str, namespace: &Name) -> std::process::Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_distsync-conformance"));
    command.args([
        "--backend",
        url,
        "--profile",
        "safe",
        "--namespace",
        namespace.as_str(),
    ]);
    for case in CASES {
        command.args(["--case", case]);
    }
    command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting the runner")
}

async fn check_store(store: &str, var: &str) {
    let Ok(url) = std::env::var(var) else {
        assert!(
            std::env::var("CI").is_err(),
            "{var} must be set under CI (scripts/servers.sh env)"
        );
        eprintln!("{var} is not set: skipping {store}");
        return;
    };
    let coordinator = distsync::connect(&url).await.expect("connecting");
    let backend = coordinator.backend();
    let namespaces = [namespace(store, 1), namespace(store, 2)];
    for namespace in &namespaces {
        assert_eq!(backend.count_prefix(namespace).await.unwrap(), 0, "before");
    }
    // Both runs at once: each is the other's "other suite" on the shared store.
    let children: Vec<_> = namespaces.iter().map(|ns| run(&url, ns)).collect();
    let outputs: Vec<Output> = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|child| child.wait_with_output().expect("the runner's output"))
            .collect()
    })
    .await
    .expect("waiting");
    for (namespace, output) in namespaces.iter().zip(&outputs) {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{store}:\n{stderr}\n{stdout}"
        );
        let purged = stderr
            .lines()
            .find(|line| line.contains(&format!("clean-up of `{namespace}`:")))
            .unwrap_or_else(|| panic!("no clean-up line:\n{stderr}"));
        assert!(purged.ends_with(", 0 left"), "{purged}");
        assert!(
            !purged.contains(": 0 entries removed"),
            "the run wrote nothing: {purged}"
        );
        assert!(stdout.contains("entries removed, 0 left"), "{stdout}");
        assert_eq!(
            backend.count_prefix(namespace).await.unwrap(),
            0,
            "{store}: entries left under {namespace}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_safe_runs_at_once_leave_nothing_on_redis() {
    if cfg!(feature = "redis") {
        check_store("redis", "DISTSYNC_REDIS_URL").await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_safe_runs_at_once_leave_nothing_on_postgres() {
    if cfg!(feature = "postgres") {
        check_store("postgres", "DISTSYNC_POSTGRES_URL").await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_safe_run_on_memory_reports_its_clean_up() {
    let output = Command::new(env!("CARGO_BIN_EXE_distsync-conformance"))
        .args([
            "--backend",
            "memory://",
            "--profile",
            "safe",
            "--case",
            "queue_fifo",
        ])
        .output()
        .expect("running the runner");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("Every case ran under the names `conf/run-"),
        "{stdout}"
    );
    assert!(stdout.contains("entries removed, 0 left"), "{stdout}");
}
