//! Producers and consumers in child processes that write through a
//! [`CallerTransactions`], for the cases that kill and pause them at random points: the
//! parent side ([`Worker`]) and the child side ([`work`]).
//!
//! A worker is this program re-executed with the registered [`Launcher`], its
//! [`WorkerSpec`] as JSON in [`SPEC_VAR`] (the runner's `--child` mode looks for it
//! before a holder's spec). It connects to the spec's database and prints, on stdout,
//! lines starting with [`MARKER`]:
//! - `ready` once connected;
//! - a producer: `placed <id>` after each committed transaction of an order and its
//!   item, ids counting up from the spec's `first`;
//! - a consumer: `received <id>` when it holds an item, then `applied <id>` when the
//!   transaction of its effect and its acknowledgement committed, or `refused <id>`
//!   when the acknowledgement was refused (the delivery went stale: the consumer
//!   exits), or `rolled back <id>` when the store ended the transaction (a transient
//!   error: the connection broke and the transaction rolled back with it; the item
//!   is delivered again, and the consumer receives again); `lost` when its session is
//!   lost while it waits (it exits);
//! - `error <message>` when something fails (it then exits with status 1).
//!
//! A worker runs until it is killed or its stdin closes.

use std::sync::Arc;
use std::time::Duration;

use distsync_core::{Error, Name, Result, SessionOptions};
use serde::{Deserialize, Serialize};

use super::caller_transactions::CallerTransactions;
use super::child::{Launcher, ProtocolProcess, Say, MARKER};
use super::hook_error;

/// The environment variable carrying a worker's [`WorkerSpec`].
pub const SPEC_VAR: &str = "DISTSYNC_CONFORMANCE_WORKER";

/// How long a worker may take to start and connect.
const START_LIMIT: Duration = Duration::from_secs(60);

/// What a worker does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Places orders, each with its outbox item, one transaction each.
    Producer,
    /// Receives items and applies each, its effect and its acknowledgement in one
    /// transaction.
    Consumer,
}

/// What a worker is told, as passed in [`SPEC_VAR`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// The database's URL.
    pub url: String,
    /// Producer or consumer.
    pub role: Role,
    /// The tables' scope (see [`CallerTransactions::prepare`]).
    pub scope: String,
    /// The queue's name.
    pub queue: String,
    /// A producer's first order id.
    pub first: u64,
    /// A consumer's session TTL in milliseconds.
    pub ttl_ms: u64,
}

impl WorkerSpec {
    /// The spec in [`SPEC_VAR`]: `None` when this process is not a worker.
    pub fn from_env() -> Option<std::result::Result<Self, String>> {
        super::child::spec_from_env(SPEC_VAR)
    }
}

/// One line of a worker's protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Said {
    /// Connected.
    Ready,
    /// An order and its item committed.
    Placed(u64),
    /// An item held.
    Received(u64),
    /// An item's effect and acknowledgement committed.
    Applied(u64),
    /// An item's acknowledgement refused, its effect rolled back.
    Refused(u64),
    /// An item's transaction ended by the store (a transient error), its effect rolled
    /// back; the item is delivered again.
    RolledBack(u64),
    /// The consumer's session was lost while it waited.
    Lost,
}

impl Said {
    fn parse(line: &str) -> Option<std::result::Result<Self, String>> {
        let (_, message) = line.split_once(MARKER)?;
        let message = message.trim();
        let number = |prefix: &str| message.strip_prefix(prefix)?.parse().ok();
        Some(Ok(match message {
            "ready" => Self::Ready,
            "lost" => Self::Lost,
            _ => {
                if let Some(id) = number("placed ") {
                    Self::Placed(id)
                } else if let Some(id) = number("received ") {
                    Self::Received(id)
                } else if let Some(id) = number("applied ") {
                    Self::Applied(id)
                } else if let Some(id) = number("refused ") {
                    Self::Refused(id)
                } else if let Some(id) = number("rolled back ") {
                    Self::RolledBack(id)
                } else if let Some(error) = message.strip_prefix("error ") {
                    return Some(Err(error.to_owned()));
                } else {
                    return None;
                }
            }
        }))
    }
}

impl std::fmt::Display for Said {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ready => f.write_str("ready"),
            Self::Placed(id) => write!(f, "placed {id}"),
            Self::Received(id) => write!(f, "received {id}"),
            Self::Applied(id) => write!(f, "applied {id}"),
            Self::Refused(id) => write!(f, "refused {id}"),
            Self::RolledBack(id) => write!(f, "rolled back {id}"),
            Self::Lost => f.write_str("lost"),
        }
    }
}

