//! Walking the keyspace with `SCAN`, for what reads or removes many keys at once
//! (migration exports, status reports, purging a name prefix): one cursor loop and one
//! glob escape for every caller. A scan visits one server, so callers on a Redis
//! Cluster refuse before they scan.

use distsync_core::Result;

use crate::error::{array, bytes, string, unexpected};
use crate::store::Shared;

/// Keys asked for per `SCAN` round trip.
const SCAN_COUNT: usize = 1000;

/// `text` with the glob characters of `SCAN MATCH` escaped.
pub(crate) fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// The UTF-8 keys matching `pattern` (`SCAN MATCH`, cursor by cursor, never `KEYS`), in
/// the order the server returns them; a key may come more than once.
pub(crate) async fn scan_matching(shared: &Shared, pattern: &str) -> Result<Vec<String>> {
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
                keys.push(key);
            }
        }
        if cursor == "0" {
            return Ok(keys);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(glob_escape("conf/run-1"), "conf/run-1");
        assert_eq!(glob_escape("app:"), "app:");
    }
}
