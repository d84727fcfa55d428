//! The connection settings, parsed from a `zk://` or `zks://` URL.

use std::str::FromStr;

use distsync_core::raw::{
    join_host_port, Login, MultiHostUrl, SharedSettings, TlsFiles, UrlGrammar, UrlOptions,
};
use distsync_core::{Error, Result};

/// The URL scheme of this backend.
pub(crate) const SCHEME: &str = "zk";
/// The TLS scheme (the cargo feature `tls`; [`Error::Unsupported`] without it).
pub(crate) const TLS_SCHEME: &str = "zks";

/// What a `zk://` URL's query takes besides the options every backend's URL shares.
const GRAMMAR: UrlGrammar<'static> = UrlGrammar::new(&["sasl"], crate::MIN_SESSION_TTL);

/// The root under which every node lives when the URL names none.
pub const DEFAULT_ROOT: &str = "/distsync";

/// Where and how to reach ZooKeeper, parsed from
/// `zk://[user:password@]host:port[,host:port...][/root][?connect_timeout=5s&timeout=10s]`,
/// or `zks://...?ca=ca.pem[&cert=client.pem&key=client-key.pem]` for TLS.
///
/// | part | meaning | default |
/// |---|---|---|
/// | `zks://` | TLS to every server (rustls; the cargo feature `tls`, on by default) | plain TCP (`zk://`) |
/// | `user:password@` | a digest login (`addauth digest user:password`), sent with every (re)connection | none |
/// | `host:port,...` | the ensemble's servers, tried in turn | (required) |
/// | `/root` | the node under which every key lives (see the crate docs' layout) | `/distsync` |
/// | `connect_timeout` | how long opening a ZooKeeper session may take | 5 s |
/// | `timeout` | how long one request (a renewal, a create, a read) may take | 10 s |
/// | `stale_claim` | how old an at-most-once dequeue's claim must be before a consumer puts its item back (its dequeuer died before the hand-over); shorter than a live dequeuer's hand-over delivers twice (see [`distsync_core::queue::STALE_CLAIM`]); from 1 s to 24 h | 15 min |
/// | `max_session_ttl` | the bound on session TTLs that turns on the lock-delay after the store forgets (see `src/amnesia.rs`), at least [`crate::MIN_SESSION_TTL`]; longer sessions are refused; `off`: none; empty: the default, for a URL that inherits a bound | none (ZooKeeper keeps every write) |
/// | `sasl=digest-md5` | log `user:password@` in through SASL DIGEST-MD5 (a JAAS `DigestLoginModule` user) instead (the cargo feature `sasl`, on by default) | the `digest` scheme |
/// | `ca` | `zks://` only, required: path of a PEM file of the CA certificates to trust | none |
/// | `cert`, `key` | `zks://` only: paths of the PEM client certificate and its key, both or neither | none |
///
/// Over TLS the server's certificate must name the host the URL connects to. The
/// session timeout a ZooKeeper session asks for is the distsync session's TTL, not
/// a URL setting. The password never appears in `Debug` output or errors.
///
/// ```
/// use distsync::store::zookeeper::ZkConfig;
/// let config: ZkConfig = "zk://app:secret@127.0.0.1:2181,127.0.0.1:2182/apps/a?timeout=2s"
///     .parse()?;
/// assert_eq!(config.root(), "/apps/a");
/// assert!(!format!("{config:?}").contains("secret"));
/// # Ok::<(), distsync::Error>(())
/// ```
///
/// ```
/// # #[cfg(all(feature = "tls", feature = "sasl"))] {
/// use distsync::store::zookeeper::ZkConfig;
/// let config: ZkConfig = "zks://app:secret@zk1:2281/apps?sasl=digest-md5\
///     &ca=/etc/zk/ca.pem&cert=/etc/zk/app.pem&key=/etc/zk/app-key.pem"
///     .parse()?;
/// assert!(config.tls());
/// assert!(config.sasl());
/// assert_eq!(config.ca_file(), Some("/etc/zk/ca.pem"));
/// # }
/// # Ok::<(), distsync::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct ZkConfig {
    hosts: Vec<String>,
    root: String,
    user: Option<Login>,
    sasl: bool,
    tls: Option<TlsFiles>,
    /// The timeouts and the bound on session TTLs (the URL's shared keys).
    settings: SharedSettings,
}

distsync_core::config_accessors!(ZkConfig.settings {
    timeouts,
    max_session_ttl >= crate::MIN_SESSION_TTL,
});

