//! Parsing `postgres://user[:password]@host:port/db[?param=value&...]` URLs, and the
//! same settings built in code ([`PostgresConfig::from_options`]).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use distsync_core::raw::{SharedSettings, UrlGrammar, UrlOptions};
use distsync_core::{Error, Result};
use sqlx::postgres::{PgConnectOptions, PgSslMode};

/// The schema used when the URL names none.
pub const DEFAULT_SCHEMA: &str = "distsync";

/// How many connections carry the sessions' holds, waits and releases when the URL does
/// not say (`hold_connections=`).
pub const DEFAULT_HOLD_CONNECTIONS: u32 = 8;

/// The most `hold_connections=` may ask for (a server's `max_connections` is rarely
/// above a few hundred).
pub const MAX_HOLD_CONNECTIONS: u32 = 1000;

/// What a PostgreSQL URL's query takes besides the options every backend's URL
/// shares, whose TLS files it spells as libpq does (`sslrootcert`, `sslcert`,
/// `sslkey`, and sqlx's synonyms). Its own keys are distsync's and the connection
/// parameters sqlx reads ([`LIBPQ_KEYS`]); any other key is refused, as every backend
/// refuses one: sqlx would ignore it, and a misspelt `schema=` would then share the
/// default schema with every other client of the database.
const GRAMMAR: UrlGrammar<'static> = UrlGrammar {
    file_keys: [
        &["sslrootcert", "ssl-root-cert", "ssl-ca"],
        &["sslcert", "ssl-cert"],
        &["sslkey", "ssl-key"],
    ],
    ..UrlGrammar::new(&OWN_KEYS, crate::MIN_SESSION_TTL)
};

/// The keys of a PostgreSQL URL besides the shared ones: distsync's and `sslmode`
/// first, then [`LIBPQ_KEYS`].
const OWN_KEYS: [&str; 14] = [
    "schema",
    "hold_connections",
    "grants",
    "sslmode",
    "ssl-mode",
    "application_name",
    "options",
    "user",
    "password",
    "dbname",
    "host",
    "hostaddr",
    "port",
    "statement-cache-capacity",
];

/// The libpq connection parameters sqlx reads from a URL, passed to it by name (the TLS
/// files are the shared grammar's, `sslmode` is checked first).
const LIBPQ_KEYS: &[&str] = OWN_KEYS.split_at(5).1;

/// A parsed backend URL: how to connect, the schema holding distsync's tables, and the
/// timeouts.
///
/// `Debug` and `Display` never show the password (see [`PostgresConfig::parse`] for the URL
/// form).
#[derive(Clone)]
pub struct PostgresConfig {
    /// Connection options for `sqlx` (everything in the URL but `schema`,
    /// `connect_timeout` and `timeout`). Its own `Debug` shows the password: print the
    /// `PostgresConfig` instead.
    pub options: PgConnectOptions,
    /// The schema (namespace) of every table, function and lock key of this backend.
    pub schema: String,
    /// The timeouts and the bound on session TTLs (the URL's shared keys).
    settings: SharedSettings,
    hold_connections: u32,
    /// Grants commit without waiting for the WAL flush (`grants=unflushed`, see
    /// `crate::unflushed_grants`).
    unflushed_grants: bool,
    /// The certificate and key files named in the URL, checked at connect.
    files: Vec<(&'static str, String)>,
    /// The URL with its secrets masked, for `Display` and errors.
    display: String,
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &self.display)
            .field("schema", &self.schema)
            .field("ssl_mode", &self.options.get_ssl_mode())
            .field("settings", &self.settings)
            .field("hold_connections", &self.hold_connections)
            .field("unflushed_grants", &self.unflushed_grants)
            .finish()
    }
}

impl FromStr for PostgresConfig {
    type Err = Error;

    /// As [`PostgresConfig::parse`].
    fn from_str(url: &str) -> Result<Self> {
        Self::parse(url)
    }
}

impl fmt::Display for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

distsync_core::config_accessors!(PostgresConfig.settings {
    timeouts,
    max_session_ttl >= crate::MIN_SESSION_TTL,
});

