//! Holders in child processes: the parent side ([`spawn`], [`ChildHolder`]) and the
//! child side ([`serve`], [`child_main`]).
//!
//! # How a child is started
//! The child is this very program, re-executed with a [`Launcher`]:
//! - in `cargo test` of a backend crate, the test binary, running only the ignored test
//!   `conformance_child` that [`crate::conformance_tests!`] generates
//!   (`<test binary> conformance_child --exact --ignored --nocapture`), which calls
//!   [`child_main`] with the same backend factory as the cases: no extra binary to
//!   build or locate, and the child links exactly the backend under test;
//! - in the runner, the runner binary with its hidden `--child` flag, which connects by
//!   URL through the facade and calls [`serve`].
//!
//! [`crate::run_test`] and the runner [`register`] their launcher before running a
//! case; [`crate::ServerFaults`] uses the registered one.
//!
//! # Protocol
//! The parent passes a [`ChildSpec`] as JSON in the environment variable
//! [`SPEC_VAR`]. The child takes the lock (or wins the election) through a session of
//! the spec's TTL and prints, on stdout, lines starting with [`MARKER`]:
//! - `holding <token>` once it holds (the grant's fencing token or the term; for a
//!   queue delivery, its number: redeliveries + 1);
//! - `lost` when its guard's `lost()` resolves;
//! - `write token=<token>` in answer to the command `write` on its stdin: the write
//!   it would make to the protected resource, sent without checking its lease, as a
//!   holder woken from a pause would;
//! - `released` in answer to the command `release`: a lock or a permit unlocked, a
//!   leadership resigned
//!   (what a holder that loops does between its holds; the parent then closes its
//!   stdin and starts another child for the next hold);
//! - `lapsed <message>` when, before it held, its session was lost or the store could
//!   not be reached (the machine starved its renewals, say): nothing was measured, and
//!   the parent reads it as [`distsync_core::Error::SessionLost`], which a case treats
//!   as a set-up that lapsed, not as a violation (it then exits with status 1);
//! - `error <message>` when something else fails (it then exits with status 1).
//!
//! The child exits when its stdin closes (the parent is gone), so a holder never
//! outlives its test.

use std::fmt;
use std::future::Future;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use distsync_core::lock_delay;
use distsync_core::LockOptions;
use distsync_core::{Backend, Bytes, FencingToken, Name, Result, SessionOptions};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::tools::signal;
use super::{hook_error, ExternalHolder, HoldKind, HolderSpec, HOLDER_LOCK_DELAY, HOLDER_PERMITS};
use crate::harness::Harness;

/// The environment variable carrying a child's [`ChildSpec`].
pub const SPEC_VAR: &str = "DISTSYNC_CONFORMANCE_CHILD";

/// What starts every protocol line of a child (libtest may print before it on the
/// same line, so the parent looks for it anywhere in a line).
pub const MARKER: &str = "DISTSYNC-CHILD: ";

/// The name of the test the child runs in a test binary.
pub const CHILD_TEST: &str = "conformance_child";

/// How long a child may take to start, connect and get what it holds.
const START_LIMIT: Duration = Duration::from_secs(60);

/// A [`HoldKind::JobRunner`]'s schedule: every this long.
pub const JOB_INTERVAL: Duration = Duration::from_secs(1);

/// A [`HoldKind::JobRunner`]'s `at_least`.
pub const JOB_AT_LEAST: Duration = Duration::from_millis(800);

/// A [`HoldKind::JobRunner`]'s grace (`Missed::Skip`).
pub const JOB_GRACE: Duration = Duration::from_millis(500);

/// How long a [`HoldKind::JobRunner`]'s run works (well under `at_most`).
pub const JOB_WORK: Duration = Duration::from_millis(300);

/// A [`HoldKind::JobRunner`]'s `at_most`.
pub const JOB_AT_MOST: Duration = Duration::from_secs(2);

