//! Private servers for restart cases: an etcd, a Redis, a PostgreSQL, a ZooKeeper or a
//! MariaDB of a case's own, on free loopback ports, with their data in a temporary directory
//! removed afterwards.
//!
//! Restarting the shared test servers would break every other test running against
//! them, so a case that restarts a server starts one of its own. The binaries are
//! Debian's (`etcd`, `redis-server`, PostgreSQL's `initdb` / `pg_ctl` under
//! `/usr/lib/postgresql/<version>/bin`); PostgreSQL refuses to run as root, so as root
//! its commands run as the `postgres` user (`runuser`).
//!
//! - etcd keeps its data directory across the restart (stopped with SIGTERM);
//! - Redis runs without persistence (`--save "" --appendonly no`), so a restart
//!   empties it; its URL carries the options of the column's URL that change what one
//!   server gives ([`CARRIED_REDIS_OPTIONS`]: `max_session_ttl`, the lock-delay after
//!   the store forgets), so that a restart case measures the configuration its
//!   column declares ([`start_like`]), with the bound lowered to
//!   [`PRIVATE_MAX_SESSION_TTL`]: the same lock-delay, as long as the restart cases'
//!   own sessions need, so that a case waits seconds, not the column's bound, for a
//!   brand-new or restarted server's first grants;
//! - PostgreSQL is stopped with `pg_ctl stop -m fast`, which ends every connection
//!   (and with them the advisory locks) and keeps the data;
//! - ZooKeeper (Debian's jars, run as scripts/servers.sh runs the shared one:
//!   `QuorumPeerMain` standalone with a private `zoo.cfg`, tick 500 ms, loopback only)
//!   keeps its data directory across the restart: its transaction log, fsynced before
//!   each write is acknowledged, holds the nodes and the sessions, so a SIGKILL loses
//!   nothing acknowledged; the restarted server gives each session it finds a full
//!   timeout to come back before it expires it;
//! - MariaDB (Debian's `mariadbd`, run as scripts/servers.sh runs the shared one: no
//!   option files, loopback only) keeps its data directory across the restart: InnoDB
//!   writes its redo log before it acknowledges a commit, so a SIGKILL loses nothing
//!   acknowledged; a wipe removes the directory, and the next start installs a fresh
//!   one (`mariadb-install-db`) with the user and database again.
//!
//! [`super::postgres_standby`] builds a primary with a promotable standby on these.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use distsync_core::{Backend, Result, SessionOptions};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::private_mariadb::MARIADB_USER;
use super::store::StoreKind;
use super::tools::{self, free_port, is_root, pg_bin, port_open, require};
use super::{hook_error, Connect, EvictingServer, PrivateServer};

/// How long a private server may take to start or stop.
pub(super) const WAIT: Duration = Duration::from_secs(60);

/// Whether a private server of `kind` can be started here, or why not.
pub fn available(kind: StoreKind) -> std::result::Result<(), String> {
    match kind {
        StoreKind::Etcd => require("etcd", "etcd-server").map(drop),
        StoreKind::Redis => require("redis-server", "redis-server").map(drop),
        StoreKind::Zookeeper => {
            require("java", "default-jre-headless")?;
            match zookeeper_classpath().into_iter().find(|jar| !jar.is_file()) {
                Some(jar) => Err(format!(
                    "{} is missing (Debian package zookeeper)",
                    jar.display()
                )),
                None => Ok(()),
            }
        }
        StoreKind::Mysql => {
            require("mariadbd", "mariadb-server")?;
            require("mariadb-install-db", "mariadb-server")?;
            require("mariadb", "mariadb-client").map(drop)
        }
        StoreKind::Nats => Err(NATS_NOT_PRIVATE.to_owned()),
        StoreKind::Postgres => {
            let bin = pg_bin().ok_or_else(|| {
                "PostgreSQL's server binaries (initdb, pg_ctl) are not installed \
                 (Debian package postgresql)"
                    .to_owned()
            })?;
            if is_root() {
                require("runuser", "util-linux")?;
            }
            super::store::psql()?;
            if bin.join("pg_ctl").is_file() {
                Ok(())
            } else {
                Err(format!("no pg_ctl in {}", bin.display()))
            }
        }
    }
}

/// Why no private NATS server starts here yet: scripts/servers.sh installs nats-server
/// into its own state directory, which the runner does not know.
const NATS_NOT_PRIVATE: &str = "no private nats-server: the runner does not start one yet";

