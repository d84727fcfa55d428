//! Reading the durable state under the root for migration ([`distsync_core::migrate`]).
//!
//! - **Queues**: every node of `<root>/queue` with item children (`queue-...`), its
//!   items in Curator's order (the children sorted as strings), each node's items in
//!   the order its data lists them (one per node, several for Curator's `putMulti`).
//!   An item's priority is the one its node's name carries (`queue-1<8 hex digits>`);
//!   a plain `DistributedQueue` item (`queue-<sequence>`) is priority 0, and sorts
//!   before the priority items, as for Curator.
//! - **Items of dequeues that never finished**: the item a dequeue's receipt
//!   (`<root>/queue_meta/<name>/%taken/<call id>`, see queue.rs) holds is exported as
//!   an item of its queue, at the place of the node name the receipt records (its
//!   priority, and among that priority's items where its name sorts: normally the
//!   front, since it was the head when taken), and logged at info. A migration runs on
//!   a quiesced source, so such a receipt is of a dequeuer that died after its `multi`:
//!   the source itself puts the item back under that name once the receipt is older
//!   than `stale_claim=` and delivers it again, so dropping it would lose an item on
//!   migration. Each item is listed once: the dequeue's `multi` deletes the item node
//!   as it creates the receipt, and the put-back recreates the node as it deletes the
//!   receipt, so a node name is in one of the two (should both be read, the node is
//!   the one listed). A receipt of another shape, which the sweep leaves as it is, is
//!   named in a warning and not copied. As for every other item, a live source must
//!   not be migrated: there a receipt may be of a dequeue about to hand its item out.
//! - **STM keys**: every node of `<root>/stm` that holds a value (see stm.rs).
//! - **Barriers**: every node of `<root>/barrier` without children, as the status
//!   report reads them.
//! - **Counters**: every node of `<root>/counter` that holds a value (a node with no
//!   data is the ancestor of a longer name, see counter.rs).
//! - **Latches**: every node of `<root>/latch` that holds `<initial> <remaining>`.
//! - **Live holds**: every ephemeral node under the session-bound kinds (lock,
//!   semaphore, read-write lock, election, double barrier, and held queue items), by
//!   path. They are not copied: their owners re-acquire them on the new store.
//!
//! ZooKeeper has no read of many subtrees at one
//! zxid: the walk reads each node at its own moment, so a migration runs with the
//! source's writers stopped (as `distsync migrate` documents).

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use distsync_core::migrate::{LatchState, QueueItem, Snapshot};
use distsync_core::{Error, Name, Result};
use zookeeper_client as zk;

use crate::error::{found, map};
use crate::keys::{self, Kind};
use crate::queue::{framing, nodes};
use crate::status::walk;
use crate::store::Shared;
use crate::BACKEND;

/// The items of dequeues' receipts: by queue (the path of its item nodes), by item
/// node name, the receipt's path and the item node's data.
type Receipts = BTreeMap<String, BTreeMap<String, (String, Vec<u8>)>>;

/// The kinds whose ephemeral nodes are live holds.
const HELD: &[Kind] = &[
    Kind::Lock,
    Kind::Semaphore,
    Kind::RwLock,
    Kind::Election,
    Kind::DoubleBarrier,
    Kind::QueueLock,
];

/// The name a node under `top` encodes, if the node is under it.
fn name_of(top: &str, path: &str) -> Result<Option<Name>> {
    let Some(relative) = path.strip_prefix(&format!("{top}/")) else {
        return Ok(None);
    };
    Name::new(keys::decode(relative))
        .map(Some)
        .map_err(|error| Error::backend(BACKEND, format!("{path}: not a distsync name: {error}")))
}

/// The priority an item node's name carries.
///
/// # Errors
/// [`Error::Backend`] for a name of neither form, or a priority outside `0..=65535`
/// (Curator's negative priorities), which distsync's queues cannot hold.
fn priority(path: &str, child: &str) -> Result<u16> {
    let invalid = |why: &str| Error::backend(BACKEND, format!("{path}/{child}: {why}"));
    let rest = child
        .strip_prefix(nodes::ITEM_NAME)
        .ok_or_else(|| invalid("not a queue item"))?;
    let base = rest.split_once('.').map_or(rest, |(base, _)| base);
    match base.len() {
        10 => Ok(0),
        19 if base.starts_with('1') => {
            let priority = u32::from_str_radix(&base[1..9], 16)
                .map_err(|_| invalid("its priority is not hexadecimal"))?;
            u16::try_from(priority).map_err(|_| invalid("its priority is above 65535"))
        }
        _ => Err(invalid("a priority distsync's queues cannot hold")),
    }
}

/// The items of the dequeues' receipts under `root`, by the path of their queue's item
/// nodes (under `top`), each by the item node name the receipt records, with the
/// receipt's path and the node's data: what the sweep of stale receipts puts back (see
/// queue.rs).
async fn receipts(client: &zk::Client, root: &str, top: &str) -> Result<Receipts> {
    let meta = keys::kind_root(root, Kind::QueueMeta);
    let mut found_receipts = Receipts::new();
    let mut named = Vec::new();
    for (path, children) in walk(client, &meta).await? {
        // `%` and lowercase letters never appear in an escaped name (see
        // `Paths::of_items`): this is a queue's receipts' node.
        let Some(escaped) = path
            .strip_prefix(&meta)
            .and_then(|rest| rest.strip_suffix("/%taken"))
        else {
            continue;
        };
        let items = format!("{top}{escaped}");
        for child in children {
            let receipt = format!("{path}/{child}");
            // `None`: put back or deleted since the listing.
            let Some((data, _)) = found(client.get_data(&receipt).await).map_err(map)? else {
                continue;
            };
            match nodes::parse_receipt(&data) {
                Some((item, data)) => {
                    found_receipts
                        .entry(items.clone())
                        .or_default()
                        .insert(item.to_owned(), (receipt, data.to_vec()));
                }
                None => named.push(receipt),
            }
        }
    }
    if !named.is_empty() {
        tracing::warn!(
            count = named.len(),
            receipts = ?named,
            "dequeue receipts of another shape are not exported: no consumer puts them \
             back (see the zookeeper backend's export docs)"
        );
    }
    Ok(found_receipts)
}

