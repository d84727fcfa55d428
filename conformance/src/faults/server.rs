//! Fault hooks of a server reached by URL: etcd, Redis, PostgreSQL, ZooKeeper,
//! MySQL/MariaDB or NATS.
//!
//! Everything here goes through the stores' own command line tools and server
//! binaries (Debian's etcd-server / etcd-client, redis-server / redis-tools,
//! postgresql, mariadb-server / mariadb-client), never through a backend crate, so that the
//! runner and every backend
//! crate's tests share one implementation while this library depends on
//! `distsync-core` only. A hook whose tool is missing is unsupported, with the package
//! to install as the reason. NATS has no such tool here: its session end is a plain
//! NATS client's ([`super::nats`]).

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use distsync_core::{Backend, Error, Result, SessionId};

use super::child;
use super::cluster::EtcdCluster;
use super::go_peer::{self, GoPeer};
use super::group::with_query;
use super::loop_disk;
use super::mysql_client::MysqlTarget;
use super::nats_cluster::{names_cluster, NatsCluster, NATS_CLUSTER_COLUMN, NATS_CLUSTER_VAR};
use super::private::{self, Durability};
use super::proxy::{self, PartitionMode, Proxy};
use super::store::{etcd_endpoints, mariadb_client, psql, StoreKind};
use super::tools::{require, run};
use super::zk_ensemble::{ZkEnsemble, ZOOKEEPER_ENSEMBLE_VAR};
use super::{
    hook_error, unsupported, Cluster, Connect, EvictingServer, ExternalHolder, Faults, FreshStore,
    HolderSpec, Hook, Partitioned, PrivateServer,
};
use crate::harness::Harness;

/// Why ZooKeeper offers no out-of-band session kill: a session ends only by its own
/// client closing it or by the server expiring it, and ZooKeeper's tools have no
/// command that ends another client's session.
const ZOOKEEPER_NO_KILL: &str =
    "ZooKeeper has no out-of-band session kill: a session ends by its client or by expiry";

/// Why NATS has no kill tool: none installs from the package registries here, so its
/// session end is a plain NATS client's ([`super::nats`]).
const NATS_NO_TOOL: &str = "no nats command line tool: the session end is a nats client's";

/// The environment variable naming the three-member etcd cluster.
pub const ETCD_CLUSTER_VAR: &str = "DISTSYNC_ETCD_CLUSTER_URL";

/// Fault hooks of the server at a URL: out-of-band session kills with the store's
/// tool, holders in child processes (through the [registered](child::register)
/// launcher), private servers to restart, the etcd cluster of
/// [`ETCD_CLUSTER_VAR`] or the ZooKeeper ensemble of [`ZOOKEEPER_ENSEMBLE_VAR`], and
/// second clients.
#[derive(Clone)]
pub struct ServerFaults {
    /// The URL as given, credentials included (child holders and second clients
    /// connect with it); never printed ([`Debug`] leaves it out).
    url: String,
    kind: StoreKind,
    connect: Connect,
    cluster_url: Option<String>,
}

impl std::fmt::Debug for ServerFaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerFaults")
            .field("kind", &self.kind)
            .field(
                "cluster_url",
                &self.cluster_url.as_deref().map(distsync_core::redact_url),
            )
            .finish_non_exhaustive()
    }
}

