//! The backends under test and how the bench connects to them.

use std::fmt;
use std::time::Duration;

use clap::ValueEnum;
use distsync::Coordinator;

use crate::Result;

/// A backend the bench measures. The list is closed, unlike [`distsync::store::DRIVERS`]:
/// each store here comes with its raw command sequence ([`crate::raw`]), its peers
/// ([`crate::peers`]) and its server meters, which are code of their own per store; a
/// new backend joins the bench when that code is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub enum BackendKind {
    /// The in-process store (`memory://`).
    Memory,
    /// etcd.
    Etcd,
    /// Redis.
    Redis,
    /// PostgreSQL.
    Postgres,
    /// PostgreSQL with unflushed grants (`grants=unflushed` in its URL, a declared mode
    /// that gives up the durability of an acknowledged grant across a crash, see
    /// `distsync::store::postgres`): the same server as [`BackendKind::Postgres`] in the
    /// committed run, measured as a store of its own so that its rows and targets stand
    /// beside the durable ones. Only the lock cases run on it
    /// ([`BackendKind::measures`]): the mode changes how grants commit, nothing else.
    PostgresUnflushed,
    /// ZooKeeper.
    Zookeeper,
    /// MySQL or MariaDB.
    Mysql,
    /// NATS JetStream.
    Nats,
}

impl BackendKind {
    /// The name used in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Memory => "memory",
            BackendKind::Etcd => "etcd",
            BackendKind::Redis => "redis",
            BackendKind::Postgres => "postgres",
            BackendKind::PostgresUnflushed => "postgres-unflushed",
            BackendKind::Zookeeper => "zookeeper",
            BackendKind::Mysql => "mysql",
            BackendKind::Nats => "nats",
        }
    }

    /// The driver in [`distsync::store::DRIVERS`] that talks to this backend.
    pub fn driver(self) -> &'static str {
        match self {
            BackendKind::PostgresUnflushed => BackendKind::Postgres.as_str(),
            other => other.as_str(),
        }
    }

    /// Whether the store is PostgreSQL (in either grant mode): its raw advisory pair,
    /// its peer and its connection limits apply.
    pub fn is_postgres(self) -> bool {
        matches!(self, BackendKind::Postgres | BackendKind::PostgresUnflushed)
    }

    /// Whether `case` runs on this backend (when selected): every case but on
    /// [`BackendKind::PostgresUnflushed`], which runs the lock cases only (the cycle,
    /// the hand-off, the contended lock and many clients).
    pub fn measures(self, case: crate::args::Case) -> bool {
        use crate::args::Case;
        self != BackendKind::PostgresUnflushed
            || matches!(
                case,
                Case::Cycle | Case::Handoff | Case::Contended | Case::Aggregate
            )
    }

    /// Whether this build can talk to the backend: its driver in [`distsync::store::DRIVERS`]
    /// is built (its cargo feature is on).
    pub fn compiled_in(self) -> bool {
        distsync::store::DRIVERS
            .iter()
            .any(|driver| driver.name == self.driver() && driver.built)
    }

    /// The environment variable the URL comes from.
    pub fn url_variable(self) -> Option<&'static str> {
        match self {
            BackendKind::Memory => None,
            BackendKind::Etcd => Some("DISTSYNC_ETCD_URL"),
            BackendKind::Redis => Some("DISTSYNC_REDIS_URL"),
            BackendKind::Postgres => Some("DISTSYNC_POSTGRES_URL"),
            BackendKind::PostgresUnflushed => Some("DISTSYNC_POSTGRES_UNFLUSHED_URL"),
            BackendKind::Zookeeper => Some("DISTSYNC_ZOOKEEPER_URL"),
            BackendKind::Mysql => Some("DISTSYNC_MYSQL_URL"),
            BackendKind::Nats => Some("DISTSYNC_NATS_URL"),
        }
    }
}

/// How long the first grant of an unflushed schema may wait: above the longest
/// `max_session_ttl` a bench URL gives it.
const LOCK_DELAY_LIMIT: Duration = Duration::from_secs(120);

/// Takes and releases one lock through `coordinator`, a PostgreSQL backend with
/// unflushed grants. Its store cannot tell a new schema from one that lost its grants
/// in a crash, so the first grant on it waits out the lock-delay (the session bound);
/// taken here, that wait stays out of every measurement, whose cycles are capped at
/// seconds.
async fn lock_delay_waited_out(coordinator: &Coordinator) -> Result<()> {
    let session = coordinator.session().await?;
    let waited = async {
        let locker = coordinator.locker(&session, "distsync-bench/lock-delay")?;
        locker.lock().await?.unlock().await
    };
    let outcome = tokio::time::timeout(LOCK_DELAY_LIMIT, waited).await;
    if let Err(error) = session.close().await {
        tracing::debug!(%error, "closing a session failed; it expires");
    }
    match outcome {
        Ok(done) => Ok(done?),
        Err(_) => Err(format!(
            "the first grant waited over {LOCK_DELAY_LIMIT:?}: is max_session_ttl above it?"
        )
        .into()),
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One backend under test: its URL and a connected coordinator.
#[derive(Clone, Debug)]
pub struct Target {
    /// Which backend.
    pub kind: BackendKind,
    /// The URL it was reached at.
    pub url: String,
    /// The coordinator the single-client cases use.
    pub coordinator: Coordinator,
}

impl Target {
    /// Connects to `url`.
    ///
    /// # Errors
    /// The backend's connection error.
    pub async fn connect(kind: BackendKind, url: String) -> Result<Self> {
        let coordinator = distsync::connect(&url).await?;
        if kind == BackendKind::PostgresUnflushed {
            lock_delay_waited_out(&coordinator).await?;
        }
        Ok(Self {
            kind,
            url,
            coordinator,
        })
    }

    /// A coordinator for one more client: a connection of its own, except on
    /// `memory://`, whose store lives in the first coordinator, which is shared.
    ///
    /// # Errors
    /// The backend's connection error.
    pub async fn client(&self) -> Result<Coordinator> {
        match self.kind {
            BackendKind::Memory => Ok(self.coordinator.clone()),
            _ => Ok(distsync::connect(&self.url).await?),
        }
    }
}
