//! The kinds of store a URL names and the tools that reach one out of band, which the
//! server hooks, the private servers and the etcd cluster hooks all use: a module below
//! them, so that none of them imports another for these.

use std::path::PathBuf;

use distsync_core::{Error, Result};

use super::tools;

/// The kind of store a URL names. `#[non_exhaustive]`: a new backend adds a kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreKind {
    /// `etcd://`
    Etcd,
    /// `redis://`
    Redis,
    /// `postgres://` or `postgresql://`
    Postgres,
    /// `zk://`
    Zookeeper,
    /// `mysql://` or `mariadb://`
    Mysql,
    /// `nats://`
    Nats,
}

impl StoreKind {
    /// The kind of the store `url` names, if it is a server.
    pub fn of_url(url: &str) -> Option<Self> {
        let (scheme, _) = url.split_once("://")?;
        match scheme {
            "etcd" => Some(Self::Etcd),
            "redis" => Some(Self::Redis),
            "postgres" | "postgresql" => Some(Self::Postgres),
            "zk" => Some(Self::Zookeeper),
            "mysql" | "mariadb" => Some(Self::Mysql),
            "nats" => Some(Self::Nats),
            _ => None,
        }
    }

    /// `etcd`, `redis`, `postgres`, `zookeeper`, `mysql` or `nats`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Etcd => "etcd",
            Self::Redis => "redis",
            Self::Postgres => "postgres",
            Self::Zookeeper => "zookeeper",
            Self::Mysql => "mysql",
            Self::Nats => "nats",
        }
    }
}

/// `psql`, from PostgreSQL's binaries or `PATH`.
pub(crate) fn psql() -> std::result::Result<PathBuf, String> {
    tools::pg_bin()
        .map(|bin| bin.join("psql"))
        .filter(|psql| psql.is_file())
        .or_else(|| tools::which("psql"))
        .ok_or_else(|| "`psql` is not installed (Debian package postgresql-client)".to_owned())
}

/// MariaDB's client (`mariadb`, or `mysql` where only that name is installed).
pub(crate) fn mariadb_client() -> std::result::Result<PathBuf, String> {
    tools::which("mariadb")
        .or_else(|| tools::which("mysql"))
        .ok_or_else(|| "`mariadb` is not installed (Debian package mariadb-client)".to_owned())
}

/// The `host:port` endpoints of an `etcd://host:port[,host:port...][/namespace]` URL.
pub(crate) fn etcd_endpoints(url: &str) -> Result<Vec<String>> {
    let invalid_url = Error::invalid_url(url);
    let invalid = |reason: &str| invalid_url(reason.to_owned());
    let rest = url
        .strip_prefix("etcd://")
        .ok_or_else(|| invalid("not an etcd:// URL"))?;
    let hosts = rest.split('/').next().unwrap_or_default();
    let endpoints: Vec<String> = hosts
        .split(',')
        .filter(|endpoint| !endpoint.is_empty())
        .map(|endpoint| {
            if endpoint
                .rsplit_once(':')
                .is_some_and(|(_, port)| port.parse::<u16>().is_ok())
            {
                endpoint.to_owned()
            } else {
                format!("{endpoint}:2379")
            }
        })
        .collect();
    if endpoints.is_empty() {
        return Err(invalid("no endpoint"));
    }
    Ok(endpoints)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_store() {
        assert_eq!(StoreKind::of_url("etcd://h:1"), Some(StoreKind::Etcd));
        assert_eq!(StoreKind::of_url("redis://h"), Some(StoreKind::Redis));
        assert_eq!(
            StoreKind::of_url("postgresql://u@h/db"),
            Some(StoreKind::Postgres)
        );
        assert_eq!(
            StoreKind::of_url("zk://127.0.0.1:2181/chroot"),
            Some(StoreKind::Zookeeper)
        );
        assert_eq!(
            StoreKind::of_url("mysql://u:p@h:3306/db"),
            Some(StoreKind::Mysql)
        );
        assert_eq!(
            StoreKind::of_url("mariadb://u@h/db"),
            Some(StoreKind::Mysql)
        );
        assert_eq!(
            StoreKind::of_url("nats://127.0.0.1:4222/?bucket=b"),
            Some(StoreKind::Nats)
        );
        assert_eq!(StoreKind::of_url("memory://"), None);
        assert_eq!(StoreKind::of_url("nonsense"), None);
    }

    #[test]
    fn etcd_endpoints_come_from_the_url() {
        assert_eq!(
            etcd_endpoints("etcd://127.0.0.1:1,127.0.0.1:2/ns/x").unwrap(),
            ["127.0.0.1:1", "127.0.0.1:2"]
        );
        assert_eq!(etcd_endpoints("etcd://db").unwrap(), ["db:2379"]);
        assert!(etcd_endpoints("etcd:///ns").is_err());
    }
}