impl ZkConfig {
    /// The servers, as `host:port`.
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    /// The root node every key lives under (no trailing `/`).
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The digest login's user, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_ref().map(Login::user)
    }

    /// Whether the user logs in through SASL DIGEST-MD5 (`sasl=digest-md5`) rather
    /// than the `digest` scheme.
    pub fn sasl(&self) -> bool {
        self.sasl
    }

    /// Whether every server is reached over TLS (`zks://`).
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The path of the PEM file of the CA certificates trusted over TLS, if any.
    pub fn ca_file(&self) -> Option<&str> {
        self.tls.as_ref().map(TlsFiles::ca)
    }

    /// The paths of the PEM client certificate and its key presented over TLS, if any.
    pub fn client_cert_files(&self) -> Option<(&str, &str)> {
        self.tls.as_ref().and_then(TlsFiles::client)
    }

    /// The connection string of the client: the hosts, comma-separated.
    pub(crate) fn connect_string(&self) -> String {
        self.hosts.join(",")
    }

    /// The digest login as the `digest` scheme's auth bytes (`user:password`), unless
    /// the user logs in through SASL.
    pub(crate) fn digest(&self) -> Option<Vec<u8>> {
        self.user.as_ref().filter(|_| !self.sasl).map(|login| {
            let (user, password) = login.parts();
            format!("{user}:{password}").into_bytes()
        })
    }

    /// The SASL DIGEST-MD5 login's user and password (never print them).
    #[cfg_attr(not(feature = "sasl"), allow(dead_code))]
    pub(crate) fn sasl_login(&self) -> Option<(&str, &str)> {
        self.user.as_ref().filter(|_| self.sasl).map(Login::parts)
    }

    /// The TLS files, for a `zks://` URL.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }
}

impl FromStr for ZkConfig {
    type Err = Error;

    fn from_str(url: &str) -> Result<Self> {
        let invalid = Error::invalid_url(url);
        let parts = MultiHostUrl::parse(url, None).map_err(&invalid)?;
        let tls = parts.scheme.eq_ignore_ascii_case(TLS_SCHEME);
        if tls && !cfg!(feature = "tls") {
            return Err(Error::unsupported(
                crate::BACKEND,
                "TLS (`zks://`): this build lacks the `tls` feature of distsync-zookeeper",
            ));
        }
        if !tls && !parts.scheme.eq_ignore_ascii_case(SCHEME) {
            return Err(invalid(format!(
                "expected a URL starting with `{SCHEME}://` or `{TLS_SCHEME}://`"
            )));
        }
        let user = parts.login().map_err(&invalid)?;
        let hosts = (parts.hosts.iter())
            .map(|(host, port)| join_host_port(host, *port))
            .collect();
        let (path, query) = (parts.path, parts.query);
        let root = parse_root(path).map_err(&invalid)?;
        let mut sasl = None;
        let shared = UrlOptions::parse(query, &GRAMMAR, |key, value| {
            match key {
                "sasl" => sasl = Some(value.to_owned()),
                _ => return Ok(false),
            }
            Ok(true)
        })
        .map_err(&invalid)?;
        let tls = shared.tls_files(tls, TLS_SCHEME).map_err(&invalid)?;
        let sasl = match sasl {
            Some(sasl) => parse_sasl(&sasl, &invalid)?,
            None => false,
        };
        if sasl && user.is_none() {
            return Err(invalid(
                "`sasl=digest-md5` needs the login as `user:password@`".into(),
            ));
        }
        Ok(Self {
            hosts,
            root,
            user,
            sasl,
            tls,
            settings: SharedSettings::from_url(&shared),
        })
    }
}

/// `sasl=`: `digest-md5` (any case) is the one mechanism; GSSAPI (Kerberos) needs a
/// ticket cache and a KDC this crate does not set up. A value refused is `invalid`'s
/// error; a mechanism this build cannot log in with is [`Error::Unsupported`].
fn parse_sasl(value: &str, invalid: impl Fn(String) -> Error) -> Result<bool> {
    match value.to_ascii_lowercase().as_str() {
        "digest-md5" if cfg!(feature = "sasl") => Ok(true),
        "digest-md5" => Err(Error::unsupported(
            crate::BACKEND,
            "SASL (`sasl=digest-md5`): this build lacks the `sasl` feature of \
             distsync-zookeeper",
        )),
        "gssapi" => Err(Error::unsupported(
            crate::BACKEND,
            "SASL GSSAPI (Kerberos): log in with `sasl=digest-md5` or a digest login",
        )),
        _ => Err(invalid(format!("sasl must be `digest-md5`, not `{value}`"))),
    }
}

