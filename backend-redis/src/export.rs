//! Reading the durable state of a namespace for migration ([`distsync_core::migrate`]).
//!
//! What is read, by the layouts of the other modules ([`crate::keys`]):
//!
//! | state | keys | exported as |
//! |---|---|---|
//! | queue items | the sorted set `{<ns><name>}:queue:items` | the queue `<name>`, in `ZRANGE` order (priority, then arrival: the dequeue order); the priority is the score, the item what follows the 16 hex digits of the arrival number |
//! | received items | the hash `{<ns><name>}:queue:held` (receiver call id to `<priority, 5 digits><member>`): items delivered by `receive` and not yet acknowledged | items of the queue `<name>` at their places (priority, then arrival, among the queued ones): at-least-once delivery keeps an unacknowledged item, as the other backends do |
//! | claimed items | the hash `{<ns><name>}:queue:inflight` (dequeuer call id to `<priority, 5 digits><member>`): items popped by an at-most-once `dequeue` whose claim was never released | items of the queue `<name>` at their places, each once (see below) |
//! | STM keys | the hash `{<ns>stm}:k:<name>` with its value in `v` | the STM key `<name>`; a deleted key (its tombstone has only the revision `r`) is skipped |
//! | barriers | the string `{<ns><name>}:barrier` | a held barrier `<name>` |
//! | counters | the string `{<ns><name>}:counter` (the decimal value) | the counter `<name>` |
//! | latches | the hash `{<ns><name>}:latch` of `initial` and `remaining` | the latch `<name>` |
//! | live holds | the session-held entry keys `{<ns><name>}:<kind>:e:<id>` (kind `lock`, `rw`, `elect`, `sem` or `dbar`) of holders, waiters, semaphore permits and double-barrier participants, an unfair lock's holder `{<ns><name>}:lock:u` and waiters' markers `{<ns><name>}:lock:um:<id>`, and the hold keys `{<ns><name>}:queue:e:<call id>` of received items | `active_holds`: their keys, as the guards' `key()` shows them |
//!
//! Everything else is bookkeeping and is not exported: rate limiters (time-bound, see
//! [`distsync_core::migrate`]), sessions and their registries,
//! fencing-token counters (on a Redis destination they are seeded from its clock, so
//! tokens keep growing if its clock is not behind the source's), election change
//! counters, queue arrival counters and waiter registrations, the STM revision.
//!
//! **Claimed items are exported as queue items.** An at-most-once dequeue claims the
//! item it pops in `{<ns><name>}:queue:inflight` until its call has handed it over
//! (see [`crate::queue`]). A migration runs on a quiesced source, so a claim it finds
//! is a dead dequeuer's, and the source itself would deliver that item again: once the
//! claim is older than the URL's `stale_claim=`, any consumer's sweep (`queue_sweep` in
//! `lua/lib.lua`) puts the record back in the queue as it is, with its priority and its
//! member (arrival number and item). Leaving it out would lose on migration an item the
//! source still holds for its consumers; so the export lists it where that put-back
//! would, at its place (priority, then arrival, among the queued items: normally the
//! front of its priority, since it was the head when it was claimed), and logs at info
//! how many claimed items each queue exported. It does so exactly once: the claim
//! moves the item out of the item set in the same script (`ZPOPMIN`), so the item is
//! never both queued and claimed, and a member found in both, or in two records, is
//! listed once, as the put-back (a `ZADD` of the member) would leave it once. The
//! export only reads: the records stay on the source. As for every other item, a live
//! source must not be migrated: a claim there may be a dequeuer about to hand its item
//! over, and the copy would be a second delivery.
//!
//! **Consistency.** Two steps. `SCAN` with `MATCH {<ns>*` (cursor by cursor, never
//! `KEYS`) finds the candidate keys without blocking the server; then one script
//! (`lua/export.lua`) reads all of them at one instant. The scan is not atomic: a key
//! created while it runs may be missed. On a Redis Cluster the scan runs on every
//! master (`crate::scan`: a failover or resharding during it gives a new scan or an
//! error, never a master left out) and the script runs once per hash slot, since no
//! script reads two slots: each primitive is read at one instant, the namespace as a
//! whole is not. On a quiesced source, which is what migration is for and what the
//! refusal on `active_holds` guards, nothing is created or changed and the steps give
//! one consistent snapshot. The script holds the server while it reads, for
//! a time proportional to the size of the state (the items are read with `ZRANGE`):
//! export a large store off-peak.
//!
//! **Names.** A primitive's name is escaped in its keys ([`crate::keys`]: no braces
//! inside the hash tag), and unescaped here; an STM key's name is kept as it is and may
//! contain `}` and `:`, so a key's shape alone does not always say what it is: the
//! key's type decides (a queue's items are a sorted set, an STM
//! key a hash with a field `r`, a barrier and a hold entry are strings, the entry
//! holding `<mode letter><id>`). A key whose name part is not a valid distsync name is
//! skipped with a warning. Every namespace matched by `{<ns>*` is read, so a namespace
//! that is a prefix of another one's (`app` and `app2`) reads the other's keys too:
//! end namespaces with a separator (the default `distsync:` does).

