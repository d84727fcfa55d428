//! The index of live keys (those whose newest version is a put) and the reads of the
//! current revision it serves, so that such a read costs in proportion to what it
//! returns rather than to its range: a waiter in a line of a thousand reads the two
//! keys created last before its own, and an acquiring transaction counts the line, each
//! in logarithmic time.
//!
//! Two views, both changed only by the put that creates a key and the delete that ends
//! it (an update of a live key keeps its create revision, so neither view moves):
//! - every live key in key order, so key-ordered reads skip the tombstones that the
//!   versions keep until compaction;
//! - per directory (the empty prefix and every prefix of a key that ends with `/`), its
//!   live keys by (create revision, key), so a prefix read sorted by create revision
//!   takes the first or last few without sorting, and a directory's count is its size.
//!
//! The recipes' lines are directories (`<namespace><name>/`); a prefix that does not end
//! with `/` is served from its directory's keys, filtered. Reads at a past revision and
//! reads sorted by mod revision scan the versions instead (`mvcc.rs`).

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use crate::kv::{KeyValue, Range, Revision};

/// The live keys, in key order and per directory by create revision (see the module
/// docs).
#[derive(Default)]
pub(super) struct LiveIndex {
    keys: BTreeSet<Arc<str>>,
    dirs: HashMap<String, BTreeSet<(Revision, Arc<str>)>>,
}

/// The directories `key` lies in: the empty prefix, then each prefix of it ending with
/// `/`, shortest first.
fn directories(key: &str) -> impl Iterator<Item = &str> {
    std::iter::once("").chain(key.match_indices('/').map(move |(at, _)| &key[..=at]))
}

/// The longest directory every key under `prefix` lies in.
fn directory_of(prefix: &str) -> &str {
    &prefix[..prefix.rfind('/').map_or(0, |at| at + 1)]
}

impl LiveIndex {
    /// How many keys are live.
    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }

    /// How many directories hold live keys.
    #[cfg(test)]
    pub(super) fn directories(&self) -> usize {
        self.dirs.len()
    }

    /// `key` starts a life at `create_revision`.
    pub(super) fn created(&mut self, key: &str, create_revision: Revision) {
        let name: Arc<str> = Arc::from(key);
        self.keys.insert(Arc::clone(&name));
        for dir in directories(key) {
            let entry = (create_revision, Arc::clone(&name));
            match self.dirs.get_mut(dir) {
                Some(set) => {
                    set.insert(entry);
                }
                None => {
                    self.dirs.insert(dir.to_owned(), BTreeSet::from([entry]));
                }
            }
        }
    }

    /// `key`, created at `create_revision`, is deleted. A directory left empty is
    /// forgotten, so the index holds only what is live.
    pub(super) fn deleted(&mut self, key: &str, create_revision: Revision) {
        let Some(name) = self.keys.take(key) else {
            return;
        };
        let entry = (create_revision, name);
        for dir in directories(key) {
            if let Some(set) = self.dirs.get_mut(dir) {
                set.remove(&entry);
                if set.is_empty() {
                    self.dirs.remove(dir);
                }
            }
        }
    }

    /// How many live keys lie under `prefix`: the size of its directory when it is
    /// one, else a walk over the keys under it.
    pub(super) fn count_prefix(&self, prefix: &str) -> usize {
        if directory_of(prefix) == prefix {
            self.dirs.get(prefix).map_or(0, BTreeSet::len)
        } else {
            self.prefixed(prefix).count()
        }
    }

    /// The live keys under `prefix`, in key order.
    fn prefixed<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.keys
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .map(|name| &**name)
            .take_while(move |name| name.starts_with(prefix))
    }

    /// The live keys a range covers, in key order: `[key, range_end)` when it has an
    /// end, else the key or the keys under the prefix. The range is checked
    /// (`State::check_range`): an end is after the start.
    pub(super) fn in_key_order<'a>(
        &'a self,
        range: &'a Range,
    ) -> Box<dyn Iterator<Item = &'a str> + 'a> {
        match &range.range_end {
            Some(end) => Box::new(
                self.keys
                    .range::<str, _>((
                        Bound::Included(range.key.as_str()),
                        Bound::Excluded(end.as_str()),
                    ))
                    .map(|name| &**name),
            ),
            None if range.prefix => Box::new(self.prefixed(&range.key)),
            None => Box::new(
                self.keys
                    .get(range.key.as_str())
                    .map(|name| &**name)
                    .into_iter(),
            ),
        }
    }

    /// The live keys under `prefix` created at or before `max_create` (when given), by
    /// (create revision, key) ascending; reversible.
    pub(super) fn by_create<'a>(
        &'a self,
        prefix: &'a str,
        max_create: Option<Revision>,
    ) -> impl DoubleEndedIterator<Item = (Revision, &'a str)> + 'a {
        let dir = directory_of(prefix);
        // Every entry of a revision up to `max` sorts before (max + 1, ""), "" being the
        // smallest key.
        let end = match max_create.and_then(|max| max.checked_add(1)) {
            Some(after) => Bound::Excluded((after, Arc::from(""))),
            None => Bound::Unbounded,
        };
        self.dirs
            .get(dir)
            .into_iter()
            .flat_map(move |set| set.range((Bound::Unbounded, end.clone())))
            .map(|(revision, name)| (*revision, &**name))
            .filter(move |(_, name)| dir.len() == prefix.len() || name.starts_with(prefix))
    }
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
