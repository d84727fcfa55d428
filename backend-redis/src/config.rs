//! [`RedisConfig`]: the backend's configuration, parsed from a `redis://`, `rediss://`,
//! `redis+sentinel://` or `redis+cluster://` URL.

use std::fmt;
use std::str::FromStr;

use distsync_core::raw::{
    parse_duration, parse_host_port, parse_url_flag, MultiHostUrl, UrlGrammar, UrlOptions,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT,
};
use distsync_core::{Error, Result};

#[cfg(not(feature = "tls"))]
use crate::capabilities::BACKEND;
use crate::capabilities::MIN_SESSION_TTL;
use crate::options::RedisOptions;
#[cfg(feature = "tls")]
use crate::tls::read_pem;

pub use crate::options::DEFAULT_NAMESPACE;

/// Where and under which prefix a [`crate::RedisBackend`] keeps its state, how it
/// connects and with which timeouts, as parsed from a URL.
///
/// `redis[s]://[user[:password]@]host[:port][/db][?param=value&...]`: the port
/// defaults to 6379 and the database to 0. `rediss://` connects over TLS (rustls; the
/// cargo feature `tls`, on by default). The user and password log in with `AUTH`
/// (a Redis 6 ACL user, or the `default` user when only a password is given:
/// `redis://:password@host`); percent-encode `@`, `:` and `/` in them. Query
/// parameters:
///
/// | parameter | meaning | default |
/// |---|---|---|
/// | `namespace` | key prefix; `?namespace=` gives an empty one | [`DEFAULT_NAMESPACE`] |
/// | `allow_eviction` | `true` accepts a server that may evict keys (see below) | `false` |
/// | `ca` | path of a PEM file of CA certificates to trust (`rediss://` only) | the system's roots |
/// | `cert`, `key` | paths of the PEM client certificate (chain) and its private key, for servers that require client certificates (`rediss://` only, both or neither) | none |
/// | `connect_timeout` | how long connecting (TCP, TLS, login, first command) may take | 5 s |
/// | `timeout` | how long one command may wait for its reply | 10 s |
/// | `stale_claim` | how old an at-most-once dequeue's claim must be before a consumer puts its item back (its dequeuer died before the hand-over); shorter than a live dequeuer's hand-over delivers twice (see [`distsync_core::queue::STALE_CLAIM`]); from 1 s to 24 h | 15 min |
/// | `wait_replicas` | replicas that must acknowledge every script run (`WAIT`; see [`RedisOptions::replica_acknowledgement`]); 0 asks none | 0 |
/// | `wait_timeout` | how long a script run waits for that acknowledgement | 500 ms |
/// | `max_session_ttl` | the longest session TTL a client may use, which turns on the lock-delay after the store forgets ([`RedisOptions::max_session_ttl`]; at least [`crate::MIN_SESSION_TTL`], at most 1 h; `off`: none; empty: the default) | [`crate::DEFAULT_MAX_SESSION_TTL`] on a server that does not keep every write (no `appendfsync always`) or fails over without `wait_replicas`; none on one that does |
///
/// **Sentinel**: `redis+sentinel://[user[:password]@]host[:port][,host[:port]...]/service[/db][?...]`
/// names the Sentinels (port 26379 by default) and the service they monitor; the
/// backend asks them for the primary, connects to it (checking with `ROLE` that it is
/// the primary), and asks them again whenever the connection breaks or the server
/// answers `READONLY` (a failover): see `src/sentinel.rs`. The user and password
/// log in to the Redis nodes (the Sentinels are asked without a login). TLS (`ca`,
/// `cert`, `key`) is not offered with Sentinel. The query parameters are the table's.
///
/// **Redis Cluster**: `redis+cluster://[user[:password]@]host[:port][,host[:port]...][/][?...]`
/// names some of the cluster's nodes (port 6379 by default; one that answers is enough,
/// the others are found from it), always database 0. Commands go to the master that
/// serves each key's slot, following `MOVED` and `ASK` redirections and the cluster's
/// failovers (redis-rs's cluster client); see the crate docs, "Redis Cluster", for
/// what runs where. TLS (`rediss+cluster://`) is not offered yet
/// ([`Error::Unsupported`]). The query parameters are the table's, plus `nat_map`
/// for nodes that announce addresses the client cannot reach (behind NAT, in
/// containers; Redisson's `natMap`): `nat_map=ANNOUNCED:PORT=REACHED:PORT[,...]`, each
/// announced address (as `CLUSTER SLOTS` and redirections give it) connected to at the
/// reached one instead.
///
/// Timeouts are a whole number with the unit `ms`, `s`, `m` or `h` (`1500ms`, `2s`,
/// `1m`); a bare number is refused (see `parse_duration` in `distsync::store::raw`).
///
/// Every key the backend writes starts with `{<namespace>` and every pub/sub channel
/// with `<db>|{<namespace>`, so two applications with different namespaces can share a
/// database, and an ACL user limited to `~{<namespace>*` and `&*|{<namespace>*` can run
/// every primitive (it also needs `CONFIG GET` or `INFO`, see below, and the scripting
/// commands).
///
/// `allow_eviction` (`true` or `false`, default `false`): at connect the backend reads
/// the server's `maxmemory-policy` and refuses any policy but `noeviction` with
/// [`Error::InvalidArgument`], since an evicting server may drop a held lock's entry,
/// a waiter line, a fencing-token counter or queue items (two holders, tokens going
/// backwards, lost items). `allow_eviction=true` accepts such a server; the backend
/// then declares the guarantees eviction takes away
/// ([`crate::capabilities_under_eviction`]).
///
/// The password is never shown: not by [`RedisConfig::server`], `Debug`, nor in errors.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    connection: String,
    display: String,
    db: i64,
    tls: bool,
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    options: RedisOptions,
    sentinel: Option<SentinelAddress>,
    /// `(host, port)` of each node a `redis+cluster://` URL names, in URL order.
    cluster: Option<Vec<(String, u16)>>,
    /// A `redis+cluster://` URL's `nat_map`: announced address -> address to reach.
    nat_map: Vec<NatEntry>,
}

