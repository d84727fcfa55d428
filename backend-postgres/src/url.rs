//! Parsing `postgres://user@host:port/db[?schema=...]` URLs.

use std::str::FromStr;

use distsync_core::{Error, Result};
use sqlx::postgres::PgConnectOptions;

/// The schema used when the URL names none.
pub const DEFAULT_SCHEMA: &str = "distsync";

/// A parsed backend URL: how to connect, and the schema holding distsync's tables.
#[derive(Clone, Debug)]
pub struct PgUrl {
    /// Connection options for `sqlx` (everything in the URL but `schema`).
    pub options: PgConnectOptions,
    /// The schema (namespace) of every table, function and lock key of this backend.
    pub schema: String,
}

/// Parses a backend URL.
///
/// Accepts the schemes `postgres` and `postgresql`, every connection parameter `sqlx`
/// understands (`sslmode`, `application_name`, ...), and `schema`: an identifier of 1 to
/// 63 ASCII letters, digits and underscores, not starting with a digit (default
/// [`DEFAULT_SCHEMA`]).
///
/// # Errors
/// [`Error::InvalidUrl`] for an unparsable URL, another scheme, a missing host, or an
/// invalid schema name.
pub fn parse(url: &str) -> Result<PgUrl> {
    let invalid = |reason: String| Error::InvalidUrl {
        url: distsync_core::redact_url(url),
        reason,
    };
    let mut parsed = url::Url::parse(url).map_err(|error| invalid(error.to_string()))?;
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return Err(invalid(format!(
            "scheme `{}` is not postgres:// or postgresql://",
            parsed.scheme()
        )));
    }
    if parsed.host_str().map_or(true, str::is_empty) {
        return Err(invalid("no host".into()));
    }
    let mut schema = None;
    let mut rest = Vec::new();
    for (key, value) in parsed.query_pairs() {
        if key == "schema" {
            schema = Some(value.into_owned());
        } else {
            rest.push((key.into_owned(), value.into_owned()));
        }
    }
    let schema = schema.unwrap_or_else(|| DEFAULT_SCHEMA.to_owned());
    validate_schema(&schema).map_err(|reason| invalid(format!("schema {schema:?} {reason}")))?;
    if rest.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(&rest);
    }
    // No `extra_float_digits` startup parameter: PgBouncer rejects it unless told to
    // ignore it (the backend reads no floats as text).
    let options = PgConnectOptions::from_str(parsed.as_str())
        .map_err(|error| invalid(error.to_string()))?
        .extra_float_digits(None);
    Ok(PgUrl { options, schema })
}

fn validate_schema(schema: &str) -> std::result::Result<(), &'static str> {
    let mut chars = schema.chars();
    match chars.next() {
        None => return Err("is empty"),
        Some(first) if first.is_ascii_digit() => return Err("starts with a digit"),
        Some(_) => {}
    }
    if schema.len() > 63 {
        return Err("is longer than 63 bytes");
    }
    if !schema
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err("has characters other than ASCII letters, digits and '_'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_schema_and_keeps_other_parameters() {
        let url = parse("postgres://u@h:5433/db?schema=app_1&sslmode=disable").unwrap();
        assert_eq!(url.schema, "app_1");
        assert_eq!(url.options.get_host(), "h");
        assert_eq!(url.options.get_port(), 5433);
        assert_eq!(url.options.get_username(), "u");
        assert_eq!(url.options.get_database(), Some("db"));
    }

    #[test]
    fn defaults_schema_and_accepts_postgresql_scheme() {
        let url = parse("postgresql://u@h/db").unwrap();
        assert_eq!(url.schema, DEFAULT_SCHEMA);
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
            match parse(bad) {
                Err(Error::InvalidUrl { url, .. }) => assert_eq!(url, bad),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        let long = format!("postgres://h/db?schema={}", "s".repeat(64));
        assert!(matches!(parse(&long), Err(Error::InvalidUrl { .. })));
    }
}
