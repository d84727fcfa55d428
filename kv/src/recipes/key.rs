//! Key naming and creation shared by the recipes, as etcd's Go `recipes/key.go`.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::kv::{Compare, CompareOp, Kv, LeaseId, Range, Revision, Txn, TxnOp, TxnResponse};
use distsync_core::error::{Error, Result};
use distsync_core::name::Name;

/// The primitives whose keys live in the namespace's reserved area (see
/// [`Kind::prefix`]); locks and elections keep Go's raw layout instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Read-write locks.
    RwLock,
    /// Queues.
    Queue,
    /// Barriers.
    Barrier,
    /// Double barriers.
    DoubleBarrier,
    /// STM keys.
    Stm,
    /// Semaphores.
    Semaphore,
    /// The wait lines of unfair mutexes (their holders keep the mutex's layout).
    UnfairLock,
}

impl Kind {
    /// Every kind, for decoding keys.
    pub(crate) const ALL: [Kind; 7] = [
        Kind::RwLock,
        Kind::Queue,
        Kind::Barrier,
        Kind::DoubleBarrier,
        Kind::Stm,
        Kind::Semaphore,
        Kind::UnfairLock,
    ];

    /// The kind's segment of the reserved area.
    pub(crate) fn word(self) -> &'static str {
        match self {
            Kind::RwLock => "rwlock",
            Kind::Queue => "queue",
            Kind::Barrier => "barrier",
            Kind::DoubleBarrier => "double-barrier",
            Kind::Stm => "stm",
            Kind::Semaphore => "semaphore",
            Kind::UnfairLock => "unfair-lock",
        }
    }

    /// `<ns>/<kind>/<escaped name>`: the key (barrier, STM) or the prefix (before a
    /// `/`) of every key of primitive `name` of this kind, disjoint from every other
    /// (kind, name)'s and out of reach of every lock and election key (see the
    /// [recipes' module docs](super), "Key layouts").
    pub(crate) fn prefix(self, namespace: &str, name: &Name) -> String {
        format!("{namespace}/{}/{}", self.word(), escape(name.as_str()))
    }
}

/// Where the recipes put the keys of the primitives that etcd's Go `recipes` and
/// `concurrency` packages also build (read-write lock, queue, barrier, double barrier,
/// STM). Locks and elections use Go's layout in both; semaphores, which Go lacks, use
/// the injective one in both.
///
/// The default is [`KeyLayout::Injective`], because only it keeps every pair of
/// distinct (kind, name) apart: in Go's layout every primitive named `a` reads the
/// keys under `a/`, so a lock `a` waits behind an STM key `a/x`, and Go's own queue
/// `q` takes the items of a queue `q/x`. [`KeyLayout::Go`] is for sharing primitives
/// with Go programs (during a migration, say); see the
/// [recipes' module docs](crate::recipes) for what it refuses and what it cannot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyLayout {
    /// `<ns>/<kind>/<escaped name>`: distinct (kind, name) pairs never share a key.
    #[default]
    Injective,
    /// etcd's Go recipes' own keys (`<ns><name>/...`), so Go programs and distsync
    /// share read-write locks, queues, barriers, double barriers and STM keys.
    Go,
}

impl KeyLayout {
    /// The layout a URL's `layout=` value names: `injective` or `go`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for any other value.
    pub fn parse(value: &str) -> Result<Self> {
        match value {
            "injective" => Ok(Self::Injective),
            "go" => Ok(Self::Go),
            other => Err(Error::InvalidArgument(format!(
                "layout must be `injective` or `go`, not {other:?}"
            ))),
        }
    }
}

/// The namespace and the layout: where every key of a primitive goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct KeySpace {
    namespace: String,
    layout: KeyLayout,
}

/// Last segments that Go's layout writes under a primitive's own name (a read or
/// write key's parent, a double barrier's waiters and ready keys).
const GO_SEGMENTS: [&str; 4] = ["read", "write", "waiters", "ready"];

/// The lengths of the numbers Go's layout writes as a key's last segment: a priority
/// (`%05d`), a sequence (`%016d`), unix nanoseconds (19 digits until the year 2286).
const GO_NUMBER_LENGTHS: [usize; 3] = [5, 16, 19];

