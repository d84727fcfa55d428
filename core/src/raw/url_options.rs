//! The query options every backend's URL shares (`connect_timeout=`, `timeout=`,
//! `max_session_ttl=`, `stale_claim=`, the TLS files) in one grammar, so that one
//! spelling means the same on every store and a backend's parser reads only its own
//! keys.

use std::time::Duration;

use super::session_bound::MaxSessionTtl;
use super::tls_files::TlsFiles;

/// Checks that every certificate and key file of a URL (`(what, path)`, e.g.
/// `("CA certificate", "/etc/ssl/ca.pem")`) can be read, so that a wrong path is a
/// typed error naming it rather than a failed handshake. A value that is PEM text
/// itself (sqlx takes inline certificates in place of a path) has nothing to read.
///
/// # Errors
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) naming `backend` and the
/// file (its path, never its contents).
pub fn check_tls_files(backend: &str, files: &[(&str, String)]) -> crate::Result<()> {
    for (what, path) in files {
        if path.trim_start().starts_with("-----BEGIN") {
            continue;
        }
        std::fs::File::open(path).map_err(|error| {
            crate::Error::InvalidArgument(format!(
                "{backend}: cannot read the {what} file {path:?}: {error}"
            ))
        })?;
    }
    Ok(())
}

/// How long connecting may take when the URL does not say (`connect_timeout=`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one request may wait when the URL does not say (`timeout=`).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The shared keys that are not TLS files, in the order a refusal lists them.
const SHARED_KEYS: [&str; 4] = [
    "connect_timeout",
    "timeout",
    "max_session_ttl",
    "stale_claim",
];

/// What one backend's URL query takes besides the shared options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UrlGrammar<'a> {
    /// The backend's own keys, listed after the shared ones when a key is refused.
    pub own_keys: &'a [&'a str],
    /// The keys of the CA, client certificate and client key files, each with its
    /// synonyms, the first named in errors (libpq's are `sslrootcert`, ...).
    pub file_keys: [&'a [&'a str]; 3],
    /// The shortest and longest `max_session_ttl=` (a bound below the shortest
    /// session TTL would refuse every session).
    pub session_ttl_bounds: (Duration, Duration),
}

impl<'a> UrlGrammar<'a> {
    /// A grammar with `own_keys`, the file keys `ca`, `cert`, `key`, and a
    /// `max_session_ttl=` of at least `min_session_ttl`.
    pub const fn new(own_keys: &'a [&'a str], min_session_ttl: Duration) -> Self {
        Self {
            own_keys,
            file_keys: [&["ca"], &["cert"], &["key"]],
            session_ttl_bounds: (min_session_ttl, Duration::MAX),
        }
    }
}

/// The shared options of one URL's query, `None` where the URL gives none. No secret.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UrlOptions {
    /// `connect_timeout=`: how long connecting may take.
    pub connect_timeout: Option<Duration>,
    /// `timeout=`: how long one request may wait for its answer.
    pub request_timeout: Option<Duration>,
    /// `max_session_ttl=`: a bound, `off`, or the backend's default (see
    /// [`MaxSessionTtl`] and [`check_session_ttl`](crate::raw::check_session_ttl)).
    pub max_session_ttl: MaxSessionTtl,
    /// `stale_claim=`: how old an at-most-once dequeue's claim must be before any
    /// consumer of its queue puts the item back (see
    /// [`STALE_CLAIM`](crate::queue::STALE_CLAIM), the default, for why and the risk of a
    /// short one); from [`MIN_STALE_CLAIM`](crate::queue::MIN_STALE_CLAIM) to
    /// [`MAX_STALE_CLAIM`](crate::queue::MAX_STALE_CLAIM).
    pub stale_claim: Option<Duration>,
    /// The path of the PEM file of CA certificates to trust.
    pub ca_file: Option<String>,
    /// The paths of the PEM client certificate and its key.
    pub client_cert_files: Option<(String, String)>,
    /// The first TLS file key the URL gives, as written, for [`UrlOptions::check_tls`].
    first_file_key: Option<String>,
}

