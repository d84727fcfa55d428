//! Behaviour across a server restart, on a private PostgreSQL cluster this test creates
//! (`initdb`) in a temporary directory, on a free port, and removes afterwards: durable
//! state survives, sessions are lost, blocked waits on durable state resume.
//!
//! Runs when `DISTSYNC_POSTGRES_URL` is set (the test servers are installed); skipped
//! loudly otherwise, a failure under `CI=true`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use distsync_core::{Backend, Isolation, Name, SessionOptions};

/// A PostgreSQL cluster of this test's own.
struct PrivatePg {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

fn pg_bin() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok().map(|entry| entry.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort();
    found.pop()
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

impl PrivatePg {
    fn start() -> Option<Self> {
        support::url()?;
        let Some(bin) = pg_bin() else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but no PostgreSQL binaries under /usr/lib/postgresql"
            );
            eprintln!("\n!!! no PostgreSQL binaries under /usr/lib/postgresql: SKIPPING the restart test !!!\n");
            return None;
        };
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "distsync-pg-restart-{}-{nanos:x}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        // initdb refuses to run as root: run the server as `postgres` then.
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
            .unwrap_or(false);
        if as_postgres {
            run(Command::new("chown").args(["-R", "postgres:", &dir.to_string_lossy()]));
        }
        let server = Self {
            dir,
            bin,
            port: free_port(),
            as_postgres,
        };
        server.pg(
            "initdb",
            &[
                "-D",
                &server.data(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-locale",
                "-E",
                "UTF8",
            ],
        );
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            server.port,
            server.dir.display()
        );
        let log = server.dir.join("server.log");
        server.pg(
            "pg_ctl",
            &[
                "-D",
                &server.data(),
                "-l",
                &log.to_string_lossy(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
        let port = server.port.to_string();
        // An ordinary role owning its database, as in production.
        for sql in ["CREATE ROLE app LOGIN", "CREATE DATABASE app OWNER app"] {
            server.pg(
                "psql",
                &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-qc", sql],
            );
        }
        Some(server)
    }

    fn data(&self) -> String {
        self.dir.join("data").to_string_lossy().into_owned()
    }

    fn url(&self) -> String {
        format!("postgres://app@127.0.0.1:{}/app", self.port)
    }

    fn pg(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            Command::new(&program)
        };
        command.args(args).current_dir(Path::new("/"));
        run(&mut command);
    }

    fn restart(&self) {
        let log = self.dir.join("server.log");
        let log = log.to_string_lossy();
        let data = self.data();
        self.pg(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-m", "fast", "-w", "restart"],
        );
    }
}

fn run(command: &mut Command) {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("running {command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let program = self.bin.join("pg_ctl");
        let data = self.data();
        let args = ["-D", data.as_str(), "-m", "immediate", "-w", "stop"];
        let _ = if self.as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&program)
                .args(args)
                .output()
        } else {
            Command::new(&program).args(args).output()
        };
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn within<T>(limit: Duration, what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {limit:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_keeps_durable_state_ends_sessions_and_waiters_resume() {
    let Some(server) = tokio::task::spawn_blocking(PrivatePg::start).await.unwrap() else {
        return;
    };
    let backend = distsync_postgres::backend(&server.url()).await.unwrap();
    let name = |s: &str| Name::new(s).unwrap();

    let queue = backend.queue(name("jobs")).unwrap();
    queue.enqueue("a".into()).await.unwrap();
    queue.enqueue_with_priority("b".into(), 5).await.unwrap();
    let barrier = backend.barrier(name("gate")).unwrap();
    barrier.hold().await.unwrap();
    let stm = backend.stm().unwrap();
    stm.atomically(Isolation::Serializable, |tx| async move {
        tx.put("k", "v");
        Ok(())
    })
    .await
    .unwrap();
    let ttl = Duration::from_secs(1);
    let session = backend
        .session(SessionOptions::with_ttl(ttl))
        .await
        .unwrap();
    let guard = backend
        .locker(&session, name("mutex"))
        .unwrap()
        .lock()
        .await
        .unwrap();

    let empty = backend.queue(name("later")).unwrap();
    let consumer = tokio::spawn(async move { empty.dequeue().await });
    let gate = backend.barrier(name("gate")).unwrap();
    let passer = tokio::spawn(async move { gate.wait().await });

    let restart = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    });
    let server = within(Duration::from_secs(60), "restarting the server", restart)
        .await
        .unwrap();

    // Sessions do not survive: their connections died.
    within(ttl * 3, "the session's lost()", session.lost()).await;
    assert!(guard.is_lost());

    // Durable state survived (the pool reconnects on its own).
    assert_eq!(
        within(Duration::from_secs(10), "queue len", queue.len())
            .await
            .unwrap(),
        2
    );
    assert_eq!(queue.dequeue().await.unwrap(), "a");
    assert_eq!(queue.dequeue().await.unwrap(), "b");
    let value = stm
        .atomically(
            Isolation::Serializable,
            |tx| async move { tx.get("k").await },
        )
        .await
        .unwrap();
    assert_eq!(value.as_deref(), Some(&b"v"[..]));

    // Waits on durable state rode out the restart.
    backend
        .queue(name("later"))
        .unwrap()
        .enqueue("after".into())
        .await
        .unwrap();
    let item = within(Duration::from_secs(10), "the blocked dequeue", consumer)
        .await
        .unwrap();
    assert_eq!(item.unwrap(), "after");
    assert!(
        !passer.is_finished(),
        "wait() passed a barrier that is still held"
    );
    barrier.release().await.unwrap();
    within(Duration::from_secs(10), "the barrier wait", passer)
        .await
        .unwrap()
        .unwrap();

    // The lock is free again, and its fencing counter survived.
    let again = backend.session(SessionOptions::default()).await.unwrap();
    let next = backend
        .locker(&again, name("mutex"))
        .unwrap()
        .try_lock()
        .await
        .unwrap();
    let next = next.expect("the lock of a lost session is free after the restart");
    assert!(next.token() > guard.token());
    next.unlock().await.unwrap();
    again.close().await.unwrap();
    drop(server);
}