impl KeySpace {
    pub(crate) fn new(namespace: impl Into<String>, layout: KeyLayout) -> Self {
        Self {
            namespace: namespace.into(),
            layout,
        }
    }

    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }

    pub(crate) fn layout(&self) -> KeyLayout {
        self.layout
    }

    /// The key (barrier, STM) or the prefix (before a `/`) of every key of primitive
    /// `name` of `kind`: [`Kind::prefix`] in the injective layout, Go's `<ns><name>`
    /// in Go's (but for semaphores, which Go lacks).
    pub(crate) fn root(&self, kind: Kind, name: &Name) -> String {
        match (self.layout, kind) {
            (KeyLayout::Go, Kind::Semaphore) | (KeyLayout::Injective, _) => {
                kind.prefix(&self.namespace, name)
            }
            (KeyLayout::Go, _) => format!("{}{name}", self.namespace),
        }
    }

    /// `<ns><name>/`: the line of the keys of a lock or an election `name` (Go's
    /// layout in both layouts).
    pub(crate) fn lock_line(&self, name: &Name) -> String {
        format!("{}{name}/", self.namespace)
    }

    /// Refuses, in Go's layout, a name of `kind` whose last segment Go's recipes write
    /// under another primitive's name ([`GO_NUMBER_LENGTHS`], [`GO_SEGMENTS`]), so that
    /// no primitive's key is another's key or item. The injective layout takes every
    /// name.
    ///
    /// # Errors
    /// [`Error::InvalidName`] naming the segment.
    pub(crate) fn check(&self, kind: Kind, name: &Name) -> Result<()> {
        if self.layout != KeyLayout::Go || kind == Kind::Semaphore {
            return Ok(());
        }
        let Some((_, last)) = name.as_str().rsplit_once('/') else {
            return Ok(());
        };
        let numeric = last.bytes().all(|b| b.is_ascii_digit());
        if (numeric && GO_NUMBER_LENGTHS.contains(&last.len())) || GO_SEGMENTS.contains(&last) {
            return Err(Error::InvalidName {
                name: name.as_str().to_owned(),
                reason: "in Go's key layout (layout=go) the name of a read-write lock, queue, \
                         barrier, double barrier or STM key cannot end in a segment Go's \
                         recipes write under the name before it (a number of 5, 16 or 19 \
                         digits, `read`, `write`, `waiters`, `ready`)",
            });
        }
        Ok(())
    }
}

/// A name as one key segment: `%` becomes `%25` and `/` becomes `%2F`; every other
/// byte is kept. Injective, and the result holds no `/`.
pub(crate) fn escape(name: &str) -> String {
    // `%` first, so that the `%` of an escaped `/` stays as it is.
    name.replace('%', "%25").replace('/', "%2F")
}

/// The inverse of [`escape`]; `None` for a segment `escape` cannot produce.
pub(crate) fn unescape(segment: &str) -> Option<String> {
    let mut name = String::with_capacity(segment.len());
    let mut rest = segment;
    while let Some(at) = rest.find(['%', '/']) {
        name.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3)?;
        match escape {
            "%25" => name.push('%'),
            "%2F" => name.push('/'),
            _ => return None,
        }
        rest = &rest[at + 3..];
    }
    name.push_str(rest);
    Some(name)
}

/// `<kind>/<escaped name>[/<tail>]`, a key after `<ns>/` (see [`Kind::prefix`]): its
/// kind, its name and its tail; `None` for a key of no kind.
pub(crate) fn split_reserved(reserved: &str) -> Option<(Kind, String, Option<&str>)> {
    let (word, rest) = reserved.split_once('/')?;
    let kind = Kind::ALL.into_iter().find(|kind| kind.word() == word)?;
    let (segment, tail) = match rest.split_once('/') {
        Some((segment, tail)) => (segment, Some(tail)),
        None => (rest, None),
    };
    Some((kind, unescape(segment)?, tail))
}

/// A lease id as Go's `fmt.Sprintf("%x", leaseID)` writes it: lowercase hexadecimal,
/// with a `-` sign for (never granted) negative ids.
pub(crate) fn lease_hex(lease: LeaseId) -> String {
    if lease < 0 {
        format!("-{:x}", lease.unsigned_abs())
    } else {
        format!("{lease:x}")
    }
}

/// `<prefix><lease id, lowercase hex>`: the one key of a session's lease in the line
/// `prefix`.
pub(crate) fn lease_key(prefix: &str, lease: LeaseId) -> String {
    format!("{prefix}{}", lease_hex(lease))
}

