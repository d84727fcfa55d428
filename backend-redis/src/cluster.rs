//! Redis Cluster (`redis+cluster://`): the nodes a URL names, the cluster connection,
//! and how a session's holds are grouped by hash slot.
//!
//! **What runs where.** Every key of one primitive shares one hash tag
//! (`{<namespace><name>}`, see [`crate::keys`]), hence one slot, and every script call
//! declares a key of the primitive it works on (its first key), so redis-rs's cluster
//! client sends it to the master serving that slot, following `MOVED` and `ASK`. A
//! script touches only keys of its primitive's slot: the keys it builds from the
//! declared prefix (an entry `p:e:<id>`, the line `p:q`, ...) share the declared key's
//! hash tag, which Redis accepts from a script in its declared slot. Nothing a script
//! does spans two slots:
//!
//! * a **session** key (`{<ns>session:<id>}`) lives in its own slot, away from what the
//!   session holds. Under Cluster the scripts that add an entry through a session get,
//!   instead of the session key and its registry, the client's own bound on what is
//!   left of the session (its client-side deadline plus the margin, counted from the
//!   send time of its last acknowledged renewal: never more than the session key's
//!   `PTTL`), which they refuse below the margin; they give the entry one whole TTL
//!   from their run, since a renewal sent while the take is in flight counts from the
//!   take's send time ([`crate::session::HeldKeys`]); and the client lists what the
//!   session holds for its renewals, and
//!   lists it in the session's registry in the store too, with a call of its own in
//!   the registry's slot sent beside the one that takes the key
//!   ([`crate::session::Registry`]);
//! * a **renewal** is one script call for the session key and one per slot holding
//!   entries of the session ([`by_slot`]), all sent at once (the cluster client
//!   pipelines them per node), so it takes one round trip however many primitives the
//!   session holds; the session is renewed only if every call renewed everything;
//! * a **revoke**, by the owner or by id from any client, reads the registry, releases
//!   each held entry (one call per entry, sent at once) and then deletes the session
//!   key and the registry;
//! * a **break**, a **release request** and a **hand-over** read the one name's holder
//!   or candidates with one call in the name's slot ([`crate::name_status`]), then
//!   act elsewhere: a revoke of the holder's session (above), a raise of a request
//!   counter, a write of the hand-over records (counters, each in its own slot);
//! * **wake-ups** are published with `PUBLISH`, which a cluster delivers to the
//!   subscribers of every node: the backend subscribes on one node the URL names
//!   ([`ClusterNodes::next_node`]), and on the next one when that node fails (every
//!   waiter then re-reads, as after any reconnection of [`crate::notify`]).
//!
//! What a cluster cannot do atomically is refused rather than done unsafely:
//! `LockGuard::put_if_held` (a lock's slot and the STM keys' slot differ) is
//! [`distsync_core::Error::Unsupported`] under Cluster. The scans of `distsync status`,
//! migration exports and group member lists run on every master ([`crate::scan`]) and
//! read one slot per script call ([`slot_groups`]).
//!
//! **The connection is replaced when it has lost every node.** redis-rs's cluster
//! client repairs a lost node connection in the background, but a slot-map refresh
//! that reaches no node at all (every connection reset at that instant) leaves it
//! with no connection, and it then refreshes from that empty list for good,
//! answering every command "no connections found" even once the nodes answer again.
//! [`ClusterLink`] keeps the connection in use and, when a command gets that answer,
//! opens a new one from the nodes the URL names; commands go on over the old one
//! until the new one is up. Without it, a partition of a few milliseconds could
//! strand a process for good: its queue put-backs, releases and renewals all
//! failing.
//!
//! A key taken at the instant of a revoke by another client may be missing from the
//! registry read (its listing still on its way): its owner learns of the revoke at
//! once (`<session key>:lost`) and releases what its client lists, and should the
//! owner be gone, the key expires with its TTL.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use distsync_core::raw::locked;
use distsync_core::{Error, Result};
use redis::cluster::{ClusterClient, NodeAddress};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{ConnectionAddr, ErrorKind, IntoConnectionInfo, RedisError, RedisResult};

use crate::config::RedisConfig;
use crate::options::RedisOptions;

/// The nodes a `redis+cluster://` URL names.
pub(crate) struct ClusterNodes {
    /// A client of each node, in URL order (pub/sub and the connect-time checks).
    nodes: Vec<redis::Client>,
    /// The node [`ClusterNodes::next_node`] gives next.
    next: AtomicUsize,
    client: ClusterClient,
}

impl ClusterNodes {
    /// The nodes a `redis+cluster://` URL names; `None` for another URL.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] if redis-rs refuses the addresses.
    pub(crate) fn of_url(url: &RedisConfig, options: &RedisOptions) -> Result<Option<Self>> {
        let Some(addresses) = url.cluster_nodes() else {
            return Ok(None);
        };
        let invalid = |error: RedisError| Error::InvalidUrl {
            url: url.server().to_owned(),
            reason: error.to_string(),
        };
        // The nodes' login, from the URL's redis:// form.
        let login = url.connection().into_connection_info().map_err(invalid)?;
        let infos: Vec<redis::ConnectionInfo> = addresses
            .iter()
            .map(|(host, port)| {
                login
                    .clone()
                    .set_addr(ConnectionAddr::Tcp(host.clone(), *port))
                    .set_tcp_settings(crate::options::tcp_settings())
            })
            .collect();
        let nodes = infos
            .iter()
            .map(|info| redis::Client::open(info.clone()).map_err(invalid))
            .collect::<Result<Vec<_>>>()?;
        let nat_map: HashMap<NodeAddress, NodeAddress> = url
            .nat_map()
            .iter()
            .map(|((host, port), (to_host, to_port))| {
                (
                    NodeAddress::new(host.as_str(), *port),
                    NodeAddress::new(to_host.as_str(), *to_port),
                )
            })
            .collect();
        let mut builder = ClusterClient::builder(infos)
            .tcp_settings(crate::options::tcp_settings())
            .connection_timeout(options.connect_timeout)
            .response_timeout(options.request_timeout);
        if !nat_map.is_empty() {
            builder = builder.node_address_map(nat_map);
        }
        let client = builder.build().map_err(invalid)?;
        Ok(Some(Self {
            nodes,
            next: AtomicUsize::new(0),
            client,
        }))
    }

