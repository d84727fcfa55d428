//! The rustls crypto provider for `rediss://`.

/// Installs ring as rustls' process-wide crypto provider unless one is installed
/// already: rustls cannot choose by itself when the build enables more than one
/// provider (another crate of the application may enable aws-lc-rs).
pub(crate) fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: one provider is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
