//! Counting and removing the keys of every primitive under a name prefix
//! ([`Backend::count_prefix`](distsync_core::Backend::count_prefix),
//! [`Backend::purge_prefix`](distsync_core::Backend::purge_prefix)).
//!
//! A name reaches a key in two places (see `keys.rs`): escaped inside a primitive's
//! hash tag, `{<ns><escaped name>}:<kind>...`, and as it is after the STM tag,
//! `{<ns>stm}:k:<name>`. Two `SCAN MATCH` patterns find the candidates (cursor by
//! cursor, never `KEYS`; on a Redis Cluster on every master, see `scan.rs`); each is
//! checked exactly before it is counted or unlinked, so `jobs` never takes `jobs2`.
//! Sessions, which belong to no name, are left to expire.
//!
//! On a Redis Cluster an `UNLINK` names keys of one hash slot only: with replica
//! acknowledgement (`wait_replicas`) the command and its `WAIT` go, as one pipeline, to
//! the master of its first key, which refuses keys of another slot (`CROSSSLOT`).

use distsync_core::{Name, Result};

use crate::cluster::slot_groups;
use crate::error::int;
use crate::keys::escape_name;
use crate::scan::{glob_escape, scan_matching};
use crate::store::Shared;

/// Keys unlinked per `UNLINK`.
const BATCH: usize = 1000;

/// Every key of a primitive named `prefix` or under it, sorted.
async fn keys_under(shared: &Shared, prefix: &Name) -> Result<Vec<String>> {
    let ns = shared.namespace();
    let tagged = format!("{{{ns}{}", escape_name(prefix.as_str()));
    let stm = format!("{{{ns}stm}}:k:{prefix}");
    let mut keys = Vec::new();
    for head in [&tagged, &stm] {
        let pattern = format!("{}*", glob_escape(head));
        for key in scan_matching(shared, &pattern).await? {
            let under = key.strip_prefix(head.as_str()).is_some_and(|rest| {
                if *head == tagged {
                    rest.starts_with('}') || rest.starts_with('/')
                } else {
                    rest.is_empty() || rest.starts_with('/')
                }
            });
            // `{<tag>}:ack` is the write that precedes a replica acknowledgement under
            // Cluster (`call.rs`, `wait_replicas`), in the primitive's slot: no state, gone
            // after a second, and written again by the purge's own `UNLINK`s.
            let ack =
                *head == tagged && key.rsplit_once('}').is_some_and(|(_, tail)| tail == ":ack");
            if under && !ack {
                keys.push(key);
            }
        }
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// How many keys [`purge_prefix`] would unlink.
pub(crate) async fn count_prefix(shared: &Shared, prefix: &Name) -> Result<u64> {
    Ok(keys_under(shared, prefix).await?.len() as u64)
}

/// Unlinks every key of the primitives under `prefix`, a batch per `UNLINK`, and
/// returns how many were unlinked.
pub(crate) async fn purge_prefix(shared: &Shared, prefix: &Name) -> Result<u64> {
    let keys = keys_under(shared, prefix).await?;
    let mut unlinked = 0_u64;
    for group in slot_groups(keys, shared.is_cluster(), String::as_str) {
        for batch in group.chunks(BATCH) {
            let reply = shared.query(redis::cmd("UNLINK").arg(batch)).await?;
            unlinked += u64::try_from(int("UNLINK", &reply)?).unwrap_or(0);
        }
    }
    tracing::debug!(%prefix, unlinked, "purged a name prefix");
    Ok(unlinked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::cluster_routing::Slot;

    #[test]
    fn cluster_unlinks_are_grouped_by_slot() {
        let keys: Vec<String> = ["{a}:lock", "{b}:lock", "{a}:lock:e:1", "{c}:queue"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            slot_groups(keys.clone(), false, String::as_str),
            vec![keys.clone()]
        );
        let groups = slot_groups(keys, true, String::as_str);
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), 4);
        for group in &groups {
            let slot = Slot::for_key(&group[0]);
            assert!(
                group.iter().all(|key| Slot::for_key(key) == slot),
                "{group:?}"
            );
        }
        assert!(groups
            .iter()
            .any(|group| group == &["{a}:lock".to_owned(), "{a}:lock:e:1".to_owned()]));
    }
}
