//! Reading the durable state of a namespace for migration ([`distsync_core::migrate`]).
//!
//! What is read, by the layouts of the other modules ([`crate::keys`]):
//!
//! | state | keys | exported as |
//! |---|---|---|
//! | queue items | the sorted set `{<ns><name>}:queue:items` | the queue `<name>`, in `ZRANGE` order (priority, then arrival: the dequeue order); the priority is the score, the item what follows the 16 hex digits of the arrival number |
//! | STM keys | the hash `{<ns>stm}:k:<name>` with its value in `v` | the STM key `<name>`; a deleted key (its tombstone has only the revision `r`) is skipped |
//! | barriers | the string `{<ns><name>}:barrier` | a held barrier `<name>` |
//! | live holds | the session-held entry keys `{<ns><name>}:<kind>:e:<id>` (kind `lock`, `rw`, `elect`, `sem` or `dbar`) of holders, waiters, semaphore permits and double-barrier participants | `active_holds`: their keys, as the guards' `key()` shows them |
//!
//! Everything else is bookkeeping and is not exported: sessions and their registries,
//! fencing-token counters (on a Redis destination they are seeded from its clock, so
//! tokens keep growing if its clock is not behind the source's), election change
//! counters, queue arrival counters and waiter registrations, the STM revision.
//!
//! **In-flight items are not exported.** A dequeue parks the item it pops in
//! `{<ns><name>}:queue:inflight` until its call has returned it (see [`crate::queue`]).
//! On a quiesced source the records left there are items whose consumer process died
//! between the pop and the acknowledgement; since the pop's reply is returned at once
//! and only the acknowledgement comes later, such an item has most likely been handed
//! to the application already. Copying it could deliver it twice, which the queue
//! contract forbids; so the export leaves it where it is (it reads, never moves, it)
//! and logs a warning naming the hash and the count, so that an operator can inspect
//! the records and push back by hand what was really lost before migrating.
//!
//! **Consistency.** Two steps. `SCAN` with `MATCH {<ns>*` (cursor by cursor, never
//! `KEYS`) finds the candidate keys without blocking the server; then one script
//! (`lua/export.lua`) reads all of them at one instant. The scan is not atomic: a key
//! created while it runs may be missed. On a quiesced source, which is what migration
//! is for and what the refusal on `active_holds` guards, nothing is created and the two
//! steps give one consistent snapshot. The script holds the server while it reads, for
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
use distsync_core::migrate::{QueueItem, Snapshot};
use distsync_core::{Error, Name, Result};
use redis::Value;

use crate::error::{array, bytes, int, string, unexpected};
use crate::scripts::SCRIPTS;
use crate::store::Shared;
use crate::BACKEND;

/// Keys asked for per `SCAN` step.
const SCAN_COUNT: u32 = 1000;

/// The suffix of a queue's item set and of its in-flight records.
const QUEUE_ITEMS: &str = "}:queue:items";
const QUEUE_INFLIGHT: &str = "}:queue:inflight";
const BARRIER: &str = "}:barrier";
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
    let mut snapshot = Snapshot::default();
    if keys.is_empty() {
        return Ok(snapshot);
    }
    let mut call = shared.script(&SCRIPTS.export);
    for key in &keys {
        call.key(key.as_str());
    }
    let reply = array("export", shared.eval(&call).await?)?;
    if reply.len() != keys.len() {
        return Err(Error::backend(
            BACKEND,
            format!("export read {} of {} keys", reply.len(), keys.len()),
        ));
    }
    for (key, found) in keys.iter().zip(reply) {
        let Some(relative) = key
            .strip_prefix('{')
            .and_then(|key| key.strip_prefix(namespace))
        else {
            continue;
        };
        add(&mut snapshot, key, relative, Found::parse(found)?)?;
    }
    snapshot.barriers.sort();
    snapshot.active_holds.sort();
    Ok(snapshot)
}

