//! Redis Sentinel: finding the primary of a `redis+sentinel://` URL and following it
//! across a failover.
//!
//! The Sentinels are asked through redis-rs's [`SentinelClient`], which asks each
//! Sentinel in turn for the service's primary (`SENTINEL MASTERS`) and checks with
//! `ROLE` that the server it names really is a primary. The backend's connections
//! go through a `Target`:
//!
//! * commands go through `Connection::Sentinel`: one multiplexed connection to the
//!   primary, dropped when a command meets a broken connection or an answer that says
//!   the server is no longer the primary (`READONLY`, `MASTERDOWN`); the next command
//!   asks the Sentinels again and connects to the primary they name now (redis-rs's
//!   `ConnectionManager` would reconnect to the old address, which after a failover
//!   is dead or a replica). The failed command itself reports a transient
//!   [`distsync_core::Error::Connection`]: blocking calls ride it out, others return
//!   it to the caller (nothing is retried behind its back, since a write may have
//!   been applied).
//! * the pub/sub connection of [`crate::notify`] asks the Sentinels each time it
//!   reconnects; after a reconnection every waiter re-reads, since wake-ups published
//!   on the old primary may have been lost.
//!
//! Every new primary is checked as the first one was: a server that may evict keys is
//! refused unless the URL accepts eviction (see [`crate::RedisConfig`]).
//!
//! What survives a failover depends on replica acknowledgement (`wait_replicas`, see
//! the crate docs, "Sentinel and replica acknowledgement"): Redis replicates
//! asynchronously, so without it the promoted replica may lack the last grants,
//! renewals, queue items and fencing-counter increments.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use distsync_core::raw::join_host_port;
use distsync_core::Result;
use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{
    AsyncConnectionConfig, ErrorKind, IntoConnectionInfo, RedisError, RedisResult, ServerErrorKind,
    Value,
};

use crate::config::RedisConfig;
use crate::options::RedisOptions;

/// The Sentinels of one service, asked for its primary.
pub(crate) struct Sentinels {
    client: tokio::sync::Mutex<SentinelClient>,
    /// The Sentinels and service, without credentials, for messages.
    display: String,
    connect_timeout: Duration,
}

impl Sentinels {
    /// The Sentinels a `redis+sentinel://` URL names; `None` for another URL.
    ///
    /// # Errors
    /// [`distsync_core::Error::InvalidUrl`] if redis-rs refuses the addresses.
    pub(crate) fn of_url(url: &RedisConfig) -> Result<Option<Self>> {
        let Some(address) = url.sentinel() else {
            return Ok(None);
        };
        let invalid = |error: RedisError| distsync_core::Error::InvalidUrl {
            url: url.server().to_owned(),
            reason: error.to_string(),
        };
        // The nodes' login and database, from the URL's redis:// form.
        let node = url.connection().into_connection_info().map_err(invalid)?;
        let node = SentinelNodeConnectionInfo::default()
            .set_redis_connection_info(node.redis_settings().clone())
            .set_tcp_settings(crate::options::tcp_settings());
        let sentinels: Vec<String> = address
            .sentinels
            .iter()
            .map(|(host, port)| format!("redis://{}", join_host_port(host, *port)))
            .collect();
        let client = SentinelClient::build(
            sentinels,
            address.service.clone(),
            Some(node),
            SentinelServerType::Master,
        )
        .map_err(invalid)?;
        Ok(Some(Self {
            client: tokio::sync::Mutex::new(client),
            display: url.server().to_owned(),
            connect_timeout: url.connect_timeout(),
        }))
    }

    /// A client of the primary the Sentinels name now (checked with `ROLE`), asking
    /// for at most the connect timeout.
    pub(crate) async fn primary(&self) -> RedisResult<redis::Client> {
        let asking = async { self.client.lock().await.async_get_client().await };
        match tokio::time::timeout(self.connect_timeout, asking).await {
            Ok(Ok(client)) => {
                let primary = client.get_connection_info().addr();
                tracing::debug!(sentinels = %self.display, %primary, "primary found");
                Ok(client)
            }
            // During a failover the Sentinels may name a dead primary, or none yet:
            // a transient connection error, retried like any other.
            Ok(Err(error)) if error.is_io_error() => Err(error),
            Ok(Err(error)) => Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                format!(
                    "the Sentinels of {} name no usable primary: {error}",
                    self.display
                ),
            ))),
            Err(_) => Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "the Sentinels of {} named no primary within {:?}",
                    self.display, self.connect_timeout
                ),
            ))),
        }
    }
}

