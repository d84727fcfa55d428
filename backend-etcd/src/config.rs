//! Parsing `etcd://` URLs.

use std::fmt;
use std::str::FromStr;

use distsync_core::raw::{
    join_host_port, parse_host_port, parse_url_flag, Login, MultiHostUrl, SharedSettings,
    UrlGrammar, UrlOptions,
};
use distsync_core::{Error, Name, Result};
use distsync_kv::recipes::KeyLayout;

/// The URL scheme of this backend.
pub const SCHEME: &str = "etcd";

/// The client port etcd listens on by default, used when a URL gives a host alone.
pub const DEFAULT_PORT: u16 = 2379;

/// What an `etcd://` URL's query takes besides the options every backend's URL shares.
const GRAMMAR: UrlGrammar<'static> = UrlGrammar::new(&["tls", "layout"], crate::MIN_SESSION_TTL);

/// Where the etcd cluster is, which key namespace to use, and how to connect, as parsed
/// from `etcd://[user:password@]host:port[,host:port...][/namespace][?param=value&...]`.
///
/// - Every `host:port` is one cluster member; the client balances requests across
///   them and keeps working while a minority is down. A host without a port gets
///   etcd's default client port, 2379. IPv6 hosts go in brackets: `[::1]:2379`.
/// - The path, without its leading `/`, is the key namespace: every key distsync
///   writes starts with it. It follows the rules of [`Name`] and gets a trailing `/`
///   if it has none. By default there is none, which is what Go programs and
///   `etcdctl lock NAME` / `etcdctl elect NAME` use: to share a lock or an election
///   with them, use the same namespace they do (usually none).
/// - `user:password@` logs in (etcd auth, `etcdctl --user`); percent-encode `@`, `:`
///   and `/` in them. The token is refreshed when it expires. Every key distsync
///   writes or reads falls inside the namespace, so a user whose role grants
///   `readwrite` on the namespace prefix alone (`etcdctl role grant-permission ROLE
///   --prefix=true readwrite NAMESPACE/`) can run every primitive.
/// - Query parameters (fragments are rejected):
///
/// | parameter | meaning | default |
/// |---|---|---|
/// | `tls` | `true`: connect over TLS (rustls; the cargo feature `tls`, on by default) | `false`, or `true` when `ca` or `cert` is given |
/// | `ca` | path of a PEM file of CA certificates to trust (`etcdctl --cacert`) | the system's roots |
/// | `cert`, `key` | paths of the PEM client certificate and its key (`etcdctl --cert --key`), both or neither | none |
/// | `connect_timeout` | how long connecting (TCP, TLS, login, a first read) may take in all | 5 s |
/// | `layout` | `go`: read-write locks, queues, barriers, double barriers and STM keys in the key layout of etcd's Go `recipes` and `concurrency` packages, shared with Go programs (names ending in a segment Go writes under a name, such as `read` or a 5-, 16- or 19-digit number, are refused; see [`KeyLayout`]); `injective`: distsync's own layout, in which distinct names never meet (locks and elections use Go's layout in both) | `injective` |
/// | `max_session_ttl` | the longest session TTL a client may use (at least [`crate::MIN_SESSION_TTL`]), which turns on the lock-delay after the store forgets (see the crate docs, "When the store forgets"); longer sessions are refused; `off`: none; empty: the default, for a URL that inherits a bound | none (etcd keeps every write) |
/// | `timeout` | how long one request may wait for its answer (a watch stream: for it to open; a lease renewal on the client's shared keepalive stream: for its answer, or the stream is given up); a failing request is retried across members only while less than this (at most 3 s) has passed since its first attempt, so a request into a silent partition fails within about twice it | 10 s |
/// | `stale_claim` | how old an at-most-once dequeue's claim must be before a consumer puts its item back (its dequeuer died before the hand-over); shorter than a live dequeuer's hand-over delivers twice (see [`distsync_core::queue::STALE_CLAIM`]); from 1 s to 24 h | 15 min |
///
/// Timeouts are a whole number with the unit `ms`, `s`, `m` or `h` (`1500ms`, `2s`,
/// `1m`); a bare number is refused (see `parse_duration` in `distsync::store::raw`).
///
/// The password is never shown: `Display`, `Debug` and errors show `***` instead.
///
/// ```
/// # use distsync::store::etcd::EtcdConfig;
/// let config: EtcdConfig = "etcd://10.0.0.1:2379,10.0.0.2:2379/apps/billing".parse()?;
/// assert_eq!(config.endpoints(), ["10.0.0.1:2379", "10.0.0.2:2379"]);
/// assert_eq!(config.namespace(), "apps/billing/");
/// let secure: EtcdConfig =
///     "etcd://app:s3cret@10.0.0.1:2379/apps?ca=/etc/etcd/ca.pem&cert=/etc/etcd/app.pem&key=/etc/etcd/app-key.pem"
///         .parse()?;
/// assert!(secure.tls());
/// assert_eq!(secure.user(), Some("app"));
/// assert!(!format!("{secure} {secure:?}").contains("s3cret"));
/// # Ok::<(), distsync::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdConfig {
    endpoints: Vec<String>,
    namespace: String,
    user: Option<Login>,
    tls: bool,
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    /// The timeouts and the bound on session TTLs (the URL's shared keys).
    settings: SharedSettings,
    layout: KeyLayout,
}

