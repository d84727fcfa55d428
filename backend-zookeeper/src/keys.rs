//! Where distsync's names live in ZooKeeper's tree, and the node names of Curator's
//! recipes.
//!
//! Every primitive of kind `<kind>` named `<name>` is the persistent node
//! `<root>/<kind>/<name>`, where `<root>` is the URL's path and `<name>` keeps its
//! `/`-separated segments as levels of the tree, so that a Curator recipe given the
//! same path meets the same node. Each kind's path, the Curator recipe that shares it,
//! and the escaping of segments ZooKeeper refuses are in docs/ZOOKEEPER.md, "What
//! interoperates". The escaping is injective, and every name escaped is a valid path.
//!
//! The recipes' own nodes are children of that node, told from the nodes of nested
//! names (a lock `a/b` is the child `b` of lock `a`'s node) by their form: a lock
//! contender is `_c_<uuid>-lock-<10-digit sequence>`. A name segment of that very form
//! would be taken for a contender, as it would be by Curator.

use distsync_core::Name;

/// The kinds of primitive, as the path segment under the root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Locks (`InterProcessMutex`).
    Lock,
    /// The unfair lock's wait lines (distsync's own, see unfair_lock.rs).
    LockWait,
    /// Semaphores (`InterProcessSemaphoreV2`).
    Semaphore,
    /// Read-write locks (`InterProcessReadWriteLock`).
    RwLock,
    /// Barriers (`DistributedBarrier`).
    Barrier,
    /// Double barriers (`DistributedDoubleBarrier`).
    DoubleBarrier,
    /// Elections (`LeaderLatch`).
    Election,
    /// The values elections' leaders proclaimed, for observers (distsync's own).
    ElectionLog,
    /// STM keys (distsync's own, see stm.rs).
    Stm,
    /// Counters (distsync's own, see counter.rs).
    Counter,
    /// Count-down latches (distsync's own, see counter.rs).
    Latch,
    /// Rate limiters (distsync's own, see rate_limiter.rs).
    RateLimit,
    /// Queues' items (`DistributedQueue`, `DistributedPriorityQueue`).
    Queue,
    /// Queues' held items (the queue's `lockPath`).
    QueueLock,
    /// Queues' delivery counts, idempotency keys and receipts (distsync's own).
    QueueMeta,
}

impl Kind {
    /// Every kind, for walks over all of a name's nodes (purging a prefix).
    pub(crate) const ALL: &'static [Kind] = &[
        Kind::Lock,
        Kind::LockWait,
        Kind::Semaphore,
        Kind::RwLock,
        Kind::Barrier,
        Kind::DoubleBarrier,
        Kind::Election,
        Kind::ElectionLog,
        Kind::Stm,
        Kind::Counter,
        Kind::Latch,
        Kind::RateLimit,
        Kind::Queue,
        Kind::QueueLock,
        Kind::QueueMeta,
    ];

    fn segment(self) -> &'static str {
        match self {
            Kind::Lock => "lock",
            Kind::LockWait => "lock_wait",
            Kind::Semaphore => "semaphore",
            Kind::RwLock => "rwlock",
            Kind::Barrier => "barrier",
            Kind::DoubleBarrier => "double_barrier",
            Kind::Election => "election",
            Kind::ElectionLog => "election_log",
            Kind::Stm => "stm",
            Kind::Counter => "counter",
            Kind::Latch => "latch",
            Kind::RateLimit => "ratelimit",
            Kind::Queue => "queue",
            Kind::QueueLock => "queue_lock",
            Kind::QueueMeta => "queue_meta",
        }
    }
}

/// What Curator's `InterProcessMutex` names its contenders: `lock-` before the sequence.
pub(crate) const LOCK_NAME: &str = "lock-";

/// What an unfair lock's holder node is named after its protected prefix: a lock
/// contender of sequence 0, which every fair contender (distsync's and Curator's) takes
/// for the lowest, so it waits for it (see unfair_lock.rs).
pub(crate) const UNFAIR_HOLDER_NAME: &str = "unfair-lock-0000000000";

