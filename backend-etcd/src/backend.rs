//! The factories of the etcd backend: [`backend`], [`backend_with_config`] and
//! [`backend_from_client`] build an [`EtcdBackend`] (every primitive of
//! [`distsync_kv::recipes`] over [`EtcdKv`]) from a URL, a parsed [`EtcdConfig`] or a
//! client of the caller's, with the [`capabilities`] of the crate root.

use distsync_core::{Error, Result};
use distsync_kv::forgetful::ForgetfulKv;
use distsync_kv::recipes::KvBackend;
use etcd_client::{Client, ConnectOptions};

use crate::error::{classify, to_error};
use crate::kv::{read_count, EtcdKv, CONNECT_TIMEOUT, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT};
use crate::{capabilities, capabilities_with_bound, EtcdConfig, BACKEND};
use distsync_core::raw::{name_connect_timeout, refusing_hosts, Failure, Idempotence, RetryPolicy};

/// The etcd backend: every primitive of [`distsync_kv::recipes`] over [`EtcdKv`], with
/// the epoch marker of a store that can forget ([`ForgetfulKv`]; see the crate docs,
/// "When the store forgets").
pub type EtcdBackend = KvBackend<ForgetfulKv<EtcdKv>>;

/// Connects to the etcd cluster a URL names and returns the backend.
///
/// URL: `etcd://[user:password@]host:port[,host:port...][/namespace][?tls=true&ca=...]`
/// (see [`EtcdConfig`], also for the namespace to share locks with Go programs).
///
/// Cancel-safe: dropping the future drops the connection attempt.
///
/// # Errors
/// [`Error::InvalidUrl`] for a malformed URL (password masked), and as
/// [`backend_with_config`].
pub async fn backend(url: &str) -> Result<EtcdBackend> {
    let config = EtcdConfig::parse(url)?;
    backend_with_config(&config).await
}

/// Like [`backend`], from an already parsed (or built) configuration.
///
/// Cancel-safe: dropping the future drops the connection attempt.
///
/// # Errors
/// - [`Error::InvalidArgument`] for certificate or key files that cannot be read;
/// - [`Error::Unsupported`] for TLS in a build without the `tls` feature;
/// - [`Error::Connection`] when no member answers within the connect timeout, or the
///   TLS handshake fails (an untrusted server certificate, a client certificate the
///   server refuses);
/// - [`Error::Authentication`] for a wrong user or password;
/// - [`Error::Backend`] whose message starts with "permission denied" when the user
///   may not read the namespace.
pub async fn backend_with_config(config: &EtcdConfig) -> Result<EtcdBackend> {
    let timeout = config.connect_timeout();
    let connect = async {
        let client = Client::connect(config.endpoints(), Some(connect_options(config)?))
            .await
            .map_err(|error| match error {
                etcd_client::Error::InvalidUri(_) | etcd_client::Error::InvalidArgs(_) => {
                    Error::InvalidArgument(format!("etcd endpoints: {error}"))
                }
                error => connect_error(error),
            })?;
        probe(&client, config.namespace(), config.endpoints()).await?;
        Ok::<_, Error>(client)
    };
    let Ok(connected) = tokio::time::timeout(timeout, connect).await else {
        return Err(Error::connection(
            BACKEND,
            format!(
                "no etcd member of {config} answered within the connect timeout \
                 ({timeout:?}; `connect_timeout=` in the URL)"
            ),
        ));
    };
    let client = connected.map_err(|error| name_connect_timeout(error, timeout))?;
    tracing::debug!(backend = BACKEND, %config, "connected");
    // A request into a silent partition fails within about one `timeout=` (see
    // `RetryPolicy::within`).
    Ok(KvBackend::with_kv(
        ForgetfulKv::new(
            EtcdKv::from_client(client)
                .with_retry(RetryPolicy::within(config.request_timeout()))
                .with_keepalive_timeout(config.request_timeout()),
            config.namespace(),
            config.max_session_ttl(),
        ),
        config.namespace(),
        capabilities_with_bound(config.max_session_ttl()),
    )
    .with_layout(config.layout())
    .with_stale_claim(config.stale_claim()))
}

/// A backend over an [`etcd_client::Client`] of your own (built with its TLS options,
/// credentials and timeouts), with every key under `namespace` (empty, or ending with
/// `/`, as [`EtcdConfig::namespace`]). Build the client with
/// `ConnectOptions::with_require_leader(true)` (see [`EtcdKv`]) and, with a user,
/// `with_auto_token_refresh(true)`, so that sessions outlive the auth token's TTL.
/// No request is made: the first call reports an unreachable cluster.
///
/// # Errors
/// [`Error::InvalidName`] for a namespace breaking the name rules.
pub fn backend_from_client(client: Client, namespace: &str) -> Result<EtcdBackend> {
    let namespace = EtcdConfig::new(&["localhost"], namespace)?
        .namespace()
        .to_owned();
    Ok(KvBackend::with_kv(
        ForgetfulKv::new(EtcdKv::from_client(client), &namespace, None),
        namespace,
        capabilities(),
    ))
}

