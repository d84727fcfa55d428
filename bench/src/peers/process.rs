//! A peer library run in a child process of its own (Curator's JVM, etcd's Go
//! recipes), which the bench drives a line at a time on its standard input and reads a
//! line at a time from its standard output. What it prints on standard error is kept
//! for the error, should it fail.

use std::ffi::OsStr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;

use crate::Result;

/// How long a peer may take to hand over what it printed on standard error once
/// stopped.
const STDERR_TIMEOUT: Duration = Duration::from_secs(10);

/// A running peer process, killed when dropped.
pub(crate) struct PeerProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Option<JoinHandle<String>>,
    /// How long it may take to leave once told to.
    pub(crate) quit_within: Duration,
}

impl PeerProcess {
    /// Starts `program` with `args` and waits up to `ready_within` for its first line,
    /// which must be `ready`.
    ///
    /// # Errors
    /// `skipped: ...` when the program cannot run; the peer's failure (with its standard
    /// error) when it ends or says anything else first, or is not ready in time.
    pub(crate) async fn spawn(
        program: &OsStr,
        args: &[String],
        ready_within: Duration,
        quit_within: Duration,
    ) -> Result<Self> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| {
                format!(
                    "skipped: could not run {}: {error}",
                    program.to_string_lossy()
                )
            })?;
        let (Some(stdin), Some(stdout), Some(mut stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err("the peer's standard streams were not piped".into());
        };
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            // What it printed before a read error is kept.
            let _ = stderr.read_to_string(&mut text).await;
            text
        });
        let mut peer = Self {
            child,
            stdin,
            stdout: BufReader::new(stdout).lines(),
            stderr: Some(stderr),
            quit_within,
        };
        match tokio::time::timeout(ready_within, peer.line()).await {
            Ok(Ok(line)) if line == "ready" => Ok(peer),
            Ok(Ok(line)) => Err(peer
                .failed(&format!("expected `ready`, got {line:?}"))
                .await),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(peer
                .failed(&format!("not ready within {ready_within:?}"))
                .await),
        }
    }

    /// Writes the line `what` to the peer.
    pub(crate) async fn say(&mut self, what: &str) -> Result<()> {
        self.stdin.write_all(format!("{what}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// The peer's next line, or its failure (with what it printed on standard error)
    /// once it ended.
    pub(crate) async fn line(&mut self) -> Result<String> {
        match self.stdout.next_line().await? {
            Some(line) => Ok(line),
            None => Err(self.failed("the peer ended").await),
        }
    }

    /// `what`, with the peer's standard error: stops the peer first, so that its
    /// standard error ends.
    pub(crate) async fn failed(&mut self, what: &str) -> crate::BoxError {
        if let Err(error) = self.child.start_kill() {
            tracing::debug!(%error, "the peer could not be killed; it has ended");
        }
        let said = match self.stderr.take() {
            Some(task) => tokio::time::timeout(STDERR_TIMEOUT, task)
                .await
                .ok()
                .and_then(std::result::Result::ok)
                .unwrap_or_default(),
            None => String::new(),
        };
        let said = said.trim();
        if said.is_empty() {
            what.into()
        } else {
            format!("{what}: {said}").into()
        }
    }

    /// Tells the peer to leave (`quit`) and waits up to `quit_within` for it to exit
    /// with success.
    ///
    /// # Errors
    /// The peer's failure when it exits otherwise or not in time.
    pub(crate) async fn quit(mut self) -> Result<()> {
        self.say("quit").await?;
        let quit_within = self.quit_within;
        match tokio::time::timeout(quit_within, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(self
                .failed(&format!("the peer failed when leaving ({status})"))
                .await),
            Ok(Err(error)) => Err(error.into()),
            Err(_) => Err(self
                .failed(&format!("the peer did not leave within {quit_within:?}"))
                .await),
        }
    }
}