use bytes::Bytes;
use distsync_core::migrate::{LatchState, QueueItem, Snapshot};
use distsync_core::{Error, Name, Result};
use redis::Value;

use crate::capabilities::BACKEND;
use crate::cluster::slot_groups;
use crate::error::{array, bytes, int, string, unexpected};
use crate::scan::{glob_escape, scan_matching};
use crate::scripts::SCRIPTS;
use crate::store::Shared;

/// The suffix of a queue's item set and of its in-flight records.
const QUEUE_ITEMS: &str = "}:queue:items";
const QUEUE_INFLIGHT: &str = "}:queue:inflight";
/// The suffix of a queue's received (held) items.
const QUEUE_HELD: &str = "}:queue:held";
/// What precedes a receiver call id in the key of its hold.
const QUEUE_HOLD: &str = "}:queue:e:";
const BARRIER: &str = "}:barrier";
const COUNTER: &str = "}:counter";
const LATCH: &str = "}:latch";
/// The suffix of an unfair lock's holder key, and what precedes a waiter's id in the
/// key of its marker ([`crate::unfair_lock`]).
const UNFAIR_HOLDER: &str = "}:lock:u";
const UNFAIR_WAITER: &str = "}:lock:um:";
/// What starts an STM key, after `{<ns>`.
const STM_KEY: &str = "stm}:k:";
/// The kinds of session-held entry, with the mode letters their values start with.
const ENTRY_KINDS: [(&str, &[u8]); 5] = [
    ("}:lock", b"w"),
    ("}:rw", b"rw"),
    ("}:elect", b"w"),
    ("}:dbar", b"d"),
    ("}:sem", b"s"),
];

/// The snapshot of everything under `namespace`.
pub(crate) async fn export(shared: &Shared, namespace: &str) -> Result<Snapshot> {
    let keys = scan(shared, namespace, is_candidate).await?;
    let mut gathered = Gathered::default();
    if keys.is_empty() {
        return Ok(gathered.snapshot);
    }
    for group in slot_groups(&keys, shared.is_cluster(), |key| key.as_str()) {
        let mut call = shared.script(&SCRIPTS.export);
        for key in &group {
            call.key(key.as_str());
        }
        let reply = array("export", shared.eval(&call).await?)?;
        if reply.len() != group.len() {
            return Err(Error::backend(
                BACKEND,
                format!("export read {} of {} keys", reply.len(), group.len()),
            ));
        }
        for (key, found) in group.into_iter().zip(reply) {
            let Some(relative) = key
                .strip_prefix('{')
                .and_then(|key| key.strip_prefix(namespace))
            else {
                continue;
            };
            gathered.add(key, relative, Found::parse(found)?)?;
        }
    }
    Ok(gathered.finish())
}

/// A queue item at its place: priority, then the member (16 hex digits of arrival and
/// the item), which sorts them in dequeue order.
type Placed = (u16, Vec<u8>);

/// What the export has read so far: the snapshot without its queues, every queue's
/// items at their places (queued and received ones come from two keys), and the items
/// of its claims left in flight, kept apart until every key is read so that each is
/// listed once.
#[derive(Default)]
struct Gathered {
    snapshot: Snapshot,
    queues: std::collections::BTreeMap<Name, Vec<Placed>>,
    claimed: std::collections::BTreeMap<Name, Vec<Placed>>,
}

