//! Leaving nothing behind: a run under a throwaway namespace
//! ([`crate::harness::run_namespace`]) removes it at the end, and checks that nothing
//! is left.
//!
//! Outside the run's namespace a run may leave only the store-wide entries of
//! [`STORE_WIDE`]: entries every client of the same store namespace (Redis
//! `namespace=`, PostgreSQL `schema=`, etcd's and ZooKeeper's URL path, NATS `bucket=`,
//! MySQL `table_prefix=`) shares, which removing could break. docs/CONFORMANCE.md
//! ("What a run leaves behind") lists them from this table, and the runner's tests check
//! a run's leftovers against it.

use std::fmt;
use std::time::Duration;

use distsync_core::{Backend, Name, Result};
use tokio::time::Instant;

use crate::faults::StoreKind;

/// What the clean-up of a run's namespace did: entries removed, and entries still
/// found under the namespace afterwards (0 when the run left nothing behind).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cleanup {
    /// Entries (keys, rows) [`Backend::purge_prefix`] removed.
    pub purged: u64,
    /// Entries [`Backend::count_prefix`] still found afterwards.
    pub left: u64,
}

impl fmt::Display for Cleanup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} entries removed, {} left", self.purged, self.left)
    }
}

/// Removes everything under `namespace` ([`Backend::purge_prefix`]) and counts what
/// is left ([`Backend::count_prefix`]); while something is left, purges again every
/// half second for up to [`LATE_WRITES`] (a write of the run's clients can land after
/// the first purge), and reports what all the purges removed and what the last count
/// found. Store-wide entries ([`STORE_WIDE`]) are not touched.
///
/// ```
/// # tokio_test_block_on(async {
/// use distsync_conformance::cleanup::clean_up;
/// use distsync_core::{Coordinator, Name};
///
/// let coordinator = Coordinator::from_arc(std::sync::Arc::new(distsync_kv::memory::MemoryBackend::new()));
/// let namespace = Name::new("conf/run-doc").unwrap();
/// coordinator.counter("conf/run-doc/hits").unwrap().add(1).await.unwrap();
/// let cleanup = clean_up(&**coordinator.backend(), &namespace).await.unwrap();
/// assert_eq!((cleanup.purged, cleanup.left), (1, 0));
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
/// # }
/// ```
///
/// # Errors
/// The store's error, or [`distsync_core::Error::Unsupported`] where the backend
/// cannot purge or count a prefix.
///
/// # Cancel safety
/// Not atomic: dropping the future may leave part of the namespace; calling it again
/// finishes the job.
pub async fn clean_up(backend: &dyn Backend, namespace: &Name) -> Result<Cleanup> {
    let deadline = Instant::now() + LATE_WRITES;
    let mut purged = backend.purge_prefix(namespace).await?;
    let mut left = backend.count_prefix(namespace).await?;
    // A call a case dropped may still land: a cancelled dequeue's put-back, a release
    // retried in the background through a proxy the case has just closed. Purge again
    // until nothing is left or the window has passed, counting what each pass removed.
    while left > 0 && Instant::now() < deadline {
        tokio::time::sleep(LATE_WRITE_PAUSE).await;
        purged += backend.purge_prefix(namespace).await?;
        left = backend.count_prefix(namespace).await?;
    }
    tracing::debug!(%namespace, purged, left, "cleaned up a run's namespace");
    Ok(Cleanup { purged, left })
}

/// How long [`clean_up`] keeps purging while entries still appear under the
/// namespace: a client's background work outlives the call that started it (a
/// cancelled call's put-back, a release retried within the one-shot budget of 3 s, a
/// hold released within its session's TTL of at most [`crate::SESSION_TTL`]), so a
/// write of the run's last case can land just after the first purge.
pub const LATE_WRITES: Duration = Duration::from_secs(15);

/// The pause between two purges within [`LATE_WRITES`].
const LATE_WRITE_PAUSE: Duration = Duration::from_millis(500);

