//! Test support: the server URL, and a lock holder in a child process which can be
//! killed (SIGKILL) or paused (SIGSTOP).
//!
//! The child is this very test binary, re-run with only its `lock_holder_child` test
//! (ignored in normal runs) and the lock to take in environment variables. Every test
//! binary that uses [`spawn_holder`] must define that test with [`lock_holder_child!`].

#![allow(dead_code)]

use std::process::Stdio;
use std::time::Duration;

use distsync_core::{Backend, Error, FencingToken, Name, SessionOptions};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const CHILD_LOCK: &str = "DISTSYNC_PG_CHILD_LOCK";
const CHILD_TTL_MS: &str = "DISTSYNC_PG_CHILD_TTL_MS";
const HOLDING: &str = "DISTSYNC-CHILD-HOLDING ";

/// The PostgreSQL URL (see [`distsync_conformance::server_url`]).
pub fn url() -> Option<String> {
    distsync_conformance::server_url("DISTSYNC_POSTGRES_URL")
}

fn io_error(doing: &str, error: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("{doing}: {error}"))
}

type Result<T> = std::result::Result<T, Error>;

/// A child process holding a lock.
pub struct ChildHolder {
    child: Child,
    pid: u32,
    token: FencingToken,
    killed: bool,
}

/// Starts a child process that takes lock `name` through a session of `ttl` and holds
/// it until killed; returns once it holds the lock.
pub async fn spawn_holder(url: &str, name: &Name, ttl: Duration) -> Result<ChildHolder> {
    let exe = std::env::current_exe().map_err(|e| io_error("finding the test binary", e))?;
    let mut child = Command::new(exe)
        .args([
            "lock_holder_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("DISTSYNC_POSTGRES_URL", url)
        .env(CHILD_LOCK, name.as_str())
        .env(CHILD_TTL_MS, ttl.as_millis().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| io_error("starting the lock holder child", e))?;
    let pid = child
        .id()
        .ok_or_else(|| io_error("starting the lock holder child", "it exited at once"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| io_error("reading the child", "no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let token = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines
            .next_line()
            .await
            .map_err(|e| io_error("reading the child", e))?
        {
            // libtest may print "test lock_holder_child ... " on the same line.
            if let Some((_, token)) = line.split_once(HOLDING) {
                return token
                    .trim()
                    .parse::<u64>()
                    .map_err(|e| io_error("parsing the child's token", e));
            }
        }
        Err(io_error(
            "waiting for the child",
            "it exited before holding the lock",
        ))
    })
    .await
    .map_err(|_| io_error("waiting for the child", "not holding after 30 s"))??;
    Ok(ChildHolder {
        child,
        pid,
        token: FencingToken(token),
        killed: false,
    })
}

async fn signal(pid: u32, signal: &str) -> Result<()> {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .await
        .map_err(|e| io_error("running kill", e))?;
    if status.success() {
        Ok(())
    } else {
        Err(io_error("signalling the child", status))
    }
}

impl ChildHolder {
    /// The fencing token of the child's grant.
    pub fn token(&self) -> FencingToken {
        self.token
    }

    /// Kills the child (SIGKILL): it releases nothing itself.
    pub async fn kill(&mut self) -> Result<()> {
        self.killed = true;
        self.child
            .kill()
            .await
            .map_err(|e| io_error("killing the child", e))
    }

    /// Pauses the child (SIGSTOP): it stops renewing its session.
    pub async fn pause(&mut self) -> Result<()> {
        signal(self.pid, "-STOP").await
    }

    /// Resumes a paused child (SIGCONT).
    pub async fn resume(&mut self) -> Result<()> {
        signal(self.pid, "-CONT").await
    }
}

impl Drop for ChildHolder {
    fn drop(&mut self) {
        if self.killed {
            return;
        }
        // SIGKILL ends a stopped process too; continue it anyway, quietly.
        let _ = self.child.start_kill();
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

/// The body of the child process: takes the lock named in the environment, prints its
/// token, and holds it until killed. Does nothing when not started as a child.
pub fn lock_holder_child() {
    let (Ok(name), Ok(ttl_ms)) = (std::env::var(CHILD_LOCK), std::env::var(CHILD_TTL_MS)) else {
        return;
    };
    let url = std::env::var("DISTSYNC_POSTGRES_URL").expect("the parent passes the URL");
    let ttl = Duration::from_millis(ttl_ms.parse().expect("a TTL in ms"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let backend = distsync_postgres::backend(&url).await.expect("connecting");
        let session = backend
            .session(SessionOptions::with_ttl(ttl))
            .await
            .expect("a session");
        let locker = backend
            .locker(&session, Name::new(name).expect("a valid name"))
            .expect("a locker");
        let guard = locker.lock().await.expect("the lock");
        println!("{HOLDING}{}", guard.token());
        tokio::time::sleep(Duration::from_secs(600)).await;
        drop(guard);
    });
}

/// Defines the `lock_holder_child` test that [`spawn_holder`] runs in a child process.
#[macro_export]
macro_rules! lock_holder_child {
    () => {
        #[test]
        #[ignore = "the child process of the lock-holder fault hook; started by the tests"]
        fn lock_holder_child() {
            support::lock_holder_child();
        }
    };
}
