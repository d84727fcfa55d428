//! A queue's nodes (see the layout in the queue's module docs): their paths, their
//! order, and what a dequeue's receipt holds.

use distsync_core::{Name, Result};
use zookeeper_client as zk;

use crate::direct::{bounded, persistent, request};
use crate::error::map;
use crate::keys::{self, Kind};
use crate::store::Shared;

/// What every item node's name starts with (Curator's `QUEUE_ITEM_NAME`).
pub(crate) const ITEM_NAME: &str = "queue-";

/// The paths of one queue.
#[derive(Clone, Debug)]
pub(crate) struct Paths {
    /// Curator's `queuePath`: the item nodes.
    pub(crate) items: String,
    /// Curator's `lockPath`: one ephemeral node per held item, named as the item.
    pub(crate) locks: String,
    /// Each item's delivery count, named as the item.
    pub(crate) deliveries: String,
    /// The idempotency keys of recent enqueues.
    pub(crate) keys: String,
    /// The receipts of dequeues in flight, named by call id, each holding its item's
    /// node name and data ([`receipt`]).
    pub(crate) taken: String,
    /// A node written to read the server's clock.
    pub(crate) clock: String,
}

impl Paths {
    pub(crate) fn new(root: &str, name: &Name) -> Self {
        Self::of_items(root, &keys::path(root, Kind::Queue, name))
    }

    /// The paths of the queue whose items are the children of `items` (a path
    /// under `root`'s queues).
    pub(crate) fn of_items(root: &str, items: &str) -> Self {
        let escaped = items
            .strip_prefix(&keys::kind_root(root, Kind::Queue))
            .unwrap_or(items);
        // `%` followed by lowercase letters never appears in an escaped name (escapes
        // are `%` and two uppercase hex digits), so these never meet a longer name's
        // node.
        let meta = format!("{}{escaped}", keys::kind_root(root, Kind::QueueMeta));
        Self {
            items: items.to_owned(),
            locks: format!("{}{escaped}", keys::kind_root(root, Kind::QueueLock)),
            deliveries: format!("{meta}/%deliveries"),
            keys: format!("{meta}/%keys"),
            taken: format!("{meta}/%taken"),
            clock: format!("{meta}/%clock"),
        }
    }

    pub(crate) fn item(&self, child: &str) -> String {
        format!("{}/{child}", self.items)
    }

    pub(crate) fn lock(&self, child: &str) -> String {
        format!("{}/{child}", self.locks)
    }

    pub(crate) fn delivery(&self, child: &str) -> String {
        format!("{}/{child}", self.deliveries)
    }
}

/// The node options of an ephemeral node.
pub(crate) fn ephemeral() -> zk::CreateOptions<'static> {
    zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all())
}

/// The node options of an item node.
pub(crate) fn sequential() -> zk::CreateOptions<'static> {
    zk::CreateMode::PersistentSequential.with_acls(zk::Acls::anyone_all())
}

/// The item nodes among `children`, in Curator's order: sorted as strings
/// (`DistributedQueue.sortChildren`), which puts lower priorities first and orders
/// each priority by sequence.
pub(crate) fn items(children: Vec<String>) -> Vec<String> {
    let mut items: Vec<String> = children
        .into_iter()
        .filter(|child| child.starts_with(ITEM_NAME))
        .collect();
    items.sort();
    items
}

/// The sequence number of an item node (its last ten digits before any `.` suffix of
/// a split node), which grows with the time of its creation.
pub(crate) fn sequence(child: &str) -> Option<u64> {
    let base = child.split_once('.').map_or(child, |(base, _)| base);
    let digits = base.get(base.len().checked_sub(10)?..)?;
    digits.parse().ok()
}

/// The name of an item node of `priority` before its sequence: Curator's
/// `DistributedPriorityQueue` writes `1` and the priority in eight hex digits
/// (`0` and the two's complement for a negative one, which distsync never writes).
pub(crate) fn item_prefix(priority: u16) -> String {
    format!("{ITEM_NAME}1{:08X}", u32::from(priority))
}

