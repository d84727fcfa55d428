//! Ranges: the current state from the `kv` table, a past revision from the `log`
//! table (per key, its latest row at or before the revision), with etcd's count,
//! sort, limit and revision bounds.

use bytes::Bytes;
use distsync_core::{Error, Result};
use distsync_kv::kv::{KeyValue, Range, RangeResponse, Revision, SortOrder, SortTarget};
use sqlx::mysql::MySqlRow;
use sqlx::{MySqlConnection, Row};

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
        match (end, prefix) {
            (Some(end), _) => Self {
                sql: "k >= ? AND k < ?".to_owned(),
                binds: vec![start, end.as_bytes().to_vec()],
            },
            (None, true) => match prefix_end(key.as_bytes()) {
                Some(end) => Self {
                    sql: "k >= ? AND k < ?".to_owned(),
                    binds: vec![start, end],
                },
                None => Self {
                    sql: "k >= ?".to_owned(),
                    binds: vec![start],
                },
            },
            (None, false) => Self {
                sql: "k = ?".to_owned(),
                binds: vec![start],
            },
        }
    }

    /// The filter of a range.
    pub(crate) fn of(range: &Range) -> Self {
        Self::new(&range.key, range.prefix, range.range_end.as_deref())
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

/// Reads a checked range on `conn` (inside a transaction, which sees its own
/// writes), answering with `revision` as the header's. `current` is the last
/// committed revision; `dirty` says that the transaction has written, so that a read
/// at `current` must not see its writes.
pub(crate) async fn read(
    conn: &mut MySqlConnection,
    tables: &Tables,
    range: &Range,
    (current, dirty): (Revision, bool),
    revision: Revision,
) -> Result<RangeResponse> {
    let past = |at: &Revision| *at > 0 && (*at < current || (dirty && *at <= current));
    let (kvs, count) = match range.revision.filter(past) {
        Some(at) => read_past(conn, tables, range, at).await?,
        None => read_current(conn, tables, range).await?,
    };
    Ok(RangeResponse {
        kvs,
        count,
        revision,
    })
}

/// A bound of `0` or below is none, as in etcd.
fn bound(value: Option<Revision>) -> Option<Revision> {
    value.filter(|revision| *revision > 0)
}

/// The current state of a range, sorted, bounded and limited in SQL, and its count.
async fn read_current(
    conn: &mut MySqlConnection,
    tables: &Tables,
    range: &Range,
) -> Result<(Vec<KeyValue>, usize)> {
    let filter = KeyFilter::of(range);
    let mut condition = filter.sql.clone();
    let (max_create, max_mod) = (
        bound(range.max_create_revision),
        bound(range.max_mod_revision),
    );
    if max_create.is_some() {
        condition.push_str(" AND create_revision <= ?");
    }
    if max_mod.is_some() {
        condition.push_str(" AND mod_revision <= ?");
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
    let mut sql = format!(
        "SELECT k, create_revision, mod_revision, version, lease, v FROM {} WHERE {condition} \
         ORDER BY {order}",
        tables.kv
    );
    if let Some(limit) = limit {
        sql.push_str(&format!(" LIMIT {limit}"));
    }
    let mut query = sqlx::query(&sql);
    for value in &filter.binds {
        query = query.bind(value);
    }
    for value in max_create.into_iter().chain(max_mod) {
        query = query.bind(value);
    }
    let rows = query.fetch_all(&mut *conn).await.map_err(map)?;
    let kvs = rows
        .iter()
        .map(|row| key_value(row, 2))
        .collect::<Result<Vec<_>>>()?;
    // etcd's count is before the bounds and the limit: counted apart only when
    // either may have cut the answer.
    let cut = max_create.is_some() || max_mod.is_some() || limit.is_some_and(|l| kvs.len() >= l);
    let count = if cut {
        let sql = format!("SELECT COUNT(*) FROM {} WHERE {}", tables.kv, filter.sql);
        let mut query = sqlx::query_scalar::<_, i64>(&sql);
        for value in &filter.binds {
            query = query.bind(value);
        }
        let count = query.fetch_one(&mut *conn).await.map_err(map)?;
        usize::try_from(count).unwrap_or_default()
    } else {
        kvs.len()
    };
    Ok((kvs, count))
}

/// A range at the past revision `at`: per key, its latest log row at or before `at`,
/// if that is not a tombstone; bounds, sort and limit applied here.
async fn read_past(
    conn: &mut MySqlConnection,
    tables: &Tables,
    range: &Range,
    at: Revision,
) -> Result<(Vec<KeyValue>, usize)> {
    let filter = KeyFilter::of(range);
    let log = &tables.log;
    let sql = format!(
        "SELECT l.k, l.create_revision, l.revision, l.version, l.lease, l.v FROM {log} l \
         JOIN (SELECT k, MAX(revision) AS r FROM {log} WHERE {} AND revision <= ? GROUP BY k) m \
         ON l.k = m.k AND l.revision = m.r WHERE l.deleted = 0 ORDER BY l.k",
        filter.sql
    );
    let mut query = sqlx::query(&sql);
    for value in &filter.binds {
        query = query.bind(value);
    }
    let rows = query.bind(at).fetch_all(&mut *conn).await.map_err(map)?;
    let visible = rows
        .iter()
        .map(|row| key_value(row, 2))
        .collect::<Result<Vec<_>>>()?;
    Ok(range.select(visible))
}

/// A key's value from a row `k, create_revision, <mod revision>, version, lease, v`
/// (`mod_at` is the mod revision's column).
pub(crate) fn key_value(row: &MySqlRow, mod_at: usize) -> Result<KeyValue> {
    let key: Vec<u8> = row.try_get(0).map_err(map)?;
    let value: Vec<u8> = row.try_get(5).map_err(map)?;
    Ok(KeyValue {
        key: key_string(key)?,
        value: Bytes::from(value),
        create_revision: row.try_get(1).map_err(map)?,
        mod_revision: row.try_get(mod_at).map_err(map)?,
        version: row.try_get(3).map_err(map)?,
        lease: row.try_get(4).map_err(map)?,
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
}
