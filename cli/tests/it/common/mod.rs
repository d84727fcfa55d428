//! Driving the real `distsync` binary: spawning it, reading its lines with deadlines,
//! and finding the test servers.
#![allow(dead_code)] // each test file uses its own part of this module

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long to wait for a line or an exit that should come.
pub(crate) const DEADLINE: Duration = Duration::from_secs(30);
/// How long a process must stay silent when it should be blocked.
pub(crate) const QUIET: Duration = Duration::from_millis(1500);
/// A command that runs until it is terminated; SIGTERM ends it with 143.
pub(crate) const RUN_UNTIL_TERMINATED: &str = "trap 'exit 143' TERM; while :; do sleep 0.1; done";

/// A backend to run a test against.
#[derive(Clone, Debug)]
pub(crate) struct Backend {
    /// `etcd`, `redis`, `postgres`, `zookeeper`, `mysql`, `nats` or `memory`.
    pub label: &'static str,
    /// Its URL.
    pub url: String,
}

/// The real servers this build of the binary can reach: those whose cargo feature is
/// on and whose URL variable is set. A missing variable is said loudly (and fails under
/// `CI=true`, see `distsync_conformance::server_url`); a feature that is off is said
/// loudly too, since the binary could not reach that server.
pub(crate) fn servers() -> Vec<Backend> {
    let candidates = [
        ("etcd", cfg!(feature = "etcd"), "DISTSYNC_ETCD_URL"),
        ("redis", cfg!(feature = "redis"), "DISTSYNC_REDIS_URL"),
        (
            "postgres",
            cfg!(feature = "postgres"),
            "DISTSYNC_POSTGRES_URL",
        ),
        (
            "zookeeper",
            cfg!(feature = "zookeeper"),
            "DISTSYNC_ZOOKEEPER_URL",
        ),
        ("mysql", cfg!(feature = "mysql"), "DISTSYNC_MYSQL_URL"),
        ("nats", cfg!(feature = "nats"), "DISTSYNC_NATS_URL"),
    ];
    let mut found = Vec::new();
    for (label, enabled, var) in candidates {
        if !enabled {
            eprintln!(
                "\n!!! distsync-cli built without the `{label}` feature: SKIPPING {label}. \
                 Run with --features full. !!!\n"
            );
            continue;
        }
        if let Some(url) = distsync_conformance::server_url(var) {
            found.push(Backend { label, url });
        }
    }
    found
}

/// The in-process memory backend (one process only).
pub(crate) fn memory() -> Backend {
    Backend {
        label: "memory",
        url: "memory://".into(),
    }
}

/// A primitive name no other test run uses: `cli-test/<what>/<pid>-<nanos>`.
pub(crate) fn unique(what: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    format!("cli-test/{what}/{}-{nanos}", std::process::id())
}

/// The binary, with a clean environment for what it reads (`DISTSYNC_URL`, `RUST_LOG`).
pub(crate) fn command(backend: Option<&str>, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_distsync"));
    command.env_remove("DISTSYNC_URL").env_remove("RUST_LOG");
    if let Some(url) = backend {
        command.args(["--backend", url]);
    }
    command.args(args);
    command
}

/// A running `distsync`, killed when dropped.
pub(crate) struct Proc {
    what: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Why standard output's reader stopped (its end of file or a read error), once it has.
    stdout_end: Arc<Mutex<Option<String>>>,
    stderr: Arc<Mutex<String>>,
    /// Closed when standard error has been read to its end.
    stderr_done: Receiver<()>,
}

impl Proc {
    /// Starts `distsync [--backend URL] ARGS...` with piped standard streams.
    pub(crate) fn spawn(backend: Option<&str>, args: &[&str]) -> Proc {
        Self::start(command(backend, args), args)
    }

