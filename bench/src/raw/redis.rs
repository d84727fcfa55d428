//! Redis: `SET key token NX PX ttl`, then a compare-and-delete script.

use async_trait::async_trait;
use redis::aio::{ConnectionManager, PubSubSink, PubSubStream};
use redis::Script;

use crate::contender::{Cycler, Role, Unavailable};
use crate::Result;

/// The key's TTL, as a distsync session's default.
const TTL_MS: u64 = 60_000;

/// Deletes `KEYS[1]` only if it still holds `ARGV[1]`.
const COMPARE_AND_DELETE: &str = r"
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
";

/// The label of the raw row.
pub const LABEL: &str = "raw: SET NX PX + compare-and-delete script";
/// The label of the diagnostic row.
pub const SUBSCRIBED_LABEL: &str =
    "raw + SUBSCRIBE before, UNSUBSCRIBE after in the background (as distsync's per-acquire wake-up channel)";

/// The raw Redis cycle on its own connection (a `ConnectionManager`, as distsync's);
/// as a diagnostic, wrapped in subscribing to a fresh channel on a pub/sub connection
/// first (waiting for the confirmation) and unsubscribing after (without waiting), as
/// distsync's `lock()` does for its wake-ups.
pub struct RawRedis {
    conn: ConnectionManager,
    script: Script,
    key: String,
    token: String,
    pubsub: Option<(PubSubSink, PubSubStream)>,
    cycles: u64,
}

impl std::fmt::Debug for RawRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawRedis")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl RawRedis {
    /// Connects to the server of the distsync URL `url`.
    pub async fn start(
        url: &str,
        name: &str,
        subscribed: bool,
    ) -> std::result::Result<Box<dyn Cycler>, Unavailable> {
        let (label, role) = if subscribed {
            (SUBSCRIBED_LABEL, Role::Diagnostic)
        } else {
            (LABEL, Role::Raw)
        };
        Self::connect(url, name, subscribed)
            .await
            .map(|raw| Box::new(raw) as Box<dyn Cycler>)
            .map_err(|error| (label.to_owned(), role, error))
    }

    async fn connect(url: &str, name: &str, subscribed: bool) -> Result<Self> {
        let client = client(url)?;
        let pubsub = if subscribed {
            Some(client.get_async_pubsub().await?.split())
        } else {
            None
        };
        let conn = ConnectionManager::new(client).await?;
        Ok(Self {
            conn,
            script: Script::new(COMPARE_AND_DELETE),
            key: name.to_owned(),
            token: format!("{}:{name}", std::process::id()),
            pubsub,
            cycles: 0,
        })
    }
}

/// A `redis` client for the server and database of the distsync URL `url`.
///
/// # Errors
/// A URL distsync would reject.
pub fn client(url: &str) -> Result<redis::Client> {
    Ok(redis::Client::open(server_url(url)?)?)
}

/// The server and database of the distsync URL `url`, without distsync's own
/// parameters.
///
/// # Errors
/// A URL distsync would reject.
pub fn server_url(url: &str) -> Result<String> {
    Ok(distsync::redis::RedisConfig::parse(url)?
        .server()
        .to_owned())
}

#[async_trait]
impl Cycler for RawRedis {
    fn label(&self) -> String {
        if self.pubsub.is_some() {
            SUBSCRIBED_LABEL
        } else {
            LABEL
        }
        .into()
    }

    fn role(&self) -> Role {
        if self.pubsub.is_some() {
            Role::Diagnostic
        } else {
            Role::Raw
        }
    }

    async fn cycle(&mut self) -> Result<()> {
        self.cycles += 1;
        let channel = format!("{}:w:{}", self.key, self.cycles);
        if let Some((sink, _)) = &mut self.pubsub {
            sink.subscribe(&channel).await?;
        }
        let set: Option<String> = redis::cmd("SET")
            .arg(&self.key)
            .arg(&self.token)
            .arg("NX")
            .arg("PX")
            .arg(TTL_MS)
            .query_async(&mut self.conn)
            .await?;
        if set.is_none() {
            return Err(format!("{} is already set", self.key).into());
        }
        let deleted: i64 = self
            .script
            .key(&self.key)
            .arg(&self.token)
            .invoke_async(&mut self.conn)
            .await?;
        if deleted != 1 {
            return Err(format!("{} was not ours to delete", self.key).into());
        }
        if let Some((sink, _)) = &self.pubsub {
            let mut sink = sink.clone();
            tokio::spawn(async move {
                if let Err(error) = sink.unsubscribe(&channel).await {
                    tracing::debug!(%error, "unsubscribing failed");
                }
            });
        }
        Ok(())
    }
}
