//! Redis: `SET key token NX PX ttl`, then a compare-and-delete script.

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::Script;

use crate::contender::{started, Cycler, Role, Started};
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

/// The raw Redis cycle on its own connection (a `ConnectionManager`, as distsync's).
struct RawRedis {
    conn: ConnectionManager,
    script: Script,
    key: String,
    token: String,
}

/// Connects to the server of the distsync URL `url`.
pub async fn start(url: &str, name: &str) -> Started {
    let made = async {
        Ok(RawRedis {
            conn: ConnectionManager::new(client(url)?).await?,
            script: Script::new(COMPARE_AND_DELETE),
            key: name.to_owned(),
            token: format!("{}:{name}", std::process::id()),
        })
    };
    started(LABEL, Role::Raw, made.await)
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
    Ok(distsync::store::redis::RedisConfig::parse(url)?
        .server()
        .to_owned())
}

#[async_trait]
impl Cycler for RawRedis {
    async fn cycle(&mut self) -> Result<()> {
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
        Ok(())
    }
}