    /// Starts a prepared command with piped standard streams.
    pub(crate) fn start(mut command: Command, args: &[&str]) -> Proc {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the distsync binary starts");
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::channel();
        let stdout_end = Arc::new(Mutex::new(None));
        let end = Arc::clone(&stdout_end);
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = Vec::new();
            let reason = loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) => break "end of file".to_owned(),
                    Ok(_) => {
                        if line.last() == Some(&b'\n') {
                            line.pop();
                        }
                        let text = String::from_utf8_lossy(&line).into_owned();
                        if sender.send(text).is_err() {
                            return;
                        }
                    }
                    Err(error) => break format!("read error: {error}"),
                }
            };
            *end.lock().unwrap() = Some(reason);
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut child_stderr = child.stderr.take().unwrap();
        let collected = Arc::clone(&stderr);
        let (done, stderr_done) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n @ 1..) = child_stderr.read(&mut buffer) {
                collected
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
            drop(done);
        });
        Proc {
            what: format!("distsync {}", args.join(" ")),
            stdin: child.stdin.take(),
            child,
            lines,
            stdout_end,
            stderr,
            stderr_done,
        }
    }

    /// Its process id.
    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }

    /// What the process wrote to standard error so far.
    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The next line of standard output; panics (with standard error) after
    /// [`DEADLINE`].
    pub(crate) fn line(&mut self) -> String {
        match self.lines.recv_timeout(DEADLINE) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => panic!(
                "{}: no line within {DEADLINE:?}; stderr: {}",
                self.what,
                self.stderr()
            ),
            Err(RecvTimeoutError::Disconnected) => panic!(
                "{}: standard output closed ({:?}; exit {:?}); stderr: {}",
                self.what,
                self.stdout_end.lock().unwrap(),
                self.child.try_wait(),
                self.stderr()
            ),
        }
    }

    /// The next line, which must start with `prefix`.
    pub(crate) fn expect(&mut self, prefix: &str) -> String {
        let line = self.line();
        assert!(
            line.starts_with(prefix),
            "{}: expected a line starting with {prefix:?}, got {line:?}",
            self.what
        );
        line
    }

    /// Asserts that no line comes within [`QUIET`]: the process is blocked.
    pub(crate) fn quiet(&mut self) {
        match self.lines.recv_timeout(QUIET) {
            Ok(line) => panic!("{}: expected to be blocked, printed {line:?}", self.what),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => panic!(
                "{}: expected to be blocked, exited {:?}; stderr: {}",
                self.what,
                self.child.try_wait(),
                self.stderr()
            ),
        }
    }

    /// Writes one line to standard input.
    pub(crate) fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("standard input still open");
        writeln!(stdin, "{line}").expect("write to distsync's standard input");
        stdin.flush().unwrap();
    }

    /// Closes standard input (end of input).
    pub(crate) fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Sends a signal (SIGINT, SIGTERM) to the process.
    pub(crate) fn signal(&self, signal: libc::c_int) {
        use rustix::process::{kill_process, Pid, Signal};
        // The child is ours and not yet reaped, so its pid cannot have been reused.
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap()).unwrap();
        kill_process(pid, Signal::from_named_raw(signal).unwrap()).unwrap();
    }

    /// Waits for the process to exit (bounded by [`DEADLINE`]) and returns its code;
    /// [`Proc::stderr`] is then complete.
    pub(crate) fn wait(&mut self) -> i32 {
        let status = self.wait_status();
        status
            .code()
            .unwrap_or_else(|| panic!("{}: killed by a signal: {status:?}", self.what))
    }

    fn wait_status(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let drained = self.stderr_done.recv_timeout(DEADLINE);
                assert!(
                    matches!(drained, Err(RecvTimeoutError::Disconnected)),
                    "{}: standard error still open {DEADLINE:?} after the exit",
                    self.what
                );
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{}: still running after {DEADLINE:?}; stderr: {}",
                self.what,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every remaining line of standard output, once the process has exited.
    pub(crate) fn rest(&mut self) -> Vec<String> {
        self.wait_status();
        let mut rest = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(DEADLINE) {
            rest.push(line);
        }
        rest
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `distsync [--backend URL] ARGS...` to completion with empty standard input;
/// returns its exit code, standard output lines and standard error.
pub(crate) fn run(backend: Option<&str>, args: &[&str]) -> (i32, Vec<String>, String) {
    let mut proc = Proc::spawn(backend, args);
    proc.close_stdin();
    let code = proc.wait();
    let lines = proc.rest();
    (code, lines, proc.stderr())
}

/// The value of `key=` in a result line such as `a key=a/1 token=7`.
pub(crate) fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let start = line
        .find(&format!("{key}="))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
        + key.len()
        + 1;
    line[start..].split(' ').next().unwrap()
}

/// The `token=` (or `term=`) of a result line, as a number.
pub(crate) fn number(line: &str, key: &str) -> u64 {
    field(line, key)
        .parse()
        .unwrap_or_else(|_| panic!("{key}= is not a number in {line:?}"))
}

/// Runs `distsync [--backend URL] ARGS...` to completion with `input` as its standard
/// input; returns its exit code, raw standard output and standard error. Bounded by
/// [`DEADLINE`] like [`Proc::wait`].
pub(crate) fn run_bytes(
    backend: Option<&str>,
    args: &[&str],
    input: &[u8],
) -> (i32, Vec<u8>, String) {
    let mut child = command(backend, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the distsync binary starts");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // A thread of its own, so that a large input never blocks against a full stdout.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let (sender, output) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    let output = output
        .recv_timeout(DEADLINE)
        .unwrap_or_else(|_| {
            panic!(
                "distsync {}: still running after {DEADLINE:?}",
                args.join(" ")
            )
        })
        .expect("waiting for distsync");
    writer.join().unwrap();
    let code = output
        .status
        .code()
        .unwrap_or_else(|| panic!("distsync {}: killed by a signal", args.join(" ")));
    (
        code,
        output.stdout,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
