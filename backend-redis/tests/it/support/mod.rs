//! What this crate's tests share: a `redis-server` of a test's own, on a free
//! loopback port, with the settings the test asks for (the conformance suite's
//! private servers have fixed settings); and the shared test server with namespaces
//! of a test's own (`server.rs`).

#![allow(dead_code)]

mod crashed_holder;
mod server;
mod session_ttls;

#[allow(unused_imports)] // Not every test binary uses all of them.
pub(crate) use crashed_holder::crashed_holder;
#[allow(unused_imports)]
pub(crate) use server::{server_url, unique_namespace, with_namespace};
pub(crate) use session_ttls::{CRASH_TTL, RENEWED_TTL};

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private `redis-server`, killed (and its directory removed) when dropped.
pub(crate) struct PrivateRedis {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    /// A configuration file given first (a Sentinel needs one it can rewrite).
    config: Option<PathBuf>,
    args: Vec<String>,
}

/// A free loopback port, and a fresh directory for a server on it.
fn free_port_and_dir() -> (u16, PathBuf) {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let dir =
        std::env::temp_dir().join(format!("distsync-redis-test-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    (port, dir)
}

impl PrivateRedis {
    /// Starts a server without persistence, with `extra` arguments
    /// (`--name value ...`), which may turn persistence on again.
    pub(crate) fn start(extra: &[&str]) -> Self {
        let (port, dir) = free_port_and_dir();
        let mut server = Self {
            child: None,
            dir,
            port,
            config: None,
            args: extra.iter().map(|arg| (*arg).to_owned()).collect(),
        };
        server.run();
        server
    }

    /// Starts a Sentinel of its own watching the primary on `primary_port` as
    /// `service`, alone (quorum 1).
    pub(crate) fn sentinel(service: &str, primary_port: u16) -> Self {
        let (port, dir) = free_port_and_dir();
        let config = dir.join("sentinel.conf");
        std::fs::write(
            &config,
            format!("sentinel monitor {service} 127.0.0.1 {primary_port} 1\n"),
        )
        .unwrap();
        let mut server = Self {
            child: None,
            dir,
            port,
            config: Some(config),
            args: vec!["--sentinel".to_owned()],
        };
        server.run();
        server
    }

    /// The port the server listens on.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Starts the server (again, after [`PrivateRedis::stop`]: same port and directory).
    pub(crate) fn run(&mut self) {
        let child = Command::new("redis-server")
            .args(self.config.iter())
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        self.child = Some(child);
        // Ready when it answers `PONG`: a server with an append-only file listens
        // while it loads the file, and answers `LOADING` until it is done.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.answers_pong() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the server answers `PING` with `PONG` now.
    fn answers_pong(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let mut reply = [0; 5];
        stream
            .set_read_timeout(Some(Duration::from_secs(1)))
            .is_ok()
            && stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG"
    }

    /// Stops the server with SIGTERM (which writes its append-only file, if any) and
    /// waits for it to exit.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() {
                assert!(Instant::now() < deadline, "redis-server ignored SIGTERM");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts the stopped server again, on the same port and directory.
    pub(crate) fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// The server's URL, with `query` (e.g. `?namespace=x`) appended.
    pub(crate) fn url(&self, query: &str) -> String {
        format!("redis://127.0.0.1:{}/0{query}", self.port)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
