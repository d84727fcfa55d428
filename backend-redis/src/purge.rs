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
use crate::error::{array, bytes, int, string, unexpected};
use crate::keys::escape_name;
use crate::store::Shared;

/// Keys asked for per `SCAN` round trip, and unlinked per `UNLINK`.
const BATCH: usize = 1000;

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
        for key in scan(shared, &pattern).await? {
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

/// The keys matching `pattern`, cursor by cursor.
async fn scan(shared: &Shared, pattern: &str) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut cursor = String::from("0");
    loop {
        let reply = shared
            .query(
                redis::cmd("SCAN")
                    .arg(&cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(BATCH),
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
                keys.push(key);
            }
        }
        if cursor == "0" {
            return Ok(keys);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(glob_escape("conf/run-1"), "conf/run-1");
    }
}
