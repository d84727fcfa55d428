//! Ranges: the current state from the `kv` table, a past revision from the `log`
//! table (per key, its latest row at or before the revision), with etcd's count,
//! sort, limit and revision bounds. Every range is built as statements with literal
//! values ([`statements`]), so that a transaction sends it in the same batch as its
//! writes.

use bytes::Bytes;
use distsync_core::{Error, Result};
use distsync_kv::kv::{KeyValue, Range, RangeResponse, Revision, SortOrder, SortTarget};
use sqlx::mysql::MySqlRow;
use sqlx::Row;

use crate::batch;
use crate::error::map;
use crate::schema::Tables;
use crate::BACKEND;

/// A key condition on the column `k`, with its bound values.
pub(crate) struct KeyFilter {
    /// The SQL condition (`k = ?`, `k >= ? AND k < ?`, ...).
    pub(crate) sql: String,
    /// The values of its placeholders, in order.
    pub(crate) binds: Vec<Vec<u8>>,
}

impl KeyFilter {
    /// `key` alone, every key starting with it (`prefix`), or `[key, end)`.
    pub(crate) fn new(key: &str, prefix: bool, end: Option<&str>) -> Self {
        let start = key.as_bytes().to_vec();
        let end = match (end, prefix) {
            (Some(end), _) => Some(end.as_bytes().to_vec()),
            (None, true) => prefix_end(key.as_bytes()),
            (None, false) => None,
        };
        let (sql, binds) = match end {
            Some(end) => ("k >= ? AND k < ?", vec![start, end]),
            // A prefix with no end: every key from it on.
            None if prefix => ("k >= ?", vec![start]),
            None => ("k = ?", vec![start]),
        };
        Self {
            sql: sql.to_owned(),
            binds,
        }
    }

    /// The filter of a range.
    pub(crate) fn of(range: &Range) -> Self {
        Self::new(&range.key, range.prefix, range.range_end.as_deref())
    }

    /// The condition with its values as hexadecimal literals, for a batch.
    pub(crate) fn literal(&self) -> String {
        let mut parts = self.sql.split('?');
        let mut literal = parts.next().unwrap_or_default().to_owned();
        for (part, value) in parts.zip(&self.binds) {
            literal.push_str(&batch::bytes(value));
            literal.push_str(part);
        }
        literal
    }
}

/// The smallest byte string above every string starting with `prefix`, or `None`
/// when there is none (an empty prefix, or one of `0xff` bytes only).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A range's statements for a batch ([`crate::batch`]): its rows, tagged `tag`, and,
/// when its bounds or its limit may cut them, its count (etcd's count is before
/// both), tagged `tag + 1`. `past`: read at that revision from the log (per key, its
/// latest row at or before it), which is right for any revision up to the current
/// one; `None`: the current state, with the transaction's own earlier writes.
pub(crate) fn statements(
    tables: &Tables,
    range: &Range,
    past: Option<Revision>,
    tag: i64,
) -> Vec<String> {
    let filter = KeyFilter::of(range).literal();
    if let Some(at) = past {
        let log = &tables.log;
        // Bounds, sort and limit are applied to the visible rows by `Range::select`.
        return vec![format!(
            "SELECT {tag}, l.k, l.create_revision, l.revision, l.version, l.lease, l.v FROM {log} l \
             JOIN (SELECT k, MAX(revision) AS r FROM {log} WHERE {filter} AND revision <= {at} \
             GROUP BY k) m ON l.k = m.k AND l.revision = m.r WHERE l.deleted = 0 ORDER BY l.k"
        )];
    }
    let mut condition = filter.clone();
    for (column, max) in [
        ("create_revision", range.max_create_revision),
        ("mod_revision", range.max_mod_revision),
    ] {
        // A bound of `0` or below is none, as in etcd.
        if let Some(max) = max.filter(|max| *max > 0) {
            condition.push_str(&format!(" AND {column} <= {max}"));
        }
    }
    let order = match range.sort {
        None | Some((SortTarget::Key, SortOrder::Ascend)) => "k",
        Some((SortTarget::Key, SortOrder::Descend)) => "k DESC",
        Some((SortTarget::CreateRevision, SortOrder::Ascend)) => "create_revision, k",
        Some((SortTarget::CreateRevision, SortOrder::Descend)) => "create_revision DESC, k",
        Some((SortTarget::ModRevision, SortOrder::Ascend)) => "mod_revision, k",
        Some((SortTarget::ModRevision, SortOrder::Descend)) => "mod_revision DESC, k",
    };
    let limit = range.limit.filter(|limit| *limit > 0);
    let limit_sql = limit
        .map(|limit| format!(" LIMIT {limit}"))
        .unwrap_or_default();
    let kv = &tables.kv;
    let mut statements = vec![format!(
        "SELECT {tag}, k, create_revision, mod_revision, version, lease, v FROM {kv} \
         WHERE {condition} ORDER BY {order}{limit_sql}"
    )];
    // The count when a bound or the limit may cut the rows.
    if condition != filter || limit.is_some() {
        statements.push(format!(
            "SELECT {}, COUNT(*) FROM {kv} WHERE {filter}",
            tag + 1
        ));
    }
    statements
}

/// The answer to a range from the rows its [`statements`] (made with `past`)
/// returned: `rows` tagged `tag`, and `count` tagged `tag + 1` if there is one.
pub(crate) fn answer(
    range: &Range,
    past: bool,
    rows: &[&MySqlRow],
    count: Option<&MySqlRow>,
    revision: Revision,
) -> Result<RangeResponse> {
    let found = rows
        .iter()
        .map(|row| key_value(row))
        .collect::<Result<Vec<_>>>()?;
    let (kvs, count) = if past {
        range.select(found)
    } else {
        let count = match count {
            Some(row) => {
                usize::try_from(row.try_get::<i64, _>(1).map_err(map)?).unwrap_or_default()
            }
            None => found.len(),
        };
        (found, count)
    };
    Ok(RangeResponse {
        kvs,
        count,
        revision,
    })
}

/// A key's value from a tagged row `tag, k, create_revision, <mod revision>,
/// version, lease, v`.
fn key_value(row: &MySqlRow) -> Result<KeyValue> {
    let key: Vec<u8> = row.try_get(1).map_err(map)?;
    let value: Vec<u8> = row.try_get(6).map_err(map)?;
    Ok(KeyValue {
        key: key_string(key)?,
        value: Bytes::from(value),
        create_revision: row.try_get(2).map_err(map)?,
        mod_revision: row.try_get(3).map_err(map)?,
        version: row.try_get(4).map_err(map)?,
        lease: row.try_get(5).map_err(map)?,
    })
}

/// A key read back from a key column: the UTF-8 the backend wrote.
pub(crate) fn key_string(key: Vec<u8>) -> Result<String> {
    String::from_utf8(key).map_err(|error| {
        Error::backend(BACKEND, format!("a key in the store is not UTF-8: {error}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_skip_top_bytes() {
        assert_eq!(prefix_end(b"a/"), Some(b"a0".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn filters_spell_their_values_as_literals() {
        assert_eq!(KeyFilter::new("a", false, None).literal(), "k = X'61'");
        assert_eq!(
            KeyFilter::new("a/", true, None).literal(),
            "k >= X'612F' AND k < X'6130'"
        );
        assert_eq!(KeyFilter::new("", true, None).literal(), "k >= X''");
    }
}