/// One `nat_map` entry: a node's announced `(host, port)` and the one to connect to.
pub(crate) type NatEntry = ((String, u16), (String, u16));

/// The Sentinels and the service name of a `redis+sentinel://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SentinelAddress {
    /// `(host, port)` of each Sentinel, in URL order.
    pub(crate) sentinels: Vec<(String, u16)>,
    /// The service (master) name the Sentinels monitor.
    pub(crate) service: String,
}

/// What a Redis URL's query takes besides the options every backend's URL shares
/// (`redis+cluster://` also takes `nat_map`, read before).
const GRAMMAR: UrlGrammar<'static> = UrlGrammar {
    session_ttl_bounds: (MIN_SESSION_TTL, crate::options::MAX_SESSION_TTL_LIMIT),
    ..UrlGrammar::new(
        &[
            "namespace",
            "allow_eviction",
            "wait_replicas",
            "wait_timeout",
        ],
        MIN_SESSION_TTL,
    )
};

/// Every scheme a Redis URL may have.
pub(crate) const SCHEMES: &[&str] = &[
    "redis",
    "rediss",
    SENTINEL_SCHEME,
    CLUSTER_SCHEME,
    CLUSTER_TLS_SCHEME,
];

/// The scheme of a URL that names Sentinels.
pub(crate) const SENTINEL_SCHEME: &str = "redis+sentinel";

/// The scheme of a URL that names Redis Cluster nodes.
pub(crate) const CLUSTER_SCHEME: &str = "redis+cluster";
/// The scheme of a Redis Cluster over TLS, which [`RedisConfig::parse`] answers with
/// [`Error::Unsupported`].
const CLUSTER_TLS_SCHEME: &str = "rediss+cluster";
/// The Sentinels' default port.
const SENTINEL_PORT: u16 = 26379;
/// The Redis nodes' default port.
const REDIS_PORT: u16 = 6379;

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("server", &self.display)
            .field("tls", &self.tls)
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("options", &self.options)
            .field("sentinel", &self.sentinel)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl FromStr for RedisConfig {
    type Err = Error;

    /// As [`RedisConfig::parse`].
    fn from_str(url: &str) -> Result<Self> {
        Self::parse(url)
    }
}

/// The server as [`RedisConfig::server`] names it (scheme, host, port, database;
/// never the user or password) and the namespace.
impl fmt::Display for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}?namespace={}", self.display, self.options.namespace)
    }
}

distsync_core::config_accessors!(RedisConfig.options { timeouts });