distsync_core::config_accessors!(EtcdConfig.settings {
    timeouts,
    max_session_ttl >= crate::MIN_SESSION_TTL,
});

impl EtcdConfig {
    /// A configuration for `endpoints` (`host:port` each; a host alone gets
    /// [`DEFAULT_PORT`]) and `namespace` (may be empty; given a trailing `/` if
    /// missing).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for no endpoints or an endpoint that is not
    /// `host[:port]`, [`Error::InvalidName`] for a namespace breaking the name rules.
    pub fn new<S: AsRef<str>>(endpoints: &[S], namespace: &str) -> Result<Self> {
        if endpoints.is_empty() {
            return Err(Error::InvalidArgument(
                "an etcd configuration needs at least one endpoint".into(),
            ));
        }
        let endpoints = (endpoints.iter())
            .map(|endpoint| parse_host_port(endpoint.as_ref(), Some(DEFAULT_PORT)))
            .map(|parsed| parsed.map(|(host, port)| join_host_port(&host, port)))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(Error::InvalidArgument)?;
        Ok(Self {
            endpoints,
            namespace: normalize_namespace(namespace)?,
            user: None,
            tls: false,
            ca: None,
            cert: None,
            key: None,
            settings: SharedSettings::default(),
            layout: KeyLayout::default(),
        })
    }

