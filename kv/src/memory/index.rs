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

use super::store::State;
use crate::kv::{KeyValue, Range, RangeResponse, Revision, SortOrder, SortTarget};

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
    fn count_prefix(&self, prefix: &str) -> usize {
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
    fn by_create<'a>(
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

impl State {
    /// Serves a checked range of the current revision from the index, or `None` for
    /// what the index does not order (a past revision, a sort by mod revision, a sort
    /// by create revision of a range with an end): those scan the versions. Returns what
    /// the scan of `State::read_versions` would, to the key.
    pub(super) fn read_live(&self, range: &Range) -> Option<RangeResponse> {
        if range.revision.is_some_and(|revision| revision > 0) {
            return None;
        }
        let max_create = range.max_create_revision.filter(|revision| *revision > 0);
        let max_mod = range.max_mod_revision.filter(|revision| *revision > 0);
        let keep = |kv: &&KeyValue| {
            !matches!(max_create, Some(max) if kv.create_revision > max)
                && !matches!(max_mod, Some(max) if kv.mod_revision > max)
        };
        let limit = range.limit.filter(|limit| *limit > 0).unwrap_or(usize::MAX);
        let index = &self.index;
        let count = match (&range.range_end, range.prefix) {
            (None, true) => index.count_prefix(&range.key),
            _ => index.in_key_order(range).count(),
        };
        let live = |name: &str| self.live(name);
        // One key needs no sorting.
        let single = !range.prefix && range.range_end.is_none();
        let sort = range.sort.filter(|_| !single);
        let kvs: Vec<&KeyValue> = match sort {
            None | Some((SortTarget::Key, SortOrder::Ascend)) => index
                .in_key_order(range)
                .filter_map(live)
                .filter(keep)
                .take(limit)
                .collect(),
            Some((SortTarget::Key, SortOrder::Descend)) => {
                let mut all: Vec<&KeyValue> = index
                    .in_key_order(range)
                    .filter_map(live)
                    .filter(keep)
                    .collect();
                all.reverse();
                all.truncate(limit);
                all
            }
            Some((SortTarget::CreateRevision, order))
                if range.prefix && range.range_end.is_none() =>
            {
                let created = index.by_create(&range.key, max_create);
                match order {
                    SortOrder::Ascend => created
                        .filter_map(|(_, name)| live(name))
                        .filter(keep)
                        .take(limit)
                        .collect(),
                    SortOrder::Descend => newest(created, live, keep, limit),
                }
            }
            Some(_) => return None,
        };
        Some(RangeResponse {
            kvs: kvs.into_iter().cloned().collect(),
            count,
            revision: self.revision,
        })
    }
}

/// The first `limit` keys of `created` (ascending by create revision, then key) taken
/// from its end: newest first, and keys created by one transaction in key order, as a
/// stable sort of the key-ordered range by descending create revision gives them.
fn newest<'a>(
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;
    use crate::kv::{Txn, TxnOp};

    /// A small deterministic generator (xorshift), so a failure replays.
    struct Dice(u64);

    impl Dice {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            usize::try_from(self.0 % n as u64).unwrap()
        }

        fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            &items[self.below(items.len())]
        }
    }

    const KEYS: [&str; 14] = [
        "a/x", "a/y", "a/b/x", "a/b/y", "a/b/", "a/", "ab", "ab/x", "b/x", "q", "é/x", "é/y",
        "a/b/c/x", "a/bz",
    ];

    fn put(key: &str, lease: i64) -> TxnOp {
        TxnOp::put(key, "v", lease)
    }

    /// Every read shape over the keys of `KEYS`, with bounds drawn from `dice`.
    fn queries(dice: &mut Dice, revision: Revision) -> Vec<Range> {
        let mut shapes: Vec<Range> = ["", "a", "a/", "a/b", "a/b/", "ab", "b/", "é", "é/", "z/"]
            .into_iter()
            .map(Range::prefix)
            .collect();
        shapes.extend(KEYS.iter().map(|key| Range::key(*key)));
        shapes.push(Range::between("a/", "a/c"));
        shapes.push(Range::between("a", "b"));
        shapes.push(Range::between("", "é"));
        let sorts = [
            None,
            Some((SortTarget::Key, SortOrder::Ascend)),
            Some((SortTarget::Key, SortOrder::Descend)),
            Some((SortTarget::CreateRevision, SortOrder::Ascend)),
            Some((SortTarget::CreateRevision, SortOrder::Descend)),
            Some((SortTarget::ModRevision, SortOrder::Descend)),
        ];
        let mut all = Vec::new();
        for shape in shapes {
            for sort in sorts {
                let mut range = shape.clone();
                range.sort = sort;
                range.limit = *dice.pick(&[None, Some(0), Some(1), Some(2), Some(5)]);
                let bound =
                    i64::try_from(dice.below(usize::try_from(revision).unwrap() + 2)).unwrap();
                range.max_create_revision = *dice.pick(&[None, None, Some(0), Some(bound)]);
                range.max_mod_revision = *dice.pick(&[None, None, None, Some(bound)]);
                all.push(range);
            }
        }
        all
    }

    /// A random history (puts creating and updating keys, several keys created by one
    /// transaction, single and prefix deletes, lease revokes, automatic compaction):
    /// after every change the index holds exactly the live keys, and every read it
    /// serves is the one the scan of the versions gives, to the order of ties.
    #[test]
    fn reads_from_the_index_are_the_scans_reads() {
        let mut dice = Dice(0x9E37_79B9_7F4A_7C15);
        let mut state = State::new(7);
        let now = Instant::now();
        let mut leases = Vec::new();
        let mut served = 0;
        let mut create_sorted = 0;
        for _ in 0..400 {
            if leases.len() < 3 {
                leases.push(state.grant(Duration::from_secs(60), now));
            }
            let mut ops = Vec::new();
            let mut touched = Vec::new();
            for _ in 0..=dice.below(3) {
                let key = *dice.pick(&KEYS);
                if touched
                    .iter()
                    .any(|other: &&str| other.starts_with(key) || key.starts_with(other))
                {
                    continue;
                }
                touched.push(key);
                ops.push(match dice.below(6) {
                    0 => TxnOp::delete(key),
                    1 => TxnOp::Delete {
                        key: key.to_owned(),
                        prefix: true,
                    },
                    2 => put(key, *dice.pick(&leases)),
                    _ => put(key, 0),
                });
            }
            state.txn(Txn::default().and_then(ops)).unwrap();
            if dice.below(10) == 0 {
                let lease = leases.swap_remove(dice.below(leases.len()));
                state.revoke(lease);
            }
            let live = state
                .keys
                .values()
                .filter(|entries| entries.last().is_some_and(|entry| entry.kv.is_some()))
                .count();
            assert_eq!(state.index.len(), live);
            for range in queries(&mut dice, state.revision) {
                state.check_range(&range).unwrap();
                if let Some(from_index) = state.read_live(&range) {
                    assert_eq!(from_index, state.read_versions(&range), "{range:?}");
                    served += 1;
                    if range.prefix && matches!(range.sort, Some((SortTarget::CreateRevision, _))) {
                        create_sorted += 1;
                    }
                } else {
                    assert!(
                        range.prefix && matches!(range.sort, Some((SortTarget::ModRevision, _)))
                            || range.range_end.is_some()
                                && !matches!(range.sort, None | Some((SortTarget::Key, _))),
                        "not served from the index: {range:?}"
                    );
                }
            }
        }
        assert!(
            served > 10_000 && create_sorted > 2_000,
            "{served}, {create_sorted}"
        );
        assert!(state.compacted > 300, "compaction ran: {}", state.compacted);
    }

    /// A read served from the index, checked against the scan: its keys and count.
    fn read(state: &State, range: Range) -> (Vec<String>, usize) {
        let response = state.read_live(&range).unwrap();
        assert_eq!(response, state.read_versions(&range));
        let keys: Vec<String> = response.kvs.into_iter().map(|kv| kv.key).collect();
        (keys, response.count)
    }

    /// Keys created by one transaction share a create revision: sorted by it either way,
    /// they come in key order, and a limit takes the smallest keys of the tie.
    #[test]
    fn ties_of_create_revision_come_in_key_order() {
        let mut state = State::new(100);
        state
            .txn(Txn::default().and_then(vec![put("l/a", 0)]))
            .unwrap(); // 2
        state
            .txn(Txn::default().and_then(vec![put("l/d", 0), put("l/b", 0), put("l/c", 0)]))
            .unwrap(); // 3
        let by =
            |order, limit| Range::prefix("l/").sorted(SortTarget::CreateRevision, order, limit);
        assert_eq!(
            read(&state, by(SortOrder::Descend, 1)),
            (vec!["l/b".to_owned()], 4)
        );
        assert_eq!(
            read(&state, by(SortOrder::Descend, 3)).0,
            ["l/b", "l/c", "l/d"]
        );
        assert_eq!(
            read(&state, by(SortOrder::Descend, 4)).0,
            ["l/b", "l/c", "l/d", "l/a"]
        );
        assert_eq!(read(&state, by(SortOrder::Ascend, 2)).0, ["l/a", "l/b"]);
        // A waiter's read: the two newest created at or before its own key's revision.
        assert_eq!(
            read(&state, by(SortOrder::Descend, 2).max_create_revision(2)).0,
            ["l/a"]
        );
        // An update keeps the key's place; a deletion and a new put move it last.
        state
            .txn(Txn::default().and_then(vec![put("l/a", 0)]))
            .unwrap(); // 4
        assert_eq!(read(&state, by(SortOrder::Ascend, 1)).0, ["l/a"]);
        state
            .txn(Txn::default().and_then(vec![TxnOp::delete("l/a")]))
            .unwrap(); // 5
        state
            .txn(Txn::default().and_then(vec![put("l/a", 0)]))
            .unwrap(); // 6
        assert_eq!(
            read(&state, by(SortOrder::Descend, 1)),
            (vec!["l/a".to_owned()], 4)
        );
        assert_eq!(read(&state, by(SortOrder::Ascend, 1)).0, ["l/b"]);
    }

    /// Reads at a revision (even the current one) scan the versions; a deleted
    /// directory is forgotten by the index.
    #[test]
    fn past_revisions_scan_and_empty_directories_are_forgotten() {
        let mut state = State::new(100);
        state
            .txn(Txn::default().and_then(vec![put("d/e/k", 0)]))
            .unwrap();
        assert!(state
            .read_live(&Range::prefix("d/").at_revision(state.revision))
            .is_none());
        assert_eq!(state.index.dirs.len(), 3, "``, `d/` and `d/e/`");
        state
            .txn(Txn::default().and_then(vec![TxnOp::Delete {
                key: "d/".to_owned(),
                prefix: true,
            }]))
            .unwrap();
        assert!(state.index.dirs.is_empty() && state.index.keys.is_empty());
        let gone = state.read_live(&Range::prefix("d/").last_create()).unwrap();
        assert_eq!((gone.count, gone.kvs.len()), (0, 0));
        let before = state.read_range(&Range::prefix("d/").at_revision(2));
        assert_eq!(before.kvs[0].key, "d/e/k");
    }
}
