//! Parsing `mysql://user[:password]@host:port/db[?param=value&...]` URLs.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use distsync_core::raw::{
    parse_duration, UrlGrammar, UrlOptions, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT,
};
use distsync_core::{Error, Result};
use sqlx::mysql::MySqlConnectOptions;

/// The URL schemes of this backend: `mysql://` and its synonym `mariadb://`.
pub const SCHEMES: [&str; 2] = ["mysql", "mariadb"];

/// The port MySQL and MariaDB listen on by default, used when a URL gives none.
pub const DEFAULT_PORT: u16 = 3306;

/// The prefix of every table of this backend when the URL names none.
pub const DEFAULT_TABLE_PREFIX: &str = "distsync_";

/// How often a process's watch hub reads the log for other processes' writes when the
/// URL does not say (`poll_interval=`).
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How many connections the backend's pool keeps at most when the URL does not say
/// (`pool_size=`).
pub const DEFAULT_POOL_SIZE: u32 = 8;

/// What a MySQL URL's query takes besides the options every backend's URL shares.
const GRAMMAR: UrlGrammar<'static> = UrlGrammar::new(
    &["table_prefix", "poll_interval", "pool_size"],
    crate::MIN_SESSION_TTL,
);

/// A parsed backend URL: where the server is, the tables' prefix, the timeouts.
///
/// `mysql://user[:password]@host[:port]/database[?param=value&...]` (or
/// `mariadb://...`); percent-encode `@`, `:` and `/` in the user and password.
///
/// | parameter | meaning | default |
/// |---|---|---|
/// | `table_prefix` | the prefix of every table: 1 to 32 ASCII letters, digits and `_` | [`DEFAULT_TABLE_PREFIX`] |
/// | `poll_interval` | how often a process with open watches reads the log for other processes' writes (its own are seen at once) | [`DEFAULT_POLL_INTERVAL`] |
/// | `pool_size` | the most connections of the backend's pool (1 to 1000), beside two of its own for lease grants and renewals | [`DEFAULT_POOL_SIZE`] |
/// | `connect_timeout` | connecting in all, the tables' creation included | 5 s |
/// | `timeout` | one statement's answer, and waiting for a pool connection | 10 s |
///
/// Not offered yet, and refused with [`Error::Unsupported`]: TLS (`ca`, `cert`,
/// `key`), and `max_session_ttl` (the lock-delay after a store that forgot: the
/// backend keeps no epoch marker yet).
///
/// The password is never shown: `Display`, `Debug` and errors show `***` instead.
///
/// ```
/// # use distsync_mysql::MysqlConfig;
/// let config: MysqlConfig = "mysql://app:s3cret@10.0.0.1/locks?table_prefix=ds_".parse()?;
/// assert_eq!(config.table_prefix(), "ds_");
/// assert!(!format!("{config} {config:?}").contains("s3cret"));
/// # Ok::<(), distsync_core::Error>(())
/// ```
#[derive(Clone)]
pub struct MysqlConfig {
    options: MySqlConnectOptions,
    table_prefix: String,
    poll_interval: Duration,
    pool_size: u32,
    connect_timeout: Duration,
    request_timeout: Duration,
    /// The URL with its password masked, for `Display` and errors.
    display: String,
}

impl fmt::Debug for MysqlConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlConfig")
            .field("url", &self.display)
            .field("table_prefix", &self.table_prefix)
            .field("poll_interval", &self.poll_interval)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl fmt::Display for MysqlConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

impl FromStr for MysqlConfig {
    type Err = Error;

    /// As [`MysqlConfig::parse`].
    fn from_str(url: &str) -> Result<Self> {
        Self::parse(url)
    }
}