impl RedisConfig {
    /// Parses `url`.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] (with the password masked) for a URL that does not parse,
    /// has another scheme, no host, a database that is not a number, a fragment, an
    /// unknown query parameter, an `allow_eviction` other than `true` or `false`, a
    /// timeout that is not a positive duration, `ca`/`cert`/`key` on `redis://`, or
    /// `cert` without `key` (or the reverse), a `wait_replicas` that is not a number,
    /// or, for `redis+sentinel://`, no Sentinel, a bad Sentinel address, no service
    /// name, or TLS parameters; for `redis+cluster://`, no node, a bad node address, a
    /// database other than 0, or TLS parameters. [`Error::Unsupported`] for a Redis
    /// Cluster over TLS (`rediss+cluster://`).
    pub fn parse(url: &str) -> Result<Self> {
        if url.starts_with(&format!("{SENTINEL_SCHEME}://")) {
            return Self::parse_sentinel(url);
        }
        if let Some((scheme, _)) = url.split_once("://") {
            match scheme.to_ascii_lowercase().as_str() {
                CLUSTER_SCHEME => return Self::parse_cluster(url),
                CLUSTER_TLS_SCHEME => {
                    return Err(Error::unsupported(
                        "redis",
                        format!(
                            "Redis Cluster over TLS ({scheme}://): use redis+cluster:// on a \
                             trusted network, or one server or a Sentinel group over TLS"
                        ),
                    ))
                }
                _ => {}
            }
        }
        Self::parse_server(url, url, "use rediss://")
    }

