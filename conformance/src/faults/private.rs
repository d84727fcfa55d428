//! Private servers for restart cases: an etcd, a Redis or a PostgreSQL of a case's own,
//! on free loopback ports, with their data in a temporary directory removed afterwards.
//!
//! Restarting the shared test servers would break every other test running against
//! them, so a case that restarts a server starts one of its own. The binaries are
//! Debian's (`etcd`, `redis-server`, PostgreSQL's `initdb` / `pg_ctl` under
//! `/usr/lib/postgresql/<version>/bin`); PostgreSQL refuses to run as root, so as root
//! its commands run as the `postgres` user (`runuser`).
//!
//! - etcd keeps its data directory across the restart (stopped with SIGTERM);
//! - Redis runs without persistence (`--save "" --appendonly no`), so a restart
//!   empties it;
//! - PostgreSQL is stopped with `pg_ctl stop -m fast`, which ends every connection
//!   (and with them the advisory locks) and keeps the data.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use distsync_core::{Backend, Result, SessionOptions};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::server::StoreKind;
use super::tools::{self, free_port, is_root, pg_bin, port_open, require};
use super::{hook_error, Connect, EvictingServer, PrivateServer};

/// How long a private server may take to start or stop.
const WAIT: Duration = Duration::from_secs(60);

/// Whether a private server of `kind` can be started here, or why not.
pub fn available(kind: StoreKind) -> std::result::Result<(), String> {
    match kind {
        StoreKind::Etcd => require("etcd", "etcd-server").map(drop),
        StoreKind::Redis => require("redis-server", "redis-server").map(drop),
        StoreKind::Postgres => {
            let bin = pg_bin().ok_or_else(|| {
                "PostgreSQL's server binaries (initdb, pg_ctl) are not installed \
                 (Debian package postgresql)"
                    .to_owned()
            })?;
            if is_root() {
                require("runuser", "util-linux")?;
            }
            super::server::psql()?;
            if bin.join("pg_ctl").is_file() {
                Ok(())
            } else {
                Err(format!("no pg_ctl in {}", bin.display()))
            }
        }
    }
}

/// Starts a private server of `kind`, reached with `connect`, and waits until a
/// backend can open a session on it.
///
/// # Errors
/// When it cannot be started or does not answer within a minute.
pub async fn start(kind: StoreKind, connect: Connect) -> Result<Box<dyn PrivateServer>> {
    let dir = tools::temp_dir(&format!("private-{}", kind.as_str()))?;
    let port = free_port()?;
    let mut server: Box<dyn PrivateServer> = match kind {
        StoreKind::Etcd => Box::new(Private {
            kind: Kind::Etcd {
                peer_port: free_port()?,
            },
            url: format!("etcd://127.0.0.1:{port}"),
            dir,
            port,
            child: None,
            connect,
        }),
        StoreKind::Redis => Box::new(Private {
            kind: Kind::Redis { args: Vec::new() },
            url: format!("redis://127.0.0.1:{port}"),
            dir,
            port,
            child: None,
            connect,
        }),
        StoreKind::Postgres => {
            let bin = pg_bin().ok_or_else(|| hook_error("starting postgres", "no binaries"))?;
            let private = Private {
                kind: Kind::Postgres { bin },
                url: format!("postgres://distsync@127.0.0.1:{port}/distsync"),
                dir,
                port,
                child: None,
                connect,
            };
            private.initdb().await?;
            Box::new(private)
        }
    };
    server.start().await?;
    Ok(server)
}

/// The eviction policy of [`start_evicting_redis`].
const EVICTION_POLICY: &str = "allkeys-lru";

