//! Writes that hold the revision row for no client round trip (why: the crate docs,
//! "Revisions in commit order"): what a writer read without a lock ([`Seen`]), and the
//! one multi-statement batch ([`locked`], [`crate::batch`]) that takes the revision lock
//! (`SELECT revision + 1 INTO @r … FOR UPDATE`), sets `@ok` to whether everything the
//! writer read is as it was ([`Seen::condition`], a consistent read without locks: its
//! snapshot starts after the lock, so it sees every earlier commit), runs the writes,
//! each conditional on `@ok` and with `@r` as their revision, moves the revision only
//! if `@ok`, commits and answers `@ok` and `@r`. When `@ok` is false the batch wrote
//! nothing and the writer starts again from its read.
//!
//! Why the check is enough: every change of a key gives it a new `mod_revision` (a
//! delete and a re-creation too), so the rows of the keys read are unchanged exactly
//! when as many of them exist and as many carry the `mod_revision` read; a set of
//! keys (under a prefix, or of a lease) is unchanged when its count and the count of
//! the keys read in it are; a live lease can only end, so the live count of the
//! leases read says whether all still live.

use std::collections::HashMap;

use distsync_core::{Error, Result};
use distsync_kv::kv::{KeyValue, LeaseId, Revision};
use sqlx::mysql::MySqlRow;
use sqlx::Row;

use crate::batch;
use crate::error::map;
use crate::schema::{live_leases, Tables};
use crate::BACKEND;

/// How many times a writer starts again from its read when the store changed it
/// before the lock, before it gives up with [`Error::Connection`] (transient: the
/// store was busy with writers of the same keys, and a retry may pass).
pub(crate) const TRIES: usize = 64;

/// The tag of a locked batch's last `SELECT`, its outcome ([`outcome`]).
pub(crate) const OUTCOME: i64 = 0;

/// What a writer read without the lock, to be found unchanged under it.
#[derive(Default)]
pub(crate) struct Seen {
    /// Keys and the `mod_revision` each had (`None`: missing).
    pub(crate) keys: Vec<(String, Option<Revision>)>,
    /// Leases that were live.
    pub(crate) live: Vec<LeaseId>,
    /// Sets of keys: a condition on the `kv` table (its values as literals) and the
    /// keys that met it.
    pub(crate) sets: Vec<(String, Vec<String>)>,
    /// The compaction point, when a read of the log depends on it.
    pub(crate) compacted: Option<Revision>,
    /// Rows guessed, not read ([`crate::guesses`]): each key there with exactly
    /// these revisions, version and lease (the value is not compared).
    pub(crate) exact: Vec<KeyValue>,
}

impl Seen {
    /// One SQL condition, true exactly when everything seen is unchanged (`TRUE`
    /// when nothing was).
    pub(crate) fn condition(&self, tables: &Tables) -> String {
        let kv = &tables.kv;
        let mut parts = Vec::new();
        // A guessed row's whole-row check below says all that the count and
        // `mod_revision` checks of its key would.
        let mut keys: Vec<&(String, Option<Revision>)> = self
            .keys
            .iter()
            .filter(|(key, _)| !self.exact.iter().any(|row| row.key == *key))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        if !keys.is_empty() {
            let all = batch::bytes_list(keys.iter().map(|(key, _)| key.as_bytes()));
            let present: Vec<String> = keys
                .iter()
                .filter_map(|(key, revision)| {
                    revision
                        .map(|revision| format!("({}, {revision})", batch::bytes(key.as_bytes())))
                })
                .collect();
            parts.push(count_is(kv, &format!("k IN {all}"), present.len()));
            if !present.is_empty() {
                let unchanged = format!(
                    "k IN {all} AND (k, mod_revision) IN ({})",
                    present.join(", ")
                );
                parts.push(count_is(kv, &unchanged, present.len()));
            }
        }
        let mut live = self.live.clone();
        live.sort_unstable();
        live.dedup();
        if !live.is_empty() {
            parts.push(count_is(&tables.leases, &live_leases(&live), live.len()));
        }
        for (condition, members) in &self.sets {
            parts.push(count_is(kv, condition, members.len()));
            if !members.is_empty() {
                let keys = batch::bytes_list(members.iter().map(|key| key.as_bytes()));
                let still = format!("{condition} AND k IN {keys}");
                parts.push(count_is(kv, &still, members.len()));
            }
        }
        if !self.exact.is_empty() {
            let rows: Vec<String> = self
                .exact
                .iter()
                .map(|row| {
                    format!(
                        "({}, {}, {}, {}, {})",
                        batch::bytes(row.key.as_bytes()),
                        row.create_revision,
                        row.mod_revision,
                        row.version,
                        row.lease
                    )
                })
                .collect();
            let exact = format!(
                "(k, create_revision, mod_revision, version, lease) IN ({})",
                rows.join(", ")
            );
            parts.push(count_is(kv, &exact, rows.len()));
        }
        if let Some(compacted) = self.compacted {
            parts.push(format!("({}) = {compacted}", tables.meta_row("compacted")));
        }
        if parts.is_empty() {
            "TRUE".to_owned()
        } else {
            parts.join(" AND ")
        }
    }
}

/// `(SELECT COUNT(*) FROM {table} WHERE {condition}) = {count}`.
fn count_is(table: &str, condition: &str, count: usize) -> String {
    format!("(SELECT COUNT(*) FROM {table} WHERE {condition}) = {count}")
}