/// What a [`HoldKind::JobRunner`] reports of its runs (lines `run <occurrence ms>
/// <token> <started ms>` once it has claimed an occurrence, `ran <occurrence ms>` as
/// it starts releasing, `ran <occurrence ms> lost` when the hold was lost first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobEvent {
    /// An occurrence claimed, its run starting.
    Started {
        /// The occurrence, ms since the epoch.
        occurrence_ms: u64,
        /// The run's fencing token.
        token: u64,
        /// When it started, as recorded in the store (ms since the epoch).
        started_ms: u64,
    },
    /// The run ended: released (`lost` false) or its hold lost first.
    Ended {
        /// The occurrence, ms since the epoch.
        occurrence_ms: u64,
        /// Whether the hold was lost before the run ended.
        lost: bool,
    },
}

/// How a process re-executes itself as a child holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launcher {
    program: PathBuf,
    args: Vec<String>,
}

impl Launcher {
    /// `program args...`.
    pub fn new(program: impl Into<PathBuf>, args: impl IntoIterator<Item = String>) -> Self {
        Self {
            program: program.into(),
            args: args.into_iter().collect(),
        }
    }

    /// The current test binary, running only its [`CHILD_TEST`] test.
    ///
    /// # Errors
    /// When the current executable cannot be found.
    pub fn test_binary() -> Result<Self> {
        let program = this_program()?;
        Ok(Self::new(
            program,
            [
                CHILD_TEST,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ]
            .map(String::from),
        ))
    }

    /// The current executable with `args` (the runner passes its hidden `--child`).
    ///
    /// # Errors
    /// When the current executable cannot be found.
    pub fn current_exe(args: impl IntoIterator<Item = String>) -> Result<Self> {
        Ok(Self::new(this_program()?, args))
    }
}

/// The running program: `/proc/self/exe` where there is one, so that a child runs this
/// very binary even if cargo rebuilt the file on disk meanwhile (the target directory
/// is shared, and a build with other features replaces the runner's binary); the path
/// of the executable elsewhere.
fn this_program() -> Result<PathBuf> {
    let proc_self = PathBuf::from("/proc/self/exe");
    if proc_self.exists() {
        return Ok(proc_self);
    }
    std::env::current_exe().map_err(|error| hook_error("finding the current executable", error))
}

static LAUNCHER: OnceLock<Launcher> = OnceLock::new();

/// Registers how this process starts child holders. The first registration wins (a
/// process has one way to re-execute itself); returns whether `launcher` is the
/// registered one.
pub fn register(launcher: Launcher) -> bool {
    LAUNCHER.get_or_init(|| launcher.clone()) == &launcher
}

/// The registered launcher, if any.
pub fn registered() -> Option<&'static Launcher> {
    LAUNCHER.get()
}

/// The registered launcher, or why there is none (what a fault hook that spawns
/// holders reports as not offered).
///
/// # Errors
/// No launcher was registered in this process.
pub fn launcher() -> std::result::Result<&'static Launcher, String> {
    registered().ok_or_else(|| {
        "no child-process launcher in this process (run the cases through \
         conformance_tests! or the runner)"
            .to_owned()
    })
}

/// What a child holds, as passed in [`SPEC_VAR`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildSpec {
    /// The store's URL (the runner's child connects to it through the facade; a test
    /// binary's child through its fault hooks' connector, or with its backend factory
    /// when the hooks have none).
    pub url: String,
    /// Lock, leadership or permit.
    pub kind: HoldKind,
    /// The lock's, election's or semaphore's name.
    pub name: String,
    /// The session TTL in milliseconds.
    pub ttl_ms: u64,
    /// When set, the child is a member of the sharded group `name` instead of a holder
    /// (`kind` is then unused; see [`super::shards_member`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<super::shards_member::ShardsMemberSpec>,
}

impl ChildSpec {
    /// The spec in [`SPEC_VAR`]: `None` when this process is not a child.
    pub fn from_env() -> Option<std::result::Result<Self, String>> {
        spec_from_env(SPEC_VAR)
    }
}

/// The JSON spec in the environment variable `var`: `None` when it is not set (this
/// process was not started as that kind of child), otherwise the spec or why it does
/// not parse.
pub(crate) fn spec_from_env<T: serde::de::DeserializeOwned>(
    var: &str,
) -> Option<std::result::Result<T, String>> {
    let text = std::env::var(var).ok()?;
    Some(serde_json::from_str(&text).map_err(|error| format!("{var}: {error}")))
}

