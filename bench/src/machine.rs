//! Facts about the machine and the servers, printed with the results.

use std::process::Command;

use crate::target::{BackendKind, Target};

/// What the machine was, when, and how busy.
#[derive(Clone, Debug, Default)]
pub struct Machine {
    /// Logical CPUs available to this process.
    pub cpus: usize,
    /// CPU model name.
    pub cpu_model: Option<String>,
    /// Total memory, human-readable.
    pub memory: Option<String>,
    /// Operating system.
    pub os: Option<String>,
    /// Kernel release.
    pub kernel: Option<String>,
    /// `rustc --version`.
    pub rustc: Option<String>,
    /// `git rev-parse --short HEAD` and whether the tree had changes.
    pub commit: Option<String>,
    /// UTC time the run started.
    pub started: String,
    /// Load averages (1, 5, 15 min) when the run started.
    pub load_start: Option<String>,
    /// Load averages when the run ended.
    pub load_end: Option<String>,
}

impl Machine {
    /// Reads what it can; missing facts stay `None`.
    pub fn read() -> Self {
        Self {
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            cpu_model: read_file("/proc/cpuinfo").and_then(|info| {
                info.lines()
                    .find(|line| line.starts_with("model name"))
                    .and_then(|line| line.split_once(':'))
                    .map(|(_, model)| model.trim().to_owned())
            }),
            memory: read_file("/proc/meminfo").and_then(|info| {
                let kib: u64 = info
                    .lines()
                    .find(|line| line.starts_with("MemTotal:"))?
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()?;
                Some(format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0))
            }),
            os: read_file("/etc/os-release").and_then(|release| {
                release
                    .lines()
                    .find_map(|line| line.strip_prefix("PRETTY_NAME="))
                    .map(|name| name.trim_matches('"').to_owned())
            }),
            kernel: read_file("/proc/sys/kernel/osrelease").map(|text| text.trim().to_owned()),
            rustc: command("rustc", &["--version"]),
            commit: command("git", &["rev-parse", "--short", "HEAD"]).map(|commit| {
                let dirty = command("git", &["status", "--porcelain", "--untracked-files=no"])
                    .is_some_and(|status| !status.is_empty());
                if dirty {
                    format!("{commit} (with uncommitted changes)")
                } else {
                    commit
                }
            }),
            started: command("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default(),
            load_start: load(),
            load_end: None,
        }
    }

    /// Records the load at the end of the run.
    pub fn finish(&mut self) {
        self.load_end = load();
    }
}

fn read_file(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn command(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn load() -> Option<String> {
    read_file("/proc/loadavg").map(|text| {
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" / ")
    })
}

/// The server's version, as the server reports it.
pub async fn server_version(target: &Target) -> Option<String> {
    match target.kind {
        BackendKind::Memory => Some("in-process".into()),
        #[cfg(feature = "etcd")]
        BackendKind::Etcd => {
            let mut client = crate::raw::etcd::client(&target.url).await.ok()?;
            let status = client.status().await.ok()?;
            Some(format!("etcd {}", status.version()))
        }
        #[cfg(feature = "redis")]
        BackendKind::Redis => {
            let client = crate::raw::redis::client(&target.url).ok()?;
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            let info: String = redis::cmd("INFO")
                .arg("server")
                .query_async(&mut conn)
                .await
                .ok()?;
            let version = info
                .lines()
                .find_map(|line| line.strip_prefix("redis_version:"))
                .map(|version| format!("Redis {}", version.trim()))?;
            // Persistence, as it matters to write latency (CONFIG may be refused to
            // an ACL user: then the version alone).
            let mut settings = Vec::new();
            for setting in ["appendonly", "appendfsync", "save"] {
                let reply: Option<Vec<String>> = redis::cmd("CONFIG")
                    .arg("GET")
                    .arg(setting)
                    .query_async(&mut conn)
                    .await
                    .ok();
                if let Some([_, value]) = reply.as_deref() {
                    settings.push(format!("{setting} = {value:?}"));
                }
            }
            if settings.is_empty() {
                Some(version)
            } else {
                Some(format!("{version} ({})", settings.join(", ")))
            }
        }
        #[cfg(feature = "postgres")]
        BackendKind::Postgres | BackendKind::PostgresUnflushed => {
            use sqlx::Connection;
            let options = distsync::store::postgres::PostgresConfig::parse(&target.url)
                .ok()?
                .options;
            let mut conn = sqlx::PgConnection::connect_with(&options).await.ok()?;
            let version: String = sqlx::query_scalar("SHOW server_version")
                .fetch_one(&mut conn)
                .await
                .ok()?;
            let mut settings = Vec::new();
            for setting in ["max_connections", "fsync", "synchronous_commit"] {
                let value: String = sqlx::query_scalar(&format!("SHOW {setting}"))
                    .fetch_one(&mut conn)
                    .await
                    .ok()?;
                settings.push(format!("{setting} = {value}"));
            }
            // The server's setting is not what a grant commits with in this mode.
            if target.kind == BackendKind::PostgresUnflushed {
                settings
                    .push("grants unflushed: each commits with synchronous_commit = off".into());
            }
            conn.close().await.ok()?;
            Some(format!("PostgreSQL {version} ({})", settings.join(", ")))
        }
        // The backend's own description (the `srvr` four-letter command).
        BackendKind::Zookeeper => described(target, "ZooKeeper", "zookeeper_version", &[]).await,
        // The backend's own description. Durability, as it matters to write latency:
        // the redo log's flush at each commit, and the binary log's (which only counts
        // when it is on).
        BackendKind::Mysql => {
            let settings = [
                "innodb_flush_log_at_trx_commit",
                "log_bin",
                "sync_binlog",
                "max_connections",
            ];
            described(target, "MySQL", "version", &settings).await
        }
        // The backend's own description (the server's INFO and the bucket's stream).
        BackendKind::Nats => {
            described(
                target,
                "NATS",
                "nats_server_version",
                &["storage", "replicas"],
            )
            .await
        }
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// `product`, its version (the fact named `version`) and `settings`, from the backend's
/// own description of its store (`Backend::describe_store`), so that the bench reads
/// what the backend reads, on its own connections.
async fn described(
    target: &Target,
    product: &str,
    version: &str,
    settings: &[&str],
) -> Option<String> {
    let facts = target.coordinator.backend().describe_store().await.ok()?;
    let fact = |wanted: &str| {
        facts
            .iter()
            .find_map(|(name, value)| (name == wanted).then_some(value))
    };
    let version = fact(version)?;
    let settings: Vec<String> = settings
        .iter()
        .filter_map(|name| fact(name).map(|value| format!("{name} = {value}")))
        .collect();
    if settings.is_empty() {
        Some(format!("{product} {version}"))
    } else {
        Some(format!("{product} {version} ({})", settings.join(", ")))
    }
}
