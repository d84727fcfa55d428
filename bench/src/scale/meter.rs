//! What the scale case reads at the store: its connections from this process and a
//! counter of the keepalive requests it has served, per backend.
//!
//! - etcd: connections are this process's established TCP connections to the
//!   endpoints' ports (`/proc`, see [`super::procfs`]); keepalives are
//!   `grpc_server_msg_received_total{grpc_method="LeaseKeepAlive"}` of etcd's
//!   `/metrics` (plain HTTP on the client port);
//! - Redis: `connected_clients` of `INFO clients`, this meter's own connection left
//!   out; the `calls` of `evalsha` and `eval` in `INFO commandstats` (a renewal is one
//!   script call; so is a waiter's safety-net re-check);
//! - PostgreSQL: `pg_stat_activity` rows of the database, the meter's own left out;
//!   `xact_commit + xact_rollback` of the database in `pg_stat_database` (one per
//!   statement; the meter's own reads left out);
//! - ZooKeeper: connections are this process's established TCP connections to the
//!   servers' ports, as for etcd (a ZooKeeper session is a connection of its own, so
//!   this counts sessions too); keepalives are `zk_packets_received` of the first
//!   server's `mntr` four-letter word (every request and ping it received; with
//!   nothing else running, a session's pings). Not read over TLS, whose port speaks
//!   no four-letter words;
//! - memory: nothing to count.
//!
//! The store-side counters count every client of the server: run the case against
//! servers of its own (as `scripts/bench.sh` does) for clean figures. PostgreSQL
//! publishes its statistics up to a second late, which shifts a window's count in
//! time but does not shorten it.

#[cfg(any(
    feature = "etcd",
    feature = "redis",
    feature = "postgres",
    feature = "zookeeper"
))]
use crate::target::BackendKind;
use crate::target::Target;
use crate::Result;

/// Reads one store's figures (see the module docs).
pub(super) enum Meter {
    /// Nothing to read (memory, or a backend not compiled in).
    None,
    /// etcd.
    #[cfg(feature = "etcd")]
    Etcd {
        /// `host:port` of the first endpoint, where `/metrics` is served.
        metrics: Option<String>,
        /// The endpoints' ports.
        ports: Vec<u16>,
    },
    /// Redis.
    #[cfg(feature = "redis")]
    Redis(redis::aio::MultiplexedConnection),
    /// PostgreSQL.
    #[cfg(feature = "postgres")]
    Postgres(Probe),
    /// ZooKeeper.
    #[cfg(feature = "zookeeper")]
    Zookeeper {
        /// `host:port` of the first server, asked `mntr`; `None` over TLS.
        mntr: Option<String>,
        /// The servers' ports.
        ports: Vec<u16>,
    },
}

impl Meter {
    /// A meter for `target`'s store.
    pub(super) async fn connect(target: &Target) -> Result<Self> {
        match target.kind {
            #[cfg(feature = "etcd")]
            BackendKind::Etcd => {
                let config = distsync::store::etcd::EtcdConfig::parse(&target.url)?;
                // Plain HTTP only: with TLS, /metrics is behind the client certificate.
                let metrics = if config.tls() {
                    None
                } else {
                    config.endpoints().first().cloned()
                };
                Ok(Self::Etcd {
                    metrics,
                    ports: super::procfs::url_ports(&target.url, 2379),
                })
            }
            #[cfg(feature = "redis")]
            BackendKind::Redis => {
                let client = crate::raw::redis::client(&target.url)?;
                Ok(Self::Redis(
                    client.get_multiplexed_async_connection().await?,
                ))
            }
            #[cfg(feature = "postgres")]
            BackendKind::Postgres | BackendKind::PostgresUnflushed => {
                Ok(Self::Postgres(Probe::connect(&target.url).await?))
            }
            #[cfg(feature = "zookeeper")]
            BackendKind::Zookeeper => Ok(Self::Zookeeper {
                mntr: zookeeper_first_host(&target.url),
                ports: super::procfs::url_ports(&target.url, 2181),
            }),
            _ => Ok(Self::None),
        }
    }

    /// The store's connections (see the module docs); `None` where not counted.
    pub(super) async fn connections(&mut self) -> Result<Option<i64>> {
        match self {
            Self::None => Ok(None),
            #[cfg(feature = "etcd")]
            Self::Etcd { ports, .. } => Ok(super::procfs::tcp_connections_to(ports)),
            #[cfg(feature = "zookeeper")]
            Self::Zookeeper { ports, .. } => Ok(super::procfs::tcp_connections_to(ports)),
            #[cfg(feature = "redis")]
            Self::Redis(conn) => {
                let info: String = redis::cmd("INFO").arg("clients").query_async(conn).await?;
                let clients: i64 = info_field(&info, "connected_clients")
                    .ok_or("no connected_clients in INFO clients")?
                    .parse()?;
                Ok(Some(clients - 1))
            }
            #[cfg(feature = "postgres")]
            Self::Postgres(probe) => Ok(Some(
                probe
                    .scalar(
                        "SELECT count(*) FROM pg_stat_activity \
                         WHERE datname = current_database() AND pid <> pg_backend_pid()",
                    )
                    .await?,
            )),
        }
    }

