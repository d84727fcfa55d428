//! Where a backend's connections go ([`Target`]: one server, the primary the Sentinels
//! name, or a Redis Cluster) and the multiplexed command connection over it
//! ([`Connection`]).

use std::sync::Arc;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

use crate::cluster::{ClusterLink, ClusterNodes};
use crate::sentinel::{error_reply, Current, Following, Sentinels};

/// What a grant script call carries in place of the server's replication id
/// (`replid_arg` in `amnesia.rs`) under Sentinel: the connection that sends the call
/// puts the id it read when it connected in its place (`Connection::Sentinel`). Not
/// hexadecimal, so a script that gets it as it is (a connection that knows no id) asks
/// `INFO replication` itself, as it does for an empty one.
pub(crate) const REPLID_OF_CONNECTION: &str = "<replid of the connection>";

/// Where a backend's connections go: one server, the primary the Sentinels name, or a
/// Redis Cluster.
#[derive(Clone)]
pub(crate) enum Target {
    /// One server (`redis://`, `rediss://`, or a client of the user's own).
    Server(Box<redis::Client>),
    /// The primary of a Sentinel-watched service, asked for at every connection.
    Sentinel(Arc<Sentinels>),
    /// The nodes of a Redis Cluster; [`Target::client`] gives them in turn.
    Cluster(Arc<ClusterNodes>),
}

impl Target {
    /// A client of the server to connect to now.
    pub(crate) async fn client(&self) -> RedisResult<redis::Client> {
        match self {
            Self::Server(client) => Ok((**client).clone()),
            Self::Sentinel(sentinels) => sentinels.primary().await,
            Self::Cluster(nodes) => Ok(nodes.next_node()),
        }
    }
}

/// The backend's multiplexed command connection.
#[derive(Clone)]
pub(crate) enum Connection {
    /// One server, through redis-rs's connection manager (reconnects to the same
    /// address).
    Server(ConnectionManager),
    /// The primary the Sentinels name, found again after a failure.
    Sentinel(Arc<Following>),
    /// The master of each key's slot, through redis-rs's cluster client (which follows
    /// `MOVED`/`ASK` redirections and reloads the slot map after a failover), replaced
    /// when that client has lost every node ([`ClusterLink`]).
    Cluster(Arc<ClusterLink>),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Server(manager) => manager.req_packed_command(cmd),
            Self::Cluster(link) => Box::pin(async move {
                let (generation, mut cluster) = link.connection();
                let reply = cluster.req_packed_command(cmd).await;
                if let Err(error) = &reply {
                    link.after(generation, error).await;
                }
                reply
            }),
            Self::Sentinel(following) => Box::pin(async move {
                let Current {
                    generation,
                    mut connection,
                    replid,
                } = following.connection().await?;
                let reply = match with_replid(cmd, replid.as_deref()) {
                    Some(cmd) => connection.req_packed_command(&cmd).await,
                    None => connection.req_packed_command(cmd).await,
                };
                if let Err(error) = &reply {
                    following.after(generation, error).await;
                }
                reply
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Server(manager) => manager.req_packed_commands(pipeline, offset, count),
            Self::Cluster(link) => Box::pin(async move {
                let (generation, mut cluster) = link.connection();
                let replies = cluster.req_packed_commands(pipeline, offset, count).await;
                if let Err(error) = &replies {
                    link.after(generation, error).await;
                }
                replies
            }),
            Self::Sentinel(following) => Box::pin(async move {
                let Current {
                    generation,
                    mut connection,
                    ..
                } = following.connection().await?;
                let replies = connection
                    .req_packed_commands(pipeline, offset, count)
                    .await;
                match &replies {
                    Err(error) => following.after(generation, error).await,
                    Ok(values) => {
                        if let Some(error) = error_reply(values) {
                            following.after(generation, &error).await;
                        }
                    }
                }
                replies
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Server(manager) => manager.get_db(),
            Self::Sentinel(following) => following.db,
            Self::Cluster(_) => 0,
        }
    }
}

/// `cmd` with the placeholder [`REPLID_OF_CONNECTION`] replaced by `replid`, the
/// replication id of the server the connection that sends it reached (see
/// `crate::amnesia`, "Failovers"), or `None` to send `cmd` as it is (it carries no
/// placeholder). A
/// connection that knows no id sends an empty one, and the script asks the server.
fn with_replid(cmd: &Cmd, replid: Option<&str>) -> Option<Cmd> {
    let placeholder = REPLID_OF_CONNECTION.as_bytes();
    if !cmd
        .args_iter()
        .any(|arg| matches!(arg, redis::Arg::Simple(arg) if arg == placeholder))
    {
        return None;
    }
    let mut filled = redis::Cmd::new();
    for arg in cmd.args_iter() {
        match arg {
            redis::Arg::Simple(arg) if arg == placeholder => {
                filled.arg(replid.unwrap_or_default());
            }
            redis::Arg::Simple(arg) => {
                filled.arg(arg);
            }
            redis::Arg::Cursor => {
                filled.cursor_arg(0);
            }
            // An argument of a kind this does not know: the call goes as it is, and
            // its script asks the server for the id.
            _ => return None,
        }
    }
    Some(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_placeholder_becomes_the_connections_replication_id() {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg("abc")
            .arg(1)
            .arg("k")
            .arg(REPLID_OF_CONNECTION)
            .arg("v");
        let filled = with_replid(&cmd, Some("8f3a")).expect("a placeholder");
        let args: Vec<Vec<u8>> = filled
            .args_iter()
            .filter_map(|arg| match arg {
                redis::Arg::Simple(arg) => Some(arg.to_vec()),
                _ => None,
            })
            .collect();
        let expected: Vec<&[u8]> = vec![b"EVALSHA", b"abc", b"1", b"k", b"8f3a", b"v"];
        assert_eq!(args, expected);
        let unknown = with_replid(&cmd, None).expect("a placeholder");
        assert!(unknown
            .args_iter()
            .any(|arg| matches!(arg, redis::Arg::Simple(arg) if arg.is_empty())));
        assert!(with_replid(&redis::cmd("PING"), Some("8f3a")).is_none());
    }
}