/// One kind of store-wide entry a run may leave outside its namespace: shared by every
/// client of the store namespace it ran in, so the clean-up keeps it. [`STORE_WIDE`]
/// lists them all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreWide {
    /// The store it is found on.
    pub store: StoreKind,
    /// The key, row or node, with placeholders: `<ns>` the Redis `namespace=` or the
    /// etcd URL's path, `<schema>` the PostgreSQL `schema=` (a row of table `t` is
    /// `<schema>.t`), `<root>` the ZooKeeper URL's path, `<bucket>` the NATS
    /// `bucket=` (a key `k` is the subject `$KV.<bucket>.k`), `<prefix>` the MySQL
    /// `table_prefix=` (a row of table `t` is `<prefix>t`, or `<prefix>t:<key>` where
    /// a key or an id tells the rows apart); `<id>` a decimal number, `<hex>` a
    /// hexadecimal one, `<tag>` any text without braces, `<key>` any text, `<kind>` one
    /// of [`ZOOKEEPER_KINDS`], `<parent>` a name the run's namespace lies under (`conf`
    /// for `conf/run-<id>`).
    pub entry: &'static str,
    /// When a run creates it.
    pub created: &'static str,
    /// What it is for.
    pub purpose: &'static str,
    /// Why the clean-up must not remove it.
    pub kept: &'static str,
    /// How big it is.
    pub size: &'static str,
    /// When it goes on its own; `None` when it stays until removed by hand.
    pub expiry: Option<&'static str>,
}

/// The path segments under a ZooKeeper root that hold the names of one kind of
/// primitive (`<root>/<kind>/<name>`), the `<kind>` of a [`StoreWide::entry`].
pub const ZOOKEEPER_KINDS: [&str; 15] = [
    "lock",
    "lock_wait",
    "semaphore",
    "rwlock",
    "barrier",
    "double_barrier",
    "election",
    "election_log",
    "stm",
    "counter",
    "latch",
    "ratelimit",
    "queue",
    "queue_lock",
    "queue_meta",
];