/// One line of a child's protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Event {
    Holding(u64),
    Lost,
    Write(u64),
    /// The session's lease left by the child's clock, in ms (0: not healthy).
    Left(u64),
    /// Its lock or permit released, in answer to `release`.
    Released,
    /// A job runner's report.
    Job(JobEvent),
    /// Its session lost, or the store out of reach, before it held.
    Lapsed(String),
    Error(String),
}

impl Event {
    fn parse(line: &str) -> Option<Self> {
        let (_, message) = line.split_once(MARKER)?;
        let message = message.trim();
        if message == "lost" {
            return Some(Self::Lost);
        }
        if message == "released" {
            return Some(Self::Released);
        }
        if let Some(token) = message.strip_prefix("holding ") {
            return token.parse().ok().map(Self::Holding);
        }
        if let Some(token) = message.strip_prefix("write token=") {
            return token.parse().ok().map(Self::Write);
        }
        if let Some(ms) = message.strip_prefix("left ms=") {
            return ms.parse().ok().map(Self::Left);
        }
        if let Some(job) = parse_job_event(message) {
            return Some(Self::Job(job));
        }
        if let Some(why) = message.strip_prefix("lapsed ") {
            return Some(Self::Lapsed(why.to_owned()));
        }
        message
            .strip_prefix("error ")
            .map(|error| Self::Error(error.to_owned()))
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Holding(token) => write!(f, "holding {token}"),
            Self::Lost => f.write_str("lost"),
            Self::Write(token) => write!(f, "write token={token}"),
            Self::Left(ms) => write!(f, "left ms={ms}"),
            Self::Released => f.write_str("released"),
            Self::Job(JobEvent::Started {
                occurrence_ms,
                token,
                started_ms,
            }) => write!(f, "run {occurrence_ms} {token} {started_ms}"),
            Self::Job(JobEvent::Ended {
                occurrence_ms,
                lost,
            }) => write!(f, "ran {occurrence_ms}{}", if *lost { " lost" } else { "" }),
            Self::Lapsed(why) => write!(f, "lapsed {why}"),
            Self::Error(error) => write!(f, "error {error}"),
        }
    }
}

/// A job runner's line (`run ...` or `ran ...`), if `message` is one.
fn parse_job_event(message: &str) -> Option<JobEvent> {
    if let Some(rest) = message.strip_prefix("run ") {
        let fields: Vec<u64> = rest
            .split_whitespace()
            .map(str::parse)
            .collect::<std::result::Result<_, _>>()
            .ok()?;
        if let [occurrence_ms, token, started_ms] = fields[..] {
            return Some(JobEvent::Started {
                occurrence_ms,
                token,
                started_ms,
            });
        }
        return None;
    }
    let rest = message.strip_prefix("ran ")?;
    let (occurrence, lost) = match rest.strip_suffix(" lost") {
        Some(occurrence) => (occurrence, true),
        None => (rest, false),
    };
    Some(JobEvent::Ended {
        occurrence_ms: occurrence.trim().parse().ok()?,
        lost,
    })
}

/// A child process of this program speaking a line protocol on stdout: started with a
/// [`Launcher`] and a JSON spec in an environment variable (a holder's, or a worker's of
/// [`super::effects_worker`]). Killed when dropped (`kill_on_drop`).
pub(crate) struct ProtocolProcess {
    child: Child,
    pid: u32,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    /// What the child is, in errors ("child holder", "worker").
    what: &'static str,
}