    /// Parses an `etcd://` URL (see the type's docs).
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] saying what is wrong, with the password masked.
    pub fn parse(url: &str) -> Result<Self> {
        let invalid = Error::invalid_url(url);
        let parts = MultiHostUrl::parse(url, Some(DEFAULT_PORT)).map_err(&invalid)?;
        if !parts.scheme.eq_ignore_ascii_case(SCHEME) {
            return Err(invalid(format!(
                "expected a URL starting with `{SCHEME}://`"
            )));
        }
        let path = parts.path.strip_prefix('/').unwrap_or_default();
        if path.contains('%') {
            return Err(invalid(
                "percent-encoding is not supported in the namespace".into(),
            ));
        }
        let endpoints: Vec<String> = (parts.hosts.iter())
            .map(|(host, port)| join_host_port(host, *port))
            .collect();
        let mut config = Self {
            user: parts.login().map_err(&invalid)?,
            ..Self::new(&endpoints, path).map_err(|error| invalid(error.to_string()))?
        };
        let mut tls = None;
        let shared = UrlOptions::parse(parts.query, &GRAMMAR, |key, value| {
            match key {
                "tls" => tls = Some(parse_url_flag(key, value)?),
                "layout" => config.layout = KeyLayout::parse(value).map_err(|e| e.to_string())?,
                _ => return Ok(false),
            }
            Ok(true)
        })
        .map_err(&invalid)?;
        // Files without `tls=` mean TLS; `tls=false` with files is refused.
        config.tls = tls.unwrap_or(shared.ca_file.is_some() || shared.client_cert_files.is_some());
        shared
            .check_tls(config.tls, "the URL says tls=false")
            .map_err(&invalid)?;
        config.settings = SharedSettings::from_url(&shared);
        config.ca = shared.ca_file;
        (config.cert, config.key) = shared.client_cert_files.unzip();
        Ok(config)
    }

    /// Logs in as `user` with `password` (etcd auth).
    pub fn with_user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some(Login::new(user, password));
        self
    }

    /// Connects over TLS, trusting the CA certificates of the PEM file `ca` (`None`:
    /// the system's roots) and presenting the client certificate and key of the PEM
    /// files `client` (`None`: none).
    pub fn with_tls(mut self, ca: Option<&str>, client: Option<(&str, &str)>) -> Self {
        self.tls = true;
        self.ca = ca.map(str::to_owned);
        self.cert = client.map(|(cert, _)| cert.to_owned());
        self.key = client.map(|(_, key)| key.to_owned());
        self
    }

    /// The user to log in as, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_ref().map(Login::user)
    }

    /// The user and password (for building a client; never print them).
    pub(crate) fn credentials(&self) -> Option<(&str, &str)> {
        self.user.as_ref().map(Login::parts)
    }

    /// Whether to connect over TLS.
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The path of the CA certificates file, if any.
    pub fn ca_file(&self) -> Option<&str> {
        self.ca.as_deref()
    }

    /// The paths of the client certificate and key files, if any.
    pub fn client_cert_files(&self) -> Option<(&str, &str)> {
        self.cert.as_deref().zip(self.key.as_deref())
    }

    /// The members to connect to, as `host:port`.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The key prefix: empty, or ending with `/`.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Where read-write locks, queues, barriers, double barriers and STM keys go (the
    /// URL's `layout=`).
    pub fn layout(&self) -> KeyLayout {
        self.layout
    }

    /// The same configuration with `layout`.
    #[must_use]
    pub fn with_layout(mut self, layout: KeyLayout) -> Self {
        self.layout = layout;
        self
    }
}

impl FromStr for EtcdConfig {
    type Err = Error;

    fn from_str(url: &str) -> Result<Self> {
        Self::parse(url)
    }
}

/// The URL, with `***` for the password and without the timeouts and `stale_claim`.
impl fmt::Display for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}://")?;
        if let Some(user) = self.user() {
            let user: String = url::form_urlencoded::byte_serialize(user.as_bytes()).collect();
            write!(f, "{user}:***@")?;
        }
        write!(f, "{}", self.endpoints.join(","))?;
        if !self.namespace.is_empty() {
            write!(f, "/{}", self.namespace)?;
        }
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        if self.tls {
            query.append_pair("tls", "true");
            for (name, value) in [("ca", &self.ca), ("cert", &self.cert), ("key", &self.key)] {
                if let Some(value) = value {
                    query.append_pair(name, value);
                }
            }
        }
        if self.layout == KeyLayout::Go {
            query.append_pair("layout", "go");
        }
        if let Some(ttl) = self.settings.max_session_ttl {
            query.append_pair("max_session_ttl", &format!("{}ms", ttl.as_millis()));
        }
        let query = query.finish();
        if !query.is_empty() {
            write!(f, "?{query}")?;
        }
        Ok(())
    }
}

