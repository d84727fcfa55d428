//! Redis diagnostic: the raw cycle run with distsync's own grant and release scripts
//! (`backend-redis/lua/fair_acquire.lua` and `release.lua`, each with the `lib.lua`
//! definitions it uses, as the backend composes them: `distsync_redis::script_source`),
//! sent with the same keys and arguments the backend sends, on a plain
//! `ConnectionManager`.
//!
//! Its p50 over the raw pair's is what the scripts cost (server work and the larger
//! requests and replies); distsync's p50 over its p50 is what the library adds on the
//! client (guards, sessions, instrumentation, the backend's own call path).

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::{Script, Value};

use crate::contender::{Cycler, Role, Unavailable};
use crate::Result;

/// The text the backend sends for script `name`.
fn script(name: &str) -> Result<&'static str> {
    distsync::redis::script_source(name)
        .ok_or_else(|| format!("distsync-redis has no script {name:?}").into())
}

/// The row label.
pub const LABEL: &str =
    "raw + distsync's own grant and release scripts (fair_acquire.lua, release.lua), no library";

/// A session's TTL and the margin the grant script checks it against, as a session
/// with distsync's defaults passes them.
const TTL_MS: u64 = 60_000;
const MARGIN_MS: u64 = 2_000;

/// See the module docs.
pub struct RawRedisScripts {
    conn: ConnectionManager,
    acquire: Script,
    release: Script,
    /// The channel prefix (`ARGV[1]`).
    channel_prefix: String,
    /// The lock's key prefix `p`.
    prefix: String,
    session_key: String,
    registry: String,
    nonce: String,
    entries: u64,
}

impl std::fmt::Debug for RawRedisScripts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawRedisScripts")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RawRedisScripts {
    /// Connects to the server of the distsync URL `url` and opens a session of its
    /// own (a session key holding a nonce, as distsync's) under names from `name`.
    pub async fn start(url: &str, name: &str) -> std::result::Result<Box<dyn Cycler>, Unavailable> {
        Self::connect(url, name)
            .await
            .map(|raw| Box::new(raw) as Box<dyn Cycler>)
            .map_err(|error| (LABEL.to_owned(), Role::Diagnostic, error))
    }

    async fn connect(url: &str, name: &str) -> Result<Self> {
        let mut conn = ConnectionManager::new(super::redis::client(url)?).await?;
        let session_key = format!("{{{name}/session}}:session");
        let nonce = format!("{}-{name}", std::process::id());
        let () = redis::cmd("SET")
            .arg(&session_key)
            .arg(&nonce)
            .arg("PX")
            .arg(10 * TTL_MS)
            .query_async(&mut conn)
            .await?;
        Ok(Self {
            conn,
            acquire: Script::new(script("fair_acquire")?),
            release: Script::new(script("release")?),
            channel_prefix: format!("{name}/ch:"),
            prefix: format!("{{{name}}}:lock"),
            registry: format!("{{{name}/session}}:registry"),
            session_key,
            nonce,
            entries: 0,
        })
    }
}

#[async_trait]
impl Cycler for RawRedisScripts {
    fn label(&self) -> String {
        LABEL.into()
    }

    fn role(&self) -> Role {
        Role::Diagnostic
    }

    async fn cycle(&mut self) -> Result<()> {
        self.entries += 1;
        let id = self.entries.to_string();
        let entry = format!("{}:e:{id}", self.prefix);
        let granted: Value = self
            .acquire
            .key(&entry)
            .key(&self.session_key)
            .key(&self.registry)
            .arg(&self.channel_prefix)
            .arg(&self.prefix)
            .arg(&id)
            .arg("w")
            .arg(TTL_MS)
            .arg("wait")
            .arg(MARGIN_MS)
            .arg(&self.nonce)
            .invoke_async(&mut self.conn)
            .await?;
        match &granted {
            Value::Array(fields) if matches!(fields.first(), Some(Value::Int(1))) => {}
            other => return Err(format!("fair_acquire did not grant: {other:?}").into()),
        }
        let released: i64 = self
            .release
            .key(&entry)
            .key(&self.registry)
            .arg(&self.channel_prefix)
            .arg(format!("w{id}"))
            .invoke_async(&mut self.conn)
            .await?;
        if released != 1 {
            return Err(format!("release found {entry} gone").into());
        }
        Ok(())
    }

    async fn close(mut self: Box<Self>) -> Result<()> {
        let _: i64 = redis::cmd("DEL")
            .arg(&self.session_key)
            .arg(&self.registry)
            .query_async(&mut self.conn)
            .await?;
        Ok(())
    }
}