    /// A `redis://` or `rediss://` URL, refused as `shown` (the URL as its user wrote
    /// it); `tls_hint` says how to connect over TLS, for the refusal of TLS files on
    /// `redis://`.
    fn parse_server(url: &str, shown: &str, tls_hint: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::invalid_url(shown)(reason.to_owned());
        let parsed = url::Url::parse(url).map_err(|error| invalid(&error.to_string()))?;
        let tls = match parsed.scheme() {
            "redis" => false,
            "rediss" => true,
            other => {
                return Err(invalid(&format!(
                    "scheme `{other}` is not redis:// or rediss://"
                )))
            }
        };
        let host = (parsed.host_str().filter(|host| !host.is_empty()))
            .ok_or_else(|| invalid("no host"))?
            .to_owned();
        if parsed.fragment().is_some() {
            return Err(invalid("a fragment is not allowed"));
        }
        let db = match parsed.path().trim_start_matches('/') {
            "" => 0,
            path => path
                .parse::<u32>()
                .map(i64::from)
                .map_err(|_| invalid("the path must be a database number, e.g. /0"))?,
        };
        let mut options = RedisOptions::new();
        let shared = UrlOptions::parse(parsed.query().unwrap_or(""), &GRAMMAR, |key, value| {
            match key {
                "namespace" => options.namespace = value.to_owned(),
                "allow_eviction" => options.allow_eviction = parse_url_flag(key, value)?,
                "wait_replicas" => {
                    options.wait_replicas = value.parse().map_err(|_| {
                        "wait_replicas must be a number of replicas (0 asks none)".to_owned()
                    })?;
                }
                "wait_timeout" => {
                    options.wait_timeout = parse_duration(value)
                        .map_err(|reason| format!("wait_timeout: {reason}"))?;
                }
                _ => return Ok(false),
            }
            Ok(true)
        })
        .map_err(|reason| invalid(&reason))?;
        shared
            .check_tls(tls, tls_hint)
            .map_err(|reason| invalid(&reason))?;
        options.connect_timeout = shared.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        options.request_timeout = shared.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT);
        options.max_session_ttl = shared.max_session_ttl;
        options.stale_claim = shared
            .stale_claim
            .unwrap_or(distsync_core::queue::STALE_CLAIM);
        let (cert, key) = shared.client_cert_files.unzip();
        let port = parsed.port().unwrap_or(6379);
        let credentials = match (parsed.username(), parsed.password()) {
            ("", None) => String::new(),
            (user, None) => format!("{user}@"),
            (user, Some(password)) => format!("{user}:{password}@"),
        };
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host
        };
        let scheme = if tls { "rediss" } else { "redis" };
        let connection = format!("{scheme}://{credentials}{host}:{port}/{db}");
        let display = format!("{scheme}://{host}:{port}/{db}");
        // The redis crate has the last word on what it can connect to.
        if !tls || cfg!(feature = "tls") {
            redis::Client::open(connection.as_str())
                .map_err(|error| invalid(&error.to_string()))?;
        }
        Ok(Self {
            connection,
            display,
            db,
            tls,
            ca: shared.ca_file,
            cert,
            key,
            options,
            sentinel: None,
            cluster: None,
            nat_map: Vec::new(),
        })
    }

    /// `redis+cluster://[credentials@]node[,node...][/][?query]`. The credentials and
    /// query are checked by parsing them as a `redis://` URL's.
    fn parse_cluster(url: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::invalid_url(url)(reason.to_owned());
        let parts = MultiHostUrl::parse(url, Some(REDIS_PORT)).map_err(|e| invalid(&e))?;
        if !matches!(parts.path, "" | "/" | "/0") {
            return Err(invalid(
                "a Redis Cluster has only database 0: redis+cluster://host:port[,host:port...]",
            ));
        }
        // `nat_map` is the cluster's own; the rest is checked as a redis:// query.
        let mut nat_map = Vec::new();
        let mut rest = Vec::new();
        for pair in parts.query.split('&') {
            match pair.strip_prefix("nat_map=") {
                Some(entries) => nat_map.extend(
                    entries
                        .split(',')
                        .filter(|entry| !entry.is_empty())
                        .map(|entry| nat_entry(entry).map_err(|reason| invalid(&reason)))
                        .collect::<Result<Vec<_>>>()?,
                ),
                None => rest.push(pair),
            }
        }
        let as_redis = redis_url_of(&parts, "0", &rest.join("&"));
        let hint = "not offered with Redis Cluster";
        let mut parsed = Self::parse_server(&as_redis, url, hint).map_err(|error| match error {
            // The redis:// grammar lists its own keys; a cluster URL also takes
            // `nat_map`, read above.
            Error::InvalidUrl { reason, .. }
                if reason.ends_with(')') && reason.contains("(accepted: ") =>
            {
                invalid(&format!("{}, `nat_map`)", &reason[..reason.len() - 1]))
            }
            other => other,
        })?;
        parsed.display = format!("{CLUSTER_SCHEME}://{}", joined(&parts.hosts));
        parsed.cluster = Some(parts.hosts);
        parsed.nat_map = nat_map;
        Ok(parsed)
    }

    /// `redis+sentinel://[credentials@]sentinels/service[/db][?query]`. The
    /// credentials, database and query are checked by parsing them as a `redis://`
    /// URL's.
    fn parse_sentinel(url: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::invalid_url(url)(reason.to_owned());
        let parts = MultiHostUrl::parse(url, Some(SENTINEL_PORT)).map_err(|e| invalid(&e))?;
        let path = parts.path.strip_prefix('/').unwrap_or_default();
        let (service, db) = path.split_once('/').unwrap_or((path, ""));
        if service.is_empty() {
            return Err(invalid(
                "no service name: redis+sentinel://host:port[,host:port...]/service[/db]",
            ));
        }
        let as_redis = redis_url_of(&parts, db, parts.query);
        let mut parsed = Self::parse_server(&as_redis, url, "not offered with Sentinel")?;
        parsed.display = format!(
            "{SENTINEL_SCHEME}://{}/{service}/{}",
            joined(&parts.hosts),
            parsed.db
        );
        parsed.sentinel = Some(SentinelAddress {
            sentinels: parts.hosts,
            service: service.to_owned(),
        });
        Ok(parsed)
    }

    /// Whether the URL names Sentinels (`redis+sentinel://`) rather than a server.
    pub fn is_sentinel(&self) -> bool {
        self.sentinel.is_some()
    }

    /// The Sentinels and service name of a `redis+sentinel://` URL.
    pub(crate) fn sentinel(&self) -> Option<&SentinelAddress> {
        self.sentinel.as_ref()
    }

    /// The connection info of the URL's server, with the backend's TCP settings
    /// (`TCP_NODELAY`, see `crate::options::tcp_settings`).
    fn connection_info(&self) -> redis::RedisResult<redis::ConnectionInfo> {
        use redis::IntoConnectionInfo;
        Ok(self
            .connection
            .as_str()
            .into_connection_info()?
            .set_tcp_settings(crate::options::tcp_settings()))
    }

    /// Whether the URL names Redis Cluster nodes (`redis+cluster://`).
    pub fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// The `(host, port)` of each node a `redis+cluster://` URL names.
    pub(crate) fn cluster_nodes(&self) -> Option<&[(String, u16)]> {
        self.cluster.as_deref()
    }

    /// A `redis+cluster://` URL's `nat_map`.
    pub(crate) fn nat_map(&self) -> &[NatEntry] {
        &self.nat_map
    }

    /// The connection string of the Redis nodes (credentials and database, on a
    /// placeholder host for Sentinel URLs): never shown.
    pub(crate) fn connection(&self) -> &str {
        &self.connection
    }

    /// The database number.
    pub fn db(&self) -> i64 {
        self.db
    }

    /// The key prefix.
    pub fn namespace(&self) -> &str {
        &self.options.namespace
    }

    /// Whether the URL asks for TLS (`rediss://`).
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// Whether the URL accepts a server that evicts keys (`allow_eviction=true`).
    pub fn allow_eviction(&self) -> bool {
        self.options.allow_eviction
    }

    /// The path of the CA certificates file (`ca=`), if any.
    pub fn ca_file(&self) -> Option<&str> {
        self.ca.as_deref()
    }

    /// The paths of the client certificate and key files (`cert=`, `key=`), if any.
    pub fn client_cert_files(&self) -> Option<(&str, &str)> {
        self.cert.as_deref().zip(self.key.as_deref())
    }

    /// Everything but the server and credentials: namespace, eviction and timeouts.
    pub fn options(&self) -> &RedisOptions {
        &self.options
    }

    /// The server and database, without credentials or namespace.
    pub fn server(&self) -> &str {
        &self.display
    }

    /// A client for this URL; for `rediss://`, the CA and client certificate files are
    /// read now.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a certificate or key file that cannot be read or
    /// parsed, or for a `redis+sentinel://` URL (whose server is found when
    /// connecting: use [`crate::backend_with_config`]), [`Error::Unsupported`] for
    /// `rediss://` in a build without the `tls` feature, [`Error::InvalidUrl`] if the
    /// redis crate refuses the URL.
    pub fn client(&self) -> Result<redis::Client> {
        let invalid = |error: redis::RedisError| Error::InvalidUrl {
            url: self.display.clone(),
            reason: error.to_string(),
        };
        if self.sentinel.is_some() {
            return Err(Error::InvalidArgument(format!(
                "{} names Sentinels, not one server: its primary is found when connecting",
                self.display
            )));
        }
        if self.cluster.is_some() {
            return Err(Error::InvalidArgument(format!(
                "{} names Redis Cluster nodes, not one server: use crate::backend_with_config",
                self.display
            )));
        }
        if !self.tls {
            return redis::Client::open(self.connection_info().map_err(invalid)?).map_err(invalid);
        }
        #[cfg(feature = "tls")]
        {
            crate::tls::install_crypto_provider();
            let root_cert = self
                .ca
                .as_deref()
                .map(|path| read_pem("CA certificate", path))
                .transpose()?;
            let client_tls = match self.client_cert_files() {
                Some((cert, key)) => Some(redis::ClientTlsConfig {
                    client_cert: read_pem("client certificate", cert)?,
                    client_key: read_pem("client key", key)?,
                }),
                None => None,
            };
            redis::Client::build_with_tls(
                self.connection_info().map_err(invalid)?,
                redis::TlsCertificates {
                    client_tls,
                    root_cert,
                },
            )
            .map_err(|error| {
                Error::InvalidArgument(format!(
                    "redis: the TLS certificates or key of {} are unusable: {error}",
                    self.display
                ))
            })
        }
        #[cfg(not(feature = "tls"))]
        Err(Error::unsupported(
            BACKEND,
            "TLS (rediss://): this build of distsync-redis has no TLS support (enable its \
             cargo feature `tls`)",
        ))
    }
}