/// `""` stays empty; anything else must be a valid [`Name`] once one trailing `/` is
/// taken off, and gets that `/` back.
fn normalize_namespace(namespace: &str) -> Result<String> {
    let trimmed = namespace.strip_suffix('/').unwrap_or(namespace);
    if trimmed.is_empty() {
        if namespace.is_empty() {
            return Ok(String::new());
        }
        return Err(Error::InvalidName {
            name: namespace.to_owned(),
            reason: "a namespace may not be only `/`",
        });
    }
    let name = Name::new(trimmed)?;
    Ok(format!("{name}/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use distsync_core::raw::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT};
    use std::time::Duration;

    fn parse(url: &str) -> Result<EtcdConfig> {
        EtcdConfig::parse(url)
    }

    #[test]
    fn the_key_layout_is_injective_unless_the_url_asks_for_gos() {
        assert_eq!(parse("etcd://h:1").unwrap().layout(), KeyLayout::Injective);
        let go = parse("etcd://h:1/apps?layout=go").unwrap();
        assert_eq!(go.layout(), KeyLayout::Go);
        assert_eq!(go.to_string(), "etcd://h:1/apps/?layout=go");
        assert_eq!(parse(&go.to_string()).unwrap(), go);
        let explicit = parse("etcd://h:1?layout=injective").unwrap();
        assert_eq!(explicit.layout(), KeyLayout::Injective);
        assert!(matches!(
            parse("etcd://h:1?layout=Go"),
            Err(Error::InvalidUrl { reason, .. }) if reason.contains("layout")
        ));
    }

    #[test]
    fn one_endpoint_no_namespace() {
        let config = parse("etcd://127.0.0.1:23790").unwrap();
        assert_eq!(config.endpoints(), ["127.0.0.1:23790"]);
        assert_eq!(config.namespace(), "");
        let config = parse("etcd://127.0.0.1:23790/").unwrap();
        assert_eq!(config.namespace(), "");
    }

    #[test]
    fn many_endpoints_and_a_namespace() {
        let config = parse("etcd://a:1,b:2,[::1]:3/app/x").unwrap();
        assert_eq!(config.endpoints(), ["a:1", "b:2", "[::1]:3"]);
        assert_eq!(config.namespace(), "app/x/");
        assert_eq!(parse("etcd://a:1/app/").unwrap().namespace(), "app/");
        assert_eq!(config.to_string(), "etcd://a:1,b:2,[::1]:3/app/x/");
        assert_eq!(parse(&config.to_string()).unwrap(), config);
    }

    #[test]
    fn default_port() {
        assert_eq!(
            parse("etcd://localhost").unwrap().endpoints(),
            ["localhost:2379"]
        );
        assert_eq!(parse("etcd://[::1]").unwrap().endpoints(), ["[::1]:2379"]);
    }

    #[test]
    fn bad_urls_are_typed_errors() {
        for url in [
            "http://a:1",
            "etcd:/a:1",
            "etcd://",
            "etcd:///ns",
            "etcd://a:1,,b:2",
            "etcd://a:1,",
            "etcd://a:x",
            "etcd://a:0",
            "etcd://a:70000",
            "etcd://[::1:1",
            "etcd://[::1]x",
            "etcd://user@a:1",
            "etcd://a:1?x=1",
            "etcd://a:1?tls=yes",
            "etcd://a:1?cert=/c",
            "etcd://a:1?ca=/c&tls=false",
            "etcd://a:1?timeout=0",
            "etcd://a:1?connect_timeout=1d",
            "etcd://a:1#f",
            "etcd://a:1//",
            "etcd://a:1/x//y",
            "etcd://a:1/x%20y",
            "etcd://a b:1",
        ] {
            match parse(url) {
                Err(Error::InvalidUrl { url: got, .. }) => assert_eq!(got, url),
                other => panic!("{url}: expected InvalidUrl, got {other:?}"),
            }
        }
    }

    #[test]
    fn credentials_tls_and_timeouts() {
        let config = parse(
            "etcd://app%40x:p%40ss%3Aw0rd@a:1,b:2/ns?ca=/c/ca.pem&cert=/c/a.pem&key=/c/a.key\
             &timeout=3s&connect_timeout=1500ms",
        )
        .unwrap();
        assert_eq!(config.endpoints(), ["a:1", "b:2"]);
        assert_eq!(config.namespace(), "ns/");
        assert_eq!(config.user(), Some("app@x"));
        assert_eq!(config.credentials(), Some(("app@x", "p@ss:w0rd")));
        assert!(config.tls());
        assert_eq!(config.ca_file(), Some("/c/ca.pem"));
        assert_eq!(config.client_cert_files(), Some(("/c/a.pem", "/c/a.key")));
        assert_eq!(config.request_timeout(), Duration::from_secs(3));
        assert_eq!(config.connect_timeout(), Duration::from_millis(1500));
        let shown = format!("{config} {config:?}");
        assert!(
            !shown.contains("p@ss") && !shown.contains("p%40ss"),
            "{shown}"
        );
        assert!(shown.contains("***"), "{shown}");
        assert!(parse("etcd://a:1?tls=true").unwrap().tls());
        let plain = parse("etcd://a:1").unwrap();
        assert!(!plain.tls());
        assert_eq!(plain.connect_timeout(), DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(plain.request_timeout(), DEFAULT_REQUEST_TIMEOUT);
        let coded = plain
            .with_user("u", "hunter2")
            .with_tls(Some("/ca"), None)
            .with_connect_timeout(Duration::ZERO);
        assert_eq!(coded.connect_timeout(), Duration::from_millis(1));
        assert!(coded.tls());
        assert!(!format!("{coded} {coded:?}").contains("hunter2"));
    }

    #[test]
    fn max_session_ttl_is_at_least_the_shortest_lease_and_empty_drops_it() {
        let bounded = parse("etcd://a:1?max_session_ttl=30s").unwrap();
        assert_eq!(bounded.max_session_ttl(), Some(Duration::from_secs(30)));
        assert_eq!(parse(&bounded.to_string()).unwrap(), bounded);
        let dropped = parse("etcd://a:1?max_session_ttl=30s&max_session_ttl=").unwrap();
        assert_eq!(dropped.max_session_ttl(), None);
        assert!(matches!(
            parse("etcd://a:1?max_session_ttl=1s"),
            Err(Error::InvalidUrl { reason, .. }) if reason.contains("max_session_ttl")
        ));
        assert_eq!(
            dropped
                .with_max_session_ttl(Duration::ZERO)
                .max_session_ttl(),
            Some(crate::MIN_SESSION_TTL)
        );
    }

    #[test]
    fn errors_never_show_the_password() {
        for url in [
            "etcd://u:hunter2@a:x",
            "etcd://u:hunter2@a:1?bad=1",
            "etcd://u:hunter2@a:1/x//y",
            "etcd://u:hunter2@a:1#frag",
            "etcd://u:hunter2@",
            "etcd://:hunter2@a:1",
        ] {
            match parse(url) {
                Err(error @ Error::InvalidUrl { .. }) => {
                    let shown = format!("{error} {error:?}");
                    assert!(!shown.contains("hunter2"), "{shown}");
                    assert!(shown.contains(":***@"), "{shown}");
                }
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[test]
    fn new_checks_its_arguments() {
        let none: [&str; 0] = [];
        assert!(matches!(
            EtcdConfig::new(&none, ""),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            EtcdConfig::new(&["a:b"], ""),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            EtcdConfig::new(&["a:1"], "x//y"),
            Err(Error::InvalidName { .. })
        ));
        let config = EtcdConfig::new(&["a"], "ns").unwrap();
        assert_eq!(config.endpoints(), ["a:2379"]);
        assert_eq!(config.namespace(), "ns/");
    }
}