/// Every store-wide entry a `safe` run may leave outside its namespace, by store: the
/// table of docs/CONFORMANCE.md ("What a run leaves behind"), and what the runner's
/// tests allow. The memory store has none (and goes with the runner's process).
///
/// An entry is here because removing it could break another client of the same store
/// namespace: a counter that must only grow, a marker other clients read, the layout
/// they create their entries in. Everything else a run creates is under its namespace
/// ([`clean_up`] removes it) or is a session that ends with its TTL.
pub const STORE_WIDE: &[StoreWide] = &[
    StoreWide {
        store: StoreKind::Redis,
        entry: "{<ns>stm}:rev",
        created: "by the first STM commit that writes",
        purpose: "the STM revision: each commit takes the next number and stamps the keys \
                  it writes with it",
        kept: "it must only grow: a transaction takes a key as unchanged since its snapshot \
               at revision R when the key's revision is at most R, so a counter started \
               again would let new writes pass for old ones in every STM client of the \
               namespace",
        size: "one string, an integer (72 bytes by `MEMORY USAGE`)",
        expiry: None,
    },
    StoreWide {
        store: StoreKind::Redis,
        entry: "{<ns>session:<id>}",
        created: "for a holder the run killed (SIGKILL) or paused, whose session it cannot \
                  close",
        purpose: "the session's lease: a random nonce only its owner renews",
        kept: "it is the session: it ends with its TTL, and the run cannot tell its \
               sessions from another client's",
        size: "one string of 32 characters",
        expiry: Some("the session's TTL (2 s for the suite's holders)"),
    },
    StoreWide {
        store: StoreKind::Redis,
        entry: "{<ns>session:<id>}:held",
        created: "with the session key above, for a session that held something",
        purpose: "what the session holds, for its renewal and its revocation",
        kept: "it goes with the session",
        size: "a hash of one field per hold",
        expiry: Some("the session's TTL"),
    },
    StoreWide {
        store: StoreKind::Redis,
        entry: "{<ns><tag>}:ack",
        created: "on a Redis Cluster with `wait_replicas`, by each acknowledged call",
        purpose: "the write in the call's hash slot that its `WAIT` counts replicas for",
        kept: "it expires after a second, and every acknowledged call writes it again",
        size: "an empty string",
        expiry: Some("1 s"),
    },
    StoreWide {
        store: StoreKind::Postgres,
        entry: "<schema>",
        created: "by the first client of the schema (a few tables at their first use)",
        purpose: "the tables, sequences, functions and triggers every client of the schema \
                  runs on",
        kept: "other clients of the schema use it; dropped, it is a store that forgot",
        size: "empty tables once purged (3.3 MB on disk in all, measured)",
        expiry: None,
    },
    StoreWide {
        store: StoreKind::Postgres,
        entry: "<schema>.layout",
        created: "with the schema",
        purpose: "the layout version, which each client checks when it connects",
        kept: "a client that finds none takes the schema for a new one and writes its \
               objects again",
        size: "one row",
        expiry: None,
    },
    StoreWide {
        store: StoreKind::Postgres,
        entry: "<schema>.token_floor",
        created: "with the schema; raised by the purge",
        purpose: "the floor of every fencing token: the counters of removed names are \
                  folded into it",
        kept: "without it a name used again would get tokens smaller than those it \
               handed out",
        size: "one row",
        expiry: None,
    },
    StoreWide {
        store: StoreKind::Postgres,
        entry: "<schema>.grant_sentinel",
        created: "with the schema; written again after a crash by the first grant under \
                  `grants=unflushed`",
        purpose: "the crash sentinel of unflushed grants: a random id in an unlogged \
                  table, which PostgreSQL empties at crash recovery",
        kept: "a missing row is how clients in that mode tell a crash: every grant would \
               wait out the lock-delay",
        size: "one row",
        expiry: None,
    },
    StoreWide {
        store: StoreKind::Postgres,
        entry: "<schema>.epoch_marker",
        created: "with `max_session_ttl=` in the URL, by the first client that finds none",
        purpose: "the store's epoch marker: a random id, the longest session TTL and the \
                  token offset",
        kept: "a missing marker is how clients tell that the store forgot: each would end \
               its sessions and wait out the lock-delay",
        size: "one row",
        expiry: None,
    },
    StoreWide {
        store: StoreKind::Postgres,
        entry: "<schema>.sessions",
        created: "for a holder the run killed or paused that had not expired when the \
                  clean-up ran (the purge ends the expired ones, as every client's sweep \
                  does)",
        purpose: "the session's heartbeat row",
        kept: "it is the session until it expires; the next sweep of any client of the \
               schema removes it then",
        size: "one row per session",
        expiry: Some("the session's TTL, then the next sweep"),
    },
    StoreWide {
        store: StoreKind::Etcd,
        entry: "<ns>/amnesia",
        created: "with `max_session_ttl=` in the URL, by the first client that finds none",
        purpose: "the store's epoch marker: a random id, the longest session TTL and the \
                  token offset",
        kept: "a missing marker is how clients tell that the store forgot: each would end \
               its sessions and wait out the lock-delay",
        size: "one key of about 40 bytes",
        expiry: None,
    },
    StoreWide {
        store: StoreKind::Etcd,
        entry: "<ns>/amnesia-hold",
        created: "with the marker above",
        purpose: "the lock-delay of a new marker: other clients wait while it lives",
        kept: "it goes with its lease",
        size: "one key",
        expiry: Some("its lease: `max_session_ttl`"),
    },
    StoreWide {
        store: StoreKind::Zookeeper,
        entry: "<root>",
        created: "by the first client",
        purpose: "the node every node of the store namespace lies under",
        kept: "other clients (and Curator recipes on the same paths) create their nodes \
               under it",
        size: "a node without data",
        expiry: None,
    },
    StoreWide {
        store: StoreKind::Zookeeper,
        entry: "<root>/<kind>",
        created: "by the first name of each kind",
        purpose: "the parent of every name of one kind",
        kept: "other clients create their names under it; a delete would fail their \
               creates",
        size: "a node without data each",
        expiry: None,
    },
    StoreWide {
        store: StoreKind::Zookeeper,
        entry: "<root>/<kind>/<parent>",
        created: "by the first name of each kind under the run's namespace",
        purpose: "a name's `/` segments are levels of the tree, so the nodes of the names \
                  the namespace lies under (`conf` for `conf/run-<id>`) are its parents",
        kept: "each is also the name itself (a barrier `conf` is raised while its node \
               exists) and the parent of other runs' namespaces",
        size: "a node without data each",
        expiry: None,
    },
    StoreWide {
        store: StoreKind::Zookeeper,
        entry: "<root>/clock",
        created: "by the first rate limiter, queue or broken lock",
        purpose: "a node written to read the server's clock (its modification time)",
        kept: "other clients write it at any time; a delete would fail their writes",
        size: "a node without data",
        expiry: None,
    },
    StoreWide {
        store: StoreKind::Zookeeper,
        entry: "<root>/amnesia",
        created: "with `max_session_ttl=` in the URL, by the first client that finds none",
        purpose: "the store's epoch marker: a random id, the longest session TTL and the \
                  token offset",
        kept: "a missing marker is how clients tell that the store forgot: each would end \
               its sessions and wait out the lock-delay",
        size: "a node of 41 bytes",
        expiry: None,
    },
    StoreWide {
        store: StoreKind::Zookeeper,
        entry: "<root>/amnesia-hold",
        created: "with the marker above",
        purpose: "the lock-delay of a new marker: other clients wait while it lives",
        kept: "an ephemeral node: it goes with its session",
        size: "a node",
        expiry: Some("its session: `max_session_ttl`"),
    },
    StoreWide {
        store: StoreKind::Nats,
        entry: "$KV.<bucket>.distsync",
        created: "with the bucket (`?bucket=`), by the first client, which makes it",
        purpose: "the anchor: a key every listing asks for too, so that each answer ends \
                  with the stream sequence the replica that gave it was at",
        kept: "every client's listings read it; without it a listing could not tell how \
               far its replica had got",
        size: "one message",
        expiry: None,
    },
    StoreWide {
        store: StoreKind::Nats,
        entry: "$KV.<bucket>.clock",
        created: "by the first rate limiter or queue age reading",
        purpose: "a key written to read the server's clock (its message's time stamp)",
        kept: "other clients write it at any time; its tombstone would only be written over",
        size: "one empty message",
        expiry: None,
    },
    StoreWide {
        store: StoreKind::Nats,
        entry: "$KV.<bucket>.session.<hex>",
        created: "for a holder the run killed (SIGKILL) or paused, whose session it cannot \
                  close",
        purpose: "the session's key, rewritten by every renewal",
        kept: "it is the session: it ends with its TTL, and the run cannot tell its \
               sessions from another client's",
        size: "one message",
        expiry: Some("its `Nats-TTL`: the session's TTL"),
    },
    StoreWide {
        store: StoreKind::Nats,
        entry: "$KV.<bucket>.amnesia",
        created: "with `max_session_ttl=` in the URL, by the first client that finds none",
        purpose: "the store's epoch marker: a random id, the longest session TTL and the \
                  token offset",
        kept: "a missing marker is how clients tell that the store forgot: each would end \
               its sessions and wait out the lock-delay",
        size: "one message of about 40 bytes",
        expiry: None,
    },
    StoreWide {
        store: StoreKind::Nats,
        entry: "$KV.<bucket>.amnesia-hold",
        created: "with the marker above, in the same batch",
        purpose: "the lock-delay of a new marker: other clients wait while it lives",
        kept: "it goes with its TTL",
        size: "one message",
        expiry: Some("its `Nats-TTL`: `max_session_ttl`"),
    },
    StoreWide {
        store: StoreKind::Mysql,
        entry: "<prefix>",
        created: "by the first client of the prefix",
        purpose: "the tables `<prefix>meta`, `<prefix>kv`, `<prefix>log`, \
                  `<prefix>leases`, `<prefix>txn_locks` and `<prefix>txn_lock_tokens` \
                  every client of the prefix runs on",
        kept: "other clients of the prefix use them; dropped, they are a store that \
               forgot (its revision, and with it every fencing token, starts again at 1)",
        size: "the log's rows aside, about 80 KB on disk once purged (measured)",
        expiry: None,
    },
    StoreWide {
        store: StoreKind::Mysql,
        entry: "<prefix>meta",
        created: "with the tables",
        purpose: "the store's revision and compaction point, which every write takes the \
                  next revision from",
        kept: "the revision must only grow: fencing tokens are create revisions, and \
               watches resume from a revision",
        size: "one row",
        expiry: None,
    },
    StoreWide {
        store: StoreKind::Mysql,
        entry: "<prefix>log:<key>",
        created: "by every write of the run: one row per change of a key, the purge's \
                  deletes included",
        purpose: "the history of the run's keys: a row its key wrote again since, or a \
                  tombstone",
        kept: "every client of the prefix may read at a past revision or watch from one \
               within the window: removing a key's history ahead of compaction would \
               show them a state the store never had, or miss an event",
        size: "a row per change: 7 657 rows after the test's two runs of 12 cases (1 MB \
               of keys and values; 4.3 MB on disk with the indexes), measured",
        expiry: Some(
            "compaction, once its revision leaves the window of the last 10 000 \
             revisions (every client's reaper compacts to it every 10 s)",
        ),
    },
    StoreWide {
        store: StoreKind::Mysql,
        entry: "<prefix>leases:<id>",
        created: "for a holder the run killed (SIGKILL) or paused, whose session it cannot \
                  close; and by each queue handle that enqueued, for its idempotency records \
                  (a plain enqueue's call key, `enqueue_once`'s key)",
        purpose: "a session's lease, or the lease a queue handle attaches its idempotency \
                  records to, with its expiry on the server's clock",
        kept: "a lease is no name's but its client's (a session, or a queue handle that \
               attaches its next records to it): the purge removes the keys under the run's \
               namespace, the records among them, and the lease ends with its TTL",
        size: "one row each (two after the test's two runs, measured)",
        expiry: Some(
            "its TTL (a session's; 11 min for call keys' records, 25 h for \
             `enqueue_once`'s), then the next round of a client's reaper (every client \
             process runs one, at least once a second)",
        ),
    },
];