/// A read of the keys under `prefix` that counts them all but returns one at most.
pub(crate) fn count_under(prefix: &str) -> Range {
    Range {
        limit: Some(1),
        ..Range::prefix(prefix)
    }
}

/// Whether `segment` is exactly `count` ASCII digits (a fixed-width number of a key).
pub(super) fn digits(segment: &str, count: usize) -> bool {
    segment.len() == count && segment.bytes().all(|b| b.is_ascii_digit())
}

/// Nanoseconds since the Unix epoch, as Go's `time.Now().UnixNano()` (0 if the clock
/// is before the epoch; uniqueness is enforced by the store anyway).
pub(super) fn unix_nanos() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i128::try_from(elapsed.as_nanos()).unwrap_or(i128::MAX))
        .unwrap_or(0)
}

/// Candidate names for a unique key under `prefix`: `<prefix>/<unix nanos>`, as Go's
/// `newUniqueKV` and `newUniqueEphemeralKV`; each candidate is later than the last
/// one even if the clock stands still or goes back.
pub(crate) struct UniqueKeys {
    prefix: String,
    last: i128,
}

impl UniqueKeys {
    /// Names under `prefix` (without the trailing `/`).
    pub(crate) fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            last: i128::MIN,
        }
    }

    /// The next candidate.
    pub(crate) fn next_key(&mut self) -> String {
        let nanos = unix_nanos().max(self.last.saturating_add(1));
        self.last = nanos;
        format!("{}/{}", self.prefix, nanos)
    }
}

/// Puts `key` only if it does not exist (Go's `putNewKV`: `version(key) == 0`).
/// Returns the revision that created it, or `None` if it already existed.
pub(crate) async fn put_new_key(
    kv: &dyn Kv,
    key: &str,
    value: Bytes,
    lease: LeaseId,
) -> Result<Option<Revision>> {
    let txn = Txn::when(vec![Compare::version(key, CompareOp::Equal, 0)])
        .and_then(vec![TxnOp::put(key, value, lease)]);
    let response = kv.txn(txn).await?;
    Ok(response.succeeded.then_some(response.revision))
}

/// Applies `op` if `key` was created at `create_revision` (a put or a delete of a
/// key that is still the same hold's); whether it was.
pub(crate) async fn if_created_at(
    kv: &dyn Kv,
    key: &str,
    create_revision: Revision,
    op: TxnOp,
) -> Result<bool> {
    let unchanged = Compare::create_revision(key, CompareOp::Equal, create_revision);
    let txn = Txn::when(vec![unchanged]).and_then(vec![op]);
    Ok(kv.txn(txn).await?.succeeded)
}

/// The range answer at `index` of a transaction the recipe built itself; a store that
/// answers with another shape gets a typed error instead of a panic.
pub(crate) fn range_at(
    kv: &dyn Kv,
    response: &TxnResponse,
    index: usize,
) -> Result<crate::kv::RangeResponse> {
    response.range(index).cloned().ok_or_else(|| {
        Error::backend(
            kv.backend(),
            format!("transaction answer has no range at position {index}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ids_are_written_as_go_does() {
        assert_eq!(lease_hex(0x694d_7a3c_1b2e_0f01), "694d7a3c1b2e0f01");
        assert_eq!(lease_hex(255), "ff");
        assert_eq!(lease_hex(-255), "-ff");
    }

    #[test]
    fn escaping_is_reversible_and_leaves_no_slash() {
        for name in ["a", "a/b", "50%", "%2F", "a%2Fb/c", "{x}:y/ü"] {
            let escaped = escape(name);
            assert!(!escaped.contains('/'), "{escaped}");
            assert_eq!(unescape(&escaped).as_deref(), Some(name));
        }
        assert_eq!(escape("jobs/50%"), "jobs%2F50%25");
        for foreign in ["a/b", "%", "%2", "%41"] {
            assert_eq!(unescape(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn unique_keys_increase() {
        let mut keys = UniqueKeys::new("lock/read");
        let a = keys.next_key();
        let b = keys.next_key();
        assert!(a.starts_with("lock/read/"));
        let n = |k: &str| k.rsplit('/').next().unwrap().parse::<i128>().unwrap();
        assert!(n(&b) > n(&a));
    }
}