/// The jars ZooKeeper's server runs from: Debian's, as scripts/servers.sh lists them.
const ZOOKEEPER_JARS: &[&str] = &[
    "zookeeper",
    "zookeeper-jute",
    "slf4j-api",
    "slf4j-simple",
    "commons-cli",
    "commons-io",
    "metrics-core",
    "snappy-java",
    "netty-handler",
    "netty-common",
    "netty-buffer",
    "netty-transport",
    "netty-resolver",
    "netty-codec",
    "netty-transport-native-epoll",
    "netty-transport-native-unix-common",
];

/// The paths of [`ZOOKEEPER_JARS`] under `/usr/share/java`.
fn zookeeper_classpath() -> Vec<PathBuf> {
    ZOOKEEPER_JARS
        .iter()
        .map(|jar| Path::new("/usr/share/java").join(format!("{jar}.jar")))
        .collect()
}

/// The query options of a column's Redis URL that a private Redis's URL carries
/// ([`start_like`]): those that change what one server gives across a restart. The
/// others name the column's own server and its reach (`namespace`, TLS files,
/// `wait_replicas`, which a lone private server cannot acknowledge) or are measured
/// by cases of their own (`allow_eviction`).
pub const CARRIED_REDIS_OPTIONS: &[&str] = &["max_session_ttl"];

/// The largest `max_session_ttl` a private Redis's URL carries: the column's bound
/// covers every session of the suite (the default TTL among them), a private server
/// serves the restart cases only, whose sessions are shorter. A brand-new or
/// restarted server grants nothing for the bound, so the bound is what each restart
/// case pays, twice.
pub const PRIVATE_MAX_SESSION_TTL: Duration = Duration::from_secs(5);

/// `base` with the [`CARRIED_REDIS_OPTIONS`] of `column_url` as its query (`base`
/// unchanged when there is no column, `column_url` not parsing). A private Redis
/// forgets on every restart, so a column whose URL gives no bound (or an empty one)
/// would apply the default bound there: the private URL carries the column's bound, or
/// that default, lowered to [`PRIVATE_MAX_SESSION_TTL`]; a column's `off` is carried
/// as it is.
fn carry_redis_options(base: &str, column_url: &str) -> String {
    let Ok(column) = url::Url::parse(column_url) else {
        return base.to_owned();
    };
    let cap = format!("{}ms", PRIVATE_MAX_SESSION_TTL.as_millis());
    let given = column
        .query_pairs()
        .filter(|(key, _)| CARRIED_REDIS_OPTIONS.contains(&key.as_ref()))
        .last()
        .map(|(_, value)| value.into_owned());
    let bound = match given.as_deref() {
        Some("off") => "off".to_owned(),
        Some(value) => match distsync_core::raw::parse_url_timeout(value) {
            Ok(ttl) if ttl <= PRIVATE_MAX_SESSION_TTL => value.to_owned(),
            _ => cap,
        },
        None => cap,
    };
    format!("{base}?max_session_ttl={bound}")
}

/// Starts a private server of `kind`, reached with `connect`, and waits until a
/// backend can open a session on it.
///
/// # Errors
/// When it cannot be started or does not answer within a minute.
pub async fn start(kind: StoreKind, connect: Connect) -> Result<Box<dyn PrivateServer>> {
    start_like(kind, connect, "").await
}

/// [`start`], for a column whose URL is `column_url`: a private Redis's URL carries
/// its [`CARRIED_REDIS_OPTIONS`], so that the cell measures the configuration the
/// column declares (a column with `max_session_ttl=` declares
/// `exclusive_across_restart`, and its private servers wait out the same
/// lock-delay). Other kinds ignore it.
///
/// # Errors
/// When it cannot be started or does not answer within a minute.
pub async fn start_like(
    kind: StoreKind,
    connect: Connect,
    column_url: &str,
) -> Result<Box<dyn PrivateServer>> {
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
            url: carry_redis_options(&format!("redis://127.0.0.1:{port}"), column_url),
            dir,
            port,
            child: None,
            connect,
        }),
        StoreKind::Zookeeper => Box::new(Private {
            kind: Kind::Zookeeper,
            url: format!("zk://127.0.0.1:{port}"),
            dir,
            port,
            child: None,
            connect,
        }),
        StoreKind::Mysql => Box::new(Private {
            kind: Kind::Mariadb,
            url: format!("mysql://{MARIADB_USER}:{MARIADB_USER}@127.0.0.1:{port}/{MARIADB_USER}"),
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
        StoreKind::Nats => return Err(hook_error("starting nats", NATS_NOT_PRIVATE)),
    };
    server.start().await?;
    Ok(server)
}