impl MysqlConfig {
    /// Parses a backend URL (see the type's docs).
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] (password masked) for an unparsable URL, another scheme, a
    /// missing host or database, or an invalid parameter; [`Error::Unsupported`] for
    /// TLS files and `max_session_ttl`.
    pub fn parse(url: &str) -> Result<Self> {
        let display = distsync_core::redact_url(url);
        let invalid = |reason: String| Error::InvalidUrl {
            url: display.clone(),
            reason,
        };
        let parsed = url::Url::parse(url).map_err(|error| invalid(error.to_string()))?;
        if !SCHEMES.contains(&parsed.scheme()) {
            return Err(invalid(format!(
                "scheme `{}` is not mysql:// or mariadb://",
                parsed.scheme()
            )));
        }
        let host = parsed
            .host_str()
            .filter(|host| !host.is_empty())
            .ok_or_else(|| invalid("no host".into()))?;
        let database = parsed.path().trim_start_matches('/');
        if database.is_empty() || database.contains('/') {
            return Err(invalid(
                "the path must name one database (`/db`)".to_owned(),
            ));
        }
        let decode = |text: &str| {
            url::form_urlencoded::parse(format!("x={text}").as_bytes())
                .next()
                .map(|(_, value)| value.into_owned())
                .unwrap_or_default()
        };
        let user = decode(parsed.username());
        if user.is_empty() {
            return Err(invalid("no user (`mysql://user@host/db`)".to_owned()));
        }
        let mut options = MySqlConnectOptions::new()
            .host(host.trim_start_matches('[').trim_end_matches(']'))
            .port(parsed.port().unwrap_or(DEFAULT_PORT))
            .username(&user)
            .database(&decode(database))
            // Every time the backend reads or writes is the server's, in UTC.
            .timezone(Some("+00:00".to_owned()));
        if let Some(password) = parsed.password() {
            options = options.password(&decode(password));
        }
        let mut table_prefix = DEFAULT_TABLE_PREFIX.to_owned();
        let mut poll_interval = DEFAULT_POLL_INTERVAL;
        let mut pool_size = DEFAULT_POOL_SIZE;
        let shared = UrlOptions::parse(parsed.query().unwrap_or(""), &GRAMMAR, |key, value| {
            match key {
                "table_prefix" => {
                    validate_prefix(value).map_err(|reason| format!("table_prefix: {reason}"))?;
                    value.clone_into(&mut table_prefix);
                }
                "poll_interval" => {
                    poll_interval =
                        parse_duration(value).map_err(|e| format!("poll_interval: {e}"))?;
                }
                "pool_size" => {
                    pool_size = value
                        .parse()
                        .ok()
                        .filter(|size| (1..=1000).contains(size))
                        .ok_or_else(|| format!("pool_size: {value:?} is not from 1 to 1000"))?;
                }
                _ => return Ok(false),
            }
            Ok(true)
        })
        .map_err(&invalid)?;
        if shared.ca_file.is_some() || shared.client_cert_files.is_some() {
            return Err(Error::unsupported(crate::BACKEND, "TLS (ca=, cert=, key=)"));
        }
        if shared.max_session_ttl.or(None).is_some() {
            return Err(Error::unsupported(
                crate::BACKEND,
                "max_session_ttl= (a lock-delay after the store forgot)",
            ));
        }
        Ok(Self {
            options,
            table_prefix,
            poll_interval,
            pool_size,
            connect_timeout: shared.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            request_timeout: shared.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT),
            display,
        })
    }

    /// The connection options for sqlx, for a client of the same server beside the
    /// backend (their own `Debug` shows the password: print the `MysqlConfig`
    /// instead).
    pub fn connect_options(&self) -> &MySqlConnectOptions {
        &self.options
    }

    /// The prefix of every table.
    pub fn table_prefix(&self) -> &str {
        &self.table_prefix
    }

    /// How often a process with open watches reads the log for other processes' writes.
    pub fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    /// The most connections of the backend's pool.
    pub fn pool_size(&self) -> u32 {
        self.pool_size
    }

    /// How long connecting may take in all.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// How long one statement may wait for its answer.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }
}

/// Checks a table prefix: 1 to 32 ASCII letters, digits and `_`, so that it can be
/// spliced into statements unquoted.
fn validate_prefix(prefix: &str) -> std::result::Result<(), String> {
    let valid = (1..=32).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{prefix:?} is not 1 to 32 ASCII letters, digits and `_`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_url_parses_without_showing_the_password() {
        let config = MysqlConfig::parse(
            "mysql://app:p%40ss@db.example:3307/locks?table_prefix=t_&timeout=2s&poll_interval=50ms",
        )
        .unwrap();
        assert_eq!(config.connect_options().get_host(), "db.example");
        assert_eq!(config.connect_options().get_port(), 3307);
        assert_eq!(config.connect_options().get_username(), "app");
        assert_eq!(config.connect_options().get_database(), Some("locks"));
        assert_eq!(config.table_prefix(), "t_");
        assert_eq!(config.request_timeout(), Duration::from_secs(2));
        assert_eq!(config.poll_interval(), Duration::from_millis(50));
        let shown = format!("{config} {config:?}");
        assert!(
            !shown.contains("p%40ss") && !shown.contains("p@ss"),
            "{shown}"
        );
    }

    #[test]
    fn defaults_and_the_mariadb_scheme() {
        let config = MysqlConfig::parse("mariadb://app@localhost/db").unwrap();
        assert_eq!(config.connect_options().get_port(), DEFAULT_PORT);
        assert_eq!(config.table_prefix(), DEFAULT_TABLE_PREFIX);
        assert_eq!(config.poll_interval(), DEFAULT_POLL_INTERVAL);
        assert_eq!(config.connect_timeout(), DEFAULT_CONNECT_TIMEOUT);
    }

    #[test]
    fn bad_urls_are_typed_errors_without_the_password() {
        for url in [
            "postgres://app:hunter2@h/db",
            "mysql://app:hunter2@h",
            "mysql://:hunter2@h/db",
            "mysql://app:hunter2@h/db?table_prefix=a-b",
            "mysql://app:hunter2@h/db?colour=blue",
            "mysql://app:hunter2@h/db?pool_size=0",
        ] {
            let error = MysqlConfig::parse(url).unwrap_err();
            assert!(
                matches!(error, Error::InvalidUrl { .. }),
                "{url}: {error:?}"
            );
            assert!(!error.to_string().contains("hunter2"), "{error}");
        }
        for url in [
            "mysql://app@h/db?ca=/x.pem",
            "mysql://app@h/db?max_session_ttl=30s",
        ] {
            let error = MysqlConfig::parse(url).unwrap_err();
            assert!(matches!(error, Error::Unsupported { .. }), "{error:?}");
        }
    }
}