/// What the unfair lock names its waiters: `wait-` before the sequence.
pub(crate) const WAIT_NAME: &str = "wait-";

/// What Curator's `LeaderLatch` names its candidates: `latch-` before the sequence.
pub(crate) const LATCH_NAME: &str = "latch-";

/// What Curator's `InterProcessSemaphoreV2` names its leases: `lease-` before the
/// sequence.
pub(crate) const LEASE_NAME: &str = "lease-";

/// What Curator's `InterProcessReadWriteLock` names a reader: `__READ__` before the
/// sequence.
pub(crate) const READ_NAME: &str = "__READ__";

/// What Curator's `InterProcessReadWriteLock` names a writer: `__WRIT__` before the
/// sequence.
pub(crate) const WRITE_NAME: &str = "__WRIT__";

/// The readers and writers among `children` of a read-write lock, ordered by their
/// sequence (one counter, the parent's, numbers both), each with whether it writes.
pub(crate) fn rw_contenders(children: Vec<String>) -> Vec<(u64, String, bool)> {
    let mut found: Vec<(u64, String, bool)> = children
        .into_iter()
        .filter_map(|child| {
            if let Some(seq) = sequence(&child, WRITE_NAME) {
                Some((seq, child, true))
            } else {
                sequence(&child, READ_NAME).map(|seq| (seq, child, false))
            }
        })
        .collect();
    found.sort();
    found
}

/// Whether ZooKeeper refuses `c` in a node name (`PathUtils.validatePath`).
pub(crate) fn forbidden(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' | '\u{e000}'..='\u{f8ff}' | '\u{fff0}'..='\u{ffff}')
}

/// The node under which every name of `kind` lies: `<root>/<kind>`.
pub(crate) fn kind_root(root: &str, kind: Kind) -> String {
    format!("{root}/{}", kind.segment())
}

/// The node of the `/`-separated name (or name prefix made of whole segments) `name`
/// under `top`, each segment escaped as the module docs say.
pub(crate) fn under(top: &str, name: &str) -> String {
    let mut path = top.to_owned();
    for segment in name.split('/') {
        path.push('/');
        match segment {
            "." => path.push_str("%2E"),
            ".." => path.push_str("%2E%2E"),
            _ => {
                for c in segment.chars() {
                    if c == '%' || forbidden(c) {
                        let mut bytes = [0; 4];
                        for byte in c.encode_utf8(&mut bytes).bytes() {
                            path.push_str(&format!("%{byte:02X}"));
                        }
                    } else {
                        path.push(c);
                    }
                }
            }
        }
    }
    path
}