impl UrlOptions {
    /// Reads `query` (form-urlencoded, no `?`) in order, the last of a repeated key
    /// winning: the shared keys here, every other pair through `own`, which answers
    /// `Ok(false)` for a key it does not know (refused, listing every accepted key).
    /// `max_session_ttl=off` drops the bound, an empty `max_session_ttl=` goes back to
    /// the backend's default (for a URL that inherits one); `stale_claim=` is from
    /// [`MIN_STALE_CLAIM`](crate::queue::MIN_STALE_CLAIM) to
    /// [`MAX_STALE_CLAIM`](crate::queue::MAX_STALE_CLAIM); a file needs a path, and a
    /// client certificate its key.
    ///
    /// ```
    /// use std::time::Duration;
    /// use distsync::store::raw::{UrlGrammar, UrlOptions};
    ///
    /// let grammar = UrlGrammar::new(&["layout"], Duration::from_secs(1));
    /// let options = UrlOptions::parse("timeout=2s&layout=go", &grammar, |key, value| {
    ///     Ok(key == "layout" && value == "go")
    /// })?;
    /// assert_eq!(options.request_timeout, Some(Duration::from_secs(2)));
    /// let refused = UrlOptions::parse("colour=blue", &grammar, |_, _| Ok(false)).unwrap_err();
    /// assert!(refused.contains("`colour`") && refused.contains("`layout`"), "{refused}");
    /// # Ok::<(), String>(())
    /// ```
    ///
    /// # Errors
    /// The reason, for the backend's [`Error::InvalidUrl`](crate::Error::InvalidUrl);
    /// it shows the values of shared keys only.
    pub fn parse(
        query: &str,
        grammar: &UrlGrammar<'_>,
        mut own: impl FnMut(&str, &str) -> Result<bool, String>,
    ) -> Result<Self, String> {
        let mut options = Self::default();
        let [ca_keys, cert_keys, key_keys] = grammar.file_keys;
        let (mut cert, mut key) = (None, None);
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let (name, value) = (name.as_ref(), value.as_ref());
            let file = if ca_keys.contains(&name) {
                &mut options.ca_file
            } else if cert_keys.contains(&name) {
                &mut cert
            } else if key_keys.contains(&name) {
                &mut key
            } else {
                let timeout = || parse_duration(value).map_err(|e| format!("{name}: {e}"));
                match name {
                    "connect_timeout" => options.connect_timeout = Some(timeout()?),
                    "timeout" => options.request_timeout = Some(timeout()?),
                    "max_session_ttl" if value.is_empty() => {
                        options.max_session_ttl = MaxSessionTtl::Default;
                    }
                    "max_session_ttl" if value == "off" => {
                        options.max_session_ttl = MaxSessionTtl::Off
                    }
                    "max_session_ttl" => {
                        let (ttl, (shortest, longest)) = (timeout()?, grammar.session_ttl_bounds);
                        if !(shortest..=longest).contains(&ttl) {
                            return Err(format!(
                                "max_session_ttl: {ttl:?} is not from {shortest:?} (the shortest \
                                 session TTL) to {longest:?}"
                            ));
                        }
                        options.max_session_ttl = MaxSessionTtl::At(ttl);
                    }
                    "stale_claim" => {
                        let bound = timeout()?;
                        let (floor, ceiling) =
                            (crate::queue::MIN_STALE_CLAIM, crate::queue::MAX_STALE_CLAIM);
                        if bound < floor {
                            return Err(format!(
                                "stale_claim: {bound:?} is shorter than {floor:?}: a live \
                                 dequeuer's claim would be put back while it hands the item \
                                 over, a second delivery"
                            ));
                        }
                        if bound > ceiling {
                            return Err(format!(
                                "stale_claim: {bound:?} is longer than {ceiling:?}: a dead \
                                 dequeuer's item would stay hidden that long"
                            ));
                        }
                        options.stale_claim = Some(bound);
                    }
                    _ if own(name, value)? => {}
                    _ => {
                        let files = grammar.file_keys.iter().filter_map(|keys| keys.first());
                        let accepted: Vec<String> = (SHARED_KEYS.iter().chain(files))
                            .chain(grammar.own_keys)
                            .map(|key| format!("`{key}`"))
                            .collect();
                        return Err(format!(
                            "unknown query parameter `{name}` (accepted: {})",
                            accepted.join(", ")
                        ));
                    }
                }
                continue;
            };
            if value.is_empty() {
                return Err(format!("`{name}` needs a file path"));
            }
            *file = Some(value.to_owned());
            options
                .first_file_key
                .get_or_insert_with(|| name.to_owned());
        }
        options.client_cert_files = match (cert, key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                return Err(format!(
                    "a client certificate needs both `{}` and `{}` (PEM file paths)",
                    cert_keys.first().unwrap_or(&"cert"),
                    key_keys.first().unwrap_or(&"key"),
                ));
            }
        };
        Ok(options)
    }

    /// Refuses TLS files when `tls` is off, where ignoring them would hide a mistake;
    /// `how` says how to turn TLS on, or why it is off (`use rediss://`).
    ///
    /// # Errors
    /// The reason, naming the first file key the URL gives.
    pub fn check_tls(&self, tls: bool, how: &str) -> Result<(), String> {
        match &self.first_file_key {
            Some(key) if !tls => Err(format!("`{key}` is for TLS: {how}")),
            _ => Ok(()),
        }
    }

    /// The TLS files of a URL whose scheme is `tls_scheme` (`tls` says whether the URL
    /// has it) for a store whose TLS needs a CA file: `None` without TLS (files
    /// refused then, as [`UrlOptions::check_tls`]), else the files, the CA required.
    ///
    /// ```
    /// use std::time::Duration;
    /// use distsync::store::raw::{UrlGrammar, UrlOptions};
    ///
    /// let grammar = UrlGrammar::new(&[], Duration::from_secs(1));
    /// let options = UrlOptions::parse("ca=/c/ca.pem", &grammar, |_, _| Ok(false))?;
    /// let files = options.tls_files(true, "zks")?.expect("TLS");
    /// assert_eq!((files.ca(), files.client()), ("/c/ca.pem", None));
    /// assert!(options.tls_files(false, "zks").unwrap_err().contains("`zks://`"));
    /// let none = UrlOptions::parse("", &grammar, |_, _| Ok(false))?;
    /// assert!(none.tls_files(true, "zks").unwrap_err().contains("needs `ca`"));
    /// # Ok::<(), String>(())
    /// ```
    ///
    /// # Errors
    /// The reason: a file without TLS, or TLS without `ca`.
    pub fn tls_files(&self, tls: bool, tls_scheme: &str) -> Result<Option<TlsFiles>, String> {
        self.check_tls(tls, &format!("use `{tls_scheme}://`"))?;
        if !tls {
            return Ok(None);
        }
        let ca = self.ca_file.clone().ok_or_else(|| {
            format!("`{tls_scheme}://` needs `ca`, a PEM file of the CA certificates to trust")
        })?;
        Ok(Some(TlsFiles::new(ca, self.client_cert_files.clone())))
    }
}