/// One `nat_map` entry, `ANNOUNCED:PORT=REACHED:PORT`.
fn nat_entry(text: &str) -> std::result::Result<NatEntry, String> {
    let (announced, reached) = text
        .split_once('=')
        .ok_or_else(|| format!("nat_map entry {text:?} is not ANNOUNCED:PORT=REACHED:PORT"))?;
    let node =
        |text: &str| parse_host_port(text, Some(REDIS_PORT)).map_err(|e| format!("nat_map: {e}"));
    Ok((node(announced)?, node(reached)?))
}

/// `hosts` as a URL names them, `host:port,...`.
fn joined(hosts: &[(String, u16)]) -> String {
    let hosts: Vec<String> = (hosts.iter())
        .map(|(host, port)| distsync_core::raw::join_host_port(host, *port))
        .collect();
    hosts.join(",")
}

/// The `redis://` URL that carries the credentials, database `db` and `query` of a
/// URL naming several hosts, on a placeholder host.
fn redis_url_of(parts: &MultiHostUrl<'_>, db: &str, query: &str) -> String {
    let credentials = parts.userinfo.map(|c| format!("{c}@")).unwrap_or_default();
    format!("redis://{credentials}localhost/{db}?{query}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use distsync_core::raw::MaxSessionTtl;
    use std::time::Duration;

    /// `bad` is an [`Error::InvalidUrl`] that does not show the password `secret`.
    fn assert_invalid_without_secret(bad: &str) {
        match RedisConfig::parse(bad) {
            Err(Error::InvalidUrl { url, .. }) => assert!(!url.contains("secret"), "{url}"),
            other => panic!("{bad:?} gave {other:?}"),
        }
    }

    #[test]
    fn parses_host_port_db_and_namespace() {
        let url = RedisConfig::parse("redis://127.0.0.1:26379/3?namespace=app1:").unwrap();
        assert_eq!(url.db(), 3);
        assert_eq!(url.namespace(), "app1:");
        assert_eq!(url.server(), "redis://127.0.0.1:26379/3");
        assert!(!url.tls());
    }

    #[test]
    fn cluster_urls_name_nodes_and_tls_is_unsupported_without_the_password() {
        let url = RedisConfig::parse(
            "redis+cluster://u:secret@127.0.0.1:7000,[::1],db:7002/?namespace=a:&wait_replicas=1",
        )
        .unwrap();
        assert!(url.is_cluster());
        assert_eq!(
            url.cluster_nodes().unwrap(),
            [
                ("127.0.0.1".to_owned(), 7000),
                ("::1".to_owned(), 6379),
                ("db".to_owned(), 7002)
            ]
        );
        assert_eq!(
            url.server(),
            "redis+cluster://127.0.0.1:7000,[::1]:6379,db:7002"
        );
        assert_eq!(url.namespace(), "a:");
        assert_eq!(url.options().wait_replicas, 1);
        assert!(!format!("{url:?}{url}").contains("secret"));
        assert!(matches!(url.client(), Err(Error::InvalidArgument(_))));
        let mapped = RedisConfig::parse(
            "redis+cluster://h:1?nat_map=10.0.0.1:7000=h:1,10.0.0.2:7000=h:2&namespace=n:",
        )
        .unwrap();
        assert_eq!(
            mapped.nat_map(),
            [
                (("10.0.0.1".to_owned(), 7000), ("h".to_owned(), 1)),
                (("10.0.0.2".to_owned(), 7000), ("h".to_owned(), 2))
            ]
        );
        assert_eq!(mapped.namespace(), "n:");
        match RedisConfig::parse("redis+cluster://h:1?colour=red") {
            Err(Error::InvalidUrl { reason, .. }) => {
                assert!(reason.ends_with(", `nat_map`)"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            "redis+cluster://u:secret@h:1?nat_map=10.0.0.1:7000",
            "redis+cluster://u:secret@h:1?nat_map=10.0.0.1:0=h:1",
            "redis+cluster://u:secret@127.0.0.1:7000/3",
            "redis+cluster://u:secret@127.0.0.1:0",
            "redis+cluster://u:secret@",
            "redis+cluster://u:secret@h:1?ca=x",
            "redis+cluster://u:secret@h:1?what=1",
        ] {
            assert_invalid_without_secret(bad);
        }
        match RedisConfig::parse("REDISS+CLUSTER://u:secret@127.0.0.1:7000") {
            Err(Error::Unsupported { backend, operation }) => {
                assert_eq!(backend, "redis");
                assert!(operation.contains("Redis Cluster"), "{operation}");
                assert!(!operation.contains("secret"), "{operation}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let url = RedisConfig::parse("redis://localhost").unwrap();
        assert_eq!(url.db(), 0);
        assert_eq!(url.namespace(), DEFAULT_NAMESPACE);
        assert_eq!(url.server(), "redis://localhost:6379/0");
        let empty = RedisConfig::parse("redis://localhost/?namespace=").unwrap();
        assert_eq!(empty.namespace(), "");
    }

    #[test]
    fn credentials_are_kept_for_connecting_but_not_shown() {
        let url = RedisConfig::parse("redis://user:secret@localhost:1/0").unwrap();
        assert!(!url.server().contains("secret"));
        match RedisConfig::parse("redis://user:secret@localhost:1/x") {
            Err(Error::InvalidUrl { url, .. }) => assert!(!url.contains("secret"), "{url}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_bad_urls_with_a_typed_error() {
        for bad in [
            "not a url",
            "http://localhost:6379",
            "redis://localhost/abc",
            "redis://localhost/0?db=1",
            "redis://localhost/0#frag",
            "redis:///0",
            "redis://localhost/-1",
        ] {
            match RedisConfig::parse(bad) {
                Err(Error::InvalidUrl { .. }) => {}
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn allow_eviction_is_an_explicit_opt_in() {
        assert!(!RedisConfig::parse("redis://h/0").unwrap().allow_eviction());
        let url = RedisConfig::parse("redis://h/0?namespace=a:&allow_eviction=true").unwrap();
        assert!(url.allow_eviction());
        assert_eq!(url.namespace(), "a:");
        assert!(!RedisConfig::parse("redis://h/0?allow_eviction=false")
            .unwrap()
            .allow_eviction());
        for bad in ["yes", "1", "", "TRUE"] {
            let url = format!("redis://h/0?allow_eviction={bad}");
            assert!(
                matches!(RedisConfig::parse(&url), Err(Error::InvalidUrl { .. })),
                "{url}"
            );
        }
    }

    #[test]
    fn tls_files_and_timeouts() {
        let url = RedisConfig::parse(
            "rediss://u:secret@localhost:6380/2?ca=/a/ca.pem&cert=/a/c.pem&key=/a/k.pem\
             &connect_timeout=2s&timeout=1500ms",
        )
        .unwrap();
        assert!(url.tls());
        assert_eq!(url.db(), 2);
        assert_eq!(url.ca_file(), Some("/a/ca.pem"));
        assert_eq!(url.client_cert_files(), Some(("/a/c.pem", "/a/k.pem")));
        assert_eq!(url.connect_timeout(), Duration::from_secs(2));
        assert_eq!(url.request_timeout(), Duration::from_millis(1500));
        let debug = format!("{url:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert!(debug.contains("/a/ca.pem"), "{debug}");
        let url = url.with_connect_timeout(Duration::from_millis(300));
        assert_eq!(url.connect_timeout(), Duration::from_millis(300));
        let plain = RedisConfig::parse("redis://localhost").unwrap();
        assert_eq!(plain.connect_timeout(), DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(plain.request_timeout(), DEFAULT_REQUEST_TIMEOUT);
        for bad in [
            "redis://localhost?ca=/x",
            "rediss://localhost?cert=/x",
            "rediss://localhost?key=/x",
            "rediss://localhost?ca=",
            "redis://localhost?timeout=0",
            "redis://localhost?connect_timeout=fast",
            "rediss://u:secret@localhost?timeout=1d",
        ] {
            assert_invalid_without_secret(bad);
        }
    }

    #[test]
    fn sentinel_urls() {
        let url = RedisConfig::parse(
            "redis+sentinel://u:secret@127.0.0.1:26383,[::1],db:1/mymaster/2\
             ?namespace=app:&wait_replicas=1&wait_timeout=250ms",
        )
        .unwrap();
        assert!(url.is_sentinel());
        let sentinel = url.sentinel().unwrap();
        assert_eq!(
            sentinel.sentinels,
            [
                ("127.0.0.1".to_owned(), 26383),
                ("::1".to_owned(), 26379),
                ("db".to_owned(), 1)
            ]
        );
        assert_eq!(sentinel.service, "mymaster");
        assert_eq!(url.db(), 2);
        assert_eq!(url.namespace(), "app:");
        assert_eq!(url.options().get_wait_replicas(), 1);
        assert_eq!(url.options().get_wait_timeout(), Duration::from_millis(250));
        assert_eq!(
            url.server(),
            "redis+sentinel://127.0.0.1:26383,[::1]:26379,db:1/mymaster/2"
        );
        assert!(!format!("{url:?}").contains("secret"));
        assert!(matches!(url.client(), Err(Error::InvalidArgument(_))));
        let plain = RedisConfig::parse("redis+sentinel://h/s").unwrap();
        assert_eq!(plain.db(), 0);
        assert_eq!(plain.options().get_wait_replicas(), 0);
        for bad in [
            "redis+sentinel://h",
            "redis+sentinel://h/",
            "redis+sentinel:///s",
            "redis+sentinel://h:0/s",
            "redis+sentinel://h:x/s",
            "redis+sentinel://h,/s",
            "redis+sentinel://h/s/x",
            "redis+sentinel://h/s#f",
            "redis+sentinel://u:secret@h/s?ca=/x",
            "redis+sentinel://u:secret@h/s?wait_replicas=-1",
            "redis+sentinel://h/s?wait_timeout=0",
        ] {
            assert_invalid_without_secret(bad);
        }
    }

    #[test]
    fn max_session_ttl_is_read_and_bounded() {
        let url = RedisConfig::parse("redis://h/0?max_session_ttl=90s").unwrap();
        assert_eq!(
            url.options().get_max_session_ttl(),
            MaxSessionTtl::At(Duration::from_secs(90))
        );
        assert_eq!(
            RedisConfig::parse("redis://h/0")
                .unwrap()
                .options()
                .get_max_session_ttl(),
            MaxSessionTtl::Default
        );
        for bad in ["0", "61m", "x", "50ms"] {
            let error = RedisConfig::parse(&format!("redis://h/0?max_session_ttl={bad}"));
            assert!(
                matches!(error, Err(Error::InvalidUrl { .. })),
                "{bad}: {error:?}"
            );
        }
        let sentinel = RedisConfig::parse("redis+sentinel://s1,s2/svc?max_session_ttl=5s").unwrap();
        assert_eq!(
            sentinel.options().get_max_session_ttl(),
            MaxSessionTtl::At(Duration::from_secs(5))
        );
        // Empty, the last one given: the default; `off`: none.
        let reset = RedisConfig::parse("redis://h/0?max_session_ttl=5s&max_session_ttl=").unwrap();
        assert_eq!(
            reset.options().get_max_session_ttl(),
            MaxSessionTtl::Default
        );
        let off = RedisConfig::parse("redis://h/0?max_session_ttl=off").unwrap();
        assert_eq!(off.options().get_max_session_ttl(), MaxSessionTtl::Off);
    }

    #[test]
    fn stale_claim_is_read_within_its_bounds_on_every_form() {
        let plain = RedisConfig::parse("redis://h/0").unwrap();
        assert_eq!(plain.stale_claim(), distsync_core::queue::STALE_CLAIM);
        for url in [
            "redis://h/0?stale_claim=3s",
            "redis+sentinel://s1,s2/svc?stale_claim=3s",
            "redis+cluster://n1,n2?stale_claim=3s",
        ] {
            let config = RedisConfig::parse(url).unwrap();
            assert_eq!(config.stale_claim(), Duration::from_secs(3), "{url}");
        }
        let error = RedisConfig::parse("redis://h/0?stale_claim=500ms");
        assert!(
            matches!(&error, Err(Error::InvalidUrl { reason, .. }) if reason.contains("stale_claim")),
            "{error:?}"
        );
        let lowered = plain.clone().with_stale_claim(Duration::MAX);
        assert_eq!(lowered.stale_claim(), distsync_core::queue::MAX_STALE_CLAIM);
        let options = crate::RedisOptions::default().stale_claim(Duration::MAX);
        assert_eq!(options.stale_claim, distsync_core::queue::MAX_STALE_CLAIM);
        let raised = plain.with_stale_claim(Duration::from_millis(10));
        assert_eq!(raised.stale_claim(), distsync_core::queue::MIN_STALE_CLAIM);
    }

    #[test]
    fn wait_parameters_on_a_plain_url() {
        let url = RedisConfig::parse("redis://h/0?wait_replicas=2&wait_timeout=1s").unwrap();
        assert_eq!(url.options().get_wait_replicas(), 2);
        assert_eq!(url.options().get_wait_timeout(), Duration::from_secs(1));
        assert!(!url.is_sentinel());
    }

    #[test]
    fn missing_certificate_files_are_typed_errors_naming_the_path() {
        let url =
            RedisConfig::parse("rediss://u:secret@localhost:6380?ca=/nonexistent/ca.pem").unwrap();
        match url.client() {
            Err(Error::InvalidArgument(message)) if cfg!(feature = "tls") => {
                assert!(message.contains("/nonexistent/ca.pem"), "{message}");
                assert!(!message.contains("secret"), "{message}");
            }
            Err(Error::Unsupported { .. }) if !cfg!(feature = "tls") => {}
            other => panic!("{other:?}"),
        }
    }
}