/// Starts a private `redis-server` that evicts keys (`maxmemory 64mb`,
/// `maxmemory-policy allkeys-lru`), reached with a URL that opts in to eviction
/// (`allow_eviction=true`), so that it can be probed; the URL without it is
/// [`EvictingServer::strict_url`].
///
/// # Errors
/// When it cannot be started or does not answer within a minute.
pub async fn start_evicting_redis(connect: Connect) -> Result<EvictingServer> {
    let dir = tools::temp_dir("private-redis-evicting")?;
    let port = free_port()?;
    let strict_url = format!("redis://127.0.0.1:{port}");
    let mut server: Box<dyn PrivateServer> = Box::new(Private {
        kind: Kind::Redis {
            args: ["--maxmemory", "64mb", "--maxmemory-policy", EVICTION_POLICY]
                .map(str::to_owned)
                .to_vec(),
        },
        url: format!("{strict_url}?allow_eviction=true"),
        dir,
        port,
        child: None,
        connect: Arc::clone(&connect),
    });
    server.start().await?;
    Ok(EvictingServer {
        server,
        strict_url,
        policy: EVICTION_POLICY.to_owned(),
        connect,
    })
}

enum Kind {
    Etcd {
        peer_port: u16,
    },
    /// With extra command-line arguments.
    Redis {
        args: Vec<String>,
    },
    Postgres {
        bin: PathBuf,
    },
}

/// A private server.
struct Private {
    kind: Kind,
    url: String,
    dir: PathBuf,
    port: u16,
    /// The server process (etcd, Redis; PostgreSQL runs daemonised by `pg_ctl`).
    child: Option<Child>,
    connect: Connect,
}

impl Private {
    fn log(&self, name: &str) -> Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(name))
            .map_err(|error| hook_error("opening the server log", error))
    }

    /// `program args...`, as the `postgres` user when running as root.
    fn postgres_command(program: &Path) -> Command {
        if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    async fn initdb(&self) -> Result<()> {
        let Kind::Postgres { bin } = &self.kind else {
            return Ok(());
        };
        if is_root() {
            let out = tools::run(Path::new("id"), ["-u", "postgres"], &[]).await?;
            let uid: u32 = out.stdout.trim().parse().map_err(|error| {
                hook_error("finding the postgres user", format!("id -u: {error}"))
            })?;
            let out = tools::run(Path::new("id"), ["-g", "postgres"], &[]).await?;
            let gid: u32 = out.stdout.trim().parse().map_err(|error| {
                hook_error("finding the postgres group", format!("id -g: {error}"))
            })?;
            std::os::unix::fs::chown(&self.dir, Some(uid), Some(gid))
                .map_err(|error| hook_error("handing the data directory to postgres", error))?;
        }
        let mut initdb = Self::postgres_command(&bin.join("initdb"));
        initdb.arg("-D").arg(self.data()).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-locale",
            "-E",
            "UTF8",
        ]);
        tools::run_command(initdb, &[]).await?;
        let settings = format!(
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n\
             max_connections = 200\nfsync = off\nsynchronous_commit = off\n\
             full_page_writes = off\n",
            self.port
        );
        let conf = self.data().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)
            .map_err(|error| hook_error("reading postgresql.conf", error))?;
        text.push_str(&settings);
        std::fs::write(&conf, text).map_err(|error| hook_error("writing postgresql.conf", error))
    }

    /// Waits until a backend can open and close a session on the server.
    async fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        let mut last = String::from("no attempt");
        while Instant::now() < deadline {
            if port_open(self.port).await {
                match self.probe().await {
                    Ok(()) => return Ok(()),
                    Err(error) => last = error.to_string(),
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(hook_error(
            format!("the private server at {}", self.url),
            format!("not ready after {WAIT:?}: {last}"),
        ))
    }

    async fn probe(&self) -> Result<()> {
        let probe = async {
            let backend = (self.connect)(self.url.clone()).await?;
            let ttl = backend
                .capabilities()
                .min_session_ttl
                .max(Duration::from_secs(2));
            let session = backend.session(SessionOptions::with_ttl(ttl)).await?;
            session.close().await
        };
        tokio::time::timeout(Duration::from_secs(10), probe)
            .await
            .map_err(|_| hook_error("probing the private server", "no answer within 10 s"))?
    }

    async fn wait_exit(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            tools::signal(pid, libc::SIGTERM)?;
        }
        match tokio::time::timeout(WAIT, child.wait()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(hook_error("waiting for the server to exit", error)),
            Err(_) => {
                let _ = child.kill().await;
                Err(hook_error(
                    "stopping the private server",
                    format!("it ignored SIGTERM for {WAIT:?}"),
                ))
            }
        }
    }
}

