//! Running the stores' command line tools and servers with bounded waits, finding
//! them, sending signals, picking free ports.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use distsync_core::Result;
use tokio::process::Command;

use super::hook_error;

/// How long one tool invocation may take.
pub(crate) const TOOL_LIMIT: Duration = Duration::from_secs(60);

/// The path of `program` on `PATH` (or `program` itself if it is a path that exists).
pub(crate) fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let path = PathBuf::from(program);
        return path.is_file().then_some(path);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// `which(program)` or a reason naming the Debian package that has it.
pub(crate) fn require(program: &str, package: &str) -> std::result::Result<PathBuf, String> {
    which(program).ok_or_else(|| format!("`{program}` is not installed (Debian package {package})"))
}

/// The newest PostgreSQL server binaries (`/usr/lib/postgresql/<version>/bin`), or
/// the directory of `initdb` on `PATH`.
pub(crate) fn pg_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => Some(bin),
        None => which("initdb").and_then(|initdb| initdb.parent().map(Path::to_path_buf)),
    }
}

/// The output of a finished command.
pub(crate) struct Output {
    pub(crate) stdout: String,
}

/// Runs `program args...` with stdin closed, for at most [`TOOL_LIMIT`]; an exit
/// status other than success is an error carrying its stderr.
pub(crate) async fn run<I, S>(program: &Path, args: I, env: &[(&str, &str)]) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(program);
    command.args(args);
    run_command(command, env).await
}

/// As [`run`], for a prepared command.
pub(crate) async fn run_command(mut command: Command, env: &[(&str, &str)]) -> Result<Output> {
    let what = format!("{:?}", command.as_std());
    command
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command
        .spawn()
        .map_err(|error| hook_error(format!("starting {what}"), error))?;
    let output = tokio::time::timeout(TOOL_LIMIT, child.wait_with_output())
        .await
        .map_err(|_| hook_error(&what, format!("did not finish within {TOOL_LIMIT:?}")))?
        .map_err(|error| hook_error(format!("waiting for {what}"), error))?;
    if !output.status.success() {
        return Err(hook_error(
            &what,
            format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        ));
    }
    Ok(Output {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
    })
}

/// Sends `signal` to process `pid`.
pub(crate) fn signal(pid: u32, signal: libc::c_int) -> Result<()> {
    use rustix::process::{kill_process, Pid, Signal};
    let target = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| hook_error("signalling", format!("pid {pid} out of range")))?;
    let sig = Signal::from_named_raw(signal)
        .ok_or_else(|| hook_error("signalling", format!("{signal} is not a named signal")))?;
    kill_process(target, sig).map_err(|error| hook_error(format!("kill({pid}, {signal})"), error))
}

/// The ports private servers take: below Linux's ephemeral range (32768 and up by
/// default), so that no outgoing connection of this machine holds one as its local end
/// when the server starts, and clear of `scripts/servers.sh`'s default ports
/// (23790-26425).
const PRIVATE_PORTS: std::ops::Range<u16> = 27000..32000;

/// How many of the last ports [`free_port`] handed out it does not hand out again: most
/// of [`PRIVATE_PORTS`], which a run's private servers do not exhaust, while a random
/// draw still finds a port outside them at once.
const RECENT_PORTS: usize = 4000;

