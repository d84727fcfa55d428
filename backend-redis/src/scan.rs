//! Walking the keyspace with `SCAN`, for what reads or removes many keys at once
//! (migration exports, status reports, purging a name prefix): one cursor loop and one
//! glob escape for every caller. On one server (or the primary the Sentinels name) a
//! scan is one cursor loop; on a Redis Cluster each master holds only its own slots'
//! keys, so [`scan_matching`] runs a cursor loop on every master the cluster client
//! knows (`SCAN` routed to each by address) and joins what they return.

use distsync_core::Result;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};
use redis::Value;

use crate::error::{array, bytes, redis_error, string, unexpected};
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
///
/// Cancel safety: cancel-safe (it only reads).
pub(crate) async fn scan_matching(shared: &Shared, pattern: &str) -> Result<Vec<String>> {
    if let Connection::Cluster(cluster) = shared.conn() {
        return scan_cluster(cluster, pattern).await;
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

/// [`scan_matching`] on a Redis Cluster: the first `SCAN` goes to every master at once
/// (redis-rs's `AllMasters` routing, whose replies come keyed by the node's address),
/// then each master's cursor is followed on that master alone (routing by address).
/// A key moved between two masters while the scan runs may be missed or seen twice,
/// as `SCAN` allows on one server for keys changed during it.
async fn scan_cluster(mut cluster: ClusterConnection, pattern: &str) -> Result<Vec<String>> {
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
    for (address, reply) in masters {
        let address = string("SCAN on every master", address)?;
        if let Value::ServerError(error) = reply {
            return Err(redis_error(error.into()));
        }
        let mut cursor = take_batch(reply, &mut keys)?;
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
    Ok(keys)
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
