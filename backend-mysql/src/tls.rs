//! TLS to the server: sqlx's rustls support (cargo feature `tls`, on by default), with
//! ring as its crypto provider and the system's root certificates plus the URL's `ca=`.
//!
//! Which `ssl-mode` a URL gets is in [`MysqlConfig`](crate::MysqlConfig)'s table, and
//! its errors in [`MysqlKv::connect`](crate::MysqlKv::connect)'s. A URL that names a TLS file means the
//! connection to be TLS and the server checked: so its default is `verify_identity`, a
//! mode that may connect without TLS beside it is refused (the file would go unused
//! without a word), and `required` with `ca=` checks the chain, as libpq's
//! `sslmode=require` does with a root certificate.
//!
//! Every connection the backend opens (its pools and the first connection made at
//! connect) is made from the one [`MySqlConnectOptions`](sqlx::mysql::MySqlConnectOptions)
//! of its [`MysqlConfig`](crate::MysqlConfig), so all of them use the same mode and files.

use distsync_core::{Error, Result};
use sqlx::mysql::MySqlSslMode;

/// The `ssl-mode` values, as MySQL's clients spell them (in any case).
const MODES: &str = "disabled, preferred, required, verify_ca, verify_identity";

/// Parses an `ssl-mode=` value.
///
/// # Errors
/// The reason, listing the accepted values, for the URL's [`Error::InvalidUrl`].
pub(crate) fn parse_mode(value: &str) -> std::result::Result<MySqlSslMode, String> {
    value
        .parse()
        .map_err(|_| format!("ssl-mode {value:?} is not one of {MODES}"))
}

/// The mode of a URL that asks for `asked` (`None`: no `ssl-mode=`) and names a TLS
/// file (`files`), a CA among them (`ca`); see the module's docs.
pub(crate) fn effective_mode(asked: Option<MySqlSslMode>, files: bool, ca: bool) -> MySqlSslMode {
    match asked {
        None if files => MySqlSslMode::VerifyIdentity,
        None => MySqlSslMode::Preferred,
        Some(MySqlSslMode::Required) if ca => MySqlSslMode::VerifyCa,
        Some(mode) => mode,
    }
}

/// Why `mode` cannot go with a TLS file, for [`UrlOptions::check_tls`]: `None` when it
/// can (it requires TLS).
///
/// [`UrlOptions::check_tls`]: distsync_core::raw::UrlOptions::check_tls
pub(crate) fn without_tls(mode: MySqlSslMode) -> Option<&'static str> {
    match mode {
        MySqlSslMode::Disabled => Some("ssl-mode=disabled turns TLS off"),
        MySqlSslMode::Preferred => Some(
            "ssl-mode=preferred may connect without TLS; give required, verify_ca or \
             verify_identity, or no ssl-mode (verify_identity)",
        ),
        _ => None,
    }
}

/// Refuses a mode that needs TLS in a build without it.
///
/// # Errors
/// [`Error::Unsupported`] when `mode` requires TLS and the cargo feature `tls` is off.
pub(crate) fn check_mode(mode: MySqlSslMode) -> Result<()> {
    let requires_tls = matches!(
        mode,
        MySqlSslMode::Required | MySqlSslMode::VerifyCa | MySqlSslMode::VerifyIdentity
    );
    if requires_tls && !cfg!(feature = "tls") {
        return Err(Error::unsupported(
            crate::BACKEND,
            format!(
                "TLS (ssl-mode={mode:?}): this build of distsync-mysql has no TLS support \
                 (enable its cargo feature `tls`)"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_in_any_case_and_others_are_refused() {
        assert!(matches!(
            parse_mode("VERIFY_IDENTITY"),
            Ok(MySqlSslMode::VerifyIdentity)
        ));
        assert!(matches!(
            parse_mode("verify_ca"),
            Ok(MySqlSslMode::VerifyCa)
        ));
        let refused = parse_mode("verify-full").unwrap_err();
        assert!(refused.contains("verify_identity"), "{refused}");
    }

    #[test]
    fn a_tls_file_without_a_mode_verifies_the_server_and_its_name() {
        let mode = |asked, files, ca| format!("{:?}", effective_mode(asked, files, ca));
        assert_eq!(mode(None, false, false), "Preferred");
        assert_eq!(mode(None, true, false), "VerifyIdentity");
        assert_eq!(mode(None, true, true), "VerifyIdentity");
        assert_eq!(mode(Some(MySqlSslMode::Required), true, true), "VerifyCa");
        assert_eq!(mode(Some(MySqlSslMode::Required), true, false), "Required");
        assert_eq!(mode(Some(MySqlSslMode::Disabled), false, false), "Disabled");
    }

    #[test]
    fn only_modes_that_require_tls_go_with_files() {
        assert!(without_tls(MySqlSslMode::Disabled).is_some());
        assert!(without_tls(MySqlSslMode::Preferred).is_some());
        for mode in [
            MySqlSslMode::Required,
            MySqlSslMode::VerifyCa,
            MySqlSslMode::VerifyIdentity,
        ] {
            assert!(without_tls(mode).is_none(), "{mode:?}");
            assert_eq!(check_mode(mode).is_ok(), cfg!(feature = "tls"), "{mode:?}");
        }
        assert!(check_mode(MySqlSslMode::Preferred).is_ok());
    }
}
