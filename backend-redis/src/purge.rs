//! Counting and removing the keys of every primitive under a name prefix
//! ([`Backend::count_prefix`](distsync_core::Backend::count_prefix),
//! [`Backend::purge_prefix`](distsync_core::Backend::purge_prefix)).
//!
//! A name reaches a key in two places (see `keys.rs`): escaped inside a primitive's
//! hash tag, `{<ns><escaped name>}:<kind>...`, and as it is after the STM tag,
//! `{<ns>stm}:k:<name>`. Two `SCAN MATCH` patterns find the candidates (cursor by
//! cursor, never `KEYS`); each is checked exactly before it is counted or unlinked, so
//! `jobs` never takes `jobs2`. Sessions, which belong to no name, are left to expire.

use distsync_core::{Error, Name, Result};

use crate::capabilities::BACKEND;
use crate::error::int;
use crate::keys::escape_name;
use crate::scan::{glob_escape, scan_matching};
use crate::store::Shared;

/// Keys unlinked per `UNLINK`.
const BATCH: usize = 1000;

/// Every key of a primitive named `prefix` or under it, sorted.
async fn keys_under(shared: &Shared, prefix: &Name) -> Result<Vec<String>> {
    if shared.is_cluster() {
        // A SCAN visits one master of the cluster.
        return Err(Error::unsupported(
            BACKEND,
            "purging a name prefix on a Redis Cluster",
        ));
    }
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
            if under {
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
    for batch in keys.chunks(BATCH) {
        let reply = shared.query(redis::cmd("UNLINK").arg(batch)).await?;
        unlinked += u64::try_from(int("UNLINK", &reply)?).unwrap_or(0);
    }
    tracing::debug!(%prefix, unlinked, "purged a name prefix");
    Ok(unlinked)
}