impl ServerFaults {
    /// The hooks of the server at `url`, reaching servers of its kind with `connect`.
    /// For etcd, the cluster comes from [`ETCD_CLUSTER_VAR`] when it is set; for
    /// ZooKeeper, from [`ZOOKEEPER_ENSEMBLE_VAR`].
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] when `url` names no etcd, Redis, PostgreSQL, ZooKeeper or
    /// MySQL server.
    pub fn new(url: &str, connect: Connect) -> Result<Self> {
        let kind = StoreKind::of_url(url).ok_or_else(|| {
            Error::invalid_url(url)(
                "fault hooks need an etcd://, redis://, postgres://, zk://, mysql:// or nats:// \
                 server"
                    .to_owned(),
            )
        })?;
        let cluster_var = match kind {
            StoreKind::Etcd => Some(ETCD_CLUSTER_VAR),
            StoreKind::Zookeeper => Some(ZOOKEEPER_ENSEMBLE_VAR),
            StoreKind::Redis | StoreKind::Postgres | StoreKind::Mysql | StoreKind::Nats => None,
        };
        // A NATS cluster is a column of its own (`nats-cluster`), whose URL names its
        // servers: its cluster cases fail over the servers the column's clients use,
        // and the single server's column leaves them to it, so that two columns never
        // kill members of one cluster at once.
        let own_cluster = (kind == StoreKind::Nats && names_cluster(url)).then(|| url.to_owned());
        let cluster_url = cluster_var
            .and_then(|var| std::env::var(var).ok())
            .filter(|url| !url.trim().is_empty())
            .or(own_cluster);
        Ok(Self {
            url: url.to_owned(),
            kind,
            connect,
            cluster_url,
        })
    }

    /// The hooks of private server `server` (see [`Faults::private_server`]), whose
    /// clients' URLs carry `query` (`key=value&...`, e.g. a bound on session TTLs):
    /// child-process holders and partitioned clients of that server, for a case that
    /// restarts it under them. No cluster.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a server that cannot be connected to by URL
    /// ([`PrivateServer::connector`]); [`Error::InvalidUrl`] as [`ServerFaults::new`].
    pub fn of_private(server: &dyn PrivateServer, query: &str) -> Result<Self> {
        let connect = server.connector().ok_or_else(|| {
            Error::unsupported(
                "conformance",
                "hooks of a private server reached without a URL",
            )
        })?;
        Ok(Self::new(&with_query(server.url(), query), connect)?.with_cluster(None))
    }

    /// The same hooks with `cluster_url` as the cluster (`None`: no cluster).
    pub fn with_cluster(mut self, cluster_url: Option<String>) -> Self {
        self.cluster_url = cluster_url;
        self
    }

    /// The store's kind.
    pub fn kind(&self) -> StoreKind {
        self.kind
    }

    fn kill_tool(&self) -> std::result::Result<PathBuf, String> {
        match self.kind {
            StoreKind::Etcd => require("etcdctl", "etcd-client"),
            StoreKind::Redis => require("redis-cli", "redis-tools"),
            StoreKind::Postgres => psql(),
            StoreKind::Zookeeper => Err(ZOOKEEPER_NO_KILL.to_owned()),
            StoreKind::Mysql => mariadb_client(),
            StoreKind::Nats => Err(NATS_NO_TOOL.to_owned()),
        }
    }

    fn cluster_config(&self) -> std::result::Result<&str, String> {
        match (self.kind, &self.cluster_url) {
            (StoreKind::Etcd | StoreKind::Zookeeper | StoreKind::Nats, Some(url)) => Ok(url),
            (StoreKind::Etcd, None) => Err(format!(
                "no cluster: {ETCD_CLUSTER_VAR} is unset (scripts/servers.sh starts one)"
            )),
            (StoreKind::Zookeeper, None) => Err(format!(
                "no ensemble: {ZOOKEEPER_ENSEMBLE_VAR} is unset (scripts/servers.sh starts one)"
            )),
            (StoreKind::Nats, None) => Err(format!(
                "no cluster: the URL names one nats server; the cluster's cases run in the \
                 {NATS_CLUSTER_COLUMN} column ({NATS_CLUSTER_VAR})"
            )),
            (kind, _) => Err(format!(
                "no cluster: {} runs as a single server here",
                kind.as_str()
            )),
        }
    }

    async fn kill_etcd(&self, tool: PathBuf, session: SessionId) -> Result<String> {
        let endpoints = etcd_endpoints(&self.url)?.join(",");
        run(
            &tool,
            [
                format!("--endpoints={endpoints}"),
                "--command-timeout=5s".to_owned(),
                "lease".to_owned(),
                "revoke".to_owned(),
                format!("{:x}", session.0),
            ],
            &[("ETCDCTL_API", "3")],
        )
        .await?;
        Ok("lease revoked by `etcdctl lease revoke`".to_owned())
    }

    async fn kill_redis(&self, tool: PathBuf, session: SessionId) -> Result<String> {
        let (connection, namespace) = redis_target(&self.url)?;
        delete_redis_session(&tool, &["-u", connection.as_str()], &namespace, session).await
    }

    async fn kill_postgres(&self, tool: PathBuf, session: SessionId) -> Result<String> {
        let (connection, schema) = postgres_target(&self.url)?;
        // The schema's own end (row deleted, owner notified), as a revoke from another
        // process: sessions hold no connection of their own to end.
        let sql = format!(
            "SELECT \"{schema}\".end_sessions(ARRAY[{}]::bigint[])",
            session.0
        );
        let out = run(
            &tool,
            [connection.as_str(), "-X", "-A", "-t", "-c", sql.as_str()],
            &[("PGCONNECT_TIMEOUT", "5")],
        )
        .await?;
        let ended: u64 = out.stdout.trim().parse().unwrap_or(0);
        if ended == 0 {
            return Err(hook_error(
                "end_sessions",
                format!("no row of session {session} found"),
            ));
        }
        Ok("session row deleted by the schema's end_sessions (psql)".to_owned())
    }
}