/// A loopback TCP port nobody listens on right now, for a private server to listen on.
///
/// An ephemeral port (what binding port 0 hands out) can be taken in the meantime as
/// the local end of any outgoing connection, and then the server cannot start (seen
/// under load): so the port is drawn from [`PRIVATE_PORTS`] instead, checked free by
/// binding it.
pub(crate) fn free_port() -> Result<u16> {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    // Ports handed out lately: not again until thousands of others were. A port not
    // yet listened on would be handed out twice (a server's port and its peer port);
    // and a client of a stopped private server, dropped by its case but with
    // background work left (a put-back retrying), dials its port still: another
    // private server there would take it for its own store that forgot, and write
    // that into the other case's store (a new epoch marker).
    static RECENT: Mutex<VecDeque<u16>> = Mutex::new(VecDeque::new());
    let mut recent = RECENT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let span = u64::from(PRIVATE_PORTS.end - PRIVATE_PORTS.start);
    for _ in 0..256 {
        let offset = u16::try_from(distsync_core::raw::random_u64() % span).unwrap_or(0);
        let port = PRIVATE_PORTS.start + offset;
        if !recent.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            if recent.len() == RECENT_PORTS {
                recent.pop_front();
            }
            recent.push_back(port);
            return Ok(port);
        }
    }
    Err(hook_error(
        "finding a free port",
        format!("none free in {PRIVATE_PORTS:?} after 256 draws"),
    ))
}

/// Whether something accepts TCP connections on loopback port `port`.
pub(crate) async fn port_open(port: u16) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::TcpStream::connect(("127.0.0.1", port))
        )
        .await,
        Ok(Ok(_))
    )
}

/// Whether the process `pid`, or a process it started, holds a socket listening on TCP
/// port `port` (read from `/proc`: the listening sockets' inodes, then the open sockets
/// of `pid` and its descendants); `None` where `/proc` cannot tell (another system, a
/// process of another user).
pub(crate) fn listens_on(pid: u32, port: u16) -> Option<bool> {
    use procfs::net::TcpState;
    use procfs::process::{all_processes, FDTarget};
    use std::collections::{HashMap, HashSet};

    let mut entries = procfs::net::tcp().ok()?;
    entries.extend(procfs::net::tcp6().unwrap_or_default());
    let listening: HashSet<u64> = entries
        .into_iter()
        .filter(|entry| entry.state == TcpState::Listen && entry.local_address.port() == port)
        .map(|entry| entry.inode)
        .collect();
    if listening.is_empty() {
        return Some(false);
    }
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for process in all_processes().ok()?.flatten() {
        if let Ok(stat) = process.stat() {
            children.entry(stat.ppid).or_default().push(stat.pid);
        }
    }
    let mut unseen = vec![i32::try_from(pid).ok()?];
    let mut inspected = false;
    while let Some(pid) = unseen.pop() {
        unseen.extend(children.get(&pid).into_iter().flatten());
        let Ok(fds) = procfs::process::Process::new(pid).and_then(|process| process.fd()) else {
            continue;
        };
        inspected = true;
        for fd in fds.flatten() {
            if matches!(fd.target, FDTarget::Socket(inode) if listening.contains(&inode)) {
                return Some(true);
            }
        }
    }
    inspected.then_some(false)
}

/// A fresh directory under the system's temporary directory, named after `what`.
pub(crate) fn temp_dir(what: &str) -> Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!(
        "distsync-{what}-{}-{nanos:x}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)
        .map_err(|error| hook_error(format!("creating {}", dir.display()), error))?;
    Ok(dir)
}

/// Whether this process runs as root.
pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tools_run_bounded_and_report_failures() {
        let sh = which("sh").expect("sh on PATH");
        let out = run(&sh, ["-c", "echo hello"], &[]).await.unwrap();
        assert_eq!(out.stdout.trim(), "hello");
        let failed = run(&sh, ["-c", "echo oops >&2; exit 3"], &[]).await;
        let error = failed.err().expect("a failure").to_string();
        assert!(error.contains("oops"), "{error}");
        assert!(which("surely-no-such-program-here").is_none());
        assert!(require("surely-no-such-program-here", "nothing")
            .unwrap_err()
            .contains("Debian package nothing"));
    }

    #[test]
    fn free_ports_and_temp_dirs_are_fresh() {
        assert_ne!(free_port().unwrap(), 0);
        let a = temp_dir("test").unwrap();
        let b = temp_dir("test").unwrap();
        assert_ne!(a, b);
        std::fs::remove_dir_all(a).unwrap();
        std::fs::remove_dir_all(b).unwrap();
    }
}