impl ProtocolProcess {
    /// Starts `launcher`'s program with `spec`, as JSON, in `var`.
    ///
    /// # Errors
    /// When the spec cannot be encoded or the process started.
    pub(crate) fn start(
        launcher: &Launcher,
        var: &str,
        spec: &impl Serialize,
        what: &'static str,
    ) -> Result<Self> {
        let json = serde_json::to_string(spec)
            .map_err(|error| hook_error(format!("encoding a {what}'s spec"), error))?;
        let mut child = Command::new(&launcher.program)
            .args(&launcher.args)
            .env(var, json)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| {
                hook_error(
                    format!("starting a {what} ({})", launcher.program.display()),
                    error,
                )
            })?;
        let starting = format!("starting a {what}");
        let pid = child
            .id()
            .ok_or_else(|| hook_error(&starting, "it exited at once"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| hook_error(&starting, "no stdout"))?;
        Ok(Self {
            stdin: child.stdin.take(),
            child,
            pid,
            lines: BufReader::new(stdout).lines(),
            what,
        })
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// The next line of its output.
    ///
    /// Cancel-safety: a line being read when the future is dropped may be lost.
    ///
    /// # Errors
    /// When the output cannot be read or has ended (the process exited).
    pub(crate) async fn next_line(&mut self) -> Result<String> {
        let line = self.lines.next_line().await.map_err(|error| {
            hook_error(
                format!("reading the output of {} {}", self.what, self.pid),
                error,
            )
        })?;
        line.ok_or_else(|| {
            hook_error(
                format!("{} {}", self.what, self.pid),
                "its output ended (it exited)",
            )
        })
    }

    /// An error the process reported itself (an `error` line).
    pub(crate) fn reported(&self, error: impl fmt::Display) -> distsync_core::Error {
        hook_error(format!("{} {}", self.what, self.pid), error)
    }

    /// Writes `command` as a line on its stdin.
    async fn command(&mut self, command: &str) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| hook_error("talking to the child", "its stdin is closed"))?;
        stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .map_err(|error| hook_error("talking to the child", error))?;
        stdin
            .flush()
            .await
            .map_err(|error| hook_error("talking to the child", error))
    }

    /// SIGKILLs the process and reaps it.
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub(crate) async fn kill(&mut self) -> Result<()> {
        self.child
            .kill()
            .await
            .map_err(|error| hook_error(format!("killing {} {}", self.what, self.pid), error))
    }

    /// Sends `sig` (SIGSTOP, SIGCONT) to the process while it has not been reaped.
    /// A reaped process (killed, or waited for) has nothing to stop or continue, and
    /// its pid may already name another process of the machine (a test of the same
    /// run), which must never receive the signal: then nothing is sent.
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub(crate) fn signal(&self, sig: libc::c_int) -> Result<()> {
        match self.child.id() {
            Some(pid) => signal(pid, sig),
            None => {
                tracing::debug!(pid = self.pid, sig, "not signalling a reaped {}", self.what);
                Ok(())
            }
        }
    }
}

/// A holder in a child process (the parent's handle). Killed when dropped.
pub struct ChildHolder {
    process: ProtocolProcess,
    token: FencingToken,
    lost: bool,
    killed: bool,
    kind: HoldKind,
}

impl std::fmt::Debug for ChildHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildHolder")
            .field("pid", &self.process.pid)
            .finish_non_exhaustive()
    }
}

/// Starts a child holder of `spec` on the store at `url` with `launcher`; returns once
/// it holds.
///
/// Cancel-safety: dropping the future kills the child.
///
/// # Errors
/// When the child cannot be started, fails, or does not hold within a minute.
pub async fn spawn(launcher: &Launcher, url: &str, spec: &HolderSpec) -> Result<ChildHolder> {
    let child_spec = ChildSpec {
        url: url.to_owned(),
        kind: spec.kind,
        name: spec.name.to_string(),
        ttl_ms: u64::try_from(spec.ttl.as_millis()).unwrap_or(u64::MAX),
        shards: None,
    };
    let process = ProtocolProcess::start(launcher, SPEC_VAR, &child_spec, "child holder")?;
    let pid = process.pid();
    let mut holder = ChildHolder {
        process,
        token: FencingToken(0),
        lost: false,
        killed: false,
        kind: spec.kind,
    };
    let token = tokio::time::timeout(START_LIMIT, async {
        match holder.next_event().await? {
            Event::Holding(token) => Ok(token),
            other => Err(hook_error(
                "waiting for the child to hold",
                format!("it said `{other}`"),
            )),
        }
    })
    .await
    .map_err(|_| {
        hook_error(
            "waiting for the child to hold",
            format!("not holding after {START_LIMIT:?}"),
        )
    })??;
    holder.token = FencingToken(token);
    tracing::debug!(pid, token, kind = ?spec.kind, "child holder holds");
    Ok(holder)
}