impl Harness {
    /// A harness over the server at `url`, connected with `connect`, with
    /// [`ServerFaults`].
    ///
    /// Cancel-safety: cancel-safe; a backend connected by a dropped call is dropped.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] for a URL that names no server, or the connection error.
    pub async fn connect(url: &str, connect: Connect) -> Result<Self> {
        let faults = ServerFaults::new(url, Arc::clone(&connect))?;
        let backend = connect(url.to_owned()).await?;
        Ok(Harness::new(backend).with_faults(Arc::new(faults)))
    }
}

#[async_trait]
impl Faults for ServerFaults {
    fn connector(&self) -> Option<Connect> {
        Some(Arc::clone(&self.connect))
    }

    fn describe(&self) -> String {
        format!(
            "{} server: revoke, out-of-band kill, child-process holders, private servers{}",
            self.kind.as_str(),
            if self.cluster_url.is_some() {
                ", cluster"
            } else {
                ""
            }
        )
    }

    fn offers(&self, hook: Hook) -> std::result::Result<(), String> {
        match hook {
            Hook::KillSession if self.kind == StoreKind::Nats => super::nats::available(),
            Hook::KillSession => self.kill_tool().map(drop),
            Hook::ChildHolder | Hook::PausedHolder => child::launcher().map(drop),
            Hook::AnyExternalHolder => super::any_external_holder(self),
            Hook::PrivateServer | Hook::FreshStore => private::available(self.kind),
            Hook::PowerLoss => private::available(self.kind).and_then(|()| loop_disk::available()),
            Hook::Cluster => {
                self.cluster_config()?;
                match self.kind {
                    StoreKind::Zookeeper => ZkEnsemble::available(),
                    StoreKind::Nats => NatsCluster::available(),
                    _ => EtcdCluster::available(),
                }
            }
            Hook::SecondClient => Ok(()),
            Hook::CallerTransactions => Err(super::CALLER_TRANSACTIONS_FROM_HARNESS.to_owned()),
            Hook::Failover => Err(format!(
                "no primary with a replica: {} runs as one server here (the Sentinel \
                 group runs under redis+sentinel://)",
                self.kind.as_str()
            )),
            Hook::EvictingServer => match self.kind {
                StoreKind::Redis => private::available(self.kind),
                StoreKind::Etcd
                | StoreKind::Postgres
                | StoreKind::Zookeeper
                | StoreKind::Mysql => Err(format!(
                    "{} never evicts keys",
                    self.kind.as_str()
                )),
                StoreKind::Nats => Err("the bucket the nats backend makes has no size or age \
                                        limit: the server evicts none of its keys"
                    .to_owned()),
            },
            Hook::SessionTakeover => match self.kind {
                StoreKind::Redis => self.kill_tool().map(drop),
                StoreKind::Etcd => Err(
                    "etcd assigns lease ids and keeps them across restarts: none is handed out twice"
                        .to_owned(),
                ),
                StoreKind::Postgres => Err(
                    "session rows are durable: a restart keeps them, so no id is handed out twice"
                        .to_owned(),
                ),
                StoreKind::Zookeeper => Err(
                    "ZooKeeper assigns session ids from the server id and its start time, and \
                     keeps sessions in its transaction log: none is handed out twice"
                        .to_owned(),
                ),
                StoreKind::Mysql => Err(
                    "lease ids are drawn at random from 63 bits and lease rows are durable: a \
                     restart keeps them, so no id is handed out twice"
                        .to_owned(),
                ),
                StoreKind::Nats => Err(
                    "a session id is 64 random bits, its key created only where none is: \
                     another owner takes it only by drawing the same bits"
                        .to_owned(),
                ),
            },
            Hook::Partition => proxy::upstreams(&self.url)
                .map(drop)
                .map_err(|error| error.to_string()),
            Hook::GoPeer => match self.kind {
                StoreKind::Etcd => go_peer::program().map(drop),
                StoreKind::Redis
                | StoreKind::Postgres
                | StoreKind::Zookeeper
                | StoreKind::Mysql
                | StoreKind::Nats => Err(format!(
                    "etcd's Go packages run on etcd only, not on {}",
                    self.kind.as_str()
                )),
            },
        }
    }