/// The entries of [`STORE_WIDE`] found on `store`.
pub fn store_wide(store: StoreKind) -> impl Iterator<Item = &'static StoreWide> {
    STORE_WIDE.iter().filter(move |entry| entry.store == store)
}

/// The entry of [`STORE_WIDE`] on `store` that `found` (a Redis key, an etcd key, a
/// PostgreSQL `<schema>.<table>` row, a ZooKeeper path, a NATS subject, a MySQL
/// `<prefix><table>[:<key>]` row) is, for a run under `run` whose URL gave the store
/// namespace `namespace` (Redis `namespace=`, etcd's path, PostgreSQL `schema=`,
/// ZooKeeper's root, NATS `bucket=`, MySQL `table_prefix=`); `None` for an entry the
/// table does not list.
///
/// ```
/// use distsync_conformance::cleanup::store_wide_entry;
/// use distsync_conformance::StoreKind;
/// use distsync_core::Name;
///
/// let run = Name::new("conf/run-1").unwrap();
/// let rev = store_wide_entry(StoreKind::Redis, "app:", &run, "{app:stm}:rev");
/// assert_eq!(rev.map(|entry| entry.entry), Some("{<ns>stm}:rev"));
/// assert!(store_wide_entry(StoreKind::Redis, "app:", &run, "{app:other}:rev").is_none());
/// let parent = store_wide_entry(StoreKind::Zookeeper, "/app", &run, "/app/lock/conf");
/// assert!(parent.is_some());
/// assert!(store_wide_entry(StoreKind::Zookeeper, "/app", &run, "/app/lock/other").is_none());
/// ```
pub fn store_wide_entry(
    store: StoreKind,
    namespace: &str,
    run: &Name,
    found: &str,
) -> Option<&'static StoreWide> {
    let place = Place { namespace, run };
    store_wide(store).find(|entry| place.matches(entry.entry, found))
}