    /// The server's connection limit, where it has one to report.
    pub(super) async fn max_connections(&mut self) -> Result<Option<i64>> {
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(probe) => Ok(Some(
                probe
                    .scalar("SELECT current_setting('max_connections')::bigint")
                    .await?,
            )),
            _ => Ok(None),
        }
    }

    /// The store's keepalive counter now (see the module docs); `None` where there is
    /// none. Only differences of two readings mean anything.
    pub(super) async fn keepalives(&mut self) -> Result<Option<u64>> {
        match self {
            Self::None => Ok(None),
            #[cfg(feature = "etcd")]
            Self::Etcd { metrics, .. } => match metrics {
                Some(host) => Ok(Some(etcd_keepalives(host).await?)),
                None => Ok(None),
            },
            #[cfg(feature = "redis")]
            Self::Redis(conn) => {
                let info: String = redis::cmd("INFO")
                    .arg("commandstats")
                    .query_async(conn)
                    .await?;
                let mut calls = 0;
                for command in ["cmdstat_evalsha", "cmdstat_eval"] {
                    if let Some(stats) = info_field(&info, command) {
                        calls += stats
                            .split(',')
                            .find_map(|pair| pair.strip_prefix("calls="))
                            .ok_or("no calls= in INFO commandstats")?
                            .parse::<u64>()?;
                    }
                }
                Ok(Some(calls))
            }
            #[cfg(feature = "postgres")]
            Self::Postgres(probe) => Ok(Some(probe.transactions().await?)),
            #[cfg(feature = "zookeeper")]
            Self::Zookeeper { mntr, .. } => match mntr {
                Some(host) => Ok(Some(zookeeper_packets(host).await?)),
                None => Ok(None),
            },
        }
    }
}

/// The value of `name:` in an `INFO` answer.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(':')
            .map(|value| value.trim())
    })
}

/// The sum of `metric{...selector...} value` lines of a Prometheus text exposition.
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
fn prometheus_sum(text: &str, metric: &str, selector: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(metric) else {
            continue;
        };
        if !rest.starts_with('{') || !rest.contains(selector) {
            continue;
        }
        let value: f64 = rest.rsplit_once(' ')?.1.trim().parse().ok()?;
        *found.get_or_insert(0.0) += value;
    }
    found
}

/// etcd's count of LeaseKeepAlive messages received, from `http://<host>/metrics`.
#[cfg(feature = "etcd")]
async fn etcd_keepalives(host: &str) -> Result<u64> {
    let request = format!("GET /metrics HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let text = ask(host, request.as_bytes()).await?;
    let value = prometheus_sum(
        &text,
        "grpc_server_msg_received_total",
        "grpc_method=\"LeaseKeepAlive\"",
    )
    .ok_or("no LeaseKeepAlive counter in etcd /metrics")?;
    Ok(value as u64)
}

/// Sends a plain-text request to `host` and reads the answer to its end, within 10 s.
#[cfg(any(feature = "etcd", feature = "zookeeper"))]
async fn ask(host: &str, request: &[u8]) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let read = async {
        let mut stream = tokio::net::TcpStream::connect(host).await?;
        stream.write_all(request).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .map_err(|_| format!("{host} did not answer within 10 s"))??;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// `host:port` of a ZooKeeper URL's first server; `None` over TLS (no four-letter
/// words there).
#[cfg(feature = "zookeeper")]
fn zookeeper_first_host(url: &str) -> Option<String> {
    if url.starts_with("zks://") {
        return None;
    }
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let hosts = rest.split(['/', '?']).next().unwrap_or("");
    let hosts = hosts.rsplit_once('@').map_or(hosts, |(_, hosts)| hosts);
    let first = hosts.split(',').next().filter(|host| !host.is_empty())?;
    let has_port = first
        .rsplit_once(']')
        .map_or(first, |(_, rest)| rest)
        .contains(':');
    Some(if has_port {
        first.to_owned()
    } else {
        format!("{first}:2181")
    })
}

/// ZooKeeper's count of packets received, from its `mntr` four-letter word.
#[cfg(feature = "zookeeper")]
async fn zookeeper_packets(host: &str) -> Result<u64> {
    let text = ask(host, b"mntr").await?;
    let value = text
        .lines()
        .find_map(|line| line.strip_prefix("zk_packets_received"))
        .ok_or("no zk_packets_received in ZooKeeper's mntr (is mntr whitelisted?)")?;
    Ok(value.trim().parse()?)
}

/// The PostgreSQL probe: a connection of its own that reads the database's statistics,
/// counting the statements it runs (each one transaction of the database) so that its
/// own are left out.
#[cfg(feature = "postgres")]
pub(super) struct Probe {
    conn: sqlx::PgConnection,
    statements: u64,
}

#[cfg(feature = "postgres")]
impl Probe {
    async fn connect(url: &str) -> Result<Self> {
        use sqlx::Connection;
        let options = crate::raw::postgres::options(url)?;
        let conn = sqlx::PgConnection::connect_with(&options).await?;
        Ok(Self {
            conn,
            statements: 0,
        })
    }

    /// The value `sql` selects.
    async fn scalar(&mut self, sql: &str) -> Result<i64> {
        self.statements += 1;
        Ok(sqlx::query_scalar(sql).fetch_one(&mut self.conn).await?)
    }

    /// Transactions of the database so far, less the ones this probe ran before (this
    /// reading's own is not counted yet when it reads).
    async fn transactions(&mut self) -> Result<u64> {
        let own = self.statements;
        let total = self
            .scalar(
                "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database \
                 WHERE datname = current_database()",
            )
            .await?;
        Ok(u64::try_from(total)?.saturating_sub(own))
    }
}
