//! The long lines' indexes (`long_lines.rs`) against the scan of the versions
//! (`mvcc.rs`): every read an index serves answers what the scan answers, to the key,
//! and every index holds exactly its directory's live keys.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use super::long_lines::LongLines;
use super::store::State;
use crate::kv::{Range, Revision, SortOrder, SortTarget, Txn, TxnOp};

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

const KEYS: [&str; 16] = [
    "a/x", "a/y", "a/z", "a/b/x", "a/b/y", "a/b/", "a/", "ab", "ab/x", "b/x", "b/y", "q", "é/x",
    "é/y", "a/b/c/x", "a/bz",
];

/// A state whose lines are indexed from 3 live keys and dropped below 2.
fn state(retain: i64) -> State {
    let mut state = State::new(retain);
    state.long_lines = LongLines::with_thresholds(3, 2);
    state
}

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
            let bound = i64::try_from(dice.below(usize::try_from(revision).unwrap() + 2)).unwrap();
            range.max_create_revision = *dice.pick(&[None, None, Some(0), Some(bound)]);
            range.max_mod_revision = *dice.pick(&[None, None, None, Some(bound)]);
            all.push(range);
        }
    }
    all
}

/// Each indexed directory holds exactly the live keys under it, at their create
/// revisions.
fn assert_exact(state: &State) {
    for (dir, line) in state.long_lines.lines() {
        let live: BTreeSet<(Revision, String)> = state
            .keys
            .iter()
            .filter(|(key, _)| key.starts_with(dir))
            .filter_map(|(key, entries)| {
                Some((entries.last()?.kv.as_ref()?.create_revision, key.clone()))
            })
            .collect();
        let indexed: BTreeSet<(Revision, String)> = line
            .iter()
            .map(|(revision, key)| (*revision, key.to_string()))
            .collect();
        assert_eq!(indexed, live, "the index of {dir:?}");
    }
}

/// A random history (puts creating and updating keys, several keys created by one
/// transaction, single and prefix deletes, lease revokes, automatic compaction): after
/// every change each index holds exactly its live keys, and every read, served by an
/// index or by the scan, is the one the scan of the versions gives, to the order of
/// ties.
#[test]
fn reads_of_long_lines_are_the_scans_reads() {
    let mut dice = Dice(0x9E37_79B9_7F4A_7C15);
    let mut state = state(7);
    let now = Instant::now();
    let mut leases = Vec::new();
    let mut served = 0;
    let mut create_sorted = 0;
    let mut dropped = 0;
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
            ops.push(match dice.below(7) {
                0 => TxnOp::delete(key),
                1 => TxnOp::Delete {
                    key: key.to_owned(),
                    prefix: true,
                },
                2 => put(key, *dice.pick(&leases)),
                _ => put(key, 0),
            });
        }
        let indexed = state.long_lines.len();
        state.txn(Txn::default().and_then(ops)).unwrap();
        if dice.below(10) == 0 {
            let lease = leases.swap_remove(dice.below(leases.len()));
            state.revoke(lease);
        }
        if state.long_lines.len() < indexed {
            dropped += 1;
        }
        assert_exact(&state);
        for range in queries(&mut dice, state.revision) {
            state.check_range(&range).unwrap();
            let scanned = state.read_versions(&range);
            if let Some(from_index) = state.read_long_line(&range) {
                assert_eq!(from_index, scanned, "{range:?}");
                served += 1;
                if matches!(range.sort, Some((SortTarget::CreateRevision, _))) {
                    create_sorted += 1;
                }
            }
            assert_eq!(state.read_range(&range), scanned, "{range:?}");
        }
    }
    assert!(
        served > 2_000 && create_sorted > 700 && dropped >= 5,
        "{served}, {create_sorted}, {dropped}"
    );
    assert!(state.compacted > 300, "compaction ran: {}", state.compacted);
}

/// A read served from an index, checked against the scan: its keys and count.
fn read(state: &State, range: Range) -> (Vec<String>, usize) {
    let response = state.read_long_line(&range).expect("served from the index");
    assert_eq!(response, state.read_versions(&range));
    let keys: Vec<String> = response.kvs.into_iter().map(|kv| kv.key).collect();
    (keys, response.count)
}

/// Keys created by one transaction share a create revision: sorted by it either way,
/// they come in key order, and a limit takes the smallest keys of the tie.
#[test]
fn ties_of_create_revision_come_in_key_order() {
    let mut state = state(100);
    state
        .txn(Txn::default().and_then(vec![put("l/a", 0)]))
        .unwrap(); // 2
    state
        .txn(Txn::default().and_then(vec![put("l/d", 0), put("l/b", 0), put("l/c", 0)]))
        .unwrap(); // 3
    let by = |order, limit| Range::prefix("l/").sorted(SortTarget::CreateRevision, order, limit);
    // The first read scans and indexes the line; the next ones are served by it.
    assert!(state.read_long_line(&Range::prefix("l/")).is_none());
    state.read_range(&Range::prefix("l/"));
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

/// Short lines and reads of a past revision scan; a line that shrinks loses its index.
#[test]
fn short_lines_and_past_revisions_scan_and_shrunk_lines_lose_their_index() {
    let mut state = state(100);
    state
        .txn(Txn::default().and_then(vec![put("d/e/k", 0), put("d/j", 0)]))
        .unwrap();
    state.read_range(&Range::prefix("d/"));
    assert_eq!(state.long_lines.len(), 0, "two keys: a short line");
    state
        .txn(Txn::default().and_then(vec![put("d/k", 0)]))
        .unwrap();
    state.read_range(&Range::prefix("d/").at_revision(state.revision));
    assert_eq!(
        state.long_lines.len(),
        0,
        "a read of a past revision indexes nothing"
    );
    state.read_range(&Range::prefix("d"));
    assert_eq!(state.long_lines.len(), 0, "only a directory is indexed");
    state.read_range(&Range::prefix("d/").last_create());
    assert_eq!(state.long_lines.len(), 1);
    assert!(state
        .read_long_line(&Range::prefix("d/").at_revision(state.revision))
        .is_none());
    assert_eq!(read(&state, Range::prefix("d/")).1, 3);
    state
        .txn(Txn::default().and_then(vec![TxnOp::delete("d/j"), TxnOp::delete("d/k")]))
        .unwrap();
    assert_eq!(state.long_lines.len(), 0, "one key left: below 2");
    let before = state.read_range(&Range::prefix("d/").at_revision(2));
    assert_eq!(before.kvs[0].key, "d/e/k");
}
