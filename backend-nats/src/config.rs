//! The connection settings, parsed from a `nats://` or `tls://` URL.

use std::str::FromStr;

use distsync_core::raw::{
    join_host_port, Login, MultiHostUrl, SharedSettings, TlsFiles, UrlGrammar, UrlOptions,
};
use distsync_core::{Error, Result};

/// The URL scheme of this backend.
pub(crate) const SCHEME: &str = "nats";
/// The TLS scheme, as the NATS clients spell it.
pub(crate) const TLS_SCHEME: &str = "tls";

/// NATS's client port, for a host written without one.
const DEFAULT_PORT: u16 = 4222;

/// What a `nats://` URL's query takes besides the options every backend's URL shares.
const GRAMMAR: UrlGrammar<'static> =
    UrlGrammar::new(&["bucket", "replicas", "creds"], crate::MIN_SESSION_TTL);

/// The bucket every key lives in when the URL names none.
pub const DEFAULT_BUCKET: &str = "distsync";

/// The most replicas JetStream keeps of a stream.
const MOST_REPLICAS: usize = 5;

/// Where and how to reach NATS, parsed from
/// `nats://[user:password@]host:port[,host:port...][/][?bucket=distsync&replicas=1]`,
/// or `tls://...?ca=ca.pem[&cert=client.pem&key=client-key.pem]` for TLS.
///
/// * `bucket`: the key-value bucket (the stream `KV_<bucket>`) every key of this
///   backend lives in, made on first connect; letters, digits, `-` and `_`.
/// * `replicas`: the bucket's replicas when this backend makes it (1 to 5); an
///   existing bucket keeps its own.
/// * `creds`: a NATS credentials file (a user JWT and its NKey seed).
/// * `max_session_ttl`: the bound on session TTLs that turns on the lock-delay after
///   the store forgets (see `src/amnesia.rs`), at least [`crate::MIN_SESSION_TTL`];
///   longer sessions are refused; `off` or absent: none.
/// * `user:password@`: a plain login; `connect_timeout` and `timeout` as every backend
///   reads them.
///
/// The password is never shown: not by `Debug`, not in an error.
///
/// ```
/// use distsync::store::nats::NatsConfig;
/// let config: NatsConfig = "nats://app:secret@n1:4222,n2:4222/?bucket=locks&replicas=3"
///     .parse()?;
/// assert_eq!(config.servers(), ["n1:4222", "n2:4222"]);
/// assert_eq!(config.bucket(), "locks");
/// assert_eq!(config.replicas(), 3);
/// assert!(!format!("{config:?}").contains("secret"));
/// # Ok::<(), distsync::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct NatsConfig {
    servers: Vec<String>,
    bucket: String,
    replicas: usize,
    user: Option<Login>,
    creds: Option<String>,
    tls: Option<TlsFiles>,
    /// The timeouts and the bound on session TTLs (the URL's shared keys).
    settings: SharedSettings,
}

distsync_core::config_accessors!(NatsConfig.settings {
    timeouts,
    max_session_ttl >= crate::MIN_SESSION_TTL,
});

impl NatsConfig {
    /// The servers, as `host:port`.
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    /// The key-value bucket every key lives in.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The replicas of a bucket this backend makes.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// The plain login's user, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_ref().map(Login::user)
    }

    /// The path of the credentials file, if any.
    pub fn creds_file(&self) -> Option<&str> {
        self.creds.as_deref()
    }

    /// Whether every server is reached over TLS (`tls://`).
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The same configuration on another bucket.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a name JetStream refuses.
    pub fn with_bucket(mut self, bucket: &str) -> Result<Self> {
        check_bucket(bucket).map_err(Error::InvalidArgument)?;
        bucket.clone_into(&mut self.bucket);
        Ok(self)
    }

    /// The plain login's user and password (never print them).
    pub(crate) fn login(&self) -> Option<(&str, &str)> {
        self.user.as_ref().map(Login::parts)
    }

    /// The TLS files, for a `tls://` URL.
    pub(crate) fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// The server URLs the client is given, in its own scheme (no login: that goes
    /// through the options, so the client never logs it).
    pub(crate) fn client_urls(&self) -> Vec<String> {
        let scheme = if self.tls() { TLS_SCHEME } else { SCHEME };
        (self.servers.iter())
            .map(|server| format!("{scheme}://{server}"))
            .collect()
    }
}

impl FromStr for NatsConfig {
    type Err = Error;