/// The values of a [`StoreWide::entry`]'s placeholders.
struct Place<'a> {
    namespace: &'a str,
    run: &'a Name,
}

impl Place<'_> {
    /// Whether `text` is an instance of `pattern`.
    fn matches(&self, pattern: &str, text: &str) -> bool {
        let Some(open) = pattern.find('<') else {
            return pattern == text;
        };
        let Some(close) = pattern[open..].find('>').map(|at| open + at) else {
            return pattern == text;
        };
        let (head, placeholder, rest) = (
            &pattern[..open],
            &pattern[open + 1..close],
            &pattern[close + 1..],
        );
        let Some(text) = text.strip_prefix(head) else {
            return false;
        };
        let tail_matches = |taken: usize| self.matches(rest, &text[taken..]);
        match placeholder {
            "ns" | "schema" | "root" | "bucket" | "prefix" => {
                text.starts_with(self.namespace) && tail_matches(self.namespace.len())
            }
            "kind" => ZOOKEEPER_KINDS
                .iter()
                .any(|kind| text.starts_with(kind) && tail_matches(kind.len())),
            "parent" => {
                let run = self.run.as_str();
                run.match_indices('/')
                    .map(|(at, _)| &run[..at])
                    .any(|parent| text.starts_with(parent) && tail_matches(parent.len()))
            }
            "id" => {
                let digits = text.bytes().take_while(u8::is_ascii_digit).count();
                (1..=digits).any(tail_matches)
            }
            "hex" => {
                let digits = text.bytes().take_while(u8::is_ascii_hexdigit).count();
                (1..=digits).any(tail_matches)
            }
            "key" => text
                .char_indices()
                .map(|(at, c)| at + c.len_utf8())
                .any(tail_matches),
            "tag" => {
                let free = text.find(['{', '}']).unwrap_or(text.len());
                text.char_indices()
                    .map(|(at, c)| at + c.len_utf8())
                    .take_while(|end| *end <= free)
                    .any(tail_matches)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(store: StoreKind, namespace: &str, found: &str) -> Option<&'static str> {
        let run = Name::new("conf/run-18eb/x").unwrap();
        store_wide_entry(store, namespace, &run, found).map(|entry| entry.entry)
    }

    #[test]
    fn every_placeholder_is_known() {
        let known = [
            "ns", "schema", "root", "bucket", "prefix", "kind", "parent", "id", "hex", "tag", "key",
        ];
        for entry in STORE_WIDE {
            let mut rest = entry.entry;
            while let Some(open) = rest.find('<') {
                let close = rest[open..].find('>').expect("a closed placeholder") + open;
                let name = &rest[open + 1..close];
                assert!(known.contains(&name), "{}: <{name}>", entry.entry);
                rest = &rest[close + 1..];
            }
            assert!(!entry.purpose.is_empty() && !entry.kept.is_empty());
        }
    }

    #[test]
    fn redis_entries() {
        let redis = |found| entry(StoreKind::Redis, "t1:", found);
        assert_eq!(redis("{t1:stm}:rev"), Some("{<ns>stm}:rev"));
        assert_eq!(redis("{t1:session:123}"), Some("{<ns>session:<id>}"));
        assert_eq!(
            redis("{t1:session:123}:held"),
            Some("{<ns>session:<id>}:held")
        );
        assert_eq!(redis("{t1:conf/run-1/q}:ack"), Some("{<ns><tag>}:ack"));
        for other in [
            "{t1:stm}:k:conf/x",
            "{t2:stm}:rev",
            "{t1:session:12a}",
            "{t1:session:}",
            "{t1:session:1}:other",
            "{t1:a}b}:ack",
            "{t1:conf/run-1/q}:lock",
        ] {
            assert_eq!(redis(other), None, "{other}");
        }
    }

    #[test]
    fn postgres_etcd_and_zookeeper_entries() {
        let pg = |found| entry(StoreKind::Postgres, "s1", found);
        assert_eq!(pg("s1.layout"), Some("<schema>.layout"));
        assert_eq!(pg("s1.token_floor"), Some("<schema>.token_floor"));
        assert_eq!(pg("s1.grant_sentinel"), Some("<schema>.grant_sentinel"));
        assert_eq!(pg("s1.kv"), None);
        assert_eq!(pg("s2.layout"), None);
        let etcd = |found| entry(StoreKind::Etcd, "e1/", found);
        assert_eq!(etcd("e1//amnesia"), Some("<ns>/amnesia"));
        assert_eq!(etcd("e1/conf/run-18eb/x/lock"), None);
        let zk = |found| entry(StoreKind::Zookeeper, "/z1", found);
        assert_eq!(zk("/z1"), Some("<root>"));
        assert_eq!(zk("/z1/queue_meta"), Some("<root>/<kind>"));
        assert_eq!(zk("/z1/queue_meta/conf"), Some("<root>/<kind>/<parent>"));
        assert_eq!(zk("/z1/lock/conf/run-18eb"), Some("<root>/<kind>/<parent>"));
        assert_eq!(zk("/z1/clock"), Some("<root>/clock"));
        for other in [
            "/z1/lock/conf/run-18eb/x",
            "/z1/lock/other",
            "/z1/unknown",
            "/z2",
            "/z1/lock/con",
        ] {
            assert_eq!(zk(other), None, "{other}");
        }
    }

    #[test]
    fn nats_entries() {
        let nats = |found| entry(StoreKind::Nats, "b1", found);
        assert_eq!(nats("$KV.b1.distsync"), Some("$KV.<bucket>.distsync"));
        assert_eq!(nats("$KV.b1.clock"), Some("$KV.<bucket>.clock"));
        assert_eq!(
            nats("$KV.b1.session.00000000000001af"),
            Some("$KV.<bucket>.session.<hex>")
        );
        assert_eq!(
            nats("$KV.b1.amnesia-hold"),
            Some("$KV.<bucket>.amnesia-hold")
        );
        for other in [
            "$KV.b1.session.xyz",
            "$KV.b2.clock",
            "$KV.b1.lock.conf/run-18eb/x",
            "$KV.b1.counter.other",
        ] {
            assert_eq!(nats(other), None, "{other}");
        }
    }

    #[test]
    fn mysql_entries() {
        let mysql = |found| entry(StoreKind::Mysql, "p1_", found);
        assert_eq!(mysql("p1_meta"), Some("<prefix>meta"));
        assert_eq!(
            mysql("p1_log:/queue/conf%2Frun-18eb%2Fx/00001"),
            Some("<prefix>log:<key>")
        );
        assert_eq!(mysql("p1_leases:3120"), Some("<prefix>leases:<id>"));
        for other in [
            "p1_kv:/counter/other",
            "p1_log:",
            "p1_leases:12a",
            "p2_meta",
            "p1_other",
        ] {
            assert_eq!(mysql(other), None, "{other}");
        }
    }
}
