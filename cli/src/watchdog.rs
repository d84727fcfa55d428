//! CMD's process group and the watchdog that ends it when `distsync` itself dies.
//!
//! `distsync` stops CMD when a hold is lost, but a `distsync` that is SIGKILLed (the
//! OOM killer, a supervisor that signals one PID), panics or aborts can send nothing.
//! So CMD never runs on its own: it runs in a process group of its own whose first
//! member is a watchdog, a second `distsync` process (this binary, started with
//! [`ARG`]) that only reads a pipe. `distsync` holds the pipe's only writing end, so
//! the pipe's end of file comes exactly when `distsync` is gone, however it went (the
//! kernel closes a dead process's descriptors). The watchdog then sends SIGTERM to the
//! group at once, and SIGKILL at the hold's client-side deadline (the last one
//! `distsync` wrote to the pipe), or at once when none is known or it has passed; it
//! exits as soon as nothing else is left in the group (read from `/proc` on Linux). The
//! store cannot grant the hold to anyone before that deadline, so CMD stops first, and
//! every process CMD started in the background goes with it (they share its group).
//!
//! Why a process and not a parent-death signal: `PR_SET_PDEATHSIG` fires when the
//! parent *thread* ends (a runtime's spawning thread can end while `distsync` lives),
//! reaches CMD only and not its children, and exists on Linux only. The pipe works on
//! every Unix, macOS included. The race where `distsync` dies while CMD is being
//! started is closed by the order: the watchdog exists before CMD is forked, and CMD
//! joins its group before it runs (`setpgid` before `exec`); a `distsync` that dies in
//! between leaves the pipe's end in the half-started child until its `exec` closes it
//! (close-on-exec), by which time CMD is in the group the watchdog ends.
//!
//! What escapes: a process that leaves the group on purpose (`setsid`, a daemon's
//! double fork into a new session). A CMD that wants its background work stopped with
//! it keeps that work in its group, as a shell's `worker &` does.

use std::ffi::OsString;
use std::io::{self, Read as _, Write as _};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use rustix::process::{kill_process_group, Pid, Signal};
use tokio::io::AsyncReadExt as _;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// The first argument that makes this binary the watchdog instead of the command line.
pub(crate) const ARG: &str = "--distsync-internal-watchdog";

/// One record on the pipe: the client-side deadline as nanoseconds of the system-wide
/// monotonic clock (`CLOCK_MONOTONIC`, the same in both processes), little-endian; 0
/// when no deadline is known. Eight bytes, so a write is atomic on a pipe.
const RECORD: usize = 8;

/// CMD's process group, led by its watchdog; `distsync`'s side of the pipe.
pub(crate) struct Watchdog {
    child: Child,
    group: Pid,
    deadlines: io::PipeWriter,
    /// Whether `distsync` has sent the group SIGKILL (the watchdog's exit is then
    /// expected).
    killed: bool,
}

impl Watchdog {
    /// Starts the watchdog in a new process group, before CMD exists, and returns once
    /// it is ready: from then on no signal sent to the group ends it before its work.
    /// Cancel-safe: dropped, the watchdog's group gets SIGKILL.
    ///
    /// # Errors
    /// When the pipe or the process cannot be made, or the watchdog does not come up.
    pub(crate) async fn start() -> io::Result<Self> {
        let (reading, deadlines) = io::pipe()?;
        // A watchdog that stops reading must never block the runtime's thread on a
        // full pipe: a record that does not fit is dropped (the next one replaces it).
        rustix::io::ioctl_fionbio(&deadlines, true)?;
        let mut command = Command::new(own_executable()?);
        command
            .arg0("distsync")
            .arg(ARG)
            .stdin(Stdio::from(reading))
            // Not `distsync`'s output (a reader of that must see its end when `distsync`
            // dies, not when the watchdog does): a pipe of its own that says it is ready.
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(false);
        let child = command.spawn()?;
        // `command` holds the reading end until dropped: only the watchdog keeps it.
        drop(command);
        let group = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(Pid::from_raw)
            .ok_or_else(|| io::Error::other("the watchdog exited at once"))?;
        let mut watchdog = Self {
            child,
            group,
            deadlines,
            killed: false,
        };
        // `distsync` signals the group as soon as CMD runs; a watchdog that has not yet
        // blocked those signals would die of them and leave CMD unguarded. It says
        // "ready" once they are blocked, and CMD is started only after that.
        let mut ready = [0u8; 1];
        let mut said = watchdog
            .child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("the watchdog's ready pipe is missing"))?;
        said.read_exact(&mut ready).await.map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("the watchdog did not come up: {error}"),
            )
        })?;
        Ok(watchdog)
    }

    /// The process group CMD joins (`Command::process_group`).
    pub(crate) fn group(&self) -> i32 {
        self.group.as_raw_nonzero().get()
    }

    /// Tells the watchdog the hold's client-side deadline (`None`: unknown).
    pub(crate) fn deadline(&mut self, at: Option<Instant>) {
        let record = at.map_or(0, |at| {
            let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
            let remaining = at.saturating_duration_since(Instant::now());
            nanos(now).saturating_add(u64::try_from(remaining.as_nanos()).unwrap_or(u64::MAX))
        });
        if let Err(error) = self.deadlines.write_all(&record.to_le_bytes()) {
            tracing::debug!(%error, "telling the watchdog the deadline failed");
        }
    }

    /// Sends `signal` to every process of the group (the watchdog blocks it).
    pub(crate) fn signal(&self, signal: Signal) {
        if let Err(error) = kill_process_group(self.group, signal) {
            tracing::debug!(%error, ?signal, "signalling the command's process group failed");
        }
    }

    /// Sends SIGKILL to every process of the group, the watchdog included.
    pub(crate) fn kill(&mut self) {
        self.killed = true;
        self.signal(Signal::KILL);
    }

    /// Resolves when the watchdog has exited without `distsync` killing it: CMD is
    /// then no longer stopped if `distsync` dies. Cancel-safe.
    pub(crate) async fn exited(&mut self) -> io::Result<std::process::ExitStatus> {
        if self.killed {
            std::future::pending::<()>().await;
        }
        self.child.wait().await
    }

    /// Ends what is left of the group once CMD has exited (a process CMD left running
    /// in the background gets SIGKILL: it is no longer protected by the hold, which is
    /// released next) and waits for the watchdog, so that nothing of the group runs
    /// when this returns. Cancel-safe: dropped, the group has had its SIGKILL.
    pub(crate) async fn end(mut self) {
        self.kill();
        if let Err(error) = self.child.wait().await {
            tracing::debug!(%error, "waiting for the watchdog failed");
        }
    }
}