impl ChildHolder {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid
    }

    async fn next_event(&mut self) -> Result<Event> {
        loop {
            let line = self.process.next_line().await?;
            match Event::parse(&line) {
                Some(Event::Error(error)) => return Err(self.process.reported(error)),
                Some(Event::Lapsed(why)) => {
                    tracing::info!(
                        pid = self.process.pid(),
                        %why,
                        "the child holder lapsed before it held"
                    );
                    return Err(distsync_core::Error::SessionLost);
                }
                Some(Event::Lost) => {
                    self.lost = true;
                    return Ok(Event::Lost);
                }
                Some(event) => return Ok(event),
                None => continue,
            }
        }
    }
}

#[async_trait]
impl ExternalHolder for ChildHolder {
    fn token(&self) -> FencingToken {
        self.token
    }

    fn describe(&self) -> String {
        let what = match self.kind {
            HoldKind::Lock => "lock holder",
            HoldKind::UnfairLock => "unfair lock holder",
            HoldKind::DelayedLock => "lock holder (lock-delay)",
            HoldKind::Leadership => "leader",
            HoldKind::Permit => "permit holder",
            HoldKind::Delivery => "queue consumer",
            HoldKind::JobRunner => "job runner",
        };
        format!("{what} in child process {}", self.process.pid)
    }

    async fn kill(&mut self) -> Result<()> {
        self.killed = true;
        self.process.kill().await
    }

    async fn pause(&mut self) -> Result<()> {
        self.process.signal(libc::SIGSTOP)
    }

    async fn resume(&mut self) -> Result<()> {
        self.process.signal(libc::SIGCONT)
    }

    async fn write(&mut self) -> Result<FencingToken> {
        self.process.command("write").await?;
        loop {
            if let Event::Write(token) = self.next_event().await? {
                return Ok(FencingToken(token));
            }
        }
    }

    async fn lease_left(&mut self) -> Result<Option<Duration>> {
        self.process.command("left").await?;
        loop {
            if let Event::Left(ms) = self.next_event().await? {
                return Ok(Some(Duration::from_millis(ms)));
            }
        }
    }

    async fn release(&mut self) -> Result<()> {
        self.process.command("release").await?;
        loop {
            if self.next_event().await? == Event::Released {
                return Ok(());
            }
        }
    }

    async fn lost(&mut self) -> Result<()> {
        while !self.lost {
            self.next_event().await?;
        }
        Ok(())
    }

    async fn next_job_event(&mut self) -> Result<JobEvent> {
        loop {
            if let Event::Job(job) = self.next_event().await? {
                return Ok(job);
            }
        }
    }
}

impl Drop for ChildHolder {
    fn drop(&mut self) {
        if self.killed {
            return;
        }
        // SIGKILL ends a stopped process too; no need to continue it first.
        if let Err(error) = self.process.child.start_kill() {
            tracing::debug!(pid = self.process.pid, %error, "killing a child holder on drop");
        }
    }
}

/// Writes protocol lines on stdout, one at a time.
#[derive(Clone, Default)]
pub(crate) struct Say {
    serial: Arc<Mutex<()>>,
    /// Whether `holding` was said: an error after it is no set-up's.
    held: Arc<std::sync::atomic::AtomicBool>,
}

impl Say {
    /// Says `holding <token>`.
    fn holding(&self, token: u64) {
        self.held.store(true, std::sync::atomic::Ordering::SeqCst);
        self.line(Event::Holding(token));
    }

    /// Says why serving ended (see [`Say::failure`]).
    fn failed(&self, error: &distsync_core::Error) {
        self.line(self.failure(error));
    }