    fn from_str(url: &str) -> Result<Self> {
        let invalid = Error::invalid_url(url);
        let parts = MultiHostUrl::parse(url, Some(DEFAULT_PORT)).map_err(&invalid)?;
        let tls = parts.scheme.eq_ignore_ascii_case(TLS_SCHEME);
        if !tls && !parts.scheme.eq_ignore_ascii_case(SCHEME) {
            return Err(invalid(format!(
                "expected a URL starting with `{SCHEME}://` or `{TLS_SCHEME}://`"
            )));
        }
        if !parts.path.trim_end_matches('/').is_empty() {
            return Err(invalid(
                "a nats URL has no path: name the bucket with `?bucket=`".into(),
            ));
        }
        let user = parts.login().map_err(&invalid)?;
        let servers = (parts.hosts.iter())
            .map(|(host, port)| join_host_port(host, *port))
            .collect();
        let (mut bucket, mut replicas, mut creds) = (None, None, None);
        let shared = UrlOptions::parse(parts.query, &GRAMMAR, |key, value| {
            match key {
                "bucket" => {
                    check_bucket(value)?;
                    bucket = Some(value.to_owned());
                }
                "replicas" => replicas = Some(parse_replicas(value)?),
                "creds" if value.is_empty() => return Err("`creds` needs a file path".into()),
                "creds" => creds = Some(value.to_owned()),
                _ => return Ok(false),
            }
            Ok(true)
        })
        .map_err(&invalid)?;
        let tls = shared.tls_files(tls, TLS_SCHEME).map_err(&invalid)?;
        if user.is_some() && creds.is_some() {
            return Err(invalid(
                "give either a login (`user:password@`) or `creds`, not both".into(),
            ));
        }
        Ok(Self {
            servers,
            bucket: bucket.unwrap_or_else(|| DEFAULT_BUCKET.to_owned()),
            replicas: replicas.unwrap_or(1),
            user,
            creds,
            tls,
            settings: SharedSettings::from_url(&shared),
        })
    }
}

/// A bucket name as JetStream takes it in a stream name and a subject token.
fn check_bucket(bucket: &str) -> std::result::Result<(), String> {
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if bucket.is_empty() || bucket.len() > 64 || !bucket.chars().all(valid) {
        return Err(format!(
            "bucket `{bucket}` must be 1 to 64 letters, digits, `-` or `_`"
        ));
    }
    Ok(())
}

/// `replicas=`: 1 to 5.
fn parse_replicas(value: &str) -> std::result::Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if (1..=MOST_REPLICAS).contains(&n) => Ok(n),
        _ => Err(format!(
            "replicas must be a number from 1 to {MOST_REPLICAS}, not `{value}`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn parses_servers_bucket_login_and_timeouts() {
        let config: NatsConfig =
            "nats://u:p%40ss@a:1,b/?bucket=b-1&replicas=3&connect_timeout=1s&timeout=250ms"
                .parse()
                .unwrap();
        assert_eq!(config.servers(), ["a:1", "b:4222"]);
        assert_eq!(config.bucket(), "b-1");
        assert_eq!(config.replicas(), 3);
        assert_eq!(config.login(), Some(("u", "p@ss")));
        assert_eq!(config.connect_timeout(), Duration::from_secs(1));
        assert_eq!(config.request_timeout(), Duration::from_millis(250));
        assert_eq!(config.client_urls(), ["nats://a:1", "nats://b:4222"]);
        let default: NatsConfig = "nats://a:1".parse().unwrap();
        assert_eq!(default.bucket(), DEFAULT_BUCKET);
        assert_eq!(default.replicas(), 1);
        assert!(!default.tls());
    }

    #[test]
    fn the_password_is_never_shown() {
        let config: NatsConfig = "nats://u:hunter2@a:1".parse().unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
        for url in [
            "nats://u:hunter2@a:1?bogus=1",
            "nats://u:hunter2@a:1?bucket=a.b",
            "nats://u:hunter2@a:1/x",
        ] {
            let error = url.parse::<NatsConfig>().unwrap_err();
            assert!(!error.to_string().contains("hunter2"), "{error}");
        }
    }

    #[test]
    fn parses_tls_files_and_creds() {
        let config: NatsConfig = "tls://a:1?ca=/c/ca.pem&cert=/c/c.pem&key=/c/k.pem"
            .parse()
            .unwrap();
        assert!(config.tls());
        assert_eq!(
            config.tls_files().and_then(TlsFiles::client),
            Some(("/c/c.pem", "/c/k.pem"))
        );
        assert_eq!(config.client_urls(), ["tls://a:1"]);
        let creds: NatsConfig = "nats://a:1?creds=/c/app.creds".parse().unwrap();
        assert_eq!(creds.creds_file(), Some("/c/app.creds"));
    }

    #[test]
    fn refuses_bad_urls_with_typed_errors() {
        for url in [
            "nats://",
            "nats://a:0",
            "nats://a:1/bucket",
            "nats://a:1?bucket=",
            "nats://a:1?bucket=a.b",
            "nats://a:1?bucket=a*",
            "nats://a:1?replicas=0",
            "nats://a:1?replicas=6",
            "nats://a:1?timeout=0",
            "nats://a:1?creds=",
            "nats://u:p@a:1?creds=/c",
            "nats://a:1?ca=/c",
            "tls://a:1",
            "etcd://a:1",
            "nats://u@a:1",
        ] {
            assert!(
                matches!(url.parse::<NatsConfig>(), Err(Error::InvalidUrl { .. })),
                "{url}"
            );
        }
    }

    #[test]
    fn max_session_ttl_is_a_bound_at_least_the_shortest_session() {
        let default: NatsConfig = "nats://a:1".parse().unwrap();
        assert_eq!(default.max_session_ttl(), None);
        let bounded: NatsConfig = "nats://a:1?max_session_ttl=30s".parse().unwrap();
        assert_eq!(bounded.max_session_ttl(), Some(Duration::from_secs(30)));
        let off: NatsConfig = "nats://a:1?max_session_ttl=off".parse().unwrap();
        assert_eq!(off.max_session_ttl(), None);
        assert!(matches!(
            "nats://a:1?max_session_ttl=10ms".parse::<NatsConfig>(),
            Err(Error::InvalidUrl { .. })
        ));
    }
}