/// The client options of `config`: timeouts, keepalive, leader requirement (as
/// [`EtcdKv::connect`]), user and TLS.
fn connect_options(config: &EtcdConfig) -> Result<ConnectOptions> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(config.connect_timeout().min(CONNECT_TIMEOUT))
        .with_timeout(config.request_timeout())
        .with_keep_alive(KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT)
        .with_keep_alive_while_idle(false)
        // Go's `clientv3.WithRequireLeader` (see `EtcdKv`).
        .with_require_leader(true);
    if let Some((user, password)) = config.credentials() {
        options = options
            .with_user(user, password)
            .with_auto_token_refresh(true);
    }
    if config.tls() {
        options = tls::with_tls(options, config)?;
    }
    Ok(options)
}

#[cfg(feature = "tls")]
mod tls {
    use distsync_core::{Error, Result};
    use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};

    use crate::EtcdConfig;

    fn read(what: &str, path: &str) -> Result<Vec<u8>> {
        std::fs::read(path).map_err(|error| {
            Error::InvalidArgument(format!(
                "etcd: cannot read the {what} file {path:?}: {error}"
            ))
        })
    }

    pub(crate) fn with_tls(options: ConnectOptions, config: &EtcdConfig) -> Result<ConnectOptions> {
        // rustls cannot choose a crypto provider by itself when the build enables more
        // than one (another crate may enable aws-lc-rs): install ring unless one is.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let mut tls = TlsOptions::new();
        tls = match config.ca_file() {
            Some(path) => tls.ca_certificate(Certificate::from_pem(read("CA certificate", path)?)),
            None => tls.with_native_roots(),
        };
        if let Some((cert, key)) = config.client_cert_files() {
            tls = tls.identity(Identity::from_pem(
                read("client certificate", cert)?,
                read("client key", key)?,
            ));
        }
        Ok(options.with_tls(tls))
    }
}

#[cfg(not(feature = "tls"))]
mod tls {
    use distsync_core::{Error, Result};
    use etcd_client::ConnectOptions;

    use crate::EtcdConfig;

    pub(crate) fn with_tls(_: ConnectOptions, _: &EtcdConfig) -> Result<ConnectOptions> {
        Err(Error::unsupported(
            crate::BACKEND,
            "TLS (tls=true): this build of distsync-etcd has no TLS support (enable its \
             cargo feature `tls`)",
        ))
    }
}

/// One cheap linearizable read inside the namespace (a user limited to it may read
/// nothing else), to learn whether a member answers and the login works; when every one
/// of `endpoints` refuses the connection, at once.
async fn probe(client: &Client, namespace: &str, endpoints: &[String]) -> Result<()> {
    let key = Some(namespace)
        .filter(|namespace| !namespace.is_empty())
        .unwrap_or("\0");
    let ask = || read_count(client, key);
    let Err(error) = ask().await else {
        return Ok(());
    };
    match classify(&error) {
        Failure::Permanent => return Err(connect_error(error)),
        // When every member refuses the connection, connecting fails at once, as a
        // refused port does on every store; a member that refused while another
        // accepts (the balanced channel may send the first request to either) or one
        // that answers with a transient error (no leader yet) is asked again within
        // the budget.
        Failure::NotSent => {
            if let Some(refusals) = refusing_hosts(endpoints).await {
                return Err(Error::connection(
                    BACKEND,
                    format!("every member refused the connection ({refusals})"),
                ));
            }
        }
        Failure::Transient => {}
    }
    RetryPolicy::default()
        .one_shot("connect", Idempotence::Idempotent, classify, ask)
        .await
        .map_err(connect_error)
}

/// A connect-time error: a refused permission says so in plain words (the server's
/// message never holds the password); the rest (a refused login included, see
/// [`to_error`]) as any request's.
fn connect_error(error: etcd_client::Error) -> Error {
    if let etcd_client::Error::GRpcStatus(status) = &error {
        let message = status.message();
        if status.code() == tonic::Code::PermissionDenied {
            return Error::backend(
                BACKEND,
                format!("permission denied (the user's role must grant the namespace prefix): {message}"),
            );
        }
    }
    to_error(error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MIN_SESSION_TTL;

    #[test]
    fn capabilities_name_the_backend_and_its_shortest_ttl() {
        let capabilities = capabilities();
        assert_eq!(capabilities.backend, BACKEND);
        assert_eq!(capabilities.min_session_ttl, MIN_SESSION_TTL);
    }

    #[tokio::test]
    async fn a_malformed_url_is_a_typed_error_without_the_password() {
        let error = backend("etcd://app:hunter2@")
            .await
            .expect_err("no endpoint");
        assert!(matches!(error, Error::InvalidUrl { .. }), "{error:?}");
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }
}