    /// The line that says why serving ended: `lapsed` for a session lost or a store out
    /// of reach before `holding` (what a starved machine does to a set-up, not a
    /// measure of the store), `error` for anything else.
    fn failure(&self, error: &distsync_core::Error) -> Event {
        let message = error.to_string().replace('\n', " ");
        let held = self.held.load(std::sync::atomic::Ordering::SeqCst);
        if !held && (error.needs_new_session() || error.is_transient()) {
            Event::Lapsed(message)
        } else {
            Event::Error(message)
        }
    }

    /// Writes `message` after [`MARKER`], as one line.
    pub(crate) fn line(&self, message: impl fmt::Display) {
        let _serial = self
            .serial
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut stdout = std::io::stdout().lock();
        // Nothing to do if the parent stopped reading: it is gone or killing us.
        let _ = writeln!(stdout, "{MARKER}{message}");
        let _ = stdout.flush();
    }
}

/// The child's side: holds what `spec` says on `backend`, speaks the protocol (see the
/// module docs) until its stdin closes, and returns the process exit status (0, or 1
/// after an `error` line).
///
/// Cancel-safety: dropping the future drops the hold (released in the background).
pub async fn serve(backend: Arc<dyn Backend>, spec: ChildSpec) -> i32 {
    let say = Say::default();
    let served = match &spec.shards {
        Some(member) => {
            let served =
                super::shards_member::serve_member(Arc::clone(&backend), &spec, member, &say);
            served.await
        }
        None => hold(&backend, &spec, &say).await,
    };
    match served {
        Ok(()) => 0,
        Err(error) => {
            say.failed(&error);
            1
        }
    }
}

async fn hold(backend: &Arc<dyn Backend>, spec: &ChildSpec, say: &Say) -> Result<()> {
    if spec.kind == HoldKind::JobRunner {
        return run_job(backend, spec, say).await;
    }
    let name = Name::new(spec.name.clone())?;
    let ttl = Duration::from_millis(spec.ttl_ms);
    let session = backend.session(SessionOptions::with_ttl(ttl)).await?;
    // Keeps the hold alive until the end (dropping it would release it); a lock's or
    // a permit apart, for the `release` command.
    let mut guard: Option<distsync_core::LockGuard> = None;
    let mut permit_held: Option<distsync_core::Permit> = None;
    let mut leading: Option<distsync_core::Leadership> = None;
    let (token, lost, _held): (FencingToken, _, Box<dyn std::any::Any + Send>) = match spec.kind {
        HoldKind::Lock | HoldKind::UnfairLock => {
            let locker = if spec.kind == HoldKind::Lock {
                backend.locker(&session, name)?
            } else {
                backend.unfair_locker(&session, name)?
            };
            let granted = locker.lock().await?;
            let held = (granted.token(), granted.lost());
            guard = Some(granted);
            (held.0, held.1, Box::new(locker))
        }
        HoldKind::DelayedLock => {
            let options = LockOptions::new().lock_delay(HOLDER_LOCK_DELAY);
            let locker = lock_delay::locker(backend.as_ref(), &session, name, options)?;
            let granted = locker.lock().await?;
            let held = (granted.token(), granted.lost());
            guard = Some(granted);
            (held.0, held.1, Box::new(locker))
        }
        HoldKind::Leadership => {
            let election = backend.election(&session, name)?;
            let leadership = election.campaign(Bytes::from_static(b"child")).await?;
            let held = (leadership.term(), leadership.lost());
            leading = Some(leadership);
            (held.0, held.1, Box::new(election))
        }
        HoldKind::Permit => {
            let semaphore = backend.semaphore(&session, name, HOLDER_PERMITS)?;
            let permit = semaphore.acquire().await?;
            let held = (permit.token(), permit.lost());
            permit_held = Some(permit);
            (held.0, held.1, Box::new(semaphore))
        }
        HoldKind::Delivery => {
            let queue = backend.queue(name)?;
            let delivery = queue.receive(&session).await?;
            let number = FencingToken(u64::from(delivery.redeliveries()) + 1);
            (number, delivery.lost(), Box::new((queue, delivery)))
        }
        HoldKind::JobRunner => unreachable!("a job runner does not hold"),
    };
    say.holding(token.get());
    let watcher = {
        let say = say.clone();
        tokio::spawn(async move {
            lost.await;
            say.line(Event::Lost);
        })
    };
    let mut commands = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(command)) = commands.next_line().await {
        match command.trim() {
            "write" => say.line(Event::Write(token.get())),
            "left" => {
                let left = session
                    .health()
                    .valid_until()
                    .map_or(Duration::ZERO, |until| {
                        until.saturating_duration_since(std::time::Instant::now())
                    });
                say.line(Event::Left(
                    u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
                ));
            }
            "release" => {
                // The parent waits for the answer, then closes stdin.
                let released = match (guard.take(), permit_held.take(), leading.take()) {
                    (Some(guard), _, _) => guard.unlock().await,
                    (None, Some(permit), _) => permit.release().await,
                    (None, None, Some(leadership)) => leadership.resign().await,
                    (None, None, None) => {
                        say.line(Event::Error("nothing to release".to_owned()));
                        continue;
                    }
                };
                match released {
                    Ok(()) => say.line(Event::Released),
                    Err(error) => {
                        say.line(Event::Error(
                            format!("releasing: {error}").replace('\n', " "),
                        ));
                    }
                }
            }
            "exit" => break,
            other => say.line(Event::Error(format!("unknown command {other:?}"))),
        }
    }
    watcher.abort();
    drop(session);
    Ok(())
}