impl Drop for Watchdog {
    /// A `Watchdog` dropped without [`Watchdog::end`] (an early return) still ends the
    /// group: nothing of CMD outlives the function that held it.
    fn drop(&mut self) {
        if !self.killed {
            self.kill();
        }
    }
}

/// The path this process runs from: `/proc/self/exe` on Linux, which still names the
/// binary after an upgrade replaced the file.
fn own_executable() -> io::Result<OsString> {
    if cfg!(target_os = "linux") {
        return Ok("/proc/self/exe".into());
    }
    Ok(std::env::current_exe()?.into_os_string())
}

fn nanos(time: rustix::time::Timespec) -> u64 {
    let seconds = u64::try_from(time.tv_sec).unwrap_or(0);
    let fraction = u64::try_from(time.tv_nsec).unwrap_or(0);
    seconds
        .saturating_mul(1_000_000_000)
        .saturating_add(fraction)
}

/// The watchdog process: reads deadlines until the pipe's end of file, then stops the
/// group (see the module's docs). Never returns while the group lives: its last act is
/// the SIGKILL that ends it too.
pub(crate) fn main() -> ExitCode {
    // The signals `distsync` forwards to the group, the terminal's, and the kernel's
    // SIGHUP to an orphaned group must not end the watchdog before it has done its
    // work; blocked, they stay pending. SIGKILL cannot be blocked.
    {
        use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal as Sig};
        let mut blocked = SigSet::empty();
        for signal in [
            Sig::SIGINT,
            Sig::SIGTERM,
            Sig::SIGHUP,
            Sig::SIGQUIT,
            Sig::SIGTSTP,
            Sig::SIGTTIN,
            Sig::SIGTTOU,
            Sig::SIGPIPE,
            Sig::SIGUSR1,
            Sig::SIGUSR2,
        ] {
            blocked.add(signal);
        }
        if sigprocmask(SigmaskHow::SIG_BLOCK, Some(&blocked), None).is_err() {
            // Unprotected, it could die of a forwarded SIGTERM and leave CMD behind:
            // better to end the group now, CMD (not yet started or just started) with it.
            let _ = kill_process_group(rustix::process::getpgrp(), Signal::KILL);
            return ExitCode::FAILURE;
        }
    }
    // `distsync` starts CMD only once this byte is read.
    let mut ready = io::stdout();
    if ready.write_all(b"r").and_then(|()| ready.flush()).is_err() {
        return ExitCode::FAILURE;
    }
    let mut deadline = 0u64;
    let mut record = [0u8; RECORD];
    let mut input = io::stdin().lock();
    while input.read_exact(&mut record).is_ok() {
        deadline = u64::from_le_bytes(record);
    }
    let group = rustix::process::getpgrp();
    let now = nanos(rustix::time::clock_gettime(
        rustix::time::ClockId::Monotonic,
    ));
    if deadline > now {
        let _ = kill_process_group(group, Signal::TERM);
        wait_for_empty(group, Duration::from_nanos(deadline - now));
    }
    let _ = kill_process_group(group, Signal::KILL);
    ExitCode::FAILURE
}

/// Waits until no process but this one is left in `group`, or `grace` has passed. A CMD
/// that exits on SIGTERM then ends its watchdog with it, instead of leaving it to wait
/// for the deadline. Where `/proc` cannot tell (not Linux), waits the whole grace.
fn wait_for_empty(group: Pid, grace: Duration) {
    let until = std::time::Instant::now() + grace;
    let me = rustix::process::getpid();
    loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        match others_in(group, me) {
            Some(false) => return,
            Some(true) => std::thread::sleep(left.min(Duration::from_millis(10))),
            None => return std::thread::sleep(left),
        }
    }
}

/// Whether a process other than `me` is in `group`, from `/proc`; `None` where `/proc`
/// lists no processes. A zombie counts as gone: it runs nothing.
fn others_in(group: Pid, me: Pid) -> Option<bool> {
    let entries = std::fs::read_dir("/proc").ok()?;
    let mut listed = false;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        listed = true;
        if pid == me.as_raw_nonzero().get() {
            continue;
        }
        // `pid (comm) state ppid pgrp ...`: `comm` may hold spaces and parentheses, so
        // the fields are read after its last `)`.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let mut fields = stat
            .rsplit_once(") ")
            .map_or("", |(_, rest)| rest)
            .split(' ');
        let (state, pgrp) = (fields.next(), fields.nth(1));
        if state != Some("Z")
            && pgrp.and_then(|pgrp| pgrp.parse::<i32>().ok()) == Some(group.as_raw_nonzero().get())
        {
            return Some(true);
        }
    }
    listed.then_some(false)
}
