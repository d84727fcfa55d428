//! Walking the keyspace with `SCAN`, for what reads or removes many keys at once
//! (migration exports, status reports, purging a name prefix): one cursor loop and one
//! glob escape for every caller. On one server (or the primary the Sentinels name) a
//! scan is one cursor loop; on a Redis Cluster each master holds only its own slots'
//! keys, so [`scan_matching`] runs a cursor loop on every master the cluster client
//! knows (`SCAN` routed to each by address) and joins what they return.

use std::collections::{BTreeMap, BTreeSet};

use distsync_core::Result;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};
use redis::Value;

use crate::error::{array, bytes, int, redis_error, string, unexpected};
use crate::store::Shared;
use crate::target::Connection;

/// Keys asked for per `SCAN` round trip.
const SCAN_COUNT: usize = 1000;

/// `text` with the glob characters of `SCAN MATCH` escaped.
pub(crate) fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// `SCAN <cursor> MATCH <pattern> COUNT <SCAN_COUNT>`.
fn scan_command(cursor: &str, pattern: &str) -> redis::Cmd {
    let mut command = redis::cmd("SCAN");
    command
        .arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(SCAN_COUNT);
    command
}

/// One `SCAN` reply: the next cursor, and the UTF-8 keys of the batch added to `keys`
/// (keys that are not UTF-8 are no distsync keys).
fn take_batch(reply: Value, keys: &mut Vec<String>) -> Result<String> {
    let mut parts = array("SCAN", reply.clone())?.into_iter();
    let (Some(next), Some(batch), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(unexpected("SCAN", &reply));
    };
    for key in array("SCAN", batch)? {
        if let Some(Ok(key)) = bytes("SCAN", key)?.map(String::from_utf8) {
            keys.push(key);
        }
    }
    string("SCAN", next)
}

/// The UTF-8 keys matching `pattern` (`SCAN MATCH`, cursor by cursor, never `KEYS`), on
/// every master of a Redis Cluster; a key may come more than once, in no fixed order.
/// A key that exists from the start of the call to its end is listed; one created or
/// removed meanwhile may or may not be (as `SCAN` itself promises).
///
/// Cancel safety: cancel-safe (it only reads).
pub(crate) async fn scan_matching(shared: &Shared, pattern: &str) -> Result<Vec<String>> {
    if let Connection::Cluster(link) = shared.conn() {
        return scan_cluster(link.connection().1, pattern).await;
    }
    let mut keys = Vec::new();
    let mut cursor = String::from("0");
    loop {
        let reply = shared.query(&scan_command(&cursor, pattern)).await?;
        cursor = take_batch(reply, &mut keys)?;
        if cursor == "0" {
            return Ok(keys);
        }
    }
}

/// How many times [`scan_cluster`] scans again when the cluster's masters changed
/// while it ran, before it gives up with a transient error.
const CLUSTER_SCAN_ATTEMPTS: usize = 3;

/// [`scan_matching`] on a Redis Cluster, checked to have read every master: the scan
/// ([`scan_masters`]) sits between two reads of the cluster's slot map
/// ([`ShardMap`], `CLUSTER SLOTS`), and counts only if the two are the same, cover
/// every slot, and name exactly the masters that answered (`CLUSTER MYID`, asked of
/// the same nodes the scan visits). redis-rs's `AllMasters` routing skips a master it
/// has no connection to, and its slot map may be older than the cluster's: a
/// failover or resharding during the scan, or a master the client does not know,
/// gives a new scan, and after [`CLUSTER_SCAN_ATTEMPTS`] a transient
/// [`distsync_core::Error::Connection`], never a list short of a master's keys. A
/// master that fails while the scan reads it is an error as well. A listing then
/// guarantees what [`scan_matching`] says, as `SCAN` does on one server.
async fn scan_cluster(cluster: ClusterConnection, pattern: &str) -> Result<Vec<String>> {
    let mut last = None;
    for _ in 0..CLUSTER_SCAN_ATTEMPTS {
        let before = ShardMap::read(cluster.clone()).await?;
        let masters = master_ids(cluster.clone()).await?;
        let (keys, scanned) = scan_masters(cluster.clone(), pattern).await?;
        let after = ShardMap::read(cluster.clone()).await?;
        match before.checks(&after, &masters, &scanned) {
            Ok(()) => return Ok(keys),
            Err(why) => {
                tracing::debug!(
                    why,
                    "the cluster's masters changed during a scan; scanning again"
                );
                last = Some(why);
            }
        }
    }
    Err(distsync_core::Error::connection(
        crate::capabilities::BACKEND,
        format!(
            "a scan of every Redis Cluster master did not see one stable set of masters \
             in {CLUSTER_SCAN_ATTEMPTS} attempts: {}",
            last.unwrap_or_default()
        ),
    ))
}

