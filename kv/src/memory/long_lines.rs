//! The long lines: directories holding many live keys, each with its live keys by
//! (create revision, key), so that a read of such a line costs in proportion to what
//! it returns rather than to the line.
//!
//! A waiter's first look at a lock's line reads the keys created last before its own,
//! and an acquiring transaction counts the line. By scanning, each read walks every key
//! of the line and sorts them: at a thousand waiters that walk is most of a hand-off's
//! cost. Served from a line's index, the count is the index's size and the newest keys
//! are its last entries.
//!
//! Only long lines are indexed, and only while they stay long: a directory gets its
//! index when a scan of it finds [`INDEX_FROM`] live keys, and loses it when it falls
//! below [`DROP_BELOW`]. Every other key costs nothing more than one look at the
//! (usually empty) set of long lines when it is created or deleted: an index of every
//! key and directory, kept on every write, slowed the store's short lines, many clients
//! and queues more than it sped up the long ones.
//!
//! A line is a directory: a prefix ending with `/` (`<namespace><name>/`, as the recipes
//! name lines), holding every live key under it, those of sub-directories included.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use crate::kv::{KeyValue, Revision};

/// The live keys of a scanned directory from which it is indexed.
pub(super) const INDEX_FROM: usize = 128;

/// The live keys below which an indexed directory loses its index (well below
/// [`INDEX_FROM`], so that a line around the threshold is not indexed and dropped on
/// every few changes).
pub(super) const DROP_BELOW: usize = 32;

/// A line's live keys by (create revision, key).
type Line = BTreeSet<(Revision, Arc<str>)>;

/// The indexed directories (see the module docs).
pub(super) struct LongLines {
    lines: HashMap<String, Line>,
    /// [`INDEX_FROM`], or a smaller figure in tests.
    index_from: usize,
    /// [`DROP_BELOW`], or a smaller figure in tests.
    drop_below: usize,
}

impl Default for LongLines {
    fn default() -> Self {
        Self {
            lines: HashMap::new(),
            index_from: INDEX_FROM,
            drop_below: DROP_BELOW,
        }
    }
}

/// The directories `key` lies in: each prefix of it ending with `/`, shortest first.
fn directories(key: &str) -> impl Iterator<Item = &str> {
    key.match_indices('/').map(move |(at, _)| &key[..=at])
}

impl LongLines {
    /// Lines indexed from `index_from` live keys and dropped below `drop_below`, so that
    /// tests reach both with a few keys.
    #[cfg(test)]
    pub(super) fn with_thresholds(index_from: usize, drop_below: usize) -> Self {
        Self {
            lines: HashMap::new(),
            index_from,
            drop_below,
        }
    }

    /// How many directories are indexed.
    pub(super) fn len(&self) -> usize {
        self.lines.len()
    }

    /// The indexed directories and their keys, in no order.
    #[cfg(test)]
    pub(super) fn lines(&self) -> impl Iterator<Item = (&str, &Line)> {
        self.lines.iter().map(|(dir, line)| (dir.as_str(), line))
    }

    /// The index of the directory `prefix`, when it has one.
    pub(super) fn line(&self, prefix: &str) -> Option<&Line> {
        self.lines.get(prefix)
    }

    /// Whether a scan of `prefix` that found `live` keys should index it: a directory
    /// with at least [`INDEX_FROM`] of them and no index yet.
    pub(super) fn wants(&self, prefix: &str, live: usize) -> bool {
        live >= self.index_from && prefix.ends_with('/') && !self.lines.contains_key(prefix)
    }

    /// Indexes the directory `prefix` with its live keys (see [`LongLines::wants`]).
    pub(super) fn index(&mut self, prefix: &str, keys: Vec<(Revision, Arc<str>)>) {
        tracing::trace!(
            prefix,
            keys = keys.len(),
            "memory store: a long line is indexed"
        );
        self.lines
            .insert(prefix.to_owned(), keys.into_iter().collect());
    }

    /// `key` starts a life at `create_revision`.
    pub(super) fn created(&mut self, key: &str, create_revision: Revision) {
        if self.lines.is_empty() {
            return;
        }
        let mut name: Option<Arc<str>> = None;
        for dir in directories(key) {
            if let Some(line) = self.lines.get_mut(dir) {
                let name = name.get_or_insert_with(|| Arc::from(key));
                line.insert((create_revision, Arc::clone(name)));
            }
        }
    }

    /// `key`, created at `create_revision`, is deleted. A line left shorter than
    /// [`DROP_BELOW`] loses its index.
    pub(super) fn deleted(&mut self, key: &str, create_revision: Revision) {
        if self.lines.is_empty() {
            return;
        }
        let mut entry: Option<(Revision, Arc<str>)> = None;
        for dir in directories(key) {
            if let Some(line) = self.lines.get_mut(dir) {
                line.remove(entry.get_or_insert_with(|| (create_revision, Arc::from(key))));
                if line.len() < self.drop_below {
                    self.lines.remove(dir);
                }
            }
        }
    }
}

/// A line's keys created at or before `max_create` (when given), by (create revision,
/// key) ascending; reversible.
pub(super) fn created_by(
    line: &Line,
    max_create: Option<Revision>,
) -> impl DoubleEndedIterator<Item = (Revision, &str)> {
    // Every entry of a revision up to `max` sorts before (max + 1, ""), "" being the
    // smallest key.
    let end = match max_create.and_then(|max| max.checked_add(1)) {
        Some(after) => Bound::Excluded((after, Arc::from(""))),
        None => Bound::Unbounded,
    };
    line.range((Bound::Unbounded, end))
        .map(|(revision, name)| (*revision, &**name))
}

/// The first `limit` keys of `created` (ascending by create revision, then key) taken
/// from its end: newest first, and keys created by one transaction in key order, as a
/// stable sort of the key-ordered range by descending create revision gives them.
pub(super) fn newest<'a>(
    created: impl DoubleEndedIterator<Item = (Revision, &'a str)>,
    live: impl Fn(&'a str) -> Option<&'a KeyValue>,
    keep: impl Fn(&&'a KeyValue) -> bool,
    limit: usize,
) -> Vec<&'a KeyValue> {
    let mut picked: Vec<&KeyValue> = Vec::new();
    for (revision, name) in created.rev() {
        // Past the limit, only the rest of the last revision taken can still belong:
        // it comes here in descending key order, and the smallest keys win a tie.
        if picked.len() >= limit && picked.last().map(|kv| kv.create_revision) != Some(revision) {
            break;
        }
        if let Some(kv) = live(name).filter(|kv| keep(kv)) {
            picked.push(kv);
        }
    }
    picked.sort_by(|a, b| {
        b.create_revision
            .cmp(&a.create_revision)
            .then_with(|| a.key.cmp(&b.key))
    });
    picked.truncate(limit);
    picked
}