/// The locked batch: the revision lock, `@ok` from `unchanged` (a condition, e.g.
/// [`Seen::condition`]), `body` (the writes, each conditional on `@ok` and written at
/// `@r`, and any tagged reads among them), the new revision if `writes` (else the
/// revision stays), the commit and the [`OUTCOME`].
pub(crate) fn locked(
    tables: &Tables,
    unchanged: &str,
    body: Vec<String>,
    writes: bool,
) -> Vec<String> {
    let meta = &tables.meta;
    let mut statements = vec![
        START.to_owned(),
        format!("SELECT revision + 1 INTO @r FROM {meta} WHERE id = 1 FOR UPDATE"),
        // A plain `SELECT … INTO`, not `SET @ok = (SELECT …)`: InnoDB reads a `SET`'s
        // subqueries with shared locks, which would make this writer, holding the
        // revision row, wait on a lease row that a lease's end has claimed.
        format!("SELECT ({unchanged}) INTO @ok"),
    ];
    statements.extend(body);
    if writes {
        statements.push(format!(
            "UPDATE {meta} SET revision = @r WHERE id = 1 AND @ok"
        ));
    }
    statements.push(COMMIT.to_owned());
    statements.push(format!(
        "SELECT {OUTCOME}, CAST(@ok AS SIGNED), CAST(@r AS SIGNED)"
    ));
    statements
}

/// The statements that open and end a locked batch's transaction.
const START: &str = "START TRANSACTION";
const COMMIT: &str = "COMMIT";

/// A [`locked`] batch run inside the caller's open transaction: without the
/// statements that open and commit one (the caller commits).
pub(crate) fn inside_callers(locked: Vec<String>) -> Vec<String> {
    locked
        .into_iter()
        .filter(|statement| statement != START && statement != COMMIT)
        .collect()
}

/// A batch's rows by tag, and its [`OUTCOME`] row.
pub(crate) fn sort(rows: &[MySqlRow]) -> Result<(&MySqlRow, HashMap<i64, Vec<&MySqlRow>>)> {
    let mut outcome = None;
    let mut tagged: HashMap<i64, Vec<&MySqlRow>> = HashMap::new();
    for row in rows {
        match batch::tag(row)? {
            OUTCOME => outcome = Some(row),
            tag => tagged.entry(tag).or_default().push(row),
        }
    }
    let outcome = outcome.ok_or_else(|| Error::backend(BACKEND, "a batch answered no outcome"))?;
    Ok((outcome, tagged))
}

/// The revision a locked batch wrote at, from its [`OUTCOME`] row; `None` if what
/// it had seen had changed (it wrote nothing).
pub(crate) fn outcome(row: &MySqlRow) -> Result<Option<Revision>> {
    let ok: Option<i64> = row.try_get(1).map_err(map)?;
    let revision: Option<Revision> = row.try_get(2).map_err(map)?;
    match (ok, revision) {
        (Some(0), _) => Ok(None),
        (Some(_), Some(revision)) => Ok(Some(revision)),
        _ => Err(Error::backend(
            BACKEND,
            "a locked batch answered no outcome",
        )),
    }
}

/// The error when a writer found what it read changed [`TRIES`] times in a row.
pub(crate) fn exhausted(doing: &str) -> Error {
    Error::connection(
        BACKEND,
        format!("{doing}: the store changed what it read {TRIES} times in a row; retry"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_seen_is_always_unchanged() {
        assert_eq!(Seen::default().condition(&Tables::new("t_")), "TRUE");
    }

    /// The row of key `a` as a guess has it.
    fn guessed_row() -> KeyValue {
        KeyValue {
            key: "a".to_owned(),
            create_revision: 3,
            mod_revision: 5,
            version: 2,
            lease: 9,
            ..KeyValue::default()
        }
    }

    #[test]
    fn guessed_rows_are_checked_whole() {
        let seen = Seen {
            exact: vec![guessed_row()],
            ..Seen::default()
        };
        assert_eq!(
            seen.condition(&Tables::new("t_")),
            "(SELECT COUNT(*) FROM t_kv WHERE (k, create_revision, mod_revision, version, lease) \
             IN ((X'61', 3, 5, 2, 9))) = 1"
        );
    }

    #[test]
    fn a_guessed_key_is_checked_once_whole() {
        let seen = Seen {
            keys: vec![("a".to_owned(), Some(5)), ("b".to_owned(), None)],
            exact: vec![guessed_row()],
            ..Seen::default()
        };
        assert_eq!(
            seen.condition(&Tables::new("t_")),
            "(SELECT COUNT(*) FROM t_kv WHERE k IN (X'62')) = 0 AND \
             (SELECT COUNT(*) FROM t_kv WHERE (k, create_revision, mod_revision, version, lease) \
             IN ((X'61', 3, 5, 2, 9))) = 1"
        );
    }

    #[test]
    fn keys_are_checked_by_count_and_mod_revision() {
        let seen = Seen {
            keys: vec![("a".to_owned(), Some(7)), ("b".to_owned(), None)],
            ..Seen::default()
        };
        assert_eq!(
            seen.condition(&Tables::new("t_")),
            "(SELECT COUNT(*) FROM t_kv WHERE k IN (X'61', X'62')) = 1 AND \
             (SELECT COUNT(*) FROM t_kv WHERE k IN (X'61', X'62') AND (k, mod_revision) IN ((X'61', 7))) = 1"
        );
    }
}
