//! Reading `INFO` replies: their text (a bulk, verbatim or simple string, or under
//! Redis Cluster a map of the nodes' answers) and a field of it; and `CONFIG GET`
//! replies. Used by the store's facts, the checks at connect (eviction, persistence)
//! and the Sentinel client's check of a primary's replication id.

use redis::Value;

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

/// The value of `name` in a `CONFIG GET name` reply: `[name, value]` (RESP2) or a
/// map (RESP3). `None` for an error reply or an empty one (an unknown setting).
pub(crate) fn config_value(reply: &Value, name: &str) -> Option<String> {
    match reply {
        Value::Array(items) => items
            .chunks_exact(2)
            .find(|pair| info_text(&pair[0]).as_deref() == Some(name))
            .and_then(|pair| info_text(&pair[1])),
        Value::Map(pairs) => pairs
            .iter()
            .find(|(key, _)| info_text(key).as_deref() == Some(name))
            .and_then(|(_, value)| info_text(value)),
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