    /// A client of one node, each in turn: the pub/sub connection takes the next
    /// node each time it reconnects.
    pub(crate) fn next_node(&self) -> redis::Client {
        let at = self.next.fetch_add(1, Ordering::Relaxed) % self.nodes.len();
        self.nodes[at].clone()
    }

    /// Every node the URL names.
    pub(crate) fn nodes(&self) -> &[redis::Client] {
        &self.nodes
    }

    /// A cluster connection (it discovers the other nodes and the slot map).
    pub(crate) async fn connect(&self) -> RedisResult<ClusterConnection> {
        self.client.get_async_connection().await
    }
}

/// The cluster connection in use, and its replacement when redis-rs's client has lost
/// every node (see the module docs).
pub(crate) struct ClusterLink {
    nodes: Arc<ClusterNodes>,
    /// The connection in use and its generation, counted from 0.
    current: Mutex<(u64, ClusterConnection)>,
    /// Held while a new connection opens: one at a time, the others go on over the
    /// old one.
    replacing: tokio::sync::Mutex<()>,
}

impl ClusterLink {
    /// A link over a first connection to `nodes`.
    pub(crate) async fn connect(nodes: Arc<ClusterNodes>) -> RedisResult<Self> {
        let first = nodes.connect().await?;
        Ok(Self {
            nodes,
            current: Mutex::new((0, first)),
            replacing: tokio::sync::Mutex::new(()),
        })
    }

    /// The connection in use and its generation (for [`ClusterLink::after`]).
    pub(crate) fn connection(&self) -> (u64, ClusterConnection) {
        locked(&self.current).clone()
    }

    /// Called with the error of a command sent over the connection of `generation`:
    /// if the client answered that it has no connection, opens a new one and puts it
    /// in use, unless another command already did (or is doing it now). A new
    /// connection that fails to open leaves the old one in use, for the next failure
    /// to try again.
    ///
    /// Cancel safety: cancel-safe; a replacement dropped part-way changes nothing.
    pub(crate) async fn after(&self, generation: u64, error: &RedisError) {
        if error.kind() != ErrorKind::ClusterConnectionNotFound {
            return;
        }
        let Ok(_replacing) = self.replacing.try_lock() else {
            return;
        };
        if self.connection().0 != generation {
            return;
        }
        match self.nodes.connect().await {
            Ok(fresh) => {
                *locked(&self.current) = (generation + 1, fresh);
                tracing::info!(
                    generation = generation + 1,
                    "the cluster client had lost every node: a new cluster connection is in use"
                );
            }
            Err(error) => tracing::debug!(
                %error,
                "the cluster client has lost every node, and a new connection did not open yet"
            ),
        }
    }
}

/// `(key, value)` pairs grouped by the hash slot of the key.
pub(crate) fn by_slot<'a>(
    pairs: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Vec<Vec<(&'a String, &'a String)>> {
    slot_groups(pairs, true, |(key, _)| key.as_str())
}

/// `items` in the groups one command or script call may name: on a Redis Cluster
/// (`cluster`) one group per hash slot of `key(item)`, each in the order of `items`,
/// else all of them in one.
pub(crate) fn slot_groups<T>(
    items: impl IntoIterator<Item = T>,
    cluster: bool,
    key: impl Fn(&T) -> &str,
) -> Vec<Vec<T>> {
    if !cluster {
        let all: Vec<T> = items.into_iter().collect();
        return if all.is_empty() {
            Vec::new()
        } else {
            vec![all]
        };
    }
    let mut groups: HashMap<Slot, Vec<T>> = HashMap::new();
    for item in items {
        groups
            .entry(Slot::for_key(key(&item)))
            .or_default()
            .push(item);
    }
    groups.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_one_primitive_share_a_slot_and_others_spread() {
        let keys: Vec<String> = (0..64)
            .flat_map(|n| {
                [
                    format!("{{ns:name{n}}}:lock:e:1.0"),
                    format!("{{ns:name{n}}}:lock:e:1.1"),
                ]
            })
            .collect();
        let values: Vec<String> = keys.iter().map(|_| "w1".to_owned()).collect();
        let groups = by_slot(keys.iter().zip(&values));
        assert!(groups.len() > 32, "{} slots for 64 names", groups.len());
        for group in &groups {
            let tags: std::collections::HashSet<&str> = group
                .iter()
                .map(|(key, _)| key.split('}').next().unwrap())
                .collect();
            let slots: std::collections::HashSet<Slot> =
                group.iter().map(|(key, _)| Slot::for_key(key)).collect();
            assert_eq!(slots.len(), 1);
            assert!(!tags.is_empty());
        }
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), 128);
    }
}