impl PostgresConfig {
    /// Parses a backend URL:
    /// `postgres[ql]://[user[:password]@]host[:port]/database[?param=value&...]`, with
    /// libpq's parameters for TLS and the other connection parameters `sqlx` reads
    /// (`application_name`, `options`, `user`, `password`, `dbname`, `host`,
    /// `hostaddr`, `port`, `statement-cache-capacity`); any other key is refused with
    /// the list of accepted ones:
    ///
    /// | parameter | meaning | default |
    /// |---|---|---|
    /// | `schema` | schema of every table and function: 1 to 63 ASCII letters, digits and `_`, not starting with a digit | [`DEFAULT_SCHEMA`] |
    /// | `sslmode` | `disable`, `allow` (as `disable`), `prefer` (TLS if the server offers it, unverified), `require` (TLS, unverified; as `verify-ca` when `sslrootcert` is given, as libpq does), `verify-ca` (the server's certificate chains to a trusted CA), `verify-full` (and names the host) | `prefer` (or `PGSSLMODE`) |
    /// | `sslrootcert` | PEM file of CA certificates to trust, added to the system's roots | the system's roots |
    /// | `sslcert`, `sslkey` | PEM client certificate and its key, both or neither | none |
    /// | `connect_timeout` | connecting in all: TCP, TLS, login and the checks made at connect (a connection a pool opens later is part of a request, within `timeout`) | [`DEFAULT_CONNECT_TIMEOUT`](distsync_core::raw::DEFAULT_CONNECT_TIMEOUT) |
    /// | `hold_connections` | the most connections the process's locks, read-write locks, candidacies and permits take at once to join, re-check and release their entries (renewals have connections of their own) (1 to [`MAX_HOLD_CONNECTIONS`]); with more tasks locking at the same moment than this, the rest wait for a free one (a waiting `lock()`, `acquire()` or `campaign()` as long as it waits for the grant; a `try_*` or a release within `timeout`), so size it to the locking tasks you run at once, within the server's `max_connections` | [`DEFAULT_HOLD_CONNECTIONS`] |
    /// | `max_session_ttl` | the longest session TTL a client may use (a longer one is refused with [`Error::InvalidArgument`]), at least [`MIN_SESSION_TTL`](crate::MIN_SESSION_TTL); turns on the lock-delay after the store forgets (a fresh `initdb`, a recreated database or schema, a restored backup: see the crate docs, "When the store forgets"), and the backend then declares `exclusive_across_restart`; give it in every client's URL; `off`: none; empty: the default | none: no lock-delay for a store found without its marker |
    /// | `grants` | `durable`: a grant (a lock, write lock, permit or leadership, with its fencing token) is acknowledged once its commit is flushed to disk; `unflushed`: it commits without waiting for the flush, a flush less per grant, and an acknowledged grant may be lost in a crash of the server or a promotion of a standby: its holder then gets `lost()` before anyone else is granted, and every grant after the crash waits the `max_session_ttl` bound once (see the crate docs, "Unflushed grants"); requires `max_session_ttl` ([`Error::InvalidArgument`] at connect otherwise) and the same mode in every client of the schema; empty: the default | `durable` |
    /// | `timeout` | one request: taking a pool connection (waiting for a free one, opening one, or pinging an idle one), then again the statement's reply, so a call to a server gone silent (a partition, a hung middlebox) fails with a connection error within about twice it (a statement that timed out may have been applied, as after any lost reply); waits (`lock()`, `dequeue()`, ...) are not bounded by it, only each statement they make | [`DEFAULT_REQUEST_TIMEOUT`](distsync_core::raw::DEFAULT_REQUEST_TIMEOUT) |
    /// | `stale_claim` | how old an at-most-once dequeue's claim must be before a consumer puts its item back (its dequeuer died before the hand-over); shorter than a live dequeuer's hand-over delivers twice (see [`distsync_core::queue::STALE_CLAIM`]); from 1 s to 24 h | 15 min |
    ///
    /// Timeouts are a whole number with the unit `ms`, `s`, `m` or `h` (`1500ms`, `2s`,
    /// `1m`); a bare number is refused, libpq's `connect_timeout=10` (seconds to libpq)
    /// included.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] (password masked) for an unparsable URL, another scheme, a
    /// missing host, an unknown key, an invalid schema name, timeout, `hold_connections`,
    /// `max_session_ttl`, `grants` or `sslmode`,
    /// `sslcert` without `sslkey` (or the reverse), or a TLS file with
    /// `sslmode=disable`; [`Error::Unsupported`] for an `sslmode` that requires
    /// TLS in a build without the cargo feature `tls`.
    pub fn parse(url: &str) -> Result<Self> {
        let display = distsync_core::redact_url(url);
        let invalid = Error::invalid_url(url);
        let mut parsed = url::Url::parse(url).map_err(|error| invalid(error.to_string()))?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(invalid(format!(
                "scheme `{}` is not postgres:// or postgresql://",
                parsed.scheme()
            )));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(invalid("no host".into()));
        }
        let mut schema = None;
        let mut hold_connections = DEFAULT_HOLD_CONNECTIONS;
        let mut unflushed_grants = false;
        let mut rest = Vec::new();
        let query = parsed.query().unwrap_or("").to_owned();
        // Every key but the shared ones is this backend's: `schema`, `hold_connections`
        // and `grants` here, the libpq parameters for sqlx, and no other.
        let shared = UrlOptions::parse(&query, &GRAMMAR, |key, value| {
            match key {
                "schema" => schema = Some(value.to_owned()),
                "hold_connections" => {
                    hold_connections = parse_hold_connections(value)
                        .map_err(|reason| format!("hold_connections: {reason}"))?;
                }
                "grants" => {
                    unflushed_grants = match value {
                        "" | "durable" => false,
                        "unflushed" => true,
                        _ => return Err(format!("grants {value:?} is not durable or unflushed")),
                    };
                }
                "sslmode" | "ssl-mode" => {
                    PgSslMode::from_str(value).map_err(|_| {
                        format!(
                            "sslmode {value:?} is not one of disable, allow, prefer, require, \
                             verify-ca, verify-full"
                        )
                    })?;
                    rest.push((key.to_owned(), value.to_owned()));
                }
                _ if LIBPQ_KEYS.contains(&key) => rest.push((key.to_owned(), value.to_owned())),
                _ => return Ok(false),
            }
            Ok(true)
        })
        .map_err(&invalid)?;
        // The files go to sqlx too, which reads them when it connects.
        let mut files = Vec::new();
        if let Some(ca) = &shared.ca_file {
            files.push(("CA certificate", ca.to_owned()));
            rest.push(("sslrootcert".to_owned(), ca.to_owned()));
        }
        if let Some((cert, key)) = &shared.client_cert_files {
            files.push(("client certificate", cert.to_owned()));
            files.push(("client key", key.to_owned()));
            rest.push(("sslcert".to_owned(), cert.to_owned()));
            rest.push(("sslkey".to_owned(), key.to_owned()));
        }
        let schema = schema.unwrap_or_else(|| DEFAULT_SCHEMA.to_owned());
        check_identifier(&schema)
            .map_err(|reason| invalid(format!("schema {schema:?} {reason}")))?;
        if rest.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(&rest);
        }
        // No `extra_float_digits` startup parameter: PgBouncer rejects it unless told to
        // ignore it (the backend reads no floats as text).
        let mut options = PgConnectOptions::from_str(parsed.as_str())
            .map_err(|error| invalid(error.to_string()))?
            .extra_float_digits(None);
        shared
            .check_tls(
                !matches!(options.get_ssl_mode(), PgSslMode::Disable),
                "sslmode=disable turns TLS off",
            )
            .map_err(&invalid)?;
        // libpq: "if a root CA file exists, sslmode=require behaves as verify-ca".
        if matches!(options.get_ssl_mode(), PgSslMode::Require) && shared.ca_file.is_some() {
            options = options.ssl_mode(PgSslMode::VerifyCa);
        }
        crate::connection::tls::check_mode(options.get_ssl_mode())?;
        Ok(Self {
            options,
            schema,
            settings: SharedSettings::from_url(&shared),
            hold_connections,
            unflushed_grants,
            files,
            display,
        })
    }

    /// Settings from connection options built in code (with your own credentials and
    /// TLS files), the schema [`DEFAULT_SCHEMA`] and the default timeouts.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for an SSL mode that requires TLS in a build without the
    /// cargo feature `tls`.
    pub fn from_options(options: PgConnectOptions) -> Result<Self> {
        crate::connection::tls::check_mode(options.get_ssl_mode())?;
        let display = format!(
            "postgres://{}@{}:{}/{}",
            options.get_username(),
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or_default()
        );
        Ok(Self {
            options,
            schema: DEFAULT_SCHEMA.to_owned(),
            settings: SharedSettings::default(),
            hold_connections: DEFAULT_HOLD_CONNECTIONS,
            unflushed_grants: false,
            files: Vec::new(),
            display,
        })
    }

    /// Sets the schema (same rules as the URL's `schema`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an invalid schema name.
    pub fn with_schema(mut self, schema: &str) -> Result<Self> {
        check_identifier(schema)
            .map_err(|reason| Error::InvalidArgument(format!("schema {schema:?} {reason}")))?;
        self.schema = schema.to_owned();
        Ok(self)
    }

    /// Sets how many connections carry the holds (see `hold_connections` in
    /// [`PostgresConfig::parse`]).
    ///
    /// ```
    /// # use distsync::store::postgres::PostgresConfig;
    /// let config = PostgresConfig::parse("postgres://app@db.internal/app")?
    ///     .with_hold_connections(64)?;
    /// assert_eq!(config.hold_connections(), 64);
    /// # Ok::<(), distsync::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for 0 or more than [`MAX_HOLD_CONNECTIONS`].
    pub fn with_hold_connections(mut self, connections: u32) -> Result<Self> {
        self.hold_connections = check_hold_connections(connections)
            .map_err(|reason| Error::InvalidArgument(format!("hold_connections: {reason}")))?;
        Ok(self)
    }

    /// How many connections carry the holds (`hold_connections=`).
    pub fn hold_connections(&self) -> u32 {
        self.hold_connections
    }

    /// Whether grants commit without waiting for the WAL flush (the URL's
    /// `grants=unflushed`; see the crate docs, "Unflushed grants").
    pub fn unflushed_grants(&self) -> bool {
        self.unflushed_grants
    }

    /// The same configuration with grants that commit without waiting for the WAL
    /// flush (`true`, the URL's `grants=unflushed`) or durably (`false`, the default).
    /// The mode needs a bound on session TTLs ([`PostgresConfig::with_max_session_ttl`]),
    /// checked when connecting.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use distsync::store::postgres::PostgresConfig;
    /// let config = PostgresConfig::parse("postgres://app@db.internal/app")?
    ///     .with_max_session_ttl(Duration::from_secs(30))
    ///     .with_unflushed_grants(true);
    /// assert!(config.unflushed_grants());
    /// # Ok::<(), distsync::Error>(())
    /// ```
    #[must_use]
    pub fn with_unflushed_grants(mut self, unflushed: bool) -> Self {
        self.unflushed_grants = unflushed;
        self
    }

    /// The bound the lock-delay after a crash of the server waits under unflushed
    /// grants, `None` for durable grants.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for unflushed grants without a bound on session TTLs.
    pub(crate) fn unflushed_grants_bound(&self) -> Result<Option<Duration>> {
        match (self.unflushed_grants, self.settings.max_session_ttl) {
            (false, _) => Ok(None),
            (true, Some(bound)) => Ok(Some(bound)),
            (true, None) => Err(Error::InvalidArgument(
                "grants=unflushed needs max_session_ttl= (the lock-delay after a crash of \
                 the server waits that bound)"
                    .to_owned(),
            )),
        }
    }

    /// The certificate and key files the URL names, as (what, path).
    pub(crate) fn files(&self) -> &[(&'static str, String)] {
        &self.files
    }
}