/// A dequeue's receipt: the node name `child` of the item it takes, a NUL (which no
/// node name holds), and the item node's data `data`; what puts the item back at its
/// place should the dequeue never finish.
pub(crate) fn receipt(child: &str, data: &[u8]) -> Vec<u8> {
    let mut receipt = Vec::with_capacity(child.len() + 1 + data.len());
    receipt.extend_from_slice(child.as_bytes());
    receipt.push(0);
    receipt.extend_from_slice(data);
    receipt
}

/// The item node name and data a [`receipt`] holds; `None` for data of another shape.
pub(crate) fn parse_receipt(receipt: &[u8]) -> Option<(&str, &[u8])> {
    let at = receipt.iter().position(|&byte| byte == 0)?;
    let child = std::str::from_utf8(&receipt[..at]).ok()?;
    child
        .starts_with(ITEM_NAME)
        .then(|| (child, &receipt[at + 1..]))
}

/// Creates the nodes at `paths` and their missing ancestors (none is an error if it
/// exists).
pub(crate) async fn make_dirs(shared: &Shared, client: &zk::Client, paths: &[&str]) -> Result<()> {
    for path in paths {
        request(shared, client.mkdir(path, &persistent())).await?;
    }
    Ok(())
}

/// The server's clock, in milliseconds since the epoch: the modification time of a
/// write to `clock` (the leader's clock when it applied the write, as an item node's
/// `ctime` is).
pub(crate) async fn server_now(shared: &Shared, client: &zk::Client, clock: &str) -> Result<i64> {
    loop {
        match bounded(shared, client.set_data(clock, &[], None)).await? {
            Ok(stat) => return Ok(stat.mtime),
            Err(zk::Error::NoNode) => make_dirs(shared, client, &[clock]).await?,
            Err(error) => return Err(map(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_sort_as_curator_sorts_them() {
        let children = vec![
            format!("{}0000000007", item_prefix(2)),
            "foreign".to_owned(),
            format!("{}0000000009", item_prefix(0)),
            format!("{}0000000003", item_prefix(2)),
            format!("{}0000000003.0000000001", item_prefix(2)),
            "queue-0000000011".to_owned(),
            format!("{}0000000001", item_prefix(10)),
        ];
        let sorted = items(children);
        assert_eq!(
            sorted,
            vec![
                "queue-0000000011".to_owned(),
                "queue-1000000000000000009".to_owned(),
                "queue-1000000020000000003".to_owned(),
                "queue-1000000020000000003.0000000001".to_owned(),
                "queue-1000000020000000007".to_owned(),
                "queue-10000000A0000000001".to_owned(),
            ]
        );
        assert_eq!(sequence(&sorted[0]), Some(11));
        assert_eq!(sequence(&sorted[3]), Some(3));
        assert_eq!(sequence("queue-"), None);
    }

    #[test]
    fn a_receipt_gives_back_its_items_name_and_data() {
        let data = [0, 1, 0, 2];
        let child = format!("{}0000000003", item_prefix(4));
        assert_eq!(
            parse_receipt(&receipt(&child, &data)),
            Some((child.as_str(), &data[..]))
        );
        assert_eq!(
            parse_receipt(&receipt(&child, &[])),
            Some((child.as_str(), &[][..]))
        );
        assert_eq!(parse_receipt(b"queue-1"), None, "no separator");
        assert_eq!(parse_receipt(b"other\0data"), None, "not an item's name");
        assert_eq!(parse_receipt(b"queue-\xff\0data"), None, "not UTF-8");
    }

    #[test]
    fn metadata_paths_never_meet_a_longer_names_nodes() {
        let paths = Paths::new("/distsync", &Name::new("jobs").unwrap());
        assert_eq!(paths.items, "/distsync/queue/jobs");
        assert_eq!(paths.locks, "/distsync/queue_lock/jobs");
        assert_eq!(paths.keys, "/distsync/queue_meta/jobs/%keys");
        let nested = Paths::new("/distsync", &Name::new("jobs/%keys").unwrap());
        assert_eq!(nested.keys, "/distsync/queue_meta/jobs/%25keys/%keys");
        assert!(!nested.keys.starts_with(&format!("{}/", paths.keys)));
        let found = Paths::of_items("/distsync", &nested.items);
        assert_eq!(found.locks, "/distsync/queue_lock/jobs/%25keys");
        assert_eq!(found.taken, nested.taken);
    }
}