impl Gathered {
    /// The snapshot, each queue's items in dequeue order, a claimed item among them
    /// where the put-back of its stale claim would place it, unless its member is
    /// already there.
    fn finish(mut self) -> Snapshot {
        for (name, claimed) in std::mem::take(&mut self.claimed) {
            let placed = self.queues.entry(name.clone()).or_default();
            let mut members: std::collections::HashSet<Vec<u8>> =
                placed.iter().map(|(_, member)| member.clone()).collect();
            let mut exported = 0usize;
            for (priority, member) in claimed {
                if members.insert(member.clone()) {
                    placed.push((priority, member));
                    exported += 1;
                }
            }
            if exported > 0 {
                tracing::info!(
                    queue = %name,
                    items = exported,
                    "export lists as queue items the items of at-most-once dequeue claims left \
                     in flight (their dequeuer died before handing them over): the source puts \
                     them back once their claims are stale, so they are not lost on migration"
                );
            }
        }
        for (name, mut placed) in self.queues {
            if placed.is_empty() {
                continue;
            }
            placed.sort();
            let items = placed
                .into_iter()
                .map(|(priority, member)| QueueItem {
                    priority,
                    item: Bytes::copy_from_slice(&member[16..]),
                })
                .collect();
            self.snapshot.queues.insert(name, items);
        }
        self.snapshot.barriers.sort();
        self.snapshot.active_holds.sort();
        self.snapshot
    }
}