/// `hold_connections=`: a whole number from 1 to [`MAX_HOLD_CONNECTIONS`].
fn parse_hold_connections(value: &str) -> std::result::Result<u32, String> {
    let connections = value
        .parse::<u32>()
        .map_err(|_| format!("{value:?} is not a whole number from 1 to {MAX_HOLD_CONNECTIONS}"))?;
    check_hold_connections(connections)
}

fn check_hold_connections(connections: u32) -> std::result::Result<u32, String> {
    if (1..=MAX_HOLD_CONNECTIONS).contains(&connections) {
        Ok(connections)
    } else {
        Err(format!(
            "{connections} is not from 1 to {MAX_HOLD_CONNECTIONS}"
        ))
    }
}

/// Why `name` (a schema, or a part of a fence table's name) is not an identifier this
/// crate accepts: 1 to 63 ASCII letters, digits and `_`, not starting with a digit.
pub(crate) fn check_identifier(name: &str) -> std::result::Result<(), &'static str> {
    match name.chars().next() {
        None => Err("is empty"),
        Some(first) if first.is_ascii_digit() => Err("starts with a digit"),
        _ if name.len() > 63 => Err("is longer than 63 bytes"),
        _ if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
            Err("has characters other than ASCII letters, digits and '_'")
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use distsync_core::raw::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT};

    #[test]
    fn parses_schema_and_keeps_other_parameters() {
        let url =
            PostgresConfig::parse("postgres://u@h:5433/db?schema=app_1&sslmode=disable").unwrap();
        assert_eq!(url.schema, "app_1");
        assert_eq!(url.options.get_host(), "h");
        assert_eq!(url.options.get_port(), 5433);
        assert_eq!(url.options.get_username(), "u");
        assert_eq!(url.options.get_database(), Some("db"));
        assert_eq!(url.hold_connections(), DEFAULT_HOLD_CONNECTIONS);
    }

    #[test]
    fn an_unknown_key_is_refused_with_the_accepted_ones_and_libpq_keys_pass() {
        let error = PostgresConfig::parse("postgres://u:pw-9c4@h/db?shcema=typo").unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, Error::InvalidUrl { .. }), "{error:?}");
        assert!(
            text.contains("`shcema`") && text.contains("`schema`"),
            "{text}"
        );
        assert!(text.contains("`application_name`"), "{text}");
        assert!(!text.contains("pw-9c4"), "{text}");
        let url = PostgresConfig::parse(
            "postgres://u@h/db?application_name=svc&options=-c%20search_path%3Dx&port=6000",
        )
        .unwrap();
        assert_eq!(url.options.get_application_name(), Some("svc"));
        assert_eq!(url.options.get_port(), 6000);
    }

    #[test]
    fn hold_connections_from_the_url_or_in_code() {
        let url = PostgresConfig::parse("postgres://u@h/db?hold_connections=64").unwrap();
        assert_eq!(url.hold_connections(), 64);
        assert!(format!("{url:?}").contains("hold_connections: 64"));
        let url = url.with_hold_connections(MAX_HOLD_CONNECTIONS).unwrap();
        assert_eq!(url.hold_connections(), MAX_HOLD_CONNECTIONS);
        for bad in [0, MAX_HOLD_CONNECTIONS + 1] {
            assert!(matches!(
                url.clone().with_hold_connections(bad),
                Err(Error::InvalidArgument(_))
            ));
        }
    }

    #[test]
    fn max_session_ttl_is_read_and_checked_without_the_password() {
        let url = PostgresConfig::parse("postgres://u:pw-5d2@h/db?max_session_ttl=15s").unwrap();
        assert_eq!(url.max_session_ttl(), Some(Duration::from_secs(15)));
        assert!(format!("{url:?}").contains("max_session_ttl: Some(15s)"));
        let plain = PostgresConfig::parse("postgres://u@h/db").unwrap();
        assert_eq!(plain.max_session_ttl(), None);
        let dropped =
            PostgresConfig::parse("postgres://u@h/db?max_session_ttl=5s&max_session_ttl=").unwrap();
        assert_eq!(dropped.max_session_ttl(), None);
        assert_eq!(
            plain.with_max_session_ttl(Duration::ZERO).max_session_ttl(),
            Some(crate::MIN_SESSION_TTL)
        );
        for bad in ["0", "-5s", "soon", "1d", "500ms"] {
            let url = format!("postgres://u:pw-5d2@h/db?max_session_ttl={bad}");
            match PostgresConfig::parse(&url) {
                Err(error @ Error::InvalidUrl { .. }) => {
                    let shown = format!("{error} {error:?}");
                    assert!(shown.contains("max_session_ttl"), "{shown}");
                    assert!(!shown.contains("pw-5d2"), "{shown}");
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn grants_are_read_and_checked_without_the_password() {
        let durable = PostgresConfig::parse("postgres://u:pw-6b1@h/db").unwrap();
        assert!(!durable.unflushed_grants());
        assert_eq!(durable.unflushed_grants_bound().unwrap(), None);
        for same in ["grants=durable", "grants="] {
            let url = PostgresConfig::parse(&format!("postgres://u@h/db?{same}")).unwrap();
            assert!(!url.unflushed_grants(), "{same}");
        }
        let url =
            PostgresConfig::parse("postgres://u@h/db?grants=unflushed&max_session_ttl=5s").unwrap();
        assert!(url.unflushed_grants());
        assert!(format!("{url:?}").contains("unflushed_grants: true"));
        assert_eq!(
            url.unflushed_grants_bound().unwrap(),
            Some(Duration::from_secs(5))
        );
        // The grants= key is this backend's, not a connection parameter for sqlx.
        assert!(!url
            .options
            .get_options()
            .is_some_and(|o| o.contains("grants")));
        // Without a bound: refused, when connecting.
        let unbounded = PostgresConfig::parse("postgres://u:pw-6b1@h/db?grants=unflushed").unwrap();
        match unbounded.unflushed_grants_bound() {
            Err(Error::InvalidArgument(reason)) => {
                assert!(reason.contains("max_session_ttl"), "{reason}");
                assert!(!reason.contains("pw-6b1"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let coded = durable.with_unflushed_grants(true);
        assert!(matches!(
            coded.unflushed_grants_bound(),
            Err(Error::InvalidArgument(_))
        ));
        let coded = coded.with_max_session_ttl(Duration::from_secs(3));
        assert_eq!(
            coded.unflushed_grants_bound().unwrap(),
            Some(Duration::from_secs(3))
        );
        for bad in ["fast", "UNFLUSHED", "async"] {
            let url = format!("postgres://u:pw-6b1@h/db?grants={bad}&max_session_ttl=5s");
            match PostgresConfig::parse(&url) {
                Err(error @ Error::InvalidUrl { .. }) => {
                    let shown = format!("{error} {error:?}");
                    assert!(shown.contains("grants"), "{shown}");
                    assert!(!shown.contains("pw-6b1"), "{shown}");
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn defaults_schema_and_accepts_postgresql_scheme() {
        let url: PostgresConfig = "postgresql://u@h/db".parse().unwrap();
        assert_eq!(url.schema, DEFAULT_SCHEMA);
    }

    #[test]
    #[cfg(not(feature = "tls"))]
    fn tls_modes_are_unsupported_without_the_feature() {
        for mode in ["require", "verify-ca", "verify-full"] {
            let url = format!("postgres://u:pw-3e1@h/db?sslmode={mode}");
            match PostgresConfig::parse(&url) {
                Err(error @ Error::Unsupported { .. }) => {
                    assert!(!format!("{error:?}").contains("pw-3e1"));
                }
                other => panic!("{mode}: {other:?}"),
            }
        }
        assert!(PostgresConfig::parse("postgres://u@h/db?sslmode=prefer").is_ok());
    }

    #[test]
    #[cfg(feature = "tls")]
    fn tls_parameters_and_timeouts() {
        let url = PostgresConfig::parse(
            "postgres://u:pw-3e1@h/db?sslmode=verify-full&sslrootcert=/ca.crt\
             &sslcert=/c.crt&sslkey=/c.key&connect_timeout=1500ms&timeout=2s",
        )
        .unwrap();
        assert!(matches!(url.options.get_ssl_mode(), PgSslMode::VerifyFull));
        assert_eq!(url.connect_timeout(), Duration::from_millis(1500));
        assert_eq!(url.request_timeout(), Duration::from_secs(2));
        assert_eq!(url.files().len(), 3);
        for shown in [format!("{url:?}"), url.to_string()] {
            assert!(!shown.contains("pw-3e1"), "{shown}");
            assert!(shown.contains("u:***@h"), "{shown}");
        }
        let plain = PostgresConfig::parse("postgres://u@h/db").unwrap();
        assert_eq!(plain.connect_timeout(), DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(plain.request_timeout(), DEFAULT_REQUEST_TIMEOUT);
        // As libpq: `require` with a CA file verifies the chain.
        let require =
            PostgresConfig::parse("postgres://u@h/db?sslmode=require&sslrootcert=/ca.crt").unwrap();
        assert!(matches!(
            require.options.get_ssl_mode(),
            PgSslMode::VerifyCa
        ));
        let coded = plain
            .with_connect_timeout(Duration::ZERO)
            .with_request_timeout(Duration::from_secs(3))
            .with_schema("other")
            .unwrap();
        assert_eq!(coded.connect_timeout(), Duration::from_millis(1));
        assert_eq!(coded.request_timeout(), Duration::from_secs(3));
        assert_eq!(coded.schema, "other");
        assert!(matches!(
            coded.with_schema("1x"),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn options_built_in_code_never_show_the_password() {
        let options = PgConnectOptions::new()
            .host("db")
            .username("app")
            .password("pw-77aa")
            .database("app");
        let url = PostgresConfig::from_options(options).unwrap();
        assert_eq!(url.schema, DEFAULT_SCHEMA);
        for shown in [format!("{url:?}"), url.to_string()] {
            assert!(!shown.contains("pw-77aa"), "{shown}");
        }
    }

    #[test]
    fn rejects_bad_tls_and_timeout_parameters_without_the_password() {
        for bad in [
            "postgres://u:pw-91c@h/db?sslmode=sometimes",
            "postgres://u:pw-91c@h/db?sslcert=/c.crt",
            "postgres://u:pw-91c@h/db?sslkey=/c.key",
            "postgres://u:pw-91c@h/db?sslrootcert=",
            "postgres://u:pw-91c@h/db?sslmode=disable&sslrootcert=/ca.crt",
            "postgres://u:pw-91c@h/db?connect_timeout=0",
            "postgres://u:pw-91c@h/db?timeout=1d",
            "postgres://u:pw-91c@h/db?hold_connections=0",
            "postgres://u:pw-91c@h/db?hold_connections=1001",
            "postgres://u:pw-91c@h/db?hold_connections=-3",
            "postgres://u:pw-91c@h/db?hold_connections=many",
        ] {
            match PostgresConfig::parse(bad) {
                Err(error @ Error::InvalidUrl { .. }) => {
                    let shown = format!("{error} {error:?}");
                    assert!(!shown.contains("pw-91c"), "{shown}");
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn rejects_bad_urls_with_typed_error() {
        for bad in [
            "redis://h/0",
            "postgres:///db",
            "not a url",
            "postgres://h/db?schema=",
            "postgres://h/db?schema=1abc",
            "postgres://h/db?schema=a-b",
            "postgres://h/db?schema=a%22b",
        ] {
            match PostgresConfig::parse(bad) {
                Err(Error::InvalidUrl { url, .. }) => assert_eq!(url, bad),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        let long = format!("postgres://h/db?schema={}", "s".repeat(64));
        assert!(matches!(
            PostgresConfig::parse(&long),
            Err(Error::InvalidUrl { .. })
        ));
    }
}