/// Reads the snapshot.
pub(crate) async fn export(shared: &Shared) -> Result<Snapshot> {
    let client = shared.connect(crate::MIN_SESSION_TTL * 4).await?;
    let root = shared.config.root();
    let mut snapshot = Snapshot::default();

    let top = keys::kind_root(root, Kind::Queue);
    let receipts = receipts(&client, root, &top).await?;
    // Every queue node with items, and every queue with a receipt: the item nodes and
    // the receipts' items, by node name (Curator's order), each name once.
    let mut queues: BTreeMap<String, BTreeMap<String, Option<Vec<u8>>>> = BTreeMap::new();
    for (path, children) in walk(&client, &top).await? {
        let items = nodes::items(children);
        if !items.is_empty() {
            let queue = queues.entry(path).or_default();
            queue.extend(items.into_iter().map(|child| (child, None)));
        }
    }
    let mut exported = Vec::new();
    for (path, taken) in receipts {
        let queue = queues.entry(path).or_default();
        for (child, (receipt, data)) in taken {
            if let Entry::Vacant(entry) = queue.entry(child) {
                entry.insert(Some(data));
                exported.push(receipt);
            }
        }
    }
    for (path, children) in queues {
        let Some(name) = name_of(&top, &path)? else {
            continue;
        };
        let mut queued = Vec::new();
        for (child, receipt) in children {
            let priority = priority(&path, &child)?;
            let data = match receipt {
                Some(data) => data,
                None => {
                    let read = found(client.get_data(&format!("{path}/{child}")).await);
                    // `None`: taken since the listing.
                    let Some((data, _)) = read.map_err(map)? else {
                        continue;
                    };
                    data
                }
            };
            let decoded = framing::decode(&data).map_err(|malformed| {
                Error::backend(BACKEND, format!("{path}/{child}: {}", malformed.0))
            })?;
            queued.extend(decoded.into_iter().map(|item| QueueItem { priority, item }));
        }
        if !queued.is_empty() {
            snapshot.queues.insert(name, queued);
        }
    }
    if !exported.is_empty() {
        tracing::info!(
            count = exported.len(),
            receipts = ?exported,
            "queue items of dequeues that never finished are exported as items at their \
             places: the source puts them back once their receipts are stale (see the \
             zookeeper backend's export docs)"
        );
    }

    let top = keys::kind_root(root, Kind::Barrier);
    for (path, children) in walk(&client, &top).await? {
        if children.is_empty() {
            if let Some(name) = name_of(&top, &path)? {
                snapshot.barriers.push(name);
            }
        }
    }

    for kind in [Kind::Stm, Kind::Counter, Kind::Latch] {
        let top = keys::kind_root(root, kind);
        for (path, _) in walk(&client, &top).await? {
            let Some(name) = name_of(&top, &path)? else {
                continue;
            };
            let read = found(client.get_data(&path).await).map_err(map)?;
            // Gone since the listing, or no data: the ancestor of a longer name.
            let Some((data, _)) = read.filter(|(data, _)| !data.is_empty()) else {
                continue;
            };
            let text = std::str::from_utf8(&data).ok();
            let malformed =
                |what: &str| Error::backend(BACKEND, format!("{path} does not hold {what}"));
            if kind == Kind::Counter {
                let value = text
                    .and_then(|text| text.parse().ok())
                    .ok_or_else(|| malformed("an i64"))?;
                snapshot.counters.insert(name, value);
            } else if kind == Kind::Latch {
                let (initial, remaining) = text
                    .and_then(crate::counter::parse_latch)
                    .filter(|(initial, remaining)| remaining <= initial)
                    .ok_or_else(|| malformed("a latch"))?;
                snapshot
                    .latches
                    .insert(name, LatchState { initial, remaining });
            } else if let Some(value) = crate::stm::decode(&path, data)? {
                snapshot.stm.insert(name, value);
            }
        }
    }

    for kind in HELD {
        for (path, children) in walk(&client, &keys::kind_root(root, *kind)).await? {
            if !children.is_empty() {
                continue;
            }
            match client.check_stat(&path).await.map_err(map)? {
                Some(stat) if stat.ephemeral_owner != 0 => snapshot.active_holds.push(path),
                _ => {}
            }
        }
    }
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_come_from_item_names() {
        let queue = "/distsync/queue/jobs";
        assert_eq!(priority(queue, "queue-0000000007").unwrap(), 0);
        assert_eq!(
            priority(queue, &format!("{}0000000003", nodes::item_prefix(9))).unwrap(),
            9
        );
        let split = format!("{}0000000003.0000000001", nodes::item_prefix(65535));
        assert_eq!(priority(queue, &split).unwrap(), 65535);
        // Curator's negative priorities and other names are typed errors.
        assert!(priority(queue, "queue-0FFFFFFFF0000000003").is_err());
        assert!(priority(queue, "queue-100010000").is_err());
        assert!(priority(queue, "other-0000000007").is_err());
    }
}
