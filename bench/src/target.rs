//! The backends under test and how the bench connects to them.

use std::fmt;

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
    /// ZooKeeper.
    Zookeeper,
}

impl BackendKind {
    /// The name used in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Memory => "memory",
            BackendKind::Etcd => "etcd",
            BackendKind::Redis => "redis",
            BackendKind::Postgres => "postgres",
            BackendKind::Zookeeper => "zookeeper",
        }
    }

    /// Whether this build can talk to the backend: its driver in [`distsync::store::DRIVERS`]
    /// is built (its cargo feature is on).
    pub fn compiled_in(self) -> bool {
        distsync::store::DRIVERS
            .iter()
            .any(|driver| driver.name == self.as_str() && driver.built)
    }

    /// The environment variable the URL comes from.
    pub fn url_variable(self) -> Option<&'static str> {
        match self {
            BackendKind::Memory => None,
            BackendKind::Etcd => Some("DISTSYNC_ETCD_URL"),
            BackendKind::Redis => Some("DISTSYNC_REDIS_URL"),
            BackendKind::Postgres => Some("DISTSYNC_POSTGRES_URL"),
            BackendKind::Zookeeper => Some("DISTSYNC_ZOOKEEPER_URL"),
        }
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