/// A worker in a child process (the parent's handle). Killed when dropped.
pub struct Worker {
    process: ProtocolProcess,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("pid", &self.process.pid())
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// Starts a worker of `spec` with `launcher`; returns once it is ready.
    ///
    /// Cancel-safety: dropping the future kills the child.
    ///
    /// # Errors
    /// When the child cannot be started, fails, or is not ready within a minute.
    pub async fn spawn(launcher: &Launcher, spec: &WorkerSpec) -> Result<Self> {
        let mut worker = Self {
            process: ProtocolProcess::start(launcher, SPEC_VAR, spec, "worker")?,
        };
        match tokio::time::timeout(START_LIMIT, worker.next()).await {
            Ok(Ok(Said::Ready)) => Ok(worker),
            Ok(Ok(other)) => Err(hook_error(
                "waiting for the worker",
                format!("it said `{other}` before `ready`"),
            )),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(hook_error(
                "waiting for the worker",
                format!("not ready after {START_LIMIT:?}"),
            )),
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The worker's next line.
    ///
    /// Cancel-safety: a line being read when the future is dropped may be lost.
    ///
    /// # Errors
    /// An `error` line, or the output ending (the worker exited).
    pub async fn next(&mut self) -> Result<Said> {
        loop {
            let line = self.process.next_line().await?;
            match Said::parse(&line) {
                Some(Ok(said)) => return Ok(said),
                Some(Err(error)) => return Err(self.process.reported(error)),
                None => continue,
            }
        }
    }

    /// SIGKILLs the worker and reaps it.
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub async fn kill(&mut self) -> Result<()> {
        self.process.kill().await
    }

    /// SIGSTOPs the worker.
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub fn pause(&self) -> Result<()> {
        self.process.signal(libc::SIGSTOP)
    }

    /// SIGCONTs the worker.
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub fn resume(&self) -> Result<()> {
        self.process.signal(libc::SIGCONT)
    }
}

/// Writes one protocol line on stdout.
fn say(message: impl std::fmt::Display) {
    Say::default().line(message);
}

/// The child's side: works as `spec` says through `transactions` (see the [module
/// docs](self)) and returns the process exit status.
///
/// Cancel-safety: dropping the future stops the work; a transaction in flight is rolled
/// back with its connection.
pub async fn work(transactions: Arc<dyn CallerTransactions>, spec: WorkerSpec) -> i32 {
    match run(&*transactions, &spec).await {
        Ok(()) => 0,
        Err(error) => {
            say(format!("error {}", error.to_string().replace('\n', " ")));
            1
        }
    }
}

async fn run(transactions: &dyn CallerTransactions, spec: &WorkerSpec) -> Result<()> {
    let queue = Name::new(spec.queue.clone())?;
    match spec.role {
        Role::Producer => {
            say(Said::Ready);
            for id in spec.first.. {
                transactions.place(&spec.scope, &queue, id).await?;
                say(Said::Placed(id));
            }
            Ok(())
        }
        Role::Consumer => {
            let store = transactions.store().ok_or_else(|| {
                Error::unsupported("conformance", "consumers on a database that is no store")
            })?;
            let session = store
                .session(SessionOptions::with_ttl(Duration::from_millis(spec.ttl_ms)))
                .await?;
            let items = store.queue(queue)?;
            say(Said::Ready);
            loop {
                let delivery = match items.receive(&session).await {
                    Ok(delivery) => delivery,
                    Err(Error::SessionLost) => {
                        say(Said::Lost);
                        return Ok(());
                    }
                    Err(error) => return Err(error),
                };
                let id: u64 = std::str::from_utf8(delivery.item())
                    .ok()
                    .and_then(|text| text.parse().ok())
                    .ok_or_else(|| Error::InvalidArgument("an item that is no id".into()))?;
                say(Said::Received(id));
                match transactions.apply(&spec.scope, delivery).await {
                    Ok(()) => say(Said::Applied(id)),
                    Err(Error::SessionLost) => {
                        say(Said::Refused(id));
                        return Ok(());
                    }
                    // The delivery went with the transaction (nacked), and the item
                    // comes back: as a consumer retries, receive again.
                    Err(error) if error.is_transient() => {
                        tracing::debug!(%error, id, "a consumer's transaction rolled back");
                        say(Said::RolledBack(id));
                    }
                    Err(error) => return Err(error),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_anywhere_in_a_line() {
        for said in [
            Said::Ready,
            Said::Placed(3),
            Said::Received(4),
            Said::Applied(5),
            Said::Refused(6),
            Said::RolledBack(7),
            Said::Lost,
        ] {
            assert_eq!(
                Said::parse(&format!("noise {MARKER}{said}")),
                Some(Ok(said.clone()))
            );
        }
        assert_eq!(
            Said::parse(&format!("{MARKER}error boom")),
            Some(Err("boom".to_owned()))
        );
        assert_eq!(Said::parse("running 1 test"), None);
    }
}
