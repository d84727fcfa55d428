//! Parsing `redis://host:port[/db][?namespace=...]` URLs.

use distsync_core::{Error, Result};

use crate::BACKEND;

/// The key prefix used when the URL names none.
pub const DEFAULT_NAMESPACE: &str = "distsync:";

/// Where and under which prefix a [`crate::RedisBackend`] keeps its state, as parsed
/// from a URL.
///
/// `redis://[user[:password]@]host[:port][/db][?namespace=prefix][&allow_eviction=true]`:
/// the port defaults to 6379, the database to 0 and the namespace to
/// [`DEFAULT_NAMESPACE`] (`?namespace=` gives an empty one). Every key the backend writes starts with
/// `{<namespace>`, so two applications with different namespaces can share a
/// database. `rediss://` (TLS) parses but is [`Error::Unsupported`] at connect, since
/// this build of the `redis` crate carries no TLS support.
///
/// `allow_eviction` (`true` or `false`, default `false`): at connect the backend reads
/// the server's `maxmemory-policy` and refuses any policy but `noeviction` with
/// [`Error::InvalidArgument`], since an evicting server may drop a held lock's entry,
/// a waiter line, a fencing-token counter or queue items (two holders, tokens going
/// backwards, lost items). `allow_eviction=true` accepts such a server; the backend
/// then declares the guarantees eviction takes away
/// ([`crate::capabilities_under_eviction`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisUrl {
    connection: String,
    display: String,
    db: i64,
    namespace: String,
    tls: bool,
    allow_eviction: bool,
}

impl RedisUrl {
    /// Parses `url`.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] for a URL that does not parse, has another scheme, no
    /// host, a database that is not a number, a fragment, a query parameter other
    /// than `namespace` and `allow_eviction`, or an `allow_eviction` other than `true`
    /// or `false`.
    pub fn parse(url: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidUrl {
            url: redact(url),
            reason: reason.to_owned(),
        };
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
        let host = match parsed.host_str() {
            Some(host) if !host.is_empty() => host.to_owned(),
            _ => return Err(invalid("no host")),
        };
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
        let mut namespace = DEFAULT_NAMESPACE.to_owned();
        let mut allow_eviction = false;
        for (key, value) in parsed.query_pairs() {
            match key.as_ref() {
                "namespace" => namespace = value.into_owned(),
                "allow_eviction" => {
                    allow_eviction = match value.as_ref() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(invalid("allow_eviction must be `true` or `false`")),
                    }
                }
                other => {
                    return Err(invalid(&format!(
                        "unknown query parameter `{other}` (accepted: `namespace`, \
                         `allow_eviction`)"
                    )))
                }
            }
        }
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
        if !tls {
            redis::Client::open(connection.as_str())
                .map_err(|error| invalid(&error.to_string()))?;
        }
        Ok(Self {
            connection,
            display,
            db,
            namespace,
            tls,
            allow_eviction,
        })
    }

    /// The database number.
    pub fn db(&self) -> i64 {
        self.db
    }

    /// The key prefix.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Whether the URL asks for TLS (`rediss://`).
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// Whether the URL accepts a server that evicts keys (`allow_eviction=true`).
    pub fn allow_eviction(&self) -> bool {
        self.allow_eviction
    }

    /// The server and database, without credentials or namespace.
    pub fn server(&self) -> &str {
        &self.display
    }

    pub(crate) fn client(&self) -> Result<redis::Client> {
        if self.tls {
            return Err(Error::unsupported(
                BACKEND,
                "TLS (rediss://): this build of distsync-redis has no TLS support",
            ));
        }
        redis::Client::open(self.connection.as_str()).map_err(|error| Error::InvalidUrl {
            url: self.display.clone(),
            reason: error.to_string(),
        })
    }
}

/// The URL with its password masked, for error messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_port_db_and_namespace() {
        let url = RedisUrl::parse("redis://127.0.0.1:26379/3?namespace=app1:").unwrap();
        assert_eq!(url.db(), 3);
        assert_eq!(url.namespace(), "app1:");
        assert_eq!(url.server(), "redis://127.0.0.1:26379/3");
        assert!(!url.tls());
    }

    #[test]
    fn defaults() {
        let url = RedisUrl::parse("redis://localhost").unwrap();
        assert_eq!(url.db(), 0);
        assert_eq!(url.namespace(), DEFAULT_NAMESPACE);
        assert_eq!(url.server(), "redis://localhost:6379/0");
        let empty = RedisUrl::parse("redis://localhost/?namespace=").unwrap();
        assert_eq!(empty.namespace(), "");
    }

    #[test]
    fn credentials_are_kept_for_connecting_but_not_shown() {
        let url = RedisUrl::parse("redis://user:secret@localhost:1/0").unwrap();
        assert!(!url.server().contains("secret"));
        match RedisUrl::parse("redis://user:secret@localhost:1/x") {
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
            match RedisUrl::parse(bad) {
                Err(Error::InvalidUrl { .. }) => {}
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn allow_eviction_is_an_explicit_opt_in() {
        assert!(!RedisUrl::parse("redis://h/0").unwrap().allow_eviction());
        let url = RedisUrl::parse("redis://h/0?namespace=a:&allow_eviction=true").unwrap();
        assert!(url.allow_eviction());
        assert_eq!(url.namespace(), "a:");
        assert!(!RedisUrl::parse("redis://h/0?allow_eviction=false")
            .unwrap()
            .allow_eviction());
        for bad in ["yes", "1", "", "TRUE"] {
            let url = format!("redis://h/0?allow_eviction={bad}");
            assert!(
                matches!(RedisUrl::parse(&url), Err(Error::InvalidUrl { .. })),
                "{url}"
            );
        }
    }

    #[test]
    fn tls_parses_but_is_unsupported() {
        let url = RedisUrl::parse("rediss://localhost:6380").unwrap();
        assert!(url.tls());
        assert!(matches!(url.client(), Err(Error::Unsupported { .. })));
    }
}