/// Parses a duration in distsync's one syntax, for URLs, the command line and the
/// conformance runner alike: a whole number with the unit `ms`, `s`, `m` or `h`
/// (`1500ms`, `2s`, `1m`, `1h`).
///
/// A bare number is refused, with both readings in the message: libpq reads
/// `connect_timeout=10` as seconds, most drivers read a bare timeout as milliseconds,
/// and scripts write `--ttl 30` meaning seconds, so any one reading silently makes
/// some value a thousand times off. With the unit written, a value means one thing.
///
/// ```
/// use std::time::Duration;
/// use distsync::store::raw::parse_duration;
///
/// assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
/// assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
/// let bare = parse_duration("30").unwrap_err();
/// assert!(bare.contains("`30ms`") && bare.contains("`30s`"), "{bare}");
/// ```
///
/// # Errors
/// A message naming the text for anything else: a bare number, another unit, zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let Some(at) = text.find(|c: char| !c.is_ascii_digit()) else {
        return Err(if text.is_empty() {
            "an empty duration (e.g. `1500ms`, `2s`, `1m`, `1h`)".to_owned()
        } else {
            format!("{text:?} has no unit: write `{text}ms` or `{text}s` (or `m`, `h`)")
        });
    };
    let (digits, unit) = text.split_at(at);
    let bad = || format!("{text:?} is not a duration (e.g. `1500ms`, `2s`, `1m`, `1h`)");
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let seconds = |per: u64| n.checked_mul(per).map(Duration::from_secs).ok_or_else(bad);
    let duration = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => seconds(60)?,
        "h" => seconds(3600)?,
        _ => return Err(bad()),
    };
    if duration.is_zero() {
        return Err(format!("{text:?}: a duration must be greater than zero"));
    }
    Ok(duration)
}

