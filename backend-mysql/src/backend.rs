//! The factories of the MySQL backend: [`backend`] and [`backend_with_config`] build a
//! [`MysqlBackend`] (every primitive of
//! [`distsync_kv::recipes`] over [`MysqlKv`]) from a URL or a parsed [`MysqlConfig`].

use distsync_core::Result;
use distsync_kv::forgetful::ForgetfulKv;
use distsync_kv::recipes::KvBackend;

use crate::{capabilities_with_bound, MysqlConfig, MysqlKv};

/// The MySQL backend: every primitive of [`distsync_kv::recipes`] over [`MysqlKv`],
/// exactly as the etcd backend is over etcd, with the epoch marker of a store that
/// can forget ([`ForgetfulKv`]; see the crate docs, "When the store forgets").
pub type MysqlBackend = KvBackend<ForgetfulKv<MysqlKv>>;

/// Connects to the server a URL names and returns the backend.
///
/// URL: `mysql://user[:password]@host[:port]/database[?...]` (see [`MysqlConfig`]).
///
/// Cancel-safe: dropping the future drops the connection attempt.
///
/// # Errors
/// [`distsync_core::Error::InvalidUrl`] for a malformed URL (password masked), and as
/// [`backend_with_config`].
pub async fn backend(url: &str) -> Result<MysqlBackend> {
    backend_with_config(&MysqlConfig::parse(url)?).await
}

/// Like [`backend`], from an already parsed configuration. The backend declares
/// `survives_failover` when the server is a semi-synchronous primary that waits for
/// its replica after syncing its binary log
/// ([`MysqlKv::replica_has_every_commit`]), the value limit the server's
/// `max_allowed_packet` gives ([`crate::max_value_size`]), and
/// `exclusive_across_restart` with the URL's `max_session_ttl=`.
///
/// Cancel-safe: dropping the future drops the connection attempt.
///
/// # Errors
/// As [`MysqlKv::connect`].
pub async fn backend_with_config(config: &MysqlConfig) -> Result<MysqlBackend> {
    let kv = MysqlKv::connect(config).await?;
    let capabilities = capabilities_with_bound(config.max_session_ttl())
        .with_survives_failover(kv.replica_has_every_commit())
        .with_max_value_size(crate::max_value_size(kv.max_allowed_packet()));
    Ok(KvBackend::with_kv(
        ForgetfulKv::new(kv, "", config.max_session_ttl()),
        "",
        capabilities,
    )
    .with_stale_claim(config.stale_claim()))
}
