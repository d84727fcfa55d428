//! Counting and removing the keys of a name prefix
//! ([`Backend::count_prefix`](distsync_core::Backend::count_prefix),
//! [`Backend::purge_prefix`](distsync_core::Backend::purge_prefix)).
//!
//! A key's name is its second token, escaped (see `src/keys.rs`), and a prefix covers
//! whole segments of a name, so the keys are listed per kind and matched after
//! unescaping: one batched direct get per kind, O(keys of the bucket). Session keys
//! belong to no name and are left alone.

use distsync_core::raw::name_under;
use distsync_core::{Name, Result};

use crate::keys::{self, Kind};
use crate::shared::Shared;
use crate::store::{Entry, Write};

/// The live keys of the names under `prefix`.
async fn keys_under(shared: &Shared, prefix: &Name) -> Result<Vec<Entry>> {
    let (entries, _) = shared.store.list(&Kind::every_key()).await?;
    Ok(entries
        .into_iter()
        .filter(|entry| {
            entry.live() && keys::name_of(&entry.key).is_some_and(|name| name_under(&name, prefix))
        })
        .collect())
}

/// How many live keys the names under `prefix` have.
pub(crate) async fn count_prefix(shared: &Shared, prefix: &Name) -> Result<u64> {
    Ok(keys_under(shared, prefix).await?.len() as u64)
}

/// Purges every live key of the names under `prefix`; returns how many it purged.
/// A holder's key purged here ends its session at its next renewal.
pub(crate) async fn purge_prefix(shared: &Shared, prefix: &Name) -> Result<u64> {
    let mut purged = 0;
    for entry in keys_under(shared, prefix).await? {
        shared
            .store
            .publish(Write::purge(entry.key.as_str()))
            .await?
            .compared()?;
        purged += 1;
    }
    Ok(purged)
}