/// Parses a flag of a backend URL: `true` or `false`, a typo refused, not guessed.
///
/// # Errors
/// A message naming `key` for any other value.
pub fn parse_url_flag(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{key} must be `true` or `false`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_tls_files_are_invalid_arguments_naming_the_path() {
        let files = [("CA certificate", "/nonexistent/ds/ca.crt".to_owned())];
        match check_tls_files("store", &files) {
            Err(crate::Error::InvalidArgument(message)) => {
                assert!(message.contains("/nonexistent/ds/ca.crt"), "{message}");
                assert!(message.starts_with("store: "), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let inline = [("CA certificate", "-----BEGIN CERTIFICATE-----\n".to_owned())];
        assert!(check_tls_files("store", &inline).is_ok());
    }

    const GRAMMAR: UrlGrammar<'static> = UrlGrammar {
        session_ttl_bounds: (Duration::from_secs(1), Duration::from_secs(3600)),
        ..UrlGrammar::new(&["layout"], Duration::from_secs(1))
    };

    /// The shared options of `query`, with `layout` the backend's own key.
    fn parse(query: &str) -> Result<UrlOptions, String> {
        UrlOptions::parse(query, &GRAMMAR, |key, _| Ok(key == "layout"))
    }

    #[test]
    fn durations_need_their_unit() {
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        let bare = parse_duration("1500").unwrap_err();
        assert!(
            bare.contains("`1500ms`") && bare.contains("`1500s`"),
            "{bare}"
        );
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        for bad in [
            "",
            "0",
            "0s",
            "-1",
            "1d",
            "1.5s",
            "s",
            "2 s",
            "99999999999999999999m",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn each_shared_key_is_read_and_the_rest_left_unset() {
        let options = parse(
            "connect_timeout=1500ms&timeout=2s&max_session_ttl=1m&ca=/c/ca.pem\
             &cert=/c/a.pem&key=/c/a%20k.pem&stale_claim=3s",
        )
        .unwrap();
        assert_eq!(options.connect_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(options.request_timeout, Some(Duration::from_secs(2)));
        assert_eq!(
            options.max_session_ttl,
            MaxSessionTtl::At(Duration::from_secs(60))
        );
        assert_eq!(options.stale_claim, Some(Duration::from_secs(3)));
        assert_eq!(options.ca_file.as_deref(), Some("/c/ca.pem"));
        let files = options.client_cert_files.clone().unwrap();
        assert_eq!(files, ("/c/a.pem".to_owned(), "/c/a k.pem".to_owned()));
        assert_eq!(parse("").unwrap(), UrlOptions::default());
        assert_eq!(parse("layout=go").unwrap(), UrlOptions::default());
    }

    #[test]
    fn the_backend_gets_its_own_pairs_in_url_order() {
        let mut seen = Vec::new();
        let options = UrlOptions::parse("b=1&timeout=3s&a=x%20y&b=2", &GRAMMAR, |key, value| {
            seen.push(format!("{key}={value}"));
            Ok(true)
        })
        .unwrap();
        assert_eq!(seen, ["b=1", "a=x y", "b=2"]);
        assert_eq!(options.request_timeout, Some(Duration::from_secs(3)));
        let refused = UrlOptions::parse("layout=x", &GRAMMAR, |_, _| Err("bad layout".into()));
        assert_eq!(refused, Err("bad layout".to_owned()));
    }

    #[test]
    fn an_unknown_key_is_refused_naming_every_accepted_key() {
        let reason = parse("timeout=1s&colour=blue").unwrap_err();
        assert_eq!(
            reason,
            "unknown query parameter `colour` (accepted: `connect_timeout`, `timeout`, \
             `max_session_ttl`, `stale_claim`, `ca`, `cert`, `key`, `layout`)"
        );
        assert!(!reason.contains("blue"), "{reason}");
    }

    #[test]
    fn a_bad_or_zero_duration_is_refused_naming_its_key() {
        for (query, key) in [
            ("timeout=soon", "timeout"),
            ("connect_timeout=1d", "connect_timeout"),
            ("timeout=0", "timeout"),
            ("connect_timeout=0s", "connect_timeout"),
            ("max_session_ttl=0", "max_session_ttl"),
            ("max_session_ttl=x", "max_session_ttl"),
            ("stale_claim=0s", "stale_claim"),
            ("stale_claim=15", "stale_claim"),
        ] {
            let reason = parse(query).unwrap_err();
            assert!(reason.starts_with(&format!("{key}: ")), "{query}: {reason}");
        }
    }

    #[test]
    fn max_session_ttl_is_bounded_off_drops_it_and_empty_is_the_default() {
        for bad in ["999ms", "61m"] {
            let reason = parse(&format!("max_session_ttl={bad}")).unwrap_err();
            assert!(reason.contains("is not from 1s (the shortest"), "{reason}");
        }
        assert_eq!(
            parse("max_session_ttl=1s").unwrap().max_session_ttl,
            MaxSessionTtl::At(Duration::from_secs(1))
        );
        assert_eq!(parse("").unwrap().max_session_ttl, MaxSessionTtl::Default);
        let off = parse("max_session_ttl=5s&max_session_ttl=off").unwrap();
        assert_eq!(off.max_session_ttl, MaxSessionTtl::Off);
        let reset = parse("max_session_ttl=5s&max_session_ttl=").unwrap();
        assert_eq!(reset.max_session_ttl, MaxSessionTtl::Default);
    }

    #[test]
    fn stale_claim_has_a_floor_and_a_ceiling_and_is_unset_by_default() {
        assert_eq!(parse("").unwrap().stale_claim, None);
        let floor = parse("stale_claim=1s").unwrap();
        assert_eq!(floor.stale_claim, Some(crate::queue::MIN_STALE_CLAIM));
        let last = parse("stale_claim=2m&stale_claim=1500ms").unwrap();
        assert_eq!(last.stale_claim, Some(Duration::from_millis(1500)));
        let reason = parse("stale_claim=999ms").unwrap_err();
        assert!(
            reason.starts_with("stale_claim: 999ms is shorter than 1s"),
            "{reason}"
        );
        assert!(reason.contains("second delivery"), "{reason}");
        let ceiling = parse("stale_claim=24h").unwrap();
        assert_eq!(ceiling.stale_claim, Some(crate::queue::MAX_STALE_CLAIM));
        // A bound of centuries overflows PostgreSQL's intervals; one past a day is
        // refused as well, naming the key.
        for long in ["1441m", "18446744073709551615s"] {
            let reason = parse(&format!("stale_claim={long}")).unwrap_err();
            assert!(
                reason.starts_with("stale_claim: ") && reason.contains("is longer than 86400s"),
                "{reason}"
            );
        }
        let shown = format!("{:?}", parse("stale_claim=3s").unwrap());
        assert!(shown.contains("stale_claim: Some(3s)"), "{shown}");
    }

    #[test]
    fn a_file_needs_a_path_and_a_certificate_its_key() {
        for key in ["ca", "cert", "key"] {
            assert_eq!(
                parse(&format!("{key}=")).unwrap_err(),
                format!("`{key}` needs a file path")
            );
        }
        for query in ["cert=/c.pem", "key=/k.pem", "ca=/ca.pem&key=/k.pem"] {
            assert_eq!(
                parse(query).unwrap_err(),
                "a client certificate needs both `cert` and `key` (PEM file paths)",
                "{query}"
            );
        }
    }

    #[test]
    fn tls_files_are_refused_without_tls_naming_the_key_given() {
        let options = parse("timeout=1s&cert=/c.pem&key=/k.pem").unwrap();
        assert_eq!(
            options.check_tls(false, "use zks://"),
            Err("`cert` is for TLS: use zks://".to_owned())
        );
        assert_eq!(options.check_tls(true, "use zks://"), Ok(()));
        assert_eq!(parse("timeout=1s").unwrap().check_tls(false, "x"), Ok(()));
    }

    #[test]
    fn another_store_names_its_files_its_own_way() {
        let grammar = UrlGrammar {
            file_keys: [
                &["sslrootcert", "ssl-ca"],
                &["sslcert"],
                &["sslkey", "ssl-key"],
            ],
            ..GRAMMAR
        };
        let read = |query: &str| UrlOptions::parse(query, &grammar, |_, _| Ok(false));
        let options = read("ssl-ca=/ca&sslcert=/c&ssl-key=/k").unwrap();
        assert_eq!(options.ca_file.as_deref(), Some("/ca"));
        let files = options.client_cert_files.clone().unwrap();
        assert_eq!(files, ("/c".to_owned(), "/k".to_owned()));
        assert_eq!(
            options.check_tls(false, "sslmode=disable"),
            Err("`ssl-ca` is for TLS: sslmode=disable".to_owned())
        );
        assert_eq!(
            read("sslcert=/c").unwrap_err(),
            "a client certificate needs both `sslcert` and `sslkey` (PEM file paths)"
        );
        assert!(read("ca=/x").unwrap_err().contains("`sslrootcert`"));
    }

    #[test]
    fn flags_are_true_or_false() {
        assert_eq!(parse_url_flag("tls", "true"), Ok(true));
        assert_eq!(parse_url_flag("tls", "false"), Ok(false));
        for bad in ["", "yes", "1", "TRUE"] {
            assert_eq!(
                parse_url_flag("tls", bad),
                Err("tls must be `true` or `false`".to_owned())
            );
        }
    }
}