/// Every key under the namespace whose part after `{<ns>` passes `keep`, each once,
/// sorted (`SCAN` cursor by cursor, never `KEYS`). Also used by [`crate::status`].
pub(crate) async fn scan(
    shared: &Shared,
    namespace: &str,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<String>> {
    let pattern = format!("{{{}*", glob_escape(namespace));
    let mut keys = std::collections::BTreeSet::new();
    let mut cursor = String::from("0");
    loop {
        let reply = shared
            .query(
                redis::cmd("SCAN")
                    .arg(&cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(SCAN_COUNT),
            )
            .await?;
        let mut parts = array("SCAN", reply.clone())?.into_iter();
        let (Some(next), Some(batch), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(unexpected("SCAN", &reply));
        };
        cursor = string("SCAN", next)?;
        for key in array("SCAN", batch)? {
            // Keys that are not UTF-8 are no distsync keys.
            if let Some(Ok(key)) = bytes("SCAN", key)?.map(String::from_utf8) {
                if key
                    .strip_prefix('{')
                    .and_then(|key| key.strip_prefix(namespace))
                    .is_some_and(&keep)
                {
                    keys.insert(key);
                }
            }
        }
        if cursor == "0" {
            return Ok(keys.into_iter().collect());
        }
    }
}

/// `text` with the glob characters of `SCAN MATCH` escaped.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Whether a key (after `{<ns>`) has the shape of something exported.
fn is_candidate(relative: &str) -> bool {
    relative.ends_with(QUEUE_ITEMS)
        || relative.ends_with(QUEUE_INFLIGHT)
        || relative.ends_with(BARRIER)
        || relative.starts_with(STM_KEY)
        || entry(relative).is_some()
}

/// `(name, mode letters, id)` if `relative` is `<name>}:<kind>:e:<id>`, `<id>` being
/// `<session>.<n>`.
fn entry(relative: &str) -> Option<(&str, &'static [u8], &str)> {
    let (head, id) = relative.rsplit_once(":e:")?;
    let (session, n) = id.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(session) || !digits(n) {
        return None;
    }
    ENTRY_KINDS
        .iter()
        .find_map(|(suffix, letters)| head.strip_suffix(suffix).map(|name| (name, *letters, id)))
}

/// What the script found at one key.
enum Found {
    SortedSet(Vec<(Vec<u8>, String)>),
    Hash {
        len: i64,
        revision: bool,
        value: Option<Vec<u8>>,
    },
    String(Vec<u8>),
    Other,
}

impl Found {
    fn parse(reply: Value) -> Result<Self> {
        let mut fields = array("export", reply.clone())?.into_iter();
        let kind = match fields.next() {
            Some(kind) => string("export", kind)?,
            None => return Err(unexpected("export", &reply)),
        };
        let mut next = || fields.next().ok_or_else(|| unexpected("export", &reply));
        Ok(match kind.as_str() {
            "zset" => {
                let mut flat = array("export", next()?)?.into_iter();
                let mut members = Vec::new();
                while let Some(member) = flat.next() {
                    let member = bytes("export", member)?.unwrap_or_default();
                    let score = match flat.next() {
                        Some(score) => string("export", score)?,
                        None => return Err(unexpected("export", &reply)),
                    };
                    members.push((member, score));
                }
                Found::SortedSet(members)
            }
            "hash" => Found::Hash {
                len: int("export", &next()?)?,
                revision: int("export", &next()?)? == 1,
                value: bytes("export", next()?)?,
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

/// Adds what one key holds to the snapshot.
fn add(snapshot: &mut Snapshot, key: &str, relative: &str, found: Found) -> Result<()> {
    match found {
        Found::SortedSet(members) => {
            let Some(name) = relative.strip_suffix(QUEUE_ITEMS) else {
                return Ok(());
            };
            let Some(name) = primitive_name_of(key, name) else {
                return Ok(());
            };
            let items = members
                .into_iter()
                .map(|(member, score)| queue_item(key, member, &score))
                .collect::<Result<Vec<_>>>()?;
            if !items.is_empty() {
                snapshot.queues.insert(name, items);
            }
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
            ..
        } => {
            if relative.ends_with(QUEUE_INFLIGHT) && len > 0 {
                tracing::warn!(
                    %key,
                    items = len,
                    "export leaves out queue items popped but never acknowledged (a consumer \
                     died holding them): check them and push back what was lost before migrating"
                );
            }
        }
        Found::String(value) => {
            if let Some(name) = relative.strip_suffix(BARRIER) {
                if let Some(name) = primitive_name_of(key, name) {
                    snapshot.barriers.push(name);
                }
            } else if let Some((_, letters, id)) = entry(relative) {
                let live = value
                    .split_first()
                    .is_some_and(|(mode, rest)| letters.contains(mode) && rest == id.as_bytes());
                if live {
                    snapshot.active_holds.push(key.to_owned());
                }
            }
        }
        Found::Other => {}
    }
    Ok(())
}

/// One member of a queue's sorted set: 16 hex digits of arrival, then the item.
fn queue_item(key: &str, member: Vec<u8>, score: &str) -> Result<QueueItem> {
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
    Ok(QueueItem {
        priority,
        item: Bytes::copy_from_slice(&member[16..]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        ] {
            assert!(is_candidate(key), "{key}");
        }
        for key in [
            "jobs}:queue:seq",
            "jobs}:queue:waiters",
            "m}:lock:fence",
            "m}:lock:q",
            "stm}:rev",
            "session:4}",
            "session:4}:held",
            "client}:seq",
        ] {
            assert!(!is_candidate(key), "{key}");
        }
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("app:"), "app:");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn queue_members_split_into_arrival_and_item() {
        let item = queue_item("k", b"000000000000000aitem".to_vec(), "7").unwrap();
        assert_eq!((item.priority, item.item.as_ref()), (7, &b"item"[..]));
        let empty = queue_item("k", b"000000000000000a".to_vec(), "0").unwrap();
        assert!(empty.item.is_empty());
        assert!(queue_item("k", b"short".to_vec(), "0").is_err());
        assert!(queue_item("k", b"000000000000000aitem".to_vec(), "70000").is_err());
        assert!(queue_item("k", b"zzzzzzzzzzzzzzzzitem".to_vec(), "1").is_err());
    }

    #[test]
    fn escaped_names_are_exported_unescaped() {
        let mut snapshot = Snapshot::default();
        add(
            &mut snapshot,
            "{ns:a%7Db%25}:barrier",
            "a%7Db%25}:barrier",
            Found::String(b"1".to_vec()),
        )
        .unwrap();
        // Not an escape distsync writes: skipped.
        add(
            &mut snapshot,
            "{ns:a%41}:barrier",
            "a%41}:barrier",
            Found::String(b"1".to_vec()),
        )
        .unwrap();
        assert_eq!(snapshot.barriers, [Name::new("a}b%").unwrap()]);
    }

    #[test]
    fn a_live_entry_holds_its_mode_letter_and_id() {
        let mut snapshot = Snapshot::default();
        let live = "{ns:m}:rw:e:3.1";
        add(
            &mut snapshot,
            live,
            "m}:rw:e:3.1",
            Found::String(b"r3.1".to_vec()),
        )
        .unwrap();
        add(
            &mut snapshot,
            "{ns:m}:lock:e:3.2",
            "m}:lock:e:3.2",
            Found::String(b"r3.2".to_vec()),
        )
        .unwrap();
        assert_eq!(snapshot.active_holds, [live]);
    }
}
