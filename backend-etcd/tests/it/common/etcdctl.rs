//! Driving Debian's `etcdctl` (v3 API) as a child process with bounded waits.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// The binary the interop tests run.
pub(crate) const ETCDCTL: &str = "/usr/bin/etcdctl";

/// Whether `etcdctl` is installed; says loudly when not (a failure under `CI=true`).
pub(crate) fn available() -> bool {
    if Path::new(ETCDCTL).exists() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{ETCDCTL} is missing but CI=true: install Debian's etcd-client");
    }
    eprintln!("\n!!! SKIPPED: {ETCDCTL} is missing (Debian package etcd-client), so the interop tests did not run.\n");
    false
}

/// A running `etcdctl` whose standard output is read line by line.
pub(crate) struct Etcdctl {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    what: String,
}

impl Etcdctl {
    /// Starts `etcdctl --endpoints=<endpoints> <args...>` with the v3 API.
    pub(crate) fn spawn(endpoints: &str, args: &[&str]) -> Self {
        let mut child = Command::new(ETCDCTL)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("etcdctl starts");
        let stdout = child.stdout.take().expect("piped stdout");
        Self {
            child,
            lines: BufReader::new(stdout).lines(),
            what: format!("etcdctl {}", args.join(" ")),
        }
    }

    /// The next line of output, waiting at most `limit`; panics on timeout or end of
    /// output.
    pub(crate) async fn line(&mut self, limit: Duration) -> String {
        match tokio::time::timeout(limit, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => panic!("{}: output ended", self.what),
            Ok(Err(error)) => panic!("{}: reading its output failed: {error}", self.what),
            Err(_) => panic!("{}: no output line within {limit:?}", self.what),
        }
    }

    /// Whether the process is still running.
    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `signal` (e.g. `-STOP`) to the process.
    pub(crate) fn signal(&self, signal: &str) -> Result<(), String> {
        let pid = self
            .child
            .id()
            .ok_or_else(|| format!("{}: already exited", self.what))?;
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .map_err(|error| format!("running kill: {error}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("kill {signal} {pid}: {status}"))
        }
    }

    /// Asks the process to stop (SIGTERM: etcdctl then releases what it holds and
    /// revokes its session) and waits at most `limit` for it to exit. Returns whether
    /// it exited successfully.
    pub(crate) async fn terminate(&mut self, limit: Duration) -> bool {
        let _ = self.signal("-TERM");
        self.wait(limit).await
    }

    /// Waits at most `limit` for the process to exit; returns whether it succeeded.
    pub(crate) async fn wait(&mut self, limit: Duration) -> bool {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(Ok(status)) => status.success(),
            Ok(Err(error)) => panic!("{}: waiting failed: {error}", self.what),
            Err(_) => panic!("{}: did not exit within {limit:?}", self.what),
        }
    }
}

impl Drop for Etcdctl {
    fn drop(&mut self) {
        // Never leave a child behind, whatever the test did (SIGKILL ends a stopped
        // process too).
        let _ = self.child.start_kill();
    }
}