/// A [`HoldKind::JobRunner`]: runs the scheduled job `spec.name` (every
/// [`JOB_INTERVAL`], its work [`JOB_WORK`] long) until stdin closes, saying `holding 0`
/// once the job's record is read, then each run's start and end.
async fn run_job(backend: &Arc<dyn Backend>, spec: &ChildSpec, say: &Say) -> Result<()> {
    use distsync_core::schedule::Schedule;
    use distsync_core::scheduled_job::{JobOptions, Missed};
    let options = JobOptions::default()
        .with_at_most(JOB_AT_MOST)
        .with_at_least(JOB_AT_LEAST)
        .with_missed(Missed::Skip)
        .with_grace(JOB_GRACE)
        .with_session(SessionOptions::with_ttl(Duration::from_millis(spec.ttl_ms)));
    let coordinator = distsync_core::Coordinator::from_arc(Arc::clone(backend));
    let mut job = coordinator.scheduled_job(&spec.name, Schedule::every(JOB_INTERVAL)?, options)?;
    job.last_run().await?;
    say.holding(0);
    let running = async {
        loop {
            let occurrence = match job.next().await {
                Ok(occurrence) => occurrence,
                Err(error) => return Err::<(), _>(error),
            };
            let occurrence_ms = millis_since_epoch(occurrence.time());
            say.line(Event::Job(JobEvent::Started {
                occurrence_ms,
                token: occurrence.token().get(),
                started_ms: millis_since_epoch(occurrence.started()),
            }));
            let outcome = occurrence.while_held(tokio::time::sleep(JOB_WORK)).await;
            say.line(Event::Job(JobEvent::Ended {
                occurrence_ms,
                lost: matches!(outcome, Err(distsync_core::Error::SessionLost)),
            }));
            let _ = occurrence.finish().await;
        }
    };
    let mut commands = BufReader::new(tokio::io::stdin()).lines();
    let closed = async { while let Ok(Some(_)) = commands.next_line().await {} };
    tokio::select! {
        outcome = running => outcome,
        () = closed => Ok(()),
    }
}

/// Milliseconds since the UNIX epoch.
fn millis_since_epoch(at: std::time::SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    })
}

