//! Counting and removing every key of the primitives under a name prefix
//! ([`Backend::count_prefix`](distsync_core::Backend::count_prefix),
//! [`Backend::purge_prefix`](distsync_core::Backend::purge_prefix)).
//!
//! A name reaches the store in two shapes (see [`super::key`]):
//!
//! - raw, right after the namespace: `<ns><name>/...` (locks and elections in every
//!   layout, every Go-layout primitive) or `<ns><name>` (a Go-layout barrier or STM
//!   key). One prefix range `<ns><prefix>/` and one key `<ns><prefix>` cover them.
//! - escaped, as one segment of the reserved area: `<ns>/<kind>/<escaped name>[/...]`.
//!   The segment holds no `/`, so a prefix of names is no prefix of keys there; every
//!   key of the area is read and its segment decoded, whatever the kind word, so a kind
//!   added later is covered too.

use distsync_core::error::Result;
use distsync_core::name::Name;
use distsync_core::raw::name_under;

use super::key::{unescape, KeySpace};
use crate::kv::{Kv, Range, Txn, TxnOp, TxnOpResponse};

/// Keys deleted per transaction: below etcd's default limit of 128 operations.
const BATCH: usize = 100;

/// Every key of a primitive whose name is `prefix` or lies under it, sorted.
async fn keys_under(kv: &dyn Kv, space: &KeySpace, prefix: &Name) -> Result<Vec<String>> {
    let namespace = space.namespace();
    let raw = format!("{namespace}{prefix}");
    let mut keys: Vec<String> = Vec::new();
    for range in [Range::key(raw.clone()), Range::prefix(format!("{raw}/"))] {
        keys.extend(kv.range(range).await?.kvs.into_iter().map(|kv| kv.key));
    }
    let area = format!("{namespace}/");
    for found in kv.range(Range::prefix(area.clone())).await?.kvs {
        if reserved_name(&found.key[area.len()..]).is_some_and(|name| name_under(&name, prefix)) {
            keys.push(found.key);
        }
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// The name in a reserved-area key `<kind>/<escaped name>[/...]` (after `<ns>/`).
fn reserved_name(relative: &str) -> Option<String> {
    let (_, rest) = relative.split_once('/')?;
    let segment = rest.split('/').next()?;
    unescape(segment)
}

/// How many keys [`purge_prefix`] would delete.
pub(crate) async fn count_prefix(kv: &dyn Kv, space: &KeySpace, prefix: &Name) -> Result<u64> {
    Ok(keys_under(kv, space, prefix).await?.len() as u64)
}

/// Deletes every key of the primitives under `prefix`, a batch of keys per
/// transaction, and returns how many it deleted. Leased keys go with their keys only:
/// the leases (sessions) stay, to expire or be revoked by their owners.
pub(crate) async fn purge_prefix(kv: &dyn Kv, space: &KeySpace, prefix: &Name) -> Result<u64> {
    let keys = keys_under(kv, space, prefix).await?;
    let mut deleted = 0_u64;
    for batch in keys.chunks(BATCH) {
        let ops = batch.iter().map(TxnOp::delete).collect();
        let answer = kv.txn(Txn::when(Vec::new()).and_then(ops)).await?;
        deleted += answer
            .responses
            .iter()
            .map(|response| match response {
                TxnOpResponse::Delete(n) => u64::try_from(*n).unwrap_or(0),
                _ => 0,
            })
            .sum::<u64>();
    }
    tracing::debug!(%prefix, deleted, "purged a name prefix");
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_keys_decode_to_their_name() {
        assert_eq!(
            reserved_name("queue/conf%2Frun%2Fq/00001/0000000000000001").as_deref(),
            Some("conf/run/q")
        );
        assert_eq!(
            reserved_name("stm/conf%2Frun%2Fk").as_deref(),
            Some("conf/run/k")
        );
        assert_eq!(reserved_name("stm"), None);
        assert_eq!(reserved_name("stm/bad%zz"), None);
    }
}
