//! The connection settings, parsed from a `zk://` URL.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use distsync_core::timeout::parse_url_timeout;
use distsync_core::{Error, Result};

/// The URL scheme of this backend.
pub(crate) const SCHEME: &str = "zk";
/// The TLS scheme, answered with [`Error::Unsupported`].
pub(crate) const TLS_SCHEME: &str = "zks";

/// The root under which every node lives when the URL names none.
pub const DEFAULT_ROOT: &str = "/distsync";
/// How long connecting (TCP, the session handshake, digest login) may take by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request may take by default.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how to reach ZooKeeper, parsed from
/// `zk://[user:password@]host:port[,host:port...][/root][?connect_timeout=5s&timeout=10s]`.
///
/// | part | meaning | default |
/// |---|---|---|
/// | `user:password@` | a digest login (`addauth digest user:password`), sent with every (re)connection | none |
/// | `host:port,...` | the ensemble's servers, tried in turn | (required) |
/// | `/root` | the node under which every key lives (see the crate docs' layout) | `/distsync` |
/// | `connect_timeout` | how long opening a ZooKeeper session may take | 5 s |
/// | `timeout` | how long one request (a renewal, a create, a read) may take | 10 s |
///
/// The session timeout a ZooKeeper session asks for is the distsync session's TTL, not
/// a URL setting. The password never appears in `Debug` output or errors.
///
/// ```
/// use distsync_zookeeper::ZkConfig;
/// let config: ZkConfig = "zk://app:secret@127.0.0.1:2181,127.0.0.1:2182/apps/a?timeout=2s"
///     .parse()?;
/// assert_eq!(config.root(), "/apps/a");
/// assert!(!format!("{config:?}").contains("secret"));
/// # Ok::<(), distsync_core::Error>(())
/// ```
#[derive(Clone)]
pub struct ZkConfig {
    hosts: Vec<String>,
    root: String,
    user: Option<(String, String)>,
    connect_timeout: Duration,
    request_timeout: Duration,
}

impl fmt::Debug for ZkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZkConfig")
            .field("hosts", &self.hosts)
            .field("root", &self.root)
            .field("user", &self.user.as_ref().map(|(user, _)| user))
            .field("password", &self.user.as_ref().map(|_| "***"))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

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
        self.user.as_ref().map(|(user, _)| user.as_str())
    }

    /// How long opening a session may take.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// How long one request may take.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Sets how long opening a session may take (at least 1 ms).
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Sets how long one request may take (at least 1 ms).
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The connection string of the client: the hosts, comma-separated.
    pub(crate) fn connect_string(&self) -> String {
        self.hosts.join(",")
    }

    /// The digest login as the `digest` scheme's auth bytes (`user:password`).
    pub(crate) fn digest(&self) -> Option<Vec<u8>> {
        self.user
            .as_ref()
            .map(|(user, password)| format!("{user}:{password}").into_bytes())
    }
}

impl FromStr for ZkConfig {
    type Err = Error;

    fn from_str(url: &str) -> Result<Self> {
        let shown = distsync_core::redact_url(url);
        let invalid = |reason: String| Error::InvalidUrl {
            url: shown.clone(),
            reason,
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid(format!("expected a URL starting with `{SCHEME}://`")))?;
        if scheme.eq_ignore_ascii_case(TLS_SCHEME) {
            return Err(Error::unsupported(
                crate::BACKEND,
                "TLS (`zks://`): connect through `zk://` on a trusted network",
            ));
        }
        if !scheme.eq_ignore_ascii_case(SCHEME) {
            return Err(invalid(format!(
                "expected a URL starting with `{SCHEME}://`"
            )));
        }
        if rest.contains('#') {
            return Err(invalid("fragments are not supported".into()));
        }
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, query),
            None => (rest, ""),
        };
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, ""),
        };
        let (user, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => {
                let (user, password) = userinfo
                    .split_once(':')
                    .ok_or_else(|| invalid("a digest login needs `user:password@`".into()))?;
                let decode = |text: &str| {
                    url::form_urlencoded::parse(format!("x={text}").as_bytes())
                        .next()
                        .map(|(_, value)| value.into_owned())
                        .unwrap_or_default()
                };
                let (user, password) = (decode(user), decode(password));
                if user.is_empty() {
                    return Err(invalid("the digest login's user is empty".into()));
                }
                (Some((user, password)), hosts)
            }
            None => (None, authority),
        };
        if hosts.is_empty() {
            return Err(invalid("no server: expected host:port".into()));
        }
        let hosts = hosts
            .split(',')
            .map(|host| parse_host(host).map_err(&invalid))
            .collect::<Result<Vec<_>>>()?;
        let root = parse_root(path).map_err(&invalid)?;
        let mut config = Self {
            hosts,
            root,
            user,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        };
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match name.as_ref() {
                "connect_timeout" => {
                    config.connect_timeout = parse_url_timeout(&value)
                        .map_err(|reason| invalid(format!("connect_timeout: {reason}")))?;
                }
                "timeout" => {
                    config.request_timeout = parse_url_timeout(&value)
                        .map_err(|reason| invalid(format!("timeout: {reason}")))?;
                }
                other => {
                    return Err(invalid(format!(
                        "unknown query parameter `{other}` (accepted: `connect_timeout`, \
                         `timeout`)"
                    )))
                }
            }
        }
        Ok(config)
    }
}

/// `host:port`, the port required (ZooKeeper has no port every install shares).
fn parse_host(host: &str) -> std::result::Result<String, String> {
    let (name, port) = host
        .rsplit_once(':')
        .ok_or_else(|| format!("server `{host}` needs a port (host:port)"))?;
    if name.is_empty() {
        return Err(format!("server `{host}` has no host name"));
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(format!("{name}:{port}")),
        _ => Err(format!("server `{host}` has no valid port")),
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
            "etcd://a:1",
            "zk://u@a:1",
        ] {
            assert!(
                matches!(url.parse::<ZkConfig>(), Err(Error::InvalidUrl { .. })),
                "{url}"
            );
        }
        assert!(matches!(
            "zks://a:1".parse::<ZkConfig>(),
            Err(Error::Unsupported { .. })
        ));
    }
}
