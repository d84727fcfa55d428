//! TLS to the server: sqlx's rustls support (cargo feature `tls`, on by default), with
//! ring as its crypto provider and the system's root certificates plus the URL's
//! `sslrootcert`.
//!
//! Every connection the backend opens (its pools, the `LISTEN` connection, the checks
//! made at connect) is made from the one
//! [`PgConnectOptions`](sqlx::postgres::PgConnectOptions) of its
//! [`PostgresConfig`](crate::PostgresConfig), so all of them use the same `sslmode`
//! and files.
//!
//! Errors: a certificate or key file that cannot be read is [`Error::InvalidArgument`]
//! naming the path (checked at connect, before any connection); an untrusted server
//! certificate or a client certificate the server refuses is [`Error::Connection`]
//! with sqlx's TLS error as its source, as on etcd and Redis.

use distsync_core::{Error, Result};
use sqlx::postgres::PgSslMode;

/// Refuses an SSL mode that needs TLS (every mode but `disable`, `allow` and `prefer`)
/// in a build without it.
///
/// # Errors
/// [`Error::Unsupported`] when `mode` requires TLS and the cargo feature `tls` is off.
pub(crate) fn check_mode(mode: PgSslMode) -> Result<()> {
    let requires_tls = matches!(
        mode,
        PgSslMode::Require | PgSslMode::VerifyCa | PgSslMode::VerifyFull
    );
    if requires_tls && !cfg!(feature = "tls") {
        return Err(Error::unsupported(
            crate::error::BACKEND,
            format!(
                "TLS (sslmode={mode:?}): this build of distsync-postgres has no TLS support \
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
    fn tls_modes_need_the_feature() {
        for mode in [PgSslMode::Disable, PgSslMode::Allow, PgSslMode::Prefer] {
            assert!(check_mode(mode).is_ok());
        }
        for mode in [
            PgSslMode::Require,
            PgSslMode::VerifyCa,
            PgSslMode::VerifyFull,
        ] {
            assert_eq!(check_mode(mode).is_ok(), cfg!(feature = "tls"), "{mode:?}");
        }
    }
}
