//! Parsing `mysql://user[:password]@host:port/db[?param=value&...]` URLs.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use distsync_core::raw::{parse_duration, SharedSettings, UrlGrammar, UrlOptions};
use distsync_core::{Error, Result};
use sqlx::mysql::{MySqlConnectOptions, MySqlSslMode};

use crate::tls;

/// The URL schemes of this backend: `mysql://` and its synonym `mariadb://`.
pub const SCHEMES: [&str; 2] = ["mysql", "mariadb"];

/// The port MySQL and MariaDB listen on by default, used when a URL gives none.
pub const DEFAULT_PORT: u16 = 3306;

/// The prefix of every table of this backend when the URL names none.
pub const DEFAULT_TABLE_PREFIX: &str = "distsync_";

/// The default of `poll_interval=` (see [`MysqlConfig`]).
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The default of `pool_size=` (see [`MysqlConfig`]).
pub const DEFAULT_POOL_SIZE: u32 = 8;

/// The default of `key_bells=` (see [`MysqlConfig`]).
pub const DEFAULT_KEY_BELLS: u32 = 4;

/// The most `key_bells=` takes.
const MAX_KEY_BELLS: u32 = 64;

/// What a MySQL URL's query takes besides the options every backend's URL shares: the
/// TLS files as every backend spells them (`ca`, `cert`, `key`) and as sqlx and MySQL's
/// clients do (`ssl-ca`, `ssl-cert`, `ssl-key`), so that a URL written for sqlx keeps
/// its TLS; any other key is refused, as sqlx would ignore it.
const GRAMMAR: UrlGrammar<'static> = UrlGrammar {
    file_keys: [
        &["ca", "ssl-ca", "sslca"],
        &["cert", "ssl-cert", "sslcert"],
        &["key", "ssl-key", "sslkey"],
    ],
    ..UrlGrammar::new(
        &[
            "table_prefix",
            "poll_interval",
            "pool_size",
            "key_bells",
            "ssl-mode",
            "sslmode",
            "ssl_mode",
        ],
        crate::MIN_SESSION_TTL,
    )
};