/// The eviction policy of [`start_evicting_redis`].
const EVICTION_POLICY: &str = "allkeys-lru";

/// Starts a private `redis-server` that evicts keys (`maxmemory 64mb`,
/// `maxmemory-policy allkeys-lru`), reached with a URL that opts in to eviction
/// (`allow_eviction=true`), so that it can be probed; the URL without it is
/// [`EvictingServer::strict_url`]. The probing URL turns the lock-delay off
/// (`max_session_ttl=off`): the cases on it measure eviction, not restarts, and the
/// brand-new server would otherwise hold every first grant back for the default bound.
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
        url: format!("{strict_url}?allow_eviction=true&max_session_ttl=off"),
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

pub(super) enum Kind {
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
    /// Run from Debian's jars ([`ZOOKEEPER_JARS`]).
    Zookeeper,
    /// `mariadbd` on a data directory of its own ([`super::private_mariadb`]).
    Mariadb,
}

/// A private server.
pub(super) struct Private {
    pub(super) kind: Kind,
    pub(super) url: String,
    pub(super) dir: PathBuf,
    pub(super) port: u16,
    /// The server process (etcd, Redis; PostgreSQL runs daemonised by `pg_ctl`).
    pub(super) child: Option<Child>,
    pub(super) connect: Connect,
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
    pub(super) fn postgres_command(program: &Path) -> Command {
        if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    pub(super) fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub(super) async fn initdb(&self) -> Result<()> {
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

    /// Writes `zoo.cfg` (as scripts/servers.sh writes the shared server's: tick 500 ms,
    /// so that session timeouts from 1 s to 120 s are granted as asked; no limit on
    /// connections from one address, as the test servers; no admin
    /// server; `ruok` only) and starts `QuorumPeerMain` on it. The data directory is
    /// created if missing and otherwise kept, which is what makes a restart keep the
    /// store's nodes and sessions.
    fn spawn_zookeeper(&self) -> Result<Child> {
        let java = require("java", "default-jre-headless")
            .map_err(|reason| hook_error("starting zookeeper", reason))?;
        std::fs::create_dir_all(self.data())
            .map_err(|error| hook_error("creating ZooKeeper's data directory", error))?;
        let config = format!(
            "tickTime=500\ndataDir={}\nclientPort={}\nclientPortAddress=127.0.0.1\n\
             minSessionTimeout=1000\nmaxSessionTimeout=120000\nmaxClientCnxns=0\n\
             admin.enableServer=false\n\
             4lw.commands.whitelist=ruok\n",
            self.data().display(),
            self.port
        );
        let zoo_cfg = self.dir.join("zoo.cfg");
        std::fs::write(&zoo_cfg, config).map_err(|error| hook_error("writing zoo.cfg", error))?;
        let classpath = std::env::join_paths(zookeeper_classpath())
            .map_err(|error| hook_error("ZooKeeper's class path", error))?;
        Command::new(java)
            .arg("-Xmx128m")
            .arg("-cp")
            .arg(classpath)
            .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
            .arg(&zoo_cfg)
            .stdin(Stdio::null())
            .stdout(self.log("zookeeper.log")?)
            .stderr(self.log("zookeeper.log")?)
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| hook_error("starting zookeeper", error))
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

    /// Ends the server process with `signal` and waits until it has exited.
    async fn wait_exit(&mut self, signal: libc::c_int) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            tools::signal(pid, signal)?;
        }
        match tokio::time::timeout(WAIT, child.wait()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(hook_error("waiting for the server to exit", error)),
            Err(_) => {
                let _ = child.kill().await;
                Err(hook_error(
                    "stopping the private server",
                    format!("it ignored signal {signal} for {WAIT:?}"),
                ))
            }
        }
    }

