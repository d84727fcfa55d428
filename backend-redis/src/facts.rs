//! What the backend tells of its server beside the matrix
//! ([`Backend::describe_store`](distsync_core::Backend::describe_store)): the version
//! and the settings the guarantees depend on.
//!
//! `INFO server` and `INFO memory` give `redis_version` and `maxmemory_policy`
//! (`INFO` answers where `CONFIG` is renamed away or refused); the persistence is the
//! one read at connect (`persistence.rs`), from which `survives_restart` is declared.

use distsync_core::Result;
use redis::Value;

use crate::persistence::Persistence;
use crate::store::Shared;

/// The text of an `INFO` reply: a bulk or verbatim string, or under Redis Cluster the
/// first node's of a map.
pub(crate) fn info_text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) | Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Map(pairs) => pairs.first().and_then(|(_, value)| info_text(value)),
        _ => None,
    }
}

/// The value of `field` in `INFO` text (`field:value` lines).
pub(crate) fn info_field(text: &str, field: &str) -> Option<String> {
    text.lines().find_map(|line| {
        line.trim_end()
            .strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::to_owned)
    })
}

/// `redis_version`, `maxmemory_policy` and `persistence`; a section the server refuses
/// is left out.
pub(crate) async fn describe(
    shared: &Shared,
    persistence: &Persistence,
) -> Result<Vec<(String, String)>> {
    let mut facts = Vec::new();
    for (section, field) in [("server", "redis_version"), ("memory", "maxmemory_policy")] {
        match shared.query(redis::cmd("INFO").arg(section)).await {
            Ok(reply) => {
                if let Some(value) = info_text(&reply).and_then(|text| info_field(&text, field)) {
                    facts.push((field.to_owned(), value));
                }
            }
            Err(error) if error.is_transient() => return Err(error),
            Err(error) => tracing::debug!(%error, section, "INFO refused"),
        }
    }
    facts.push(("persistence".to_owned(), persistence.to_string()));
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields_are_read_by_exact_name() {
        let text = "# Server\r\nredis_version:7.2.4\r\nredis_version_extra:x\r\n";
        assert_eq!(info_field(text, "redis_version").as_deref(), Some("7.2.4"));
        assert_eq!(info_field(text, "maxmemory_policy"), None);
        let reply = Value::BulkString(b"maxmemory_policy:noeviction\r\n".to_vec());
        assert_eq!(
            info_text(&reply)
                .and_then(|text| info_field(&text, "maxmemory_policy"))
                .as_deref(),
            Some("noeviction")
        );
    }
}