    async fn kill_session(&self, backend: &dyn Backend, session: SessionId) -> Result<String> {
        if self.kind == StoreKind::Nats {
            return super::nats::kill_session(&self.url, session).await;
        }
        // Every other kind ends a session with its store's own tool.
        let tool = self
            .kill_tool()
            .map_err(|reason| Error::unsupported(backend.capabilities().backend, reason))?;
        match self.kind {
            StoreKind::Etcd => self.kill_etcd(tool, session).await,
            StoreKind::Redis => self.kill_redis(tool, session).await,
            StoreKind::Postgres => self.kill_postgres(tool, session).await,
            StoreKind::Mysql => {
                MysqlTarget::parse(&self.url)?
                    .expire_lease(&tool, session)
                    .await
            }
            StoreKind::Zookeeper => Err(Error::unsupported(
                backend.capabilities().backend,
                ZOOKEEPER_NO_KILL,
            )),
            StoreKind::Nats => Err(Error::unsupported(
                backend.capabilities().backend,
                NATS_NO_TOOL,
            )),
        }
    }

    fn child_url(&self) -> Option<&str> {
        Some(&self.url)
    }

    async fn spawn_holder(
        &self,
        backend: &dyn Backend,
        spec: &HolderSpec,
    ) -> Result<Box<dyn ExternalHolder>> {
        let launcher = child::launcher()
            .map_err(|reason| Error::unsupported(backend.capabilities().backend, reason))?;
        Ok(Box::new(child::spawn(launcher, &self.url, spec).await?))
    }

    async fn evicting_server(&self, backend: &dyn Backend) -> Result<EvictingServer> {
        self.offers(Hook::EvictingServer)
            .map_err(|reason| Error::unsupported(backend.capabilities().backend, reason))?;
        private::start_evicting_redis(Arc::clone(&self.connect)).await
    }

    async fn take_over_session(&self, backend: &dyn Backend, session: SessionId) -> Result<String> {
        self.offers(Hook::SessionTakeover)
            .map_err(|reason| Error::unsupported(backend.capabilities().backend, reason))?;
        let tool = self
            .kill_tool()
            .map_err(|reason| Error::unsupported(backend.capabilities().backend, reason))?;
        let (connection, namespace) = redis_target(&self.url)?;
        take_over_redis_session(&tool, &["-u", connection.as_str()], &namespace, session).await
    }

    async fn private_server(&self, backend: &dyn Backend) -> Result<Box<dyn PrivateServer>> {
        private::available(self.kind)
            .map_err(|reason| Error::unsupported(backend.capabilities().backend, reason))?;
        private::start_like(self.kind, Arc::clone(&self.connect), &self.url).await
    }