#[async_trait]
impl PrivateServer for Private {
    fn url(&self) -> &str {
        &self.url
    }

    async fn connect(&self) -> Result<Arc<dyn Backend>> {
        (self.connect)(self.url.clone()).await
    }

    async fn stop(&mut self) -> Result<()> {
        match &self.kind {
            Kind::Etcd { .. } | Kind::Redis { .. } => self.wait_exit().await,
            Kind::Postgres { bin } => {
                let mut stop = Self::postgres_command(&bin.join("pg_ctl"));
                stop.arg("-D")
                    .arg(self.data())
                    .args(["-m", "fast", "-w", "-t", "60", "stop"]);
                tools::run_command(stop, &[]).await.map(drop)
            }
        }
    }

    async fn start(&mut self) -> Result<()> {
        let client = format!("http://127.0.0.1:{}", self.port);
        match &self.kind {
            Kind::Etcd { peer_port } => {
                let peer = format!("http://127.0.0.1:{peer_port}");
                let etcd = require("etcd", "etcd-server")
                    .map_err(|reason| hook_error("starting etcd", reason))?;
                let child = Command::new(etcd)
                    .args(["--name", "private", "--data-dir"])
                    .arg(self.data())
                    .args(["--listen-client-urls", &client])
                    .args(["--advertise-client-urls", &client])
                    .args(["--listen-peer-urls", &peer])
                    .args(["--initial-advertise-peer-urls", &peer])
                    .args(["--initial-cluster", &format!("private={peer}")])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(self.log("etcd.log")?)
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(|error| hook_error("starting etcd", error))?;
                self.child = Some(child);
            }
            Kind::Redis { args } => {
                let redis = require("redis-server", "redis-server")
                    .map_err(|reason| hook_error("starting redis-server", reason))?;
                let child = Command::new(redis)
                    .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
                    .args(["--save", "", "--appendonly", "no"])
                    .args(args)
                    .arg("--dir")
                    .arg(&self.dir)
                    .stdin(Stdio::null())
                    .stdout(self.log("redis.log")?)
                    .stderr(Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(|error| hook_error("starting redis-server", error))?;
                self.child = Some(child);
            }
            Kind::Postgres { bin } => {
                let first = !self.dir.join("server.log").exists();
                let mut start = Self::postgres_command(&bin.join("pg_ctl"));
                start
                    .arg("-D")
                    .arg(self.data())
                    .arg("-l")
                    .arg(self.dir.join("server.log"))
                    .args(["-w", "-t", "60", "start"]);
                tools::run_command(start, &[]).await?;
                if first {
                    let psql = super::server::psql()
                        .map_err(|reason| hook_error("creating the distsync role", reason))?;
                    let port = self.port.to_string();
                    tools::run(
                        &psql,
                        [
                            "-X",
                            "-q",
                            "-h",
                            "127.0.0.1",
                            "-p",
                            port.as_str(),
                            "-U",
                            "postgres",
                            "-d",
                            "postgres",
                            "-c",
                            "CREATE ROLE distsync LOGIN",
                            "-c",
                            "CREATE DATABASE distsync OWNER distsync",
                        ],
                        &[],
                    )
                    .await?;
                }
            }
        }
        self.wait_ready().await
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        if let Kind::Postgres { bin } = &self.kind {
            if self.data().join("postmaster.pid").exists() {
                let pg_ctl = bin.join("pg_ctl");
                let mut stop = if is_root() {
                    let mut command = std::process::Command::new("runuser");
                    command.args(["-u", "postgres", "--"]).arg(pg_ctl);
                    command
                } else {
                    std::process::Command::new(pg_ctl)
                };
                let stopped = stop
                    .arg("-D")
                    .arg(self.data())
                    .args(["-m", "immediate", "-w", "-t", "30", "stop"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                if let Err(error) = stopped {
                    tracing::warn!(%error, dir = %self.dir.display(), "could not stop a private postgres");
                }
            }
        }
        // The child is killed asynchronously; its files may still be open, which
        // does not keep the directory from being removed.
        if let Err(error) = std::fs::remove_dir_all(&self.dir) {
            tracing::debug!(%error, dir = %self.dir.display(), "removing a private server's directory");
        }
    }
}