/// A connection to the primary that follows failovers (see the module docs).
pub(crate) struct Following {
    sentinels: Arc<Sentinels>,
    config: AsyncConnectionConfig,
    options: RedisOptions,
    /// The connection in use, its generation and the replication id of its server;
    /// `None` until the next command connects.
    current: tokio::sync::Mutex<Option<Current>>,
    generations: AtomicU64,
    pub(crate) db: i64,
    /// Whether the backend declares `survives_restart` from the first primary's
    /// persistence: a later primary that does not fsync every write is warned about
    /// (the declared capabilities stay those read at connect).
    durable: bool,
}

impl Following {
    /// Follows the primary of `sentinels`, starting with `first`, a connection to the
    /// primary already checked by the caller, whose replication id is `replid`
    /// ([`primary_replid`]); `durable` when its persistence made the backend declare
    /// `survives_restart`.
    pub(crate) fn new(
        sentinels: Arc<Sentinels>,
        replid: Option<String>,
        first: MultiplexedConnection,
        config: AsyncConnectionConfig,
        options: RedisOptions,
        db: i64,
        durable: bool,
    ) -> Self {
        Self {
            sentinels,
            config,
            options,
            current: tokio::sync::Mutex::new(Some(Current {
                generation: 0,
                connection: first,
                replid: replid.map(Arc::from),
            })),
            generations: AtomicU64::new(1),
            db,
            durable,
        }
    }

    /// The connection in use, connecting to the primary the Sentinels name now if
    /// there is none.
    pub(crate) async fn connection(&self) -> RedisResult<Current> {
        let mut current = self.current.lock().await;
        if let Some(in_use) = &*current {
            return Ok(in_use.clone());
        }
        let client = self.sentinels.primary().await?;
        let mut connection = client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        let server = client.get_connection_info().addr().to_string();
        check_eviction(&mut connection, &self.options, &server).await?;
        if self.durable {
            check_persistence(&mut connection, &server).await;
        }
        let replid = primary_replid(&mut connection).await.map(Arc::from);
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        tracing::info!(sentinels = %self.sentinels.display, primary = %server, "connected to the primary");
        let in_use = Current {
            generation,
            connection,
            replid,
        };
        *current = Some(in_use.clone());
        Ok(in_use)
    }

    /// Drops connection `generation` (if still in use) after `error`, when the error
    /// says the connection broke or the server is no longer the primary.
    pub(crate) async fn after(&self, generation: u64, error: &RedisError) {
        if !primary_lost(error) {
            return;
        }
        let mut current = self.current.lock().await;
        if matches!(&*current, Some(in_use) if in_use.generation == generation) {
            tracing::info!(%error, sentinels = %self.sentinels.display, "asking the Sentinels for the primary again");
            *current = None;
        }
    }
}

/// The connection [`Following`] uses now.
#[derive(Clone)]
pub(crate) struct Current {
    /// Counts the connections made, so that an error drops only the one it met.
    pub(crate) generation: u64,
    pub(crate) connection: MultiplexedConnection,
    /// The replication id of the server, read when connecting ([`primary_replid`]).
    pub(crate) replid: Option<Arc<str>>,
}

/// The replication id (`master_replid`) of the server behind `connection`, if it is
/// a primary (`role:master`): read once per connection, and passed with each grant
/// (see `crate::amnesia`, "Failovers"). A replica's id is its primary's, which a
/// promotion changes while the connection may stay: so it is not taken. `None` when
/// it cannot be read; the grant scripts then ask the server themselves.
pub(crate) async fn primary_replid(connection: &mut MultiplexedConnection) -> Option<String> {
    let reply = match redis::cmd("INFO")
        .arg("replication")
        .query_async::<Value>(connection)
        .await
    {
        Ok(reply) => reply,
        Err(error) => {
            tracing::debug!(%error, "INFO replication refused; the grant scripts ask it");
            return None;
        }
    };
    let text = crate::info::info_text(&reply)?;
    replid_of_primary(&text)
}