    /// A private server (see [`Faults::private_server`]), with its hooks
    /// ([`ServerFaults::of_private`]).
    async fn fresh_store(&self, backend: &dyn Backend) -> Result<FreshStore> {
        let server = self.private_server(backend).await?;
        let faults = Arc::new(ServerFaults::of_private(&*server, "")?);
        let client = server.connect().await?;
        Ok(FreshStore::new(client, faults, Some(server)))
    }

    async fn power_loss_server(
        &self,
        _backend: &dyn Backend,
        synchronous: bool,
    ) -> Result<Box<dyn PrivateServer>> {
        let durability = if synchronous {
            Durability::Synchronous
        } else {
            Durability::Default
        };
        private::start_on_loop_disk(self.kind, Arc::clone(&self.connect), &self.url, durability)
            .await
    }

    async fn cluster(&self, backend: &dyn Backend) -> Result<Box<dyn Cluster>> {
        let url = self
            .cluster_config()
            .map_err(|_| unsupported(backend, Hook::Cluster))?;
        Ok(match self.kind {
            StoreKind::Zookeeper => Box::new(ZkEnsemble::new(url, Arc::clone(&self.connect))?),
            StoreKind::Nats => Box::new(NatsCluster::new(url, Arc::clone(&self.connect))?),
            _ => Box::new(EtcdCluster::new(url, Arc::clone(&self.connect))?),
        })
    }

    async fn second_client(&self, _backend: &dyn Backend) -> Result<Arc<dyn Backend>> {
        (self.connect)(self.url.clone()).await
    }

    async fn go_peer(&self, backend: &dyn Backend) -> Result<GoPeer> {
        let refused = |reason: String| {
            Error::unsupported(
                backend.capabilities().backend,
                format!("{}: {reason}", Hook::GoPeer),
            )
        };
        self.offers(Hook::GoPeer).map_err(refused)?;
        let program = go_peer::program().map_err(refused)?;
        let (endpoints, namespace) = go_peer::endpoints_and_namespace(&self.url)?;
        let go_layout = (self.connect)(with_query(&self.url, "layout=go")).await?;
        Ok(GoPeer::new(program, endpoints, namespace, go_layout))
    }

    async fn partitioned_client_with(
        &self,
        _backend: &dyn Backend,
        settings: &str,
    ) -> Result<Box<dyn Partitioned>> {
        // A proxy in front of every server the URL names (a cluster's each), all cut
        // and healed together.
        let mut proxies = Vec::new();
        for upstream in proxy::upstreams(&self.url)? {
            proxies.push(Proxy::start(upstream).await?);
        }
        let addresses: Vec<_> = proxies.iter().map(Proxy::address).collect();
        let url = proxy::rewrite_url(&self.url, &addresses)?;
        let backend = (self.connect)(with_query(&url, settings)).await?;
        Ok(Box::new(ProxiedClient { backend, proxies }))
    }
}

/// A client of a store whose every connection goes through one of its [`Proxy`]s
/// (one per server: a cluster's nodes each have theirs).
pub(super) struct ProxiedClient {
    pub(super) backend: Arc<dyn Backend>,
    pub(super) proxies: Vec<Proxy>,
}

impl Partitioned for ProxiedClient {
    fn backend(&self) -> Arc<dyn Backend> {
        Arc::clone(&self.backend)
    }

    fn set(&self, mode: PartitionMode) {
        for proxy in &self.proxies {
            proxy.set(mode);
        }
    }
}

/// Deletes the key of Redis session `session` under `namespace` with `redis-cli`
/// (`tool`) reaching the store through `target` (`-u URL`, or `-c -h HOST -p PORT` on
/// a cluster, which follows redirections).
pub(super) async fn delete_redis_session(
    tool: &std::path::Path,
    target: &[&str],
    namespace: &str,
    session: SessionId,
) -> Result<String> {
    let key = session_key(namespace, session);
    redis_cli(tool, target, &["DEL", &key], "1").await?;
    Ok(format!("session key {key} deleted by `redis-cli DEL`"))
}

