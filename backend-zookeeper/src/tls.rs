//! What `zks://` needs: the URL's PEM files as the client's TLS options, and the rustls
//! crypto provider.
//!
//! The files are read at every connection (each distsync session opens one), so a
//! certificate renewed on disk is picked up by the next session without a restart.

use distsync_core::raw::TlsFiles;
use distsync_core::{Error, Result};
use zookeeper_client as zk;

use crate::config::ZkConfig;

/// Installs ring as rustls' process-wide crypto provider unless one is installed
/// already: the client crate asks rustls for the process's provider, and rustls cannot
/// choose by itself when the build enables more than one (the client crate's own
/// rustls dependency brings aws-lc-rs, the etcd and Redis backends ring).
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: one provider is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The contents of a certificate or key file; an [`Error::InvalidArgument`] when it
/// cannot be read (the path is shown, never the contents).
fn read_pem(what: &str, path: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|error| {
        Error::InvalidArgument(format!(
            "{}: cannot read the {what} file {path:?}: {error}",
            crate::BACKEND
        ))
    })
}

/// The client's TLS options for `files`: the server's certificate is checked against
/// the CA file and the host name the URL connects to.
///
/// # Errors
/// [`Error::InvalidArgument`] for a file that cannot be read or holds no usable PEM
/// (the client crate's message names what is wrong, never the key's contents).
fn options(files: &TlsFiles) -> Result<zk::TlsOptions> {
    let bad = |what: &str, path: &str, error: zk::Error| {
        Error::InvalidArgument(format!(
            "{}: the {what} file {path:?} is not usable: {error}",
            crate::BACKEND
        ))
    };
    let ca = read_pem("CA certificate", files.ca())?;
    let mut options = zk::TlsOptions::new()
        .with_pem_ca(&ca)
        .map_err(|error| bad("CA certificate", files.ca(), error))?;
    if let Some((cert, key)) = files.client() {
        let cert_pem = read_pem("client certificate", cert)?;
        let key_pem = read_pem("client key", key)?;
        options = options
            .with_pem_identity(&cert_pem, &key_pem)
            .map_err(|error| bad("client certificate or key", cert, error))?;
    }
    Ok(options)
}

/// Connects `connector` to `servers`, over TLS with the URL's files when it asks for
/// TLS; the connect's own error unmapped.
///
/// # Errors
/// As [`options`].
pub(crate) async fn connect(
    connector: zk::Connector,
    config: &ZkConfig,
    servers: &str,
) -> Result<std::result::Result<zk::Client, zk::Error>> {
    let Some(files) = config.tls_files() else {
        return Ok(connector.connect(servers).await);
    };
    install_crypto_provider();
    let connector = connector.with_tls(options(files)?);
    Ok(connector.secure_connect(servers).await)
}
