//! Where a backend's connections go ([`Target`]: one server, the primary the Sentinels
//! name, or a Redis Cluster) and the multiplexed command connection over it
//! ([`Connection`]).

use std::sync::Arc;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

use crate::cluster::ClusterNodes;
use crate::sentinel::{error_reply, Following, Sentinels};

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
    /// `MOVED`/`ASK` redirections and reloads the slot map after a failover).
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Server(manager) => manager.req_packed_command(cmd),
            Self::Cluster(cluster) => cluster.req_packed_command(cmd),
            Self::Sentinel(following) => Box::pin(async move {
                let (generation, mut connection) = following.connection().await?;
                let reply = connection.req_packed_command(cmd).await;
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
            Self::Cluster(cluster) => cluster.req_packed_commands(pipeline, offset, count),
            Self::Sentinel(following) => Box::pin(async move {
                let (generation, mut connection) = following.connection().await?;
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