/// A parsed backend URL: where the server is, the tables' prefix, the timeouts.
///
/// `mysql://user[:password]@host[:port]/database[?param=value&...]` (or
/// `mariadb://...`); percent-encode `@`, `:` and `/` in the user and password.
///
/// | parameter | meaning | default |
/// |---|---|---|
/// | `table_prefix` | the prefix of every table: 1 to 32 ASCII letters, digits and `_` | [`DEFAULT_TABLE_PREFIX`] |
/// | `ssl-mode` (or `sslmode`, `ssl_mode`) | as MySQL's clients, in any case: `disabled`; `preferred` (TLS when the server offers it, unverified; plaintext otherwise); `required` (TLS, unverified; as `verify_ca` when `ca` is given, so a given CA is never ignored); `verify_ca` (the server's certificate chains to a trusted CA); `verify_identity` (and names the host); `disabled` and `preferred` are refused beside a TLS file | `verify_identity` when the URL gives `ca`, `cert` or `key`; `preferred` otherwise |
/// | `ca` (or `ssl-ca`, `sslca`) | PEM file of CA certificates to trust, added to the system's roots | the system's roots |
/// | `cert`, `key` (or `ssl-cert`, `ssl-key`, `sslcert`, `sslkey`) | PEM client certificate and its key, both or neither (for a user created `REQUIRE X509`) | none |
/// | `poll_interval` | how often a process with open watches reads the log for other processes' writes (its own are seen at once) | [`DEFAULT_POLL_INTERVAL`] |
/// | `pool_size` | the most connections of the backend's pool (1 to 1000), beside those of its own, opened as they are needed: two for lease grants and renewals, one for the watch hub's reads of the log (a caller's transactions that fill the pool do not hold back the wake-ups of this process's waiters), and those of the key bells (`key_bells`); count them in the server's `max_connections` for a fleet | [`DEFAULT_POOL_SIZE`] |
/// | `key_bells` | how many other processes' key bells the process waits on at once (0 to 64), each on a connection of its own, beside one that holds the bells of the keys it created (see the crate docs, "Watches"); `0` turns key bells off in this process, which then neither holds nor waits on any: its waiters, and other processes' waiters for its keys, learn of a release by the poll | [`DEFAULT_KEY_BELLS`] |
/// | `connect_timeout` | connecting in all, the tables' creation included | 5 s |
/// | `timeout` | one statement's answer, and waiting for a pool connection | 10 s |
/// | `stale_claim` | how old an at-most-once dequeue's claim must be before a consumer puts its item back (its dequeuer died before the hand-over); shorter than a live dequeuer's hand-over delivers twice (see [`distsync_core::queue::STALE_CLAIM`]); from 1 s to 24 h | 15 min |
/// | `max_session_ttl` | the longest session TTL a client may use (a longer one is refused with [`Error::InvalidArgument`]), at least [`MIN_SESSION_TTL`](crate::MIN_SESSION_TTL); turns on the lock-delay after the store forgets (a wiped data directory, the tables dropped: see the crate docs, "When the store forgets"), and the backend then declares `exclusive_across_restart`; give it in every client's URL; `off`: none; empty: the default | none: no lock-delay for a store found without its marker (InnoDB keeps every committed write) |
///
/// TLS is sqlx's rustls (cargo feature `tls`, on by default); a mode that requires it
/// in a build without the feature is [`Error::Unsupported`]. The files are read when
/// the backend connects: one that cannot be read is [`Error::InvalidArgument`] naming
/// its path.
///
/// The password is never shown: `Display`, `Debug` and errors show `***` instead; nor
/// is a key's content, which only the connection reads.
///
/// ```
/// # use distsync_mysql::MysqlConfig;
/// let config: MysqlConfig = "mysql://app:s3cret@10.0.0.1/locks?table_prefix=ds_".parse()?;
/// assert_eq!(config.table_prefix(), "ds_");
/// assert!(!format!("{config} {config:?}").contains("s3cret"));
/// let secure = MysqlConfig::parse(
///     "mysql://app:s3cret@db.internal/locks?ca=/etc/mysql/ca.pem&cert=/etc/mysql/app.pem\
///      &key=/etc/mysql/app-key.pem",
/// )?;
/// assert_eq!(secure.ca_file(), Some("/etc/mysql/ca.pem"));
/// assert_eq!(secure.client_cert_files(), Some(("/etc/mysql/app.pem", "/etc/mysql/app-key.pem")));
/// assert!(!format!("{secure} {secure:?}").contains("s3cret"));
/// # Ok::<(), distsync_core::Error>(())
/// ```
#[derive(Clone)]
pub struct MysqlConfig {
    options: MySqlConnectOptions,
    table_prefix: String,
    poll_interval: Duration,
    pool_size: u32,
    key_bells: u32,
    /// The timeouts and the bound on session TTLs (the URL's shared keys).
    settings: SharedSettings,
    /// The PEM file of CA certificates to trust (`ca=`).
    ca_file: Option<String>,
    /// The PEM client certificate and its key (`cert=`, `key=`).
    client_cert_files: Option<(String, String)>,
    /// The URL with its password masked, for `Display` and errors.
    display: String,
}

impl fmt::Debug for MysqlConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlConfig")
            .field("url", &self.display)
            .field("ssl_mode", &self.options.get_ssl_mode())
            .field("table_prefix", &self.table_prefix)
            .field("poll_interval", &self.poll_interval)
            .field("pool_size", &self.pool_size)
            .field("key_bells", &self.key_bells)
            .field("settings", &self.settings)
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

distsync_core::config_accessors!(MysqlConfig.settings {
    timeouts,
    max_session_ttl >= crate::MIN_SESSION_TTL,
});

