//! Parsing `etcd://` URLs.

use std::fmt;
use std::str::FromStr;

use distsync_core::{Error, Name, Result};

/// The URL scheme of this backend.
pub const SCHEME: &str = "etcd";

/// The client port etcd listens on by default, used when a URL gives a host alone.
pub const DEFAULT_PORT: u16 = 2379;

/// Where the etcd cluster is and which key namespace to use, as parsed from
/// `etcd://host:port[,host:port...][/namespace]`.
///
/// - Every `host:port` is one cluster member; the client balances requests across
///   them and keeps working while a minority is down. A host without a port gets
///   etcd's default client port, 2379. IPv6 hosts go in brackets: `[::1]:2379`.
/// - The path, without its leading `/`, is the key namespace: every key distsync
///   writes starts with it. It follows the rules of [`Name`] and gets a trailing `/`
///   if it has none. By default there is none, which is what Go programs and
///   `etcdctl lock NAME` / `etcdctl elect NAME` use: to share a lock or an election
///   with them, use the same namespace they do (usually none).
/// - User info, query strings and fragments are rejected: TLS and authentication are
///   not offered by this URL form.
///
/// ```
/// # use distsync_etcd::EtcdConfig;
/// let config: EtcdConfig = "etcd://10.0.0.1:2379,10.0.0.2:2379/apps/billing".parse()?;
/// assert_eq!(config.endpoints(), ["10.0.0.1:2379", "10.0.0.2:2379"]);
/// assert_eq!(config.namespace(), "apps/billing/");
/// # Ok::<(), distsync_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdConfig {
    endpoints: Vec<String>,
    namespace: String,
}

impl EtcdConfig {
    /// A configuration for `endpoints` (`host:port` each) and `namespace` (may be
    /// empty; given a trailing `/` if missing).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for no endpoints or an endpoint that is not
    /// `host:port`, [`Error::InvalidName`] for a namespace breaking the name rules.
    pub fn new<S: AsRef<str>>(endpoints: &[S], namespace: &str) -> Result<Self> {
        if endpoints.is_empty() {
            return Err(Error::InvalidArgument(
                "an etcd configuration needs at least one endpoint".into(),
            ));
        }
        let endpoints = endpoints
            .iter()
            .map(|endpoint| parse_endpoint(endpoint.as_ref()).map_err(Error::InvalidArgument))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            endpoints,
            namespace: normalize_namespace(namespace)?,
        })
    }

    /// Parses an `etcd://host:port[,host:port...][/namespace]` URL.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] saying what is wrong.
    pub fn parse(url: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidUrl {
            url: url.to_owned(),
            reason,
        };
        let rest = url
            .split_once("://")
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(SCHEME))
            .map(|(_, rest)| rest)
            .ok_or_else(|| invalid(format!("expected a URL starting with `{SCHEME}://`")))?;
        if rest.contains(['?', '#']) {
            return Err(invalid(
                "query strings and fragments are not supported".into(),
            ));
        }
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash + 1..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(invalid(
                "user info is not supported (no authentication in etcd:// URLs)".into(),
            ));
        }
        if authority.is_empty() {
            return Err(invalid("no endpoint: expected host:port".into()));
        }
        let endpoints = authority
            .split(',')
            .map(parse_endpoint)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(invalid)?;
        if path.contains('%') {
            return Err(invalid(
                "percent-encoding is not supported in the namespace".into(),
            ));
        }
        let namespace = normalize_namespace(path).map_err(|error| invalid(error.to_string()))?;
        Ok(Self {
            endpoints,
            namespace,
        })
    }

    /// The members to connect to, as `host:port`.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The key prefix: empty, or ending with `/`.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
}

impl FromStr for EtcdConfig {
    type Err = Error;

    fn from_str(url: &str) -> Result<Self> {
        Self::parse(url)
    }
}

impl fmt::Display for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}://{}", self.endpoints.join(","))?;
        if !self.namespace.is_empty() {
            write!(f, "/{}", self.namespace)?;
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

/// Checks one `host[:port]` and returns it as `host:port`.
fn parse_endpoint(endpoint: &str) -> std::result::Result<String, String> {
    if endpoint.is_empty() {
        return Err("empty endpoint in the list (two commas, or a trailing comma?)".into());
    }
    let (host, port) = if let Some(bracketed) = endpoint.strip_prefix('[') {
        let (inside, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("endpoint {endpoint:?}: unclosed `[`"))?;
        let port = match after {
            "" => None,
            after => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| format!("endpoint {endpoint:?}: expected `:port` after `]`"))?,
            ),
        };
        (format!("[{inside}]"), port)
    } else {
        match endpoint.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port)),
            None => (endpoint.to_owned(), None),
        }
    };
    url::Host::parse(&host).map_err(|error| format!("endpoint {endpoint:?}: bad host: {error}"))?;
    let port = match port {
        None => DEFAULT_PORT,
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => return Err(format!("endpoint {endpoint:?}: bad port {port:?}")),
        },
    };
    Ok(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<EtcdConfig> {
        EtcdConfig::parse(url)
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