/// Every key under the namespace whose part after `{<ns>` passes `keep`, each once,
/// sorted (`SCAN` cursor by cursor, never `KEYS`). Also used by [`crate::status`].
pub(crate) async fn scan(
    shared: &Shared,
    namespace: &str,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<String>> {
    let pattern = format!("{{{}*", glob_escape(namespace));
    let keys: std::collections::BTreeSet<String> = scan_matching(shared, &pattern)
        .await?
        .into_iter()
        .filter(|key| {
            key.strip_prefix('{')
                .and_then(|key| key.strip_prefix(namespace))
                .is_some_and(&keep)
        })
        .collect();
    Ok(keys.into_iter().collect())
}

/// Whether a key (after `{<ns>`) has the shape of something exported.
fn is_candidate(relative: &str) -> bool {
    relative.ends_with(QUEUE_ITEMS)
        || relative.ends_with(QUEUE_INFLIGHT)
        || relative.ends_with(QUEUE_HELD)
        || queue_hold(relative).is_some()
        || relative.ends_with(BARRIER)
        || relative.ends_with(COUNTER)
        || relative.ends_with(LATCH)
        || relative.starts_with(STM_KEY)
        || entry(relative).is_some()
        || relative.ends_with(UNFAIR_HOLDER)
        || unfair_waiter(relative)
}

/// Whether `relative` is an unfair lock waiter's marker `<name>}:lock:um:<id>`, `<id>`
/// being `<session>.<n>`: live while it exists (the script reads it as a string).
fn unfair_waiter(relative: &str) -> bool {
    relative
        .rsplit_once(UNFAIR_WAITER)
        .is_some_and(|(_, id)| entry_id(id))
}

/// Whether `s` is a decimal number.
fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `id` is an acquisition's id, `<session>.<n>`.
fn entry_id(id: &str) -> bool {
    id.split_once('.')
        .is_some_and(|(session, n)| digits(session) && digits(n))
}

/// Whether `value`, held by an unfair lock's holder key `<name>}:lock:u`, is a live
/// hold: `u<id>:<token>`.
fn unfair_hold(value: &[u8]) -> bool {
    let Some(value) = value
        .strip_prefix(b"u")
        .and_then(|v| std::str::from_utf8(v).ok())
    else {
        return false;
    };
    value
        .rsplit_once(':')
        .is_some_and(|(id, token)| entry_id(id) && digits(token))
}

/// `(name, mode letters, id)` if `relative` is `<name>}:<kind>:e:<id>`, `<id>` being
/// `<session>.<n>`.
fn entry(relative: &str) -> Option<(&str, &'static [u8], &str)> {
    let (head, id) = relative.rsplit_once(":e:")?;
    if !entry_id(id) {
        return None;
    }
    ENTRY_KINDS
        .iter()
        .find_map(|(suffix, letters)| head.strip_suffix(suffix).map(|name| (name, *letters, id)))
}

/// `(escaped queue name, receiver call id)` if `relative` is the hold key of a received
/// item, `<name>}:queue:e:c<instance>.<n>` (call ids: [`Shared::call_id`]).
fn queue_hold(relative: &str) -> Option<(&str, &str)> {
    let (name, id) = relative.rsplit_once(QUEUE_HOLD)?;
    let (instance, n) = id.strip_prefix('c')?.split_once('.')?;
    (digits(instance) && digits(n)).then_some((name, id))
}

/// What the script found at one key.
enum Found {
    SortedSet(Vec<(Vec<u8>, String)>),
    Hash {
        len: i64,
        revision: bool,
        value: Option<Vec<u8>>,
        /// Every value of a hash without a revision (a queue's records).
        values: Vec<Vec<u8>>,
    },
    String(Vec<u8>),
    Other,
}

impl Found {
    fn parse(reply: Value) -> Result<Self> {
        let mut fields = array("export", reply.clone())?.into_iter();
        let mut next = || fields.next().ok_or_else(|| unexpected("export", &reply));
        Ok(match string("export", next()?)?.as_str() {
            "zset" => {
                let mut flat = array("export", next()?)?.into_iter();
                let mut members = Vec::new();
                while let Some(member) = flat.next() {
                    let member = bytes("export", member)?.unwrap_or_default();
                    let score = flat.next().ok_or_else(|| unexpected("export", &reply))?;
                    members.push((member, string("export", score)?));
                }
                Found::SortedSet(members)
            }
            "hash" => Found::Hash {
                len: int("export", &next()?)?,
                revision: int("export", &next()?)? == 1,
                value: bytes("export", next()?)?,
                values: array("export", next()?)?
                    .into_iter()
                    .map(|value| Ok(bytes("export", value)?.unwrap_or_default()))
                    .collect::<Result<_>>()?,
            },
            "string" => Found::String(bytes("export", next()?)?.unwrap_or_default()),
            _ => Found::Other,
        })
    }
}

/// The name of a primitive from the escaped name in its key.
fn primitive_name_of(key: &str, escaped: &str) -> Option<Name> {
    match crate::keys::unescape_name(escaped) {
        Some(name) => name_of(key, &name),
        None => {
            tracing::warn!(%key, "export skips a key whose name is not escaped as distsync escapes names");
            None
        }
    }
}

fn name_of(key: &str, name: &str) -> Option<Name> {
    match Name::new(name) {
        Ok(name) => Some(name),
        Err(error) => {
            tracing::warn!(%key, %error, "export skips a key whose name is not a distsync name");
            None
        }
    }
}

impl Gathered {
    /// Adds what one key holds.
    fn add(&mut self, key: &str, relative: &str, found: Found) -> Result<()> {
        let snapshot = &mut self.snapshot;
        match found {
            Found::SortedSet(members) => {
                let queue = relative.strip_suffix(QUEUE_ITEMS);
                let Some(name) = queue.and_then(|name| primitive_name_of(key, name)) else {
                    return Ok(());
                };
                let placed = members
                    .into_iter()
                    .map(|(member, score)| queue_item(key, member, &score))
                    .collect::<Result<Vec<_>>>()?;
                self.queues.entry(name).or_default().extend(placed);
            }
            Found::Hash {
                revision: true,
                value,
                ..
            } => {
                // An STM key; without a value it is the tombstone of a deleted key.
                if let (Some(name), Some(value)) = (relative.strip_prefix(STM_KEY), value) {
                    if let Some(name) = name_of(key, name) {
                        snapshot.stm.insert(name, Bytes::from(value));
                    }
                }
            }
            Found::Hash {
                revision: false,
                len,
                values,
                ..
            } => {
                if let Some(name) = relative.strip_suffix(LATCH) {
                    if let Some(name) = primitive_name_of(key, name) {
                        snapshot.latches.insert(name, latch(key, len, &values)?);
                    }
                } else if let Some(name) = relative.strip_suffix(QUEUE_INFLIGHT) {
                    // Claims left in flight: their items go back once stale.
                    if let Some(name) = primitive_name_of(key, name) {
                        let placed = held_items(key, values)?;
                        self.claimed.entry(name).or_default().extend(placed);
                    }
                } else if let Some(name) = relative.strip_suffix(QUEUE_HELD) {
                    if let Some(name) = primitive_name_of(key, name) {
                        let placed = held_items(key, values)?;
                        self.queues.entry(name).or_default().extend(placed);
                    }
                }
            }
            Found::String(value) => {
                if let Some(name) = relative.strip_suffix(BARRIER) {
                    if let Some(name) = primitive_name_of(key, name) {
                        snapshot.barriers.push(name);
                    }
                } else if let Some(name) = relative.strip_suffix(COUNTER) {
                    if let Some(name) = primitive_name_of(key, name) {
                        let value = crate::counter::parse_value(&name, Some(value))?;
                        snapshot.counters.insert(name, value);
                    }
                } else if let Some((_, letters, id)) = entry(relative) {
                    let live = value.split_first().is_some_and(|(mode, rest)| {
                        letters.contains(mode) && rest == id.as_bytes()
                    });
                    if live {
                        snapshot.active_holds.push(key.to_owned());
                    }
                } else if let Some((_, id)) = queue_hold(relative) {
                    // A received item's hold: its value is `q<call id>`.
                    if value.strip_prefix(b"q") == Some(id.as_bytes()) {
                        snapshot.active_holds.push(key.to_owned());
                    }
                } else if unfair_waiter(relative)
                    || (relative.ends_with(UNFAIR_HOLDER) && unfair_hold(&value))
                {
                    snapshot.active_holds.push(key.to_owned());
                }
            }
            Found::Other => {}
        }
        Ok(())
    }
}

/// A latch from its hash's field count and values. The script reads the values
/// without their fields (`HVALS`); a stored latch has exactly `initial` and
/// `remaining`, and its remaining count never exceeds its initial one, so the larger
/// value is the initial count.
fn latch(key: &str, len: i64, values: &[Vec<u8>]) -> Result<LatchState> {
    let counts: Option<Vec<u64>> = values
        .iter()
        .map(|value| std::str::from_utf8(value).ok()?.parse().ok())
        .collect();
    match counts.as_deref() {
        Some(&[a, b]) if len == 2 => Ok(LatchState {
            initial: a.max(b),
            remaining: a.min(b),
        }),
        _ => Err(Error::backend(
            BACKEND,
            format!("latch {key:?} holds a hash that is not a latch"),
        )),
    }
}

/// One member of a queue's sorted set (16 hex digits of arrival, then the item) with
/// its score, the priority.
fn queue_item(key: &str, member: Vec<u8>, score: &str) -> Result<Placed> {
    let malformed = |what: &str| {
        Error::backend(
            BACKEND,
            format!("queue {key:?} holds a malformed item ({what})"),
        )
    };
    let priority: u16 = score
        .parse()
        .map_err(|_| malformed(&format!("priority {score:?}")))?;
    let arrival = member.get(..16).ok_or_else(|| malformed("too short"))?;
    if !arrival.iter().all(u8::is_ascii_hexdigit) {
        return Err(malformed("no arrival number"));
    }
    Ok((priority, member))
}

/// Every record of the hash `key`, a queue's received items or its claims
/// ([`held_item`]).
fn held_items(key: &str, records: Vec<Vec<u8>>) -> Result<Vec<Placed>> {
    records
        .into_iter()
        .map(|record| held_item(key, record))
        .collect()
}

/// One record of a queue's received items or of its claims: `<priority, 5
/// digits><member>`.
fn held_item(key: &str, mut record: Vec<u8>) -> Result<Placed> {
    if record.len() < 5 {
        return Err(Error::backend(
            BACKEND,
            format!("queue {key:?} holds a malformed record (too short)"),
        ));
    }
    let member = record.split_off(5);
    queue_item(key, member, &String::from_utf8_lossy(&record))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Adds what the key `{ns:<relative>` holds, as the export reads it from the
    /// namespace `ns`.
    fn add(gathered: &mut Gathered, relative: &str, found: Found) -> Result<()> {
        gathered.add(&format!("{{ns:{relative}"), relative, found)
    }

    /// What the export script reports for a hash without a revision that holds
    /// `values` (a latch's two counts, a queue's records).
    fn hash_of(values: &[&[u8]]) -> Found {
        Found::Hash {
            len: i64::try_from(values.len()).unwrap(),
            revision: false,
            value: None,
            values: values.iter().map(|value| value.to_vec()).collect(),
        }
    }

    /// What the export script reports for a queue's item set: each member with its
    /// score, the priority.
    fn sorted_set_of(members: &[(&[u8], &str)]) -> Found {
        Found::SortedSet(
            members
                .iter()
                .map(|(member, score)| (member.to_vec(), (*score).to_owned()))
                .collect(),
        )
    }

    /// The items `snapshot` lists for the queue `queue`, in order: priority and item.
    fn items_of<'s>(snapshot: &'s Snapshot, queue: &str) -> Vec<(u16, &'s [u8])> {
        snapshot.queues[&Name::new(queue).unwrap()]
            .iter()
            .map(|item| (item.priority, item.item.as_ref()))
            .collect()
    }

    #[test]
    fn entry_keys_are_recognised_by_their_layout() {
        assert_eq!(
            entry("jobs}:lock:e:12.0"),
            Some(("jobs", &b"w"[..], "12.0"))
        );
        assert_eq!(entry("a}:b}:rw:e:3.41"), Some(("a}:b", &b"rw"[..], "3.41")));
        assert_eq!(entry("gate}:dbar:e:1.2").map(|e| e.1), Some(&b"d"[..]));
        assert_eq!(entry("x}:elect:e:7.7").map(|e| e.0), Some("x"));
        assert!(entry("jobs}:queue:e:1.2").is_none());
        assert!(entry("jobs}:lock:e:1").is_none());
        assert!(entry("jobs}:lock:e:c1.2").is_none());
        assert!(entry("jobs}:lock:fence").is_none());
    }

    #[test]
    fn candidates_are_the_exported_shapes_only() {
        for key in [
            "jobs}:queue:items",
            "jobs}:queue:inflight",
            "gate}:barrier",
            "stm}:k:accounts/a",
            "m}:lock:e:1.0",
            "jobs}:queue:held",
            "jobs}:queue:e:c12.3",
            "visits}:counter",
            "ready}:latch",
        ] {
            assert!(is_candidate(key), "{key}");
        }
        for key in [
            "jobs}:queue:seq",
            "jobs}:queue:waiters",
            "m}:lock:fence",
            "m}:lock:epoch",
            "m}:lock:q",
            "stm}:rev",
            "session:4}",
            "session:4}:held",
            "client}:seq",
            "jobs}:queue:e:12.3",
            "jobs}:queue:e:c12",
            "ready}:latch:ch",
            "visits}:counter:x",
        ] {
            assert!(!is_candidate(key), "{key}");
        }
    }

    #[test]
    fn counters_and_latches_are_read_from_their_keys() {
        let mut gathered = Gathered::default();
        add(
            &mut gathered,
            "site%7Dx}:counter",
            Found::String(b"-41".to_vec()),
        )
        .unwrap();
        let latch = hash_of(&[b"1", b"3"]);
        add(&mut gathered, "ready}:latch", latch).unwrap();
        let snapshot = gathered.finish();
        assert_eq!(snapshot.counters[&Name::new("site}x").unwrap()], -41);
        assert_eq!(
            snapshot.latches[&Name::new("ready").unwrap()],
            LatchState {
                initial: 3,
                remaining: 1
            }
        );
        let mut gathered = Gathered::default();
        let bad = Found::String(b"x".to_vec());
        assert!(add(&mut gathered, "c}:counter", bad).is_err());
        let bad = hash_of(&[b"3"]);
        assert!(add(&mut gathered, "l}:latch", bad).is_err());
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("app:"), "app:");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn queue_members_split_into_arrival_and_item() {
        let item = queue_item("k", b"000000000000000aitem".to_vec(), "7").unwrap();
        assert_eq!(item, (7, b"000000000000000aitem".to_vec()));
        assert!(queue_item("k", b"000000000000000a".to_vec(), "0").is_ok());
        assert!(queue_item("k", b"short".to_vec(), "0").is_err());
        assert!(queue_item("k", b"000000000000000aitem".to_vec(), "70000").is_err());
        assert!(queue_item("k", b"zzzzzzzzzzzzzzzzitem".to_vec(), "1").is_err());
    }

    #[test]
    fn escaped_names_are_exported_unescaped() {
        let mut gathered = Gathered::default();
        add(
            &mut gathered,
            "a%7Db%25}:barrier",
            Found::String(b"1".to_vec()),
        )
        .unwrap();
        // Not an escape distsync writes: skipped.
        add(&mut gathered, "a%41}:barrier", Found::String(b"1".to_vec())).unwrap();
        assert_eq!(gathered.snapshot.barriers, [Name::new("a}b%").unwrap()]);
    }

    #[test]
    fn a_live_entry_holds_its_mode_letter_and_id() {
        let mut gathered = Gathered::default();
        let live = "{ns:m}:rw:e:3.1";
        add(
            &mut gathered,
            "m}:rw:e:3.1",
            Found::String(b"r3.1".to_vec()),
        )
        .unwrap();
        add(
            &mut gathered,
            "m}:lock:e:3.2",
            Found::String(b"r3.2".to_vec()),
        )
        .unwrap();
        assert_eq!(gathered.snapshot.active_holds, [live]);
    }

    #[test]
    fn an_unfair_holder_and_its_waiters_are_live_holds() {
        let mut gathered = Gathered::default();
        for (key, value) in [
            ("m}:lock:u", "u3.1:17"),
            ("n}:lock:u", "not a hold"),
            ("m}:lock:um:3.2", "1"),
            ("m}:lock:um:x", "1"),
        ] {
            add(&mut gathered, key, Found::String(value.into())).unwrap();
        }
        assert_eq!(
            gathered.snapshot.active_holds,
            ["{ns:m}:lock:u", "{ns:m}:lock:um:3.2"]
        );
        assert!(is_candidate("m}:lock:u") && is_candidate("m}:lock:um:3.2"));
        assert!(!is_candidate("m}:lock:uq") && !is_candidate("m}:lock:uw:3.2"));
    }

    #[test]
    fn received_items_are_exported_at_their_places_and_their_holds_as_live() {
        let mut gathered = Gathered::default();
        // Queued: arrivals 1 and 3 at priority 0, arrival 2 at priority 5.
        add(
            &mut gathered,
            "jobs}:queue:items",
            sorted_set_of(&[
                (b"0000000000000001a", "0"),
                (b"0000000000000003c", "0"),
                (b"0000000000000002b", "5"),
            ]),
        )
        .unwrap();
        // Received and not acknowledged: arrival 2 at priority 0, 4 at priority 5.
        add(
            &mut gathered,
            "jobs}:queue:held",
            hash_of(&[b"000050000000000000004d", b"000000000000000000002r"]),
        )
        .unwrap();
        for (key, value) in [("jobs}:queue:e:c7.1", "qc7.1"), ("jobs}:queue:e:c7.2", "x")] {
            add(&mut gathered, key, Found::String(value.into())).unwrap();
        }
        let snapshot = gathered.finish();
        assert_eq!(
            items_of(&snapshot, "jobs"),
            [(0, &b"a"[..]), (0, b"r"), (0, b"c"), (5, b"b"), (5, b"d")]
        );
        assert_eq!(snapshot.active_holds, ["{ns:jobs}:queue:e:c7.1"]);
        assert!(held_item("k", b"0000".to_vec()).is_err());
    }

    #[test]
    fn claimed_items_are_exported_at_their_places_once() {
        let mut gathered = Gathered::default();
        // Claims left in flight, read before the item set (keys sort `inflight` first):
        // arrival 1 at priority 0 (the head when claimed), arrival 4 at priority 5,
        // arrival 3 at priority 0 again (a member also queued) and twice arrival 1.
        add(
            &mut gathered,
            "jobs}:queue:inflight",
            hash_of(&[
                b"000000000000000000001a",
                b"000050000000000000004d",
                b"000000000000000000003c",
                b"000000000000000000001a",
            ]),
        )
        .unwrap();
        add(
            &mut gathered,
            "jobs}:queue:items",
            sorted_set_of(&[(b"0000000000000002b", "0"), (b"0000000000000003c", "0")]),
        )
        .unwrap();
        // A queue whose only item is claimed.
        add(
            &mut gathered,
            "solo}:queue:inflight",
            hash_of(&[b"000070000000000000009s"]),
        )
        .unwrap();
        let snapshot = gathered.finish();
        assert_eq!(
            items_of(&snapshot, "jobs"),
            [(0, &b"a"[..]), (0, b"b"), (0, b"c"), (5, b"d")]
        );
        assert_eq!(items_of(&snapshot, "solo"), [(7, &b"s"[..])]);
        assert!(snapshot.active_holds.is_empty());
        let mut gathered = Gathered::default();
        let bad = hash_of(&[b"00000zz"]);
        assert!(add(&mut gathered, "q}:queue:inflight", bad).is_err());
    }
}