impl MysqlConfig {
    /// Parses a backend URL (see the type's docs).
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] (password masked) for an unparsable URL, another scheme, a
    /// missing host or database, or an invalid parameter (`cert` without `key` or the
    /// reverse, a TLS file beside an `ssl-mode` that may connect without TLS);
    /// [`Error::Unsupported`] for an `ssl-mode` (or a TLS file) that requires TLS in a
    /// build without the cargo feature `tls`.
    pub fn parse(url: &str) -> Result<Self> {
        let display = distsync_core::redact_url(url);
        let invalid = Error::invalid_url(url);
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
        let mut key_bells = DEFAULT_KEY_BELLS;
        let mut ssl_mode = None;
        let shared = UrlOptions::parse(parsed.query().unwrap_or(""), &GRAMMAR, |key, value| {
            match key {
                "table_prefix" if valid_prefix(value) => value.clone_into(&mut table_prefix),
                "table_prefix" => {
                    return Err(format!(
                        "table_prefix: {value:?} is not 1 to 32 ASCII letters, digits and `_`"
                    ))
                }
                "poll_interval" => {
                    poll_interval =
                        parse_duration(value).map_err(|e| format!("poll_interval: {e}"))?;
                }
                "pool_size" => pool_size = count_in(key, value, 1..=1000)?,
                "key_bells" => key_bells = count_in(key, value, 0..=MAX_KEY_BELLS)?,
                "ssl-mode" | "sslmode" | "ssl_mode" => ssl_mode = Some(tls::parse_mode(value)?),
                _ => return Ok(false),
            }
            Ok(true)
        })
        .map_err(&invalid)?;
        let ca = shared.ca_file.is_some();
        let files = ca || shared.client_cert_files.is_some();
        let ssl_mode = tls::effective_mode(ssl_mode, files, ca);
        if let Some(how) = tls::without_tls(ssl_mode) {
            shared.check_tls(false, how).map_err(&invalid)?;
        }
        tls::check_mode(ssl_mode)?;
        options = options.ssl_mode(ssl_mode);
        if let Some(ca) = &shared.ca_file {
            options = options.ssl_ca(ca);
        }
        if let Some((cert, key)) = &shared.client_cert_files {
            options = options.ssl_client_cert(cert).ssl_client_key(key);
        }
        Ok(Self {
            options,
            table_prefix,
            poll_interval,
            pool_size,
            key_bells,
            settings: SharedSettings::from_url(&shared),
            ca_file: shared.ca_file,
            client_cert_files: shared.client_cert_files,
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

    /// How many other processes' key bells the process waits on at once; `0`: key
    /// bells are off in this process.
    pub fn key_bells(&self) -> u32 {
        self.key_bells
    }

    /// The TLS mode: the URL's `ssl-mode`, or its default (see the type's docs).
    pub fn ssl_mode(&self) -> MySqlSslMode {
        self.options.get_ssl_mode()
    }

    /// The path of the CA certificates file (`ca=`), if any.
    pub fn ca_file(&self) -> Option<&str> {
        self.ca_file.as_deref()
    }

    /// The paths of the client certificate and key files (`cert=`, `key=`), if any.
    pub fn client_cert_files(&self) -> Option<(&str, &str)> {
        (self.client_cert_files.as_ref()).map(|(cert, key)| (cert.as_str(), key.as_str()))
    }

    /// The certificate and key files, each with what it holds, for the check at connect
    /// ([`distsync_core::raw::check_tls_files`]).
    pub(crate) fn tls_files(&self) -> Vec<(&'static str, String)> {
        let ca = self.ca_file.iter().map(|ca| ("CA certificate", ca.clone()));
        let client = self.client_cert_files.iter().flat_map(|(cert, key)| {
            [
                ("client certificate", cert.clone()),
                ("client key", key.clone()),
            ]
        });
        ca.chain(client).collect()
    }
}

/// The URL parameter `key`'s `value`, a count within `range`.
fn count_in(
    key: &str,
    value: &str,
    range: std::ops::RangeInclusive<u32>,
) -> std::result::Result<u32, String> {
    value
        .parse()
        .ok()
        .filter(|count| range.contains(count))
        .ok_or_else(|| {
            let (low, high) = range.into_inner();
            format!("{key}: {value:?} is not from {low} to {high}")
        })
}

/// Whether `prefix` is a valid table prefix: 1 to 32 ASCII letters, digits and `_`, so
/// that it can be spliced into statements unquoted.
fn valid_prefix(prefix: &str) -> bool {
    (1..=32).contains(&prefix.len())
        && (prefix.bytes()).all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use distsync_core::raw::DEFAULT_CONNECT_TIMEOUT;

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
            "mysql://app:hunter2@h/db?key_bells=65",
            "mysql://app:hunter2@h/db?key_bells=-1",
        ] {
            let error = MysqlConfig::parse(url).unwrap_err();
            assert!(
                matches!(error, Error::InvalidUrl { .. }),
                "{url}: {error:?}"
            );
            assert!(!error.to_string().contains("hunter2"), "{error}");
        }
        let bounded = MysqlConfig::parse("mysql://app@h/db?max_session_ttl=30s").unwrap();
        assert_eq!(bounded.max_session_ttl(), Some(Duration::from_secs(30)));
        assert_eq!(
            MysqlConfig::parse("mysql://app@h/db")
                .unwrap()
                .max_session_ttl(),
            None
        );
        let error = MysqlConfig::parse("mysql://app@h/db?max_session_ttl=1ms").unwrap_err();
        assert!(matches!(error, Error::InvalidUrl { .. }), "{error:?}");
    }

    #[test]
    fn tls_files_verify_the_server_and_its_name_unless_the_url_says_otherwise() {
        let config = MysqlConfig::parse(
            "mysql://app:hunter2@127.0.0.1/db?ca=/c/ca.pem&cert=/c/a.pem&key=/c/a.key",
        )
        .unwrap();
        assert!(matches!(config.ssl_mode(), MySqlSslMode::VerifyIdentity));
        assert_eq!(config.ca_file(), Some("/c/ca.pem"));
        assert_eq!(config.client_cert_files(), Some(("/c/a.pem", "/c/a.key")));
        assert_eq!(config.tls_files().len(), 3);
        let shown = format!("{config} {config:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("VerifyIdentity"),
            "{shown}"
        );
        // sqlx's spellings, and a mode of the URL's own.
        let config =
            MysqlConfig::parse("mysql://app@h/db?ssl-ca=/c/ca.pem&ssl-mode=VERIFY_CA").unwrap();
        assert!(matches!(config.ssl_mode(), MySqlSslMode::VerifyCa));
        assert_eq!(config.ca_file(), Some("/c/ca.pem"));
        // `required` with a CA checks the chain; a client certificate alone does not.
        let config = MysqlConfig::parse("mysql://app@h/db?ca=/c/ca.pem&ssl_mode=required").unwrap();
        assert!(matches!(config.ssl_mode(), MySqlSslMode::VerifyCa));
        let config =
            MysqlConfig::parse("mysql://app@h/db?cert=/a.pem&key=/a.key&sslmode=required").unwrap();
        assert!(matches!(config.ssl_mode(), MySqlSslMode::Required));
        // No file: MySQL's default, or the URL's mode.
        let config = MysqlConfig::parse("mysql://app@h/db").unwrap();
        assert!(matches!(config.ssl_mode(), MySqlSslMode::Preferred));
        assert!(config.tls_files().is_empty());
        let config = MysqlConfig::parse("mysql://app@h/db?ssl-mode=disabled").unwrap();
        assert!(matches!(config.ssl_mode(), MySqlSslMode::Disabled));
    }

    #[test]
    fn tls_mistakes_are_invalid_urls_without_the_password() {
        for (url, says) in [
            ("mysql://app:hunter2@h/db?cert=/a.pem", "`key`"),
            ("mysql://app:hunter2@h/db?ssl-key=/a.key", "`cert`"),
            ("mysql://app:hunter2@h/db?ca=", "needs a file path"),
            (
                "mysql://app:hunter2@h/db?ca=/c.pem&ssl-mode=disabled",
                "turns TLS off",
            ),
            (
                "mysql://app:hunter2@h/db?sslca=/c.pem&ssl-mode=preferred",
                "without TLS",
            ),
            (
                "mysql://app:hunter2@h/db?ssl-mode=verify-full",
                "verify_identity",
            ),
        ] {
            let error = MysqlConfig::parse(url).unwrap_err();
            assert!(
                matches!(&error, Error::InvalidUrl { reason, .. } if reason.contains(says)),
                "{url}: {error:?}"
            );
            assert!(!error.to_string().contains("hunter2"), "{error}");
        }
    }
}