/// The name a node's path relative to its kind's node encodes: [`path`]'s escaping
/// undone (`%XX` sequences back to their UTF-8 bytes).
pub(crate) fn decode(relative: &str) -> String {
    let bytes = relative.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(byte) = hex.and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a double barrier's child `child` is a participant: a UUID, as distsync and
/// Curator name them (the child `ready` and the nodes of longer names are not).
pub(crate) fn is_participant(child: &str) -> bool {
    child.len() == 36
        && child.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The node of the primitive `kind` named `name` under `root`.
pub(crate) fn path(root: &str, kind: Kind, name: &Name) -> String {
    under(&kind_root(root, kind), name.as_str())
}

/// The sequence number of a contender node named `child` whose recipe puts `lock_name`
/// before the sequence (Curator's `StandardLockInternalsDriver.fixForSorting`: what
/// follows the last `lock_name`), if `child` is such a node.
pub(crate) fn sequence(child: &str, lock_name: &str) -> Option<u64> {
    let (_, digits) = child.rsplit_once(lock_name)?;
    if digits.len() < 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The contender nodes among `children`, ordered by their sequence, with it.
pub(crate) fn contenders(children: Vec<String>, lock_name: &str) -> Vec<(u64, String)> {
    let mut found: Vec<(u64, String)> = children
        .into_iter()
        .filter_map(|child| sequence(&child, lock_name).map(|seq| (seq, child)))
        .collect();
    found.sort();
    found
}

/// A fresh Curator "protected" prefix, `_c_<uuid>-`: a client that lost the reply to
/// its create finds its node by it.
pub(crate) fn protected_prefix() -> String {
    let (high, low) = (
        distsync_core::raw::random_u64(),
        distsync_core::raw::random_u64(),
    );
    // A version-4 UUID's layout, as Java's `UUID.randomUUID()` prints it.
    let high = (high & !0xf000) | 0x4000;
    let low = (low & !(0b11 << 62)) | (0b10 << 62);
    format!(
        "_c_{:08x}-{:04x}-{:04x}-{:04x}-{:012x}-",
        high >> 32,
        (high >> 16) & 0xffff,
        high & 0xffff,
        low >> 48,
        low & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_undoes_the_escaping() {
        for name in ["a/b", "50%/x", "./..", "tab\there", "ü/é"] {
            let top = kind_root("/distsync", Kind::Lock);
            let path = under(&top, name);
            let relative = path.strip_prefix(&format!("{top}/")).unwrap();
            assert_eq!(decode(relative), name, "{path}");
        }
        // A stray `%` stays as it is.
        assert_eq!(decode("a%zz%"), "a%zz%");
    }

    #[test]
    fn participants_are_uuids() {
        assert!(is_participant("123e4567-e89b-42d3-a456-426614174000"));
        assert!(!is_participant("ready"));
        assert!(!is_participant("123e4567-e89b-42d3-a456-42661417400x"));
    }

    fn lock(name: &str) -> String {
        path("/distsync", Kind::Lock, &Name::new(name).unwrap())
    }

    #[test]
    fn names_keep_their_levels_and_escape_what_zookeeper_refuses() {
        assert_eq!(lock("jobs/nightly"), "/distsync/lock/jobs/nightly");
        assert_eq!(lock("a/./b"), "/distsync/lock/a/%2E/b");
        assert_eq!(lock(".."), "/distsync/lock/%2E%2E");
        assert_eq!(lock("50%"), "/distsync/lock/50%25");
        assert_eq!(lock("a\u{1}"), "/distsync/lock/a%01");
        assert_ne!(lock("%2E"), lock("."));
    }

    #[test]
    fn contenders_sort_by_sequence_and_skip_other_children() {
        let children = vec![
            "_c_x-lock-0000000010".to_owned(),
            "nested".to_owned(),
            "_c_y-lock-0000000002".to_owned(),
            "lock-12".to_owned(),
        ];
        let found = contenders(children, LOCK_NAME);
        assert_eq!(
            found,
            vec![
                (2, "_c_y-lock-0000000002".to_owned()),
                (10, "_c_x-lock-0000000010".to_owned())
            ]
        );
    }

    #[test]
    fn readers_and_writers_sort_by_one_sequence() {
        let children = vec![
            "_c_a-__WRIT__0000000003".to_owned(),
            "_c_b-__READ__0000000001".to_owned(),
            "_c_c-lock-0000000002".to_owned(),
            "_c_d-__READ__0000000004".to_owned(),
        ];
        let found: Vec<(u64, bool)> = rw_contenders(children)
            .into_iter()
            .map(|(seq, _, writer)| (seq, writer))
            .collect();
        assert_eq!(found, vec![(1, false), (3, true), (4, false)]);
    }

    #[test]
    fn protected_prefixes_look_like_curators_and_differ() {
        let a = protected_prefix();
        assert_eq!(a.len(), "_c_".len() + 36 + 1);
        assert!(a.starts_with("_c_") && a.ends_with('-'));
        assert_eq!(&a[17..18], "4");
        assert_ne!(a, protected_prefix());
    }
}
