//! What `rediss://` needs: the rustls crypto provider, and the PEM files of the URL.

use distsync_core::{Error, Result};

/// Installs ring as rustls' process-wide crypto provider unless one is installed
/// already: rustls cannot choose by itself when the build enables more than one
/// provider (another crate of the application may enable aws-lc-rs).
pub(crate) fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: one provider is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The contents of a certificate or key file; an [`Error::InvalidArgument`] when it
/// cannot be read (the path is shown, never the contents).
pub(crate) fn read_pem(what: &str, path: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|error| {
        Error::InvalidArgument(format!(
            "redis: cannot read the {what} file {path:?}: {error}"
        ))
    })
}