    /// Stops the server: etcd and Redis with `signal`, PostgreSQL with `pg_ctl stop -m
    /// <mode>`.
    async fn end(&mut self, signal: libc::c_int, mode: &str) -> Result<()> {
        match &self.kind {
            Kind::Etcd { .. } | Kind::Redis { .. } | Kind::Zookeeper | Kind::Mariadb => {
                self.wait_exit(signal).await
            }
            Kind::Postgres { bin } => {
                let mut stop = Self::postgres_command(&bin.join("pg_ctl"));
                stop.arg("-D")
                    .arg(self.data())
                    .args(["-m", mode, "-w", "-t", "60", "stop"]);
                tools::run_command(stop, &[]).await.map(drop)
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
        self.end(libc::SIGTERM, "fast").await
    }

    async fn crash(&mut self) -> Result<()> {
        self.end(libc::SIGKILL, "immediate").await
    }

    async fn wipe(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Err(hook_error("wiping the private server", "it is running"));
        }
        match &self.kind {
            Kind::Etcd { .. } => std::fs::remove_dir_all(self.data())
                .map_err(|error| hook_error("removing etcd's data directory", error)),
            Kind::Redis { .. } => Ok(()),
            Kind::Zookeeper => std::fs::remove_dir_all(self.data())
                .map_err(|error| hook_error("removing ZooKeeper's data directory", error)),
            // The next start installs a fresh data directory.
            Kind::Mariadb => std::fs::remove_dir_all(self.data())
                .map_err(|error| hook_error("removing MariaDB's data directory", error)),
            Kind::Postgres { .. } => {
                std::fs::remove_dir_all(self.data())
                    .map_err(|error| hook_error("removing PostgreSQL's data directory", error))?;
                // The next start creates the role and database again.
                let _ = std::fs::remove_file(self.dir.join("server.log"));
                self.initdb().await
            }
        }
    }

    async fn connect_with(&self, query: &str) -> Result<Arc<dyn Backend>> {
        if query.is_empty() {
            return self.connect().await;
        }
        let separator = if self.url.contains('?') { '&' } else { '?' };
        (self.connect)(format!("{}{separator}{query}", self.url)).await
    }

    fn connector(&self) -> Option<Connect> {
        Some(Arc::clone(&self.connect))
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
            Kind::Zookeeper => {
                let child = self.spawn_zookeeper()?;
                self.child = Some(child);
            }
            Kind::Mariadb => {
                let fresh = super::private_mariadb::install(&self.data()).await?;
                let child = super::private_mariadb::spawn(
                    &self.data(),
                    &self.dir.join("mariadbd.sock"),
                    self.port,
                    self.log("mariadbd.log")?,
                )
                .await?;
                self.child = Some(child);
                if fresh {
                    super::private_mariadb::create_user(&self.dir.join("mariadbd.sock")).await?;
                }
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
                    let psql = super::store::psql()
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
            stop_postgres_now(bin, &self.data());
        }
        // The child is killed asynchronously; its files may still be open, which
        // does not keep the directory from being removed.
        if let Err(error) = std::fs::remove_dir_all(&self.dir) {
            tracing::debug!(%error, dir = %self.dir.display(), "removing a private server's directory");
        }
    }
}

/// Stops the PostgreSQL server of `data`, if it runs, at once and synchronously (`pg_ctl
/// stop -m immediate`), for a drop: its directory is removed next.
pub(super) fn stop_postgres_now(bin: &Path, data: &Path) {
    if !data.join("postmaster.pid").exists() {
        return;
    }
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
        .arg(data)
        .args(["-m", "immediate", "-w", "-t", "30", "stop"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if let Err(error) = stopped {
        tracing::warn!(%error, dir = %data.display(), "could not stop a private postgres");
    }
}

#[cfg(test)]
mod tests {
    use super::carry_redis_options;

    #[test]
    fn a_private_redis_carries_the_lock_delay_of_its_column_or_its_default_and_nothing_else() {
        let base = "redis://127.0.0.1:7000";
        assert_eq!(
            carry_redis_options(
                base,
                "redis://h:6379/0?namespace=app:&max_session_ttl=3s&wait_replicas=1"
            ),
            "redis://127.0.0.1:7000?max_session_ttl=3s"
        );
        // A longer bound is lowered to the private servers' own.
        assert_eq!(
            carry_redis_options(base, "redis://h:6379/0?max_session_ttl=15s"),
            "redis://127.0.0.1:7000?max_session_ttl=5000ms"
        );
        // None given, or an empty one: the default bound the column's client applies to
        // a server that forgets, lowered the same way.
        let lowered = "redis://127.0.0.1:7000?max_session_ttl=5000ms";
        for column in [
            "redis://h:6379/0?namespace=x:",
            "redis://h:6379",
            "redis://h:6379?max_session_ttl=",
        ] {
            assert_eq!(carry_redis_options(base, column), lowered, "{column}");
        }
        assert_eq!(
            carry_redis_options(
                base,
                "redis://h:6379?max_session_ttl=2s&max_session_ttl=off"
            ),
            "redis://127.0.0.1:7000?max_session_ttl=off"
        );
        assert_eq!(carry_redis_options(base, ""), base);
        assert_eq!(carry_redis_options(base, "not a url"), base);
    }
}
