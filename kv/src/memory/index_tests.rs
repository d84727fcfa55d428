//! The live index (`index.rs`) against the scan of the versions (`mvcc.rs`): every
//! read the index serves must answer what the scan answers, to the key.

use std::time::Duration;

use tokio::time::Instant;

use super::store::State;
use crate::kv::{Range, Revision, SortOrder, SortTarget};
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
            let bound = i64::try_from(dice.below(usize::try_from(revision).unwrap() + 2)).unwrap();
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
    let by = |order, limit| Range::prefix("l/").sorted(SortTarget::CreateRevision, order, limit);
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
    assert_eq!(state.index.directories(), 3, "``, `d/` and `d/e/`");
    state
        .txn(Txn::default().and_then(vec![TxnOp::Delete {
            key: "d/".to_owned(),
            prefix: true,
        }]))
        .unwrap();
    assert!(state.index.directories() == 0 && state.index.len() == 0);
    let gone = state.read_live(&Range::prefix("d/").last_create()).unwrap();
    assert_eq!((gone.count, gone.kvs.len()), (0, 0));
    let before = state.read_range(&Range::prefix("d/").at_revision(2));
    assert_eq!(before.kvs[0].key, "d/e/k");
}