/// Overwrites the key of Redis session `session` with another owner's (its own nonce,
/// and a TTL long enough to outlast the case, short enough to clean up after it), as
/// [`delete_redis_session`] reaches the store.
pub(super) async fn take_over_redis_session(
    tool: &std::path::Path,
    target: &[&str],
    namespace: &str,
    session: SessionId,
) -> Result<String> {
    let key = session_key(namespace, session);
    let set = ["SET", &key, "taken-over-by-another-session", "PX", "120000"];
    redis_cli(tool, target, &set, "OK").await?;
    Ok(format!(
        "session key {key} overwritten by another owner's (`redis-cli SET ... PX 120000`)"
    ))
}

/// The key of Redis session `session` under `namespace`.
fn session_key(namespace: &str, session: SessionId) -> String {
    format!("{{{namespace}session:{}}}", session.0)
}

/// Runs `redis-cli <target> <command>`, which must answer `expected`.
async fn redis_cli(
    tool: &std::path::Path,
    target: &[&str],
    command: &[&str],
    expected: &str,
) -> Result<()> {
    let out = run(tool, target.iter().chain(command), &[]).await?;
    if out.stdout.trim() != expected {
        return Err(hook_error(
            format!("redis-cli {}", command[..2.min(command.len())].join(" ")),
            format!("answered {:?}, not {expected}", out.stdout.trim()),
        ));
    }
    Ok(())
}

/// For `redis-cli -u`: the URL without its query, and the key namespace
/// (`?namespace=`, by default `distsync:`).
fn redis_target(url: &str) -> Result<(String, String)> {
    let mut parsed =
        url::Url::parse(url).map_err(|error| Error::invalid_url(url)(error.to_string()))?;
    let namespace = parsed
        .query_pairs()
        .find(|(key, _)| key == "namespace")
        .map_or_else(|| "distsync:".to_owned(), |(_, value)| value.into_owned());
    parsed.set_query(None);
    Ok((parsed.to_string(), namespace))
}

/// The query parameters of a PostgreSQL URL that are distsync's own, not libpq's (the
/// backend's `PostgresConfig::parse` reads and removes them): `psql` refuses them, and
/// `connect_timeout` there is libpq's whole seconds, not distsync's duration.
const DISTSYNC_POSTGRES_PARAMS: [&str; 6] = [
    "schema",
    "connect_timeout",
    "timeout",
    "hold_connections",
    "max_session_ttl",
    "grants",
];

/// For `psql`: the URL without distsync's own parameters ([`DISTSYNC_POSTGRES_PARAMS`]),
/// and the schema (by default `distsync`).
fn postgres_target(url: &str) -> Result<(String, String)> {
    let invalid = Error::invalid_url(url);
    let mut parsed = url::Url::parse(url).map_err(|error| invalid(error.to_string()))?;
    let mut schema = "distsync".to_owned();
    let mut rest = Vec::new();
    for (key, value) in parsed.query_pairs() {
        if key == "schema" {
            schema = value.into_owned();
        } else if !DISTSYNC_POSTGRES_PARAMS.contains(&&*key) {
            rest.push((key.into_owned(), value.into_owned()));
        }
    }
    if schema.is_empty()
        || !schema
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(invalid(format!("schema {schema:?} is not an identifier")));
    }
    if rest.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(&rest);
    }
    Ok((parsed.to_string(), schema))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_targets_come_from_the_url() {
        assert_eq!(
            redis_target("redis://127.0.0.1:6379/2?namespace=app:").unwrap(),
            ("redis://127.0.0.1:6379/2".to_owned(), "app:".to_owned())
        );
        assert_eq!(
            redis_target("redis://127.0.0.1:6379").unwrap().1,
            "distsync:"
        );
        assert_eq!(
            postgres_target("postgres://u@h:5/db?schema=locks&sslmode=disable").unwrap(),
            (
                "postgres://u@h:5/db?sslmode=disable".to_owned(),
                "locks".to_owned()
            )
        );
        assert_eq!(
            postgres_target("postgres://u@h/db?max_session_ttl=15s&timeout=2s&sslmode=require")
                .unwrap()
                .0,
            "postgres://u@h/db?sslmode=require"
        );
        assert!(postgres_target("postgres://u@h/db?schema=x';--").is_err());
    }
}
