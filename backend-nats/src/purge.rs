//! Counting and removing the keys of a name prefix
//! ([`Backend::count_prefix`](distsync_core::Backend::count_prefix),
//! [`Backend::purge_prefix`](distsync_core::Backend::purge_prefix)).
//!
//! A name's segments are its keys' tokens after the kind's (see `src/keys.rs`), so the
//! keys under the prefix's whole segments are listed, one filter per kind in one
//! batched direct get, and matched after unescaping: O(keys under the prefix), not of
//! the bucket. Session keys belong to no name and are left alone.
//!
//! A purge leaves a tombstone (the subject's last message), which the bucket keeps
//! until it expires. The purge gives its tombstones a short TTL, and writes the same
//! over the tombstones of the prefix that would stay longer: those with no TTL (a
//! barrier's release, an STM key's delete) and a queue's call and dedup records
//! (kept for 10 minutes and 24 hours to answer a retried call; once the queue is
//! purged there is no item left to answer for). A removed prefix thus leaves nothing
//! in the bucket once the short TTL has run.

use distsync_core::raw::name_under;
use distsync_core::{Name, Result};

use crate::keys;
use crate::session::TOMBSTONE_TTL;
use crate::shared::Shared;
use crate::store::{ttl_header, Entry, Write, TTL};

/// The keys of the names under `prefix`, tombstones included.
async fn keys_under(shared: &Shared, prefix: &Name) -> Result<Vec<Entry>> {
    // Every segment of a name is whole: the prefix's own keys and its descendants'
    // are those under all of its segments.
    let filters = keys::every_key_under(&format!("{prefix}/"));
    let (entries, _) = shared.store.list(&filters).await?;
    Ok(entries
        .into_iter()
        .filter(|entry| keys::name_of(&entry.key).is_some_and(|name| name_under(&name, prefix)))
        .collect())
}

/// How many live keys the names under `prefix` have.
pub(crate) async fn count_prefix(shared: &Shared, prefix: &Name) -> Result<u64> {
    let entries = keys_under(shared, prefix).await?;
    Ok(entries.iter().filter(|entry| entry.live()).count() as u64)
}

/// Purges every live key of the names under `prefix`, and writes over every
/// tombstone there that would outlast [`TOMBSTONE_TTL`], each with a tombstone of
/// that TTL; returns how many live keys it purged. A holder's key purged here ends its
/// session at its next renewal.
pub(crate) async fn purge_prefix(shared: &Shared, prefix: &Name) -> Result<u64> {
    let short = ttl_header(TOMBSTONE_TTL);
    let mut purged = 0;
    for entry in keys_under(shared, prefix).await? {
        if !entry.live() && entry.header(TTL) == Some(short.as_str()) {
            continue;
        }
        let write = Write::purge(entry.key.as_str()).ttl(TOMBSTONE_TTL);
        shared.store.publish(write).await?.compared()?;
        purged += u64::from(entry.live());
    }
    Ok(purged)
}
