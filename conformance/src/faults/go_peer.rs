//! etcd's own Go recipes as a peer ([`Hook::GoPeer`](super::Hook::GoPeer)): child
//! processes of the Go peer program (`interop/etcd-go-peer`, built from Debian's
//! `golang-etcd-server-dev` by `scripts/go-peer.sh build`), each a Go client of the
//! same etcd, driven a command line at a time, beside a distsync client in Go's key
//! layout (`layout=go`). The interop cases check every primitive that etcd's Go
//! `concurrency` and `recipes` packages have against Go's own code, in both directions.
//!
//! The program is found through [`GO_PEER_VAR`]; without it the hook is not offered.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use distsync_core::{Backend, Error, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The environment variable naming the Go peer program.
pub const GO_PEER_VAR: &str = "DISTSYNC_GO_PEER";

/// How long the Go peer may take to connect and say `ready`.
const START: Duration = Duration::from_secs(15);

/// The Go peer program, or why the hook is not offered.
pub(crate) fn program() -> std::result::Result<PathBuf, String> {
    let path = std::env::var_os(GO_PEER_VAR)
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| {
            format!(
                "{GO_PEER_VAR} is unset (scripts/go-peer.sh build prints the program to set it to)"
            )
        })?;
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{GO_PEER_VAR}={} is not a file", path.display()))
    }
}

/// The endpoints (`host:port,...`) and the namespace of an `etcd://` URL without
/// credentials, as the Go peer takes them.
pub(crate) fn endpoints_and_namespace(url: &str) -> Result<(String, String)> {
    let invalid_url = Error::invalid_url(url);
    let invalid = |reason: &str| invalid_url(reason.to_owned());
    let rest = url
        .strip_prefix("etcd://")
        .ok_or_else(|| invalid("the Go peer runs against etcd:// only"))?;
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.contains('@') {
        return Err(invalid(
            "the Go peer does not log in: use an etcd without auth",
        ));
    }
    let namespace = match path.trim_end_matches('/') {
        "" => String::new(),
        path => format!("{path}/"),
    };
    Ok((authority.to_owned(), namespace))
}

/// Go's side and distsync's side of one etcd (see the module docs).
pub struct GoPeer {
    program: PathBuf,
    endpoints: String,
    namespace: String,
    backend: Arc<dyn Backend>,
}

impl std::fmt::Debug for GoPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoPeer")
            .field("program", &self.program)
            .field("endpoints", &self.endpoints)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl GoPeer {
    /// A peer of `program` on `endpoints` under `namespace`, beside `backend` (a
    /// distsync client of the same etcd in Go's key layout).
    pub(crate) fn new(
        program: PathBuf,
        endpoints: String,
        namespace: String,
        backend: Arc<dyn Backend>,
    ) -> Self {
        Self {
            program,
            endpoints,
            namespace,
            backend,
        }
    }

    /// The distsync client, in Go's key layout.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The namespace both sides use (empty, or ending with `/`).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Starts one Go client (its own session, of `ttl_seconds`); returns once it is
    /// connected. Dropping it kills the process.
    ///
    /// # Errors
    /// [`Error::Backend`] when the program cannot start or does not say `ready`.
    pub async fn spawn(&self, ttl_seconds: u64) -> Result<GoClient> {
        let mut command = Command::new(&self.program);
        command
            .arg("--endpoints")
            .arg(&self.endpoints)
            .arg("--ttl")
            .arg(ttl_seconds.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if !self.namespace.is_empty() {
            command.arg("--namespace").arg(&self.namespace);
        }
        let mut child = command.spawn().map_err(|error| {
            Error::backend(
                "etcd",
                format!("starting the Go peer {}: {error}", self.program.display()),
            )
        })?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let (Some(stdin), Some(stdout)) = (stdin, stdout) else {
            return Err(Error::backend("etcd", "the Go peer's pipes are missing"));
        };
        let mut client = GoClient {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            pending: 0,
        };
        match tokio::time::timeout(START, client.lines.next_line()).await {
            Ok(Ok(Some(line))) if line == "ready" => Ok(client),
            other => Err(Error::backend(
                "etcd",
                format!("the Go peer did not say ready within {START:?}: {other:?}"),
            )),
        }
    }
}

/// One Go client process (see [`GoPeer::spawn`]): commands go in a line at a time and
/// each gets one reply line, in order. Killed when dropped.
///
/// Cancel-safety: a cancelled [`GoClient::reply`] leaves its line to the next call.
#[derive(Debug)]
pub struct GoClient {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    /// Commands sent whose replies are not read yet.
    pending: usize,
}

impl GoClient {
    /// Sends `command` without waiting for its reply (a blocking Go call, such as
    /// `lock NAME` behind a holder).
    ///
    /// # Errors
    /// [`Error::Backend`] when the process is gone.
    pub async fn send(&mut self, command: &str) -> Result<()> {
        let line = format!("{command}\n");
        self.stdin
            .write_all(line.as_bytes())
            .await
            .and(self.stdin.flush().await)
            .map_err(|error| Error::backend("etcd", format!("writing to the Go peer: {error}")))?;
        self.pending += 1;
        Ok(())
    }

    /// The reply to the oldest command sent: the tokens after `ok`.
    ///
    /// # Errors
    /// [`Error::Backend`] with Go's message for an `err` reply, or when the process
    /// ended.
    pub async fn reply(&mut self) -> Result<Vec<String>> {
        let line = self
            .lines
            .next_line()
            .await
            .map_err(|error| Error::backend("etcd", format!("reading from the Go peer: {error}")))?
            .ok_or_else(|| Error::backend("etcd", "the Go peer ended"))?;
        self.pending = self.pending.saturating_sub(1);
        let mut tokens = line.split(' ').map(str::to_owned);
        match tokens.next().as_deref() {
            Some("ok") => Ok(tokens.collect()),
            _ => Err(Error::backend(
                "etcd",
                format!("the Go peer answered {line:?}"),
            )),
        }
    }

    /// Whether a reply is waiting to be read, without waiting for one: a check that a
    /// blocked Go call is still blocked.
    ///
    /// # Errors
    /// As [`GoClient::reply`], for a reply that is there.
    pub async fn has_replied(&mut self) -> Result<bool> {
        match tokio::time::timeout(Duration::from_millis(1), self.reply()).await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(error)) => Err(error),
            Err(_) => Ok(false),
        }
    }

    /// Sends `command` and waits for its reply.
    ///
    /// # Errors
    /// As [`GoClient::send`] and [`GoClient::reply`].
    pub async fn call(&mut self, command: &str) -> Result<Vec<String>> {
        self.send(command).await?;
        self.reply().await
    }

    /// Kills the process.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}