/// The slot ranges of a Redis Cluster and the id of each range's master, sorted, as
/// one node's `CLUSTER SLOTS` gives them.
#[derive(Debug, PartialEq, Eq)]
struct ShardMap(Vec<(i64, i64, String)>);

/// Slots of a Redis Cluster.
const CLUSTER_SLOTS: i64 = 16384;

impl ShardMap {
    /// `CLUSTER SLOTS` of any one node.
    async fn read(mut cluster: ClusterConnection) -> Result<Self> {
        let reply = cluster
            .route_command(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await
            .map_err(redis_error)?;
        Self::parse(reply)
    }

    /// The map from a `CLUSTER SLOTS` reply: per range its first and last slot, then
    /// its master (`[host, port, id, ...]`) and replicas.
    fn parse(reply: Value) -> Result<Self> {
        const WHAT: &str = "CLUSTER SLOTS";
        let mut ranges = Vec::new();
        for range in array(WHAT, reply)? {
            let mut parts = array(WHAT, range)?.into_iter();
            let (Some(first), Some(last), Some(master)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(unexpected(WHAT, &Value::Nil));
            };
            let id = array(WHAT, master)?
                .into_iter()
                .nth(2)
                .ok_or_else(|| unexpected(WHAT, &Value::Nil))?;
            ranges.push((int(WHAT, &first)?, int(WHAT, &last)?, string(WHAT, id)?));
        }
        ranges.sort();
        Ok(Self(ranges))
    }

    /// Why a scan between `self` and `after`, which found the masters `masters`
    /// (address to id) and scanned the nodes `scanned`, may have missed a master's
    /// keys; `Ok` if it cannot have.
    fn checks(
        &self,
        after: &ShardMap,
        masters: &BTreeMap<String, String>,
        scanned: &BTreeSet<String>,
    ) -> std::result::Result<(), String> {
        if self != after {
            return Err("the slot map changed".to_owned());
        }
        let served: i64 = self.0.iter().map(|(first, last, _)| last - first + 1).sum();
        if served != CLUSTER_SLOTS {
            return Err(format!("{served} of {CLUSTER_SLOTS} slots have a master"));
        }
        let owners: BTreeSet<&String> = self.0.iter().map(|(_, _, id)| id).collect();
        let answered: BTreeSet<&String> = masters.values().collect();
        if owners != answered {
            return Err(format!(
                "the masters of the slot map ({}) are not the nodes asked ({})",
                owners.len(),
                answered.len()
            ));
        }
        if masters.keys().collect::<BTreeSet<_>>() != scanned.iter().collect() {
            return Err("the nodes scanned are not the nodes asked".to_owned());
        }
        Ok(())
    }
}

/// `CLUSTER MYID` of every node redis-rs takes for a master, by address.
async fn master_ids(mut cluster: ClusterConnection) -> Result<BTreeMap<String, String>> {
    const WHAT: &str = "CLUSTER MYID on every master";
    let reply = cluster
        .route_command(
            redis::cmd("CLUSTER").arg("MYID").clone(),
            RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None)),
        )
        .await
        .map_err(redis_error)?;
    let Value::Map(masters) = reply else {
        return Err(unexpected(WHAT, &reply));
    };
    let mut ids = BTreeMap::new();
    for (address, id) in masters {
        if let Value::ServerError(error) = id {
            return Err(redis_error(error.into()));
        }
        ids.insert(string(WHAT, address)?, string(WHAT, id)?);
    }
    Ok(ids)
}

/// The keys matching `pattern` on every node redis-rs takes for a master, and the
/// addresses of the nodes read: the first `SCAN` goes to every master at once
/// (redis-rs's `AllMasters` routing, whose replies come keyed by the node's address),
/// then each master's cursor is followed on that master alone (routing by address).
async fn scan_masters(
    mut cluster: ClusterConnection,
    pattern: &str,
) -> Result<(Vec<String>, BTreeSet<String>)> {
    let first = cluster
        .route_command(
            scan_command("0", pattern),
            RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None)),
        )
        .await
        .map_err(redis_error)?;
    let Value::Map(masters) = first else {
        return Err(unexpected("SCAN on every master", &first));
    };
    let mut keys = Vec::new();
    let mut scanned = BTreeSet::new();
    for (address, reply) in masters {
        let address = string("SCAN on every master", address)?;
        if let Value::ServerError(error) = reply {
            return Err(redis_error(error.into()));
        }
        let mut cursor = take_batch(reply, &mut keys)?;
        scanned.insert(address.clone());
        if cursor == "0" {
            continue;
        }
        let (host, port) = split_address(&address).ok_or_else(|| {
            unexpected(
                "SCAN on every master",
                &Value::SimpleString(address.clone()),
            )
        })?;
        while cursor != "0" {
            let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                host: host.clone(),
                port,
            });
            let reply = cluster
                .route_command(scan_command(&cursor, pattern), route)
                .await
                .map_err(redis_error)?;
            cursor = take_batch(reply, &mut keys)?;
        }
    }
    Ok((keys, scanned))
}