/// The body of the `conformance_child` test of [`crate::conformance_tests!`]: when this
/// process was started as a child holder ([`SPEC_VAR`] is set), gets the backend from
/// `factory`, [`serve`]s, and exits the process; otherwise returns at once (the test
/// then passes, doing nothing).
///
/// # Panics
/// When the tokio runtime cannot be built.
pub fn child_main<F, Fut, H>(factory: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Option<H>>,
    H: Into<Harness>,
{
    let Some(spec) = ChildSpec::from_env() else {
        return;
    };
    let say = Say::default();
    let spec = match spec {
        Ok(spec) => spec,
        Err(error) => {
            say.line(Event::Error(error));
            std::process::exit(1);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|error| panic!("cannot build a tokio runtime: {error}"));
    let status = runtime.block_on(async move {
        let Some(harness) = factory().await else {
            say.line(Event::Error(
                "the backend factory found no server in the child".to_owned(),
            ));
            return 1;
        };
        let harness = harness.into();
        // The factory reaches the column's server; a holder of a case with a private
        // server of its own must reach that one, which its spec names.
        let backend = match harness.faults().connector() {
            Some(connect) => match connect(spec.url.clone()).await {
                Ok(backend) => backend,
                Err(error) => {
                    say.line(Event::Error(format!(
                        "connecting to {}: {error}",
                        distsync_core::redact_url(&spec.url)
                    )));
                    return 1;
                }
            },
            None => Arc::clone(harness.backend()),
        };
        serve(backend, spec).await
    });
    // Exiting here skips the runtime's shutdown, which could wait on background tasks.
    std::process::exit(status);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_anywhere_in_a_line() {
        assert_eq!(
            Event::parse(&format!("test conformance_child ... {MARKER}holding 42")),
            Some(Event::Holding(42))
        );
        assert_eq!(Event::parse(&format!("{MARKER}lost")), Some(Event::Lost));
        assert_eq!(
            Event::parse(&format!("{MARKER}write token=7")),
            Some(Event::Write(7))
        );
        assert_eq!(
            Event::parse(&format!("{MARKER}error no server")),
            Some(Event::Error("no server".into()))
        );
        assert_eq!(Event::parse("running 1 test"), None);
        assert_eq!(
            Event::parse(&format!("{MARKER}left ms=1500")),
            Some(Event::Left(1500))
        );
        for event in [
            Event::Holding(3),
            Event::Lost,
            Event::Write(9),
            Event::Left(0),
            Event::Released,
            Event::Lapsed("session lost".into()),
        ] {
            assert_eq!(
                Event::parse(&format!("{MARKER}{event}")),
                Some(event.clone())
            );
        }
    }

    /// What the parent reads: a session lost or a store out of reach before `holding`
    /// is a lapse (a set-up the cases start again), the same error after it, or any
    /// other error, is an `error`.
    #[test]
    fn a_lapse_is_said_only_before_holding() {
        let lapsed = |event: Event| matches!(event, Event::Lapsed(_));
        let say = Say::default();
        assert!(lapsed(say.failure(&distsync_core::Error::SessionLost)));
        assert!(!lapsed(say.failure(&distsync_core::Error::NotHeld)));
        say.holding(5);
        assert!(!lapsed(say.failure(&distsync_core::Error::SessionLost)));
    }

    #[test]
    fn job_runner_lines_round_trip() {
        for job in [
            JobEvent::Started {
                occurrence_ms: 1_000,
                token: 7,
                started_ms: 1_012,
            },
            JobEvent::Ended {
                occurrence_ms: 1_000,
                lost: false,
            },
            JobEvent::Ended {
                occurrence_ms: 2_000,
                lost: true,
            },
        ] {
            let event = Event::Job(job);
            assert_eq!(Event::parse(&format!("{MARKER}{event}")), Some(event));
        }
        assert_eq!(Event::parse(&format!("{MARKER}run 1 2")), None);
    }

    #[test]
    fn specs_round_trip_through_json() {
        let spec = ChildSpec {
            url: "redis://127.0.0.1:1".into(),
            kind: HoldKind::Leadership,
            name: "conf/x".into(),
            ttl_ms: 1000,
            shards: None,
        };
        let json = serde_json::to_string(&spec).unwrap();
        assert!(json.contains("\"leadership\""), "{json}");
        assert_eq!(serde_json::from_str::<ChildSpec>(&json).unwrap(), spec);
    }

    #[test]
    fn the_first_launcher_registered_wins() {
        let first = Launcher::new("/bin/true", []);
        let second = Launcher::new("/bin/false", []);
        let won = register(first.clone());
        assert_eq!(register(second.clone()), won && first == second);
        assert!(registered().is_some());
    }
}
