//! [`TlsFiles`]: the PEM files a TLS URL names, as a store's client reads them at each
//! connection.

/// The PEM files of a TLS URL (`ca=`, and `cert=` with `key=`): the CA certificates to
/// trust, and the client's certificate and key when it presents one. Paths only, no
/// secret: the files are read when connecting. Made by [`UrlOptions::tls_files`].
///
/// [`UrlOptions::tls_files`]: crate::raw::UrlOptions::tls_files
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    ca: String,
    client: Option<(String, String)>,
}

impl TlsFiles {
    /// The files `ca` and, when the client presents a certificate, `client` (the
    /// certificate's path and its key's).
    pub fn new(ca: impl Into<String>, client: Option<(String, String)>) -> Self {
        Self {
            ca: ca.into(),
            client,
        }
    }

    /// The path of the PEM file of the CA certificates to trust.
    pub fn ca(&self) -> &str {
        &self.ca
    }

    /// The paths of the PEM client certificate and its key, if the client presents one.
    pub fn client(&self) -> Option<(&str, &str)> {
        self.client
            .as_ref()
            .map(|(cert, key)| (cert.as_str(), key.as_str()))
    }
}