/// `master_replid` of `INFO replication` text, if its `role` is `master` and the id
/// is hexadecimal (as the grant scripts take it).
fn replid_of_primary(text: &str) -> Option<String> {
    use crate::info::info_field;
    if info_field(text, "role")? != "master" {
        return None;
    }
    let id = info_field(text, "master_replid")?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// Refuses a new primary that may evict keys when the backend's guarantees assume it
/// does not (the check [`crate::backend()`] makes on the first one).
async fn check_eviction(
    connection: &mut MultiplexedConnection,
    options: &RedisOptions,
    server: &str,
) -> RedisResult<()> {
    let policy = crate::eviction::policy(connection).await;
    let checked =
        policy.and_then(|policy| crate::eviction::check(options, server, policy.as_deref()));
    checked.map(drop).map_err(|error| {
        RedisError::from((
            ErrorKind::InvalidClientConfig,
            "the new primary was refused",
            error.to_string(),
        ))
    })
}

/// Warns when a new primary does not fsync every write, although the backend declared
/// `survives_restart` from the first one's settings (Sentinel-managed servers are
/// expected to share one configuration). The connection is used all the same: the
/// eviction check guards mutual exclusion, this one only durability across restarts.
async fn check_persistence(connection: &mut MultiplexedConnection, server: &str) {
    match crate::persistence::read(connection).await {
        Ok(persistence) if !persistence.survives_restart() => tracing::warn!(
            primary = server,
            %persistence,
            "the new primary does not fsync every write (appendonly yes, appendfsync \
             always), unlike the one read at connect: a restart of it may lose \
             acknowledged grants, releases and queue items"
        ),
        Ok(_) => {}
        Err(error) => {
            tracing::debug!(%error, primary = server, "reading the new primary's persistence")
        }
    }
}

/// Whether `error` means the connection is broken or its server no longer the primary.
pub(crate) fn primary_lost(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || matches!(
            error.kind(),
            ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
        )
}

/// The first error reply among a pipeline's replies (which redis-rs hands over as
/// values when errors are ignored).
pub(crate) fn error_reply(values: &[Value]) -> Option<RedisError> {
    values.iter().find_map(|value| match value {
        Value::ServerError(error) => Some(RedisError::from(error.clone())),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_primary_gives_its_replication_id() {
        let primary = "# Replication\r\nrole:master\r\nconnected_slaves:1\r\n\
                       master_replid:8f3a0c1d2e\r\nmaster_replid2:0000\r\n";
        assert_eq!(replid_of_primary(primary).as_deref(), Some("8f3a0c1d2e"));
        let replica = "role:slave\r\nmaster_host:10.0.0.1\r\nmaster_replid:8f3a0c1d2e\r\n";
        assert_eq!(replid_of_primary(replica), None);
        assert_eq!(
            replid_of_primary("role:master\r\nmaster_replid:not-hex\r\n"),
            None
        );
        assert_eq!(replid_of_primary("role:master\r\n"), None);
    }

    #[test]
    fn failover_errors_send_the_connection_back_to_the_sentinels() {
        let readonly = RedisError::from((ErrorKind::Server(ServerErrorKind::ReadOnly), "READONLY"));
        assert!(primary_lost(&readonly));
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(primary_lost(&refused));
        let script = RedisError::from((ErrorKind::Server(ServerErrorKind::NoScript), "NOSCRIPT"));
        assert!(!primary_lost(&script));
    }

    #[test]
    fn sentinel_urls_make_sentinels_and_others_do_not() {
        let url = RedisConfig::parse("redis+sentinel://u:p@127.0.0.1:1,127.0.0.1:2/svc/3").unwrap();
        let sentinels = Sentinels::of_url(&url).unwrap().expect("sentinels");
        assert_eq!(
            sentinels.display,
            "redis+sentinel://127.0.0.1:1,127.0.0.1:2/svc/3"
        );
        let plain = RedisConfig::parse("redis://127.0.0.1:1").unwrap();
        assert!(Sentinels::of_url(&plain).unwrap().is_none());
    }
}