/// The root node: `/distsync` for none, else the path without a trailing `/`, every
/// segment a valid ZooKeeper node name.
fn parse_root(path: &str) -> std::result::Result<String, String> {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(if path.is_empty() {
            DEFAULT_ROOT.to_owned()
        } else {
            // `zk://host:port/`: the ZooKeeper root itself.
            String::new()
        });
    }
    if trimmed.contains('%') {
        return Err("percent-encoding is not supported in the root".into());
    }
    for segment in trimmed[1..].split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(format!("the root `{trimmed}` has an invalid segment"));
        }
        if segment.chars().any(crate::keys::forbidden) {
            return Err(format!(
                "the root `{trimmed}` has a character ZooKeeper refuses in node names"
            ));
        }
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn parses_hosts_root_login_and_timeouts() {
        let config: ZkConfig = "zk://u:p%40ss@a:1,b:2/x/y/?connect_timeout=1s&timeout=250ms"
            .parse()
            .unwrap();
        assert_eq!(config.hosts(), ["a:1", "b:2"]);
        assert_eq!(config.root(), "/x/y");
        assert_eq!(config.digest().unwrap(), b"u:p@ss");
        assert_eq!(config.connect_timeout(), Duration::from_secs(1));
        assert_eq!(config.request_timeout(), Duration::from_millis(250));
        let default: ZkConfig = "zk://a:1".parse().unwrap();
        assert_eq!(default.root(), DEFAULT_ROOT);
        let top: ZkConfig = "zk://a:1/".parse().unwrap();
        assert_eq!(top.root(), "");
        assert_eq!(default.max_session_ttl(), None);
        let bounded: ZkConfig = "zk://a:1?max_session_ttl=30s".parse().unwrap();
        assert_eq!(bounded.max_session_ttl(), Some(Duration::from_secs(30)));
    }

    #[test]
    fn max_session_ttl_is_at_least_the_shortest_session_and_empty_drops_it() {
        let dropped: ZkConfig = "zk://a:1?max_session_ttl=30s&max_session_ttl="
            .parse()
            .unwrap();
        assert_eq!(dropped.max_session_ttl(), None);
        match "zk://a:1?max_session_ttl=500ms".parse::<ZkConfig>() {
            Err(Error::InvalidUrl { reason, .. }) => {
                assert!(reason.contains("max_session_ttl"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_password_is_never_shown() {
        let config: ZkConfig = "zk://u:hunter2@a:1".parse().unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
        let error = "zk://u:hunter2@a:1?bogus=1"
            .parse::<ZkConfig>()
            .unwrap_err();
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }

    #[test]
    fn refuses_bad_urls_with_typed_errors() {
        for url in [
            "zk://",
            "zk://a",
            "zk://a:0",
            "zk://a:1/x/../y",
            "zk://a:1?timeout=0",
            "zk://a:1?max_session_ttl=0",
            "zk://a:1?max_session_ttl=soon",
            "etcd://a:1",
            "zk://u@a:1",
        ] {
            assert!(
                matches!(url.parse::<ZkConfig>(), Err(Error::InvalidUrl { .. })),
                "{url}"
            );
        }
        assert!(matches!(
            "zk://u:p@a:1?sasl=gssapi".parse::<ZkConfig>(),
            Err(Error::Unsupported { .. })
        ));
    }

    #[cfg(feature = "tls")]
    #[test]
    fn parses_tls_files_and_sasl() {
        let config: ZkConfig = "zks://u:pw@a:1/r?ca=/c/ca%20x.pem&cert=/c/c.pem&key=/c/k.pem\
                                &sasl=DIGEST-MD5"
            .parse()
            .unwrap();
        assert!(config.tls());
        assert_eq!(config.ca_file(), Some("/c/ca x.pem"));
        assert_eq!(config.client_cert_files(), Some(("/c/c.pem", "/c/k.pem")));
        assert_eq!(config.root(), "/r");
        assert!(config.sasl());
        assert_eq!(config.sasl_login(), Some(("u", "pw")));
        assert_eq!(config.digest(), None);
        let server_only: ZkConfig = "zks://a:1?ca=/c/ca.pem".parse().unwrap();
        assert_eq!(server_only.client_cert_files(), None);
        let plain: ZkConfig = "zk://u:pw@a:1".parse().unwrap();
        assert!(!plain.tls() && !plain.sasl());
        assert_eq!(plain.sasl_login(), None);
        assert!(!format!("{config:?}").contains("pw\""), "{config:?}");
    }

    #[cfg(feature = "tls")]
    #[test]
    fn refuses_bad_tls_and_sasl_options_with_typed_errors() {
        for (url, reason) in [
            ("zks://a:1", "needs `ca`"),
            ("zks://a:1?ca=", "needs a file path"),
            ("zks://a:1?ca=/c&cert=/c.pem", "both `cert` and `key`"),
            ("zks://a:1?ca=/c&key=/k.pem", "both `cert` and `key`"),
            ("zk://a:1?ca=/c", "is for TLS"),
            ("zk://a:1?cert=/c&key=/k", "is for TLS"),
            ("zk://a:1?sasl=digest-md5", "needs the login"),
            ("zk://u:hunter2@a:1?sasl=plain", "sasl must be"),
        ] {
            match url.parse::<ZkConfig>() {
                Err(error @ Error::InvalidUrl { .. }) => {
                    assert!(error.to_string().contains(reason), "{url}: {error}");
                    assert!(!error.to_string().contains("hunter2"), "{error}");
                }
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn tls_without_the_feature_is_unsupported() {
        assert!(matches!(
            "zks://a:1?ca=/c".parse::<ZkConfig>(),
            Err(Error::Unsupported { .. })
        ));
    }
}