/// `host` and `port` of a node address as redis-rs writes it (`host:port`; the host
/// may itself hold colons, an IPv6 address).
fn split_address(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_owned(), port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(glob_escape("conf/run-1"), "conf/run-1");
        assert_eq!(glob_escape("app:"), "app:");
    }

    #[test]
    fn node_addresses_split_into_host_and_port() {
        assert_eq!(
            split_address("127.0.0.1:26390"),
            Some(("127.0.0.1".to_owned(), 26390))
        );
        assert_eq!(split_address("::1:7000"), Some(("::1".to_owned(), 7000)));
        assert_eq!(split_address("[::1]:7000"), Some(("::1".to_owned(), 7000)));
        assert_eq!(split_address("no-port"), None);
        assert_eq!(split_address("host:99999"), None);
    }

    fn range(first: i64, last: i64, id: &str) -> Value {
        Value::Array(vec![
            Value::Int(first),
            Value::Int(last),
            Value::Array(vec![
                Value::BulkString(b"127.0.0.1".to_vec()),
                Value::Int(7000),
                Value::BulkString(id.as_bytes().to_vec()),
            ]),
        ])
    }

    #[test]
    fn a_scan_counts_only_if_it_read_every_master_of_one_stable_slot_map() {
        let map = |ranges: Vec<Value>| ShardMap::parse(Value::Array(ranges)).unwrap();
        let three = || {
            map(vec![
                range(10923, 16383, "c"),
                range(0, 5460, "a"),
                range(5461, 10922, "b"),
            ])
        };
        assert_eq!(three().0[0], (0, 5460, "a".to_owned()));
        let masters: BTreeMap<String, String> = [("n1:1", "a"), ("n2:2", "b"), ("n3:3", "c")]
            .map(|(address, id)| (address.to_owned(), id.to_owned()))
            .into();
        let scanned: BTreeSet<String> = masters.keys().cloned().collect();
        assert_eq!(three().checks(&three(), &masters, &scanned), Ok(()));
        // A failover between the two reads.
        let failed_over = map(vec![
            range(0, 5460, "a2"),
            range(5461, 10922, "b"),
            range(10923, 16383, "c"),
        ]);
        assert!(three().checks(&failed_over, &masters, &scanned).is_err());
        // A master the client skipped, or one it took for a master that is none.
        let mut two = masters.clone();
        two.remove("n3:3");
        assert!(three().checks(&three(), &two, &scanned).is_err());
        let two_scanned: BTreeSet<String> = two.keys().cloned().collect();
        assert!(three().checks(&three(), &masters, &two_scanned).is_err());
        let mut stale = masters.clone();
        stale.insert("n3:3".to_owned(), "c-replica".to_owned());
        assert!(three().checks(&three(), &stale, &scanned).is_err());
        // Slots with no master.
        let partial = || map(vec![range(0, 5460, "a"), range(5461, 10922, "b")]);
        assert!(partial().checks(&partial(), &two, &two_scanned).is_err());
        // Replies of another shape are typed errors.
        assert!(ShardMap::parse(Value::Int(1)).is_err());
        assert!(ShardMap::parse(Value::Array(vec![Value::Array(vec![Value::Int(0)])])).is_err());
    }

    #[test]
    fn scan_replies_give_the_cursor_and_the_utf8_keys() {
        let mut keys = Vec::new();
        let reply = Value::Array(vec![
            Value::BulkString(b"17".to_vec()),
            Value::Array(vec![
                Value::BulkString(b"{a}:lock".to_vec()),
                Value::BulkString(vec![0xff]),
            ]),
        ]);
        assert_eq!(take_batch(reply, &mut keys).unwrap(), "17");
        assert_eq!(keys, ["{a}:lock"]);
        assert!(take_batch(Value::Int(1), &mut keys).is_err());
    }
}
