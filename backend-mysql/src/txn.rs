//! One [`Txn`] in two phases: a read without a lock decides what to write, then one
//! batch locks the revision row, checks that read, writes and commits
//! ([`crate::optimistic`]), so that no writer holds the row across a client round
//! trip.
//!
//! Phase 1 reads one consistent snapshot in one round trip: the revision row, the
//! `kv` rows of every key a compare, a put or a single-key delete of either branch
//! names, whether each lease a put names is live, and the keys under each prefix a
//! prefix delete names. The compares are evaluated there, and the chosen branch is
//! played out on what was read: everything that can be refused without the store is
//! refused then (an empty or too long key; a lease seen expired or gone, since a
//! lease never comes back; keeping the lease of a missing key; a range outside the
//! revisions), its writes become statements conditional on `@ok` and written at
//! `@r`, and its ranges tagged `SELECT`s in branch order, so that a range after a
//! put sees it, as etcd's do. A range at an explicit revision reads the log, which
//! is right for any revision up to the current one.
//!
//! Phase 2 is one batch. A branch that writes sends the locked batch
//! ([`optimistic::locked`]): its commit is in revision order as every writer's, and
//! the compares hold at the revision it gets, since every key they read is checked
//! unchanged under the lock (as are the keys it writes, the leases its puts name and
//! the keys under its prefix deletes). A branch that writes nothing (ranges only, or
//! deletes of missing keys) takes no lock: a read-only snapshot with the same check
//! answers it, at the snapshot's revision. When the check fails nothing was written
//! and the transaction starts again from phase 1, at most [`UNLOCKED_TRIES`] times. A
//! transaction without a put or a delete in either branch takes no lock either;
//! without compares it is one snapshot in one batch.
//!
//! A transaction that names only what is guessed ([`crate::guesses`]) skips phase 1
//! ([`Snapshot::guessed`]); phase 2 checks the guess as it checks a read, and after a
//! wrong guess, which wrote nothing, the transaction goes through both phases.
//!
//! A transaction whose reads another writer changed [`UNLOCKED_TRIES`] times in a row
//! (a prefix delete racing puts under its prefix, say) then takes the revision lock
//! before it reads, as one in the caller's transaction does ([`Scope::Callers`]):
//! nothing it reads can change before its writes, so it commits at the next try
//! instead of starving. It holds the row across two round trips, which is why it is
//! the fallback and not the rule.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;

use bytes::Bytes;
use distsync_core::{Error, Result};
use distsync_kv::kv::{
    Compare, EventKind, KeyValue, LeaseId, Range, Revision, Txn, TxnOp, TxnOpResponse, TxnResponse,
    WatchEvent,
};
use distsync_kv::StoreError;
use sqlx::mysql::MySqlRow;
use sqlx::{MySqlConnection, MySqlPool, Row};

use crate::batch;
use crate::error::map;
use crate::guesses::Guesses;
use crate::optimistic::{self, Seen, OUTCOME};
use crate::range::{self, key_string, KeyFilter};
use crate::schema::{self, live_leases, Tables, MAX_KEY_BYTES};
use crate::BACKEND;

/// The statement that opens a read-only transaction on one snapshot.
pub(crate) const READ_ONLY: &str = "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY";

/// Where a transaction runs.
///
/// In the caller's transaction ([`run_in_callers`]) the snapshot is the caller's,
/// taken when its transaction first read, perhaps before commits this transaction
/// must see: so the revision row is locked first (`FOR UPDATE`, held until the caller
/// commits or rolls back, every writer of the store waiting meanwhile), every read is
/// a locking read (which reads the latest committed rows and the transaction's own),
/// and with the revision row held nothing read can change before the writes, which
/// need no check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// A transaction of the backend's own, on a connection of its pool.
    Own,
    /// Inside the caller's open transaction, which the caller ends.
    Callers,
}

impl Scope {
    /// `select` (a `SELECT` of the store's rows) as this scope reads: a locking read
    /// in the caller's transaction.
    fn read(self, select: String) -> String {
        match self {
            Self::Own => select,
            Self::Callers => select + " LOCK IN SHARE MODE",
        }
    }

    /// The select of the revision row's `revision, compacted`, tagged `tag`, locking it
    /// in the caller's transaction.
    fn read_meta(self, tables: &Tables, tag: i64) -> String {
        let select = tables.meta_row(&format!("{tag}, revision, compacted"));
        match self {
            Self::Own => select,
            Self::Callers => select + " FOR UPDATE",
        }
    }

    /// The statements that open (`READ_ONLY`) and end a read-only batch of this scope:
    /// none in the caller's transaction.
    fn read_only(self, mut body: Vec<String>) -> Vec<String> {
        if self == Self::Own {
            body.insert(0, READ_ONLY.to_owned());
            body.push("COMMIT".to_owned());
        }
        body
    }
}

/// What a transaction did: its answer, and its changes if it made any.
pub(crate) struct Applied {
    /// The answer.
    pub(crate) response: TxnResponse,
    /// The changes, in order, if the transaction made any (all at
    /// `response.revision`).
    pub(crate) events: Vec<WatchEvent>,
}

/// One log row, to write or read back.
#[derive(Default)]
pub(crate) struct LogRow {
    pub(crate) key: String,
    /// `0`: the revision of the change itself (a key it creates), known only once
    /// the revision lock is taken.
    pub(crate) create_revision: Revision,
    pub(crate) version: i64,
    pub(crate) lease: LeaseId,
    pub(crate) value: Bytes,
    pub(crate) deleted: bool,
}

impl LogRow {
    /// The deletion of `key`.
    pub(crate) fn tombstone(key: String) -> Self {
        Self {
            key,
            deleted: true,
            ..Self::default()
        }
    }
}

/// A revision in a locked batch: `0` is the batch's own, `@r`.
fn revision_sql(revision: Revision) -> String {
    if revision == 0 {
        "@r".to_owned()
    } else {
        revision.to_string()
    }
}

/// A key's current revisions and lease, from the `kv` table (`0`: the transaction's
/// own revision, for a key it wrote).
#[derive(Clone, Copy, Default)]
struct Current {
    create_revision: Revision,
    mod_revision: Revision,
    version: i64,
    lease: LeaseId,
}

/// Runs `txn` on `pool`.
///
/// Cancel safety: dropping the future before the commit rolls the transaction back
/// (its connection is closed, [`batch::Open`]); once the last batch is sent, it may
/// have been applied.
pub(crate) async fn run(
    pool: &MySqlPool,
    tables: &Tables,
    guesses: &Guesses,
    txn: Txn,
) -> Result<Applied> {
    txn.check_branches()?;
    let mut open = batch::Open::new(pool.acquire().await.map_err(map)?);
    let applied = if ranges_without_compares(&txn) {
        ranges_only(open.conn(), tables, &txn.success, Scope::Own).await
    } else {
        optimistic_on(open.conn(), tables, guesses, &txn).await
    };
    match applied {
        Ok(_) => open.done(),
        Err(_) => open.rollback().await,
    }
    applied
}

/// Runs `txn` on `conn`, inside the transaction the caller opened on it and ends
/// (see [`Scope::Callers`]): no statement opens or ends a transaction, and none is
/// repeated.
///
/// Cancel safety: dropping the future part-way leaves the caller's transaction with
/// any prefix of the statements run: the caller rolls it back.
pub(crate) async fn run_in_callers(
    conn: &mut MySqlConnection,
    tables: &Tables,
    txn: Txn,
) -> Result<Applied> {
    txn.check_branches()?;
    if ranges_without_compares(&txn) {
        return ranges_only(conn, tables, &txn.success, Scope::Callers).await;
    }
    under_the_lock(conn, tables, &txn).await
}

/// Runs `txn`, which has compares or writes, in the open transaction on `conn`: the
/// revision row locked first, then the reads and the writes (see [`Scope::Callers`]).
async fn under_the_lock(conn: &mut MySqlConnection, tables: &Tables, txn: &Txn) -> Result<Applied> {
    let snapshot = Snapshot::read(conn, tables, txn, Scope::Callers).await?;
    let branch = Branch::play(tables, &snapshot, txn, Scope::Callers)?;
    branch.commit(conn).await?.ok_or_else(|| {
        Error::backend(
            BACKEND,
            "a transaction found its reads changed under the revision lock",
        )
    })
}

/// Whether `txn` has no compares and no op but ranges (see [`ranges_only`]).
fn ranges_without_compares(txn: &Txn) -> bool {
    txn.compares.is_empty()
        && (txn.success.iter().chain(&txn.failure)).all(|op| matches!(op, TxnOp::Range(_)))
}

/// A transaction of ranges and no compares: one snapshot, one batch, no lock (of its
/// own; in the caller's transaction, locking reads).
async fn ranges_only(
    conn: &mut MySqlConnection,
    tables: &Tables,
    ops: &[TxnOp],
    scope: Scope,
) -> Result<Applied> {
    let mut statements = vec![scope.read_meta(tables, OUTCOME)];
    let mut answers = Vec::with_capacity(ops.len());
    for (index, op) in ops.iter().enumerate() {
        if let TxnOp::Range(range) = op {
            answers.push(Answer::range(tables, range, index, &mut statements, scope));
        }
    }
    let statements = scope.read_only(statements);
    let rows = batch::run(conn, &statements).await?;
    let (outcome, tagged) = optimistic::sort(&rows)?;
    let current: Revision = outcome.try_get(1).map_err(map)?;
    let compacted: Revision = outcome.try_get(2).map_err(map)?;
    for answer in &answers {
        if let Answer::Range { range, .. } = answer {
            range.check(current, compacted, BACKEND)?;
        }
    }
    Ok(Applied {
        response: respond(true, answers, &tagged, current)?,
        events: Vec::new(),
    })
}

/// How many times a transaction reads without the lock before it takes the lock
/// first (see the module docs): enough for a few writers of the same keys, few
/// enough that a starved transaction waits for a handful of round trips only.
const UNLOCKED_TRIES: usize = 8;

/// A transaction with compares or writes: on a guess, in two phases, or with the lock
/// first (see the module docs).
async fn optimistic_on(
    conn: &mut MySqlConnection,
    tables: &Tables,
    guesses: &Guesses,
    txn: &Txn,
) -> Result<Applied> {
    if let Some(snapshot) = Snapshot::guessed(txn, guesses) {
        // A branch the guess cannot play out (a refusal) is decided by a read.
        if let Ok(branch) = Branch::play(tables, &snapshot, txn, Scope::Own) {
            if let Some(applied) = branch.commit(conn).await? {
                return Ok(applied);
            }
            tracing::debug!(
                backend = BACKEND,
                "a transaction's guess was wrong: reading what it guessed"
            );
            guesses.missed(
                snapshot.asked.iter().map(String::as_str),
                snapshot.prefixes.keys().map(String::as_str),
            );
        }
    }
    for _ in 0..UNLOCKED_TRIES {
        let snapshot = Snapshot::read(conn, tables, txn, Scope::Own).await?;
        let branch = Branch::play(tables, &snapshot, txn, Scope::Own)?;
        if let Some(applied) = branch.commit(conn).await? {
            return Ok(applied);
        }
        tracing::debug!(
            backend = BACKEND,
            "a transaction's reads changed before its commit: reading again"
        );
    }
    tracing::debug!(
        backend = BACKEND,
        tries = UNLOCKED_TRIES,
        "a transaction's reads kept changing: taking the revision lock before reading"
    );
    batch::run(conn, &["START TRANSACTION".to_owned()]).await?;
    let applied = under_the_lock(conn, tables, txn).await?;
    batch::run(conn, &["COMMIT".to_owned()]).await?;
    Ok(applied)
}

/// The keys, leases and prefixes a transaction's phase 1 reads: the rows of these
/// keys, whether these leases are live, and the keys under these prefixes (with their
/// rows).
fn known_in_advance(txn: &Txn) -> (Vec<&str>, Vec<LeaseId>, Vec<&str>) {
    let mut keys = Vec::new();
    let mut leases = Vec::new();
    let mut prefixes = Vec::new();
    for compare in &txn.compares {
        if compare.prefix {
            prefixes.push(compare.key.as_str());
        } else {
            keys.push(compare.key.as_str());
        }
    }
    for op in txn.success.iter().chain(&txn.failure) {
        match op {
            TxnOp::Put {
                key,
                lease,
                ignore_lease,
                ..
            } => {
                keys.push(key);
                if !ignore_lease && *lease != 0 {
                    leases.push(*lease);
                }
            }
            TxnOp::Delete { key, prefix: false } => keys.push(key),
            TxnOp::Delete { key, prefix: true } => prefixes.push(key.as_str()),
            TxnOp::Range(_) => {}
        }
    }
    keys.retain(|key| !key.is_empty() && key.len() <= MAX_KEY_BYTES);
    for list in [&mut keys, &mut prefixes] {
        list.sort_unstable();
        list.dedup();
    }
    leases.sort_unstable();
    leases.dedup();
    (keys, leases, prefixes)
}

/// The tags of phase 1's `SELECT`s ([`batch::tag`]); the keys under the `i`-th
/// prefix are tagged `PREFIX + i`.
const META: i64 = 0;
const ROW: i64 = 1;
const LIVE_LEASE: i64 = 2;
const PREFIX: i64 = 3;

/// What phase 1 read, in one snapshot.
#[derive(Default)]
struct Snapshot {
    /// The last committed revision.
    current: Revision,
    compacted: Revision,
    /// The keys asked for.
    asked: Vec<String>,
    /// The rows of the keys asked for that exist, and of the keys under the prefixes.
    rows: HashMap<String, Current>,
    /// The live leases among those asked for.
    live: HashSet<LeaseId>,
    /// The keys under each prefix asked for, in key order.
    prefixes: HashMap<String, Vec<String>>,
    /// The rows guessed rather than read ([`Snapshot::guessed`]), checked whole
    /// under the lock; empty for a snapshot read.
    guessed: Vec<KeyValue>,
}

impl Snapshot {
    /// Reads what `txn` needs, in one round trip without a lock (of its own; in the
    /// caller's transaction, with the revision row's lock and locking reads).
    async fn read(
        conn: &mut MySqlConnection,
        tables: &Tables,
        txn: &Txn,
        scope: Scope,
    ) -> Result<Self> {
        let (keys, leases, prefixes) = known_in_advance(txn);
        let (kv, leases_table) = (&tables.kv, &tables.leases);
        let rows = |tag: i64, condition: String| {
            scope.read(format!(
                "SELECT {tag}, k, create_revision, mod_revision, version, lease FROM {kv} \
                 WHERE {condition}"
            ))
        };
        let mut statements = vec![scope.read_meta(tables, META)];
        if !keys.is_empty() {
            let listed = batch::bytes_list(keys.iter().map(|key| key.as_bytes()));
            statements.push(rows(ROW, format!("k IN {listed}")));
        }
        if !leases.is_empty() {
            let live = live_leases(&leases);
            let select = format!("SELECT {LIVE_LEASE}, id FROM {leases_table} WHERE {live}");
            statements.push(scope.read(select));
        }
        for (index, prefix) in (0..).zip(&prefixes) {
            let filter = KeyFilter::new(prefix, true, None).literal();
            statements.push(rows(PREFIX + index, format!("{filter} ORDER BY k")));
        }
        let statements = scope.read_only(statements);
        let mut meta = None;
        let mut snapshot = Self::new(&keys, &prefixes);
        for row in batch::run(conn, &statements).await? {
            match batch::tag(&row)? {
                META => meta = Some((row.try_get(1).map_err(map)?, row.try_get(2).map_err(map)?)),
                LIVE_LEASE => {
                    snapshot.live.insert(row.try_get(1).map_err(map)?);
                }
                tag => {
                    let key = key_string(row.try_get(1).map_err(map)?)?;
                    snapshot.rows.insert(key.clone(), current_of(&row, 2)?);
                    if tag == ROW {
                        continue;
                    }
                    let prefix = usize::try_from(tag - PREFIX)
                        .ok()
                        .and_then(|index| prefixes.get(index))
                        .ok_or_else(|| Error::backend(BACKEND, format!("an unknown tag {tag}")))?;
                    snapshot
                        .prefixes
                        .entry((*prefix).to_owned())
                        .or_default()
                        .push(key);
                }
            }
        }
        (snapshot.current, snapshot.compacted) =
            meta.ok_or_else(|| Error::backend(BACKEND, "the revision row is missing"))?;
        Ok(snapshot)
    }

    /// Phase 1 without its round trip: what `txn` would read, guessed ([`crate::guesses`])
    /// rather than read, or `None` when it names what is not guessed: a key that is
    /// neither one this process wrote on a lease nor put on a lease by `txn` (guessed
    /// missing then: a session's key before its first put), a compared prefix lately
    /// found not empty or holding a key this process wrote, a prefix delete, or a range
    /// at a past revision. A compared prefix is guessed empty, and every lease named
    /// live. The revision and compaction point are unknown (0), which only a range at a
    /// past revision would read.
    fn guessed(txn: &Txn, guesses: &Guesses) -> Option<Self> {
        let ops = || txn.success.iter().chain(&txn.failure);
        let past = |range: &Range| range.revision.is_some_and(|at| at > 0);
        let unguessable = ops().any(|op| match op {
            TxnOp::Delete { prefix, .. } => *prefix,
            TxnOp::Range(range) => past(range),
            TxnOp::Put { .. } => false,
        });
        if unguessable {
            return None;
        }
        let put_on_a_lease = |key: &str| {
            ops().any(|op| {
                matches!(op, TxnOp::Put { key: put, lease, ignore_lease: false, .. }
                    if put == key && *lease != 0)
            })
        };
        // Only compares name prefixes here: a prefix delete was ruled out above.
        let (keys, leases, prefixes) = known_in_advance(txn);
        if !prefixes.iter().all(|prefix| guesses.may_be_empty(prefix)) {
            return None;
        }
        let mut snapshot = Self::new(&keys, &prefixes);
        snapshot.live = leases.into_iter().collect();
        for key in &keys {
            match guesses.get(key) {
                Some(_) if prefixes.iter().any(|prefix| key.starts_with(prefix)) => return None,
                Some(row) => {
                    let current = Current {
                        create_revision: row.create_revision,
                        mod_revision: row.mod_revision,
                        version: row.version,
                        lease: row.lease,
                    };
                    snapshot.rows.insert((*key).to_owned(), current);
                    snapshot.guessed.push(row);
                }
                None if put_on_a_lease(key) => {}
                None => return None,
            }
        }
        Some(snapshot)
    }

    /// A snapshot that asked for `keys` and `prefixes` and has read nothing yet, at
    /// revision 0.
    fn new(keys: &[&str], prefixes: &[&str]) -> Self {
        Self {
            asked: keys.iter().map(|key| (*key).to_owned()).collect(),
            prefixes: prefixes
                .iter()
                .map(|prefix| ((*prefix).to_owned(), Vec::new()))
                .collect(),
            ..Self::default()
        }
    }

    /// The keys under `prefix`, one of the prefixes read, in key order.
    fn under(&self, prefix: &str) -> &[String] {
        self.prefixes
            .get(prefix)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Whether `compare` holds against what was read: the row of its key (a key not
    /// there is missing), or of every key under its prefix (none there: a missing key).
    fn holds(&self, compare: &Compare) -> bool {
        let revisions = |key: &str| {
            self.rows
                .get(key)
                .map(|row| (row.create_revision, row.mod_revision, row.version))
        };
        if compare.prefix {
            compare.holds_for_each(
                self.under(&compare.key)
                    .iter()
                    .filter_map(|key| revisions(key)),
            )
        } else {
            compare.holds_for_each(revisions(&compare.key))
        }
    }
}

/// An op's answer: known when the branch is played out, or a range's, read in
/// phase 2 from the rows tagged `tag` (and its count, `tag + 1`).
enum Answer {
    Done(TxnOpResponse),
    Range { range: Range, past: bool, tag: i64 },
}

impl Answer {
    /// The answer of the `index`-th op, the range `range`, whose statements (read as
    /// `scope` reads) it adds to `statements`.
    fn range(
        tables: &Tables,
        range: &Range,
        index: usize,
        statements: &mut Vec<String>,
        scope: Scope,
    ) -> Self {
        let past = range.revision.filter(|at| *at > 0);
        let tag = i64::try_from(index).unwrap_or(i64::MAX / 2 - 1) * 2 + 1;
        statements.extend(
            range::statements(tables, range, past, tag)
                .into_iter()
                .map(|statement| scope.read(statement)),
        );
        Self::Range {
            range: range.clone(),
            past: past.is_some(),
            tag,
        }
    }
}

/// The answer of a branch (`succeeded`: the success branch) at `revision`, its ranges'
/// from their tagged rows.
fn respond(
    succeeded: bool,
    answers: Vec<Answer>,
    tagged: &HashMap<i64, Vec<&MySqlRow>>,
    revision: Revision,
) -> Result<TxnResponse> {
    let responses = answers
        .into_iter()
        .map(|answer| match answer {
            Answer::Done(response) => Ok(response),
            Answer::Range { range, past, tag } => {
                let rows = tagged.get(&tag).map(Vec::as_slice).unwrap_or_default();
                let count = tagged
                    .get(&(tag + 1))
                    .and_then(|rows| rows.first().copied());
                Ok(TxnOpResponse::Range(range::answer(
                    &range, past, rows, count, revision,
                )?))
            }
        })
        .collect::<Result<_>>()?;
    Ok(TxnResponse {
        succeeded,
        responses,
        revision,
    })
}

/// The chosen branch, played out on what phase 1 read.
struct Branch<'a> {
    tables: &'a Tables,
    scope: Scope,
    snapshot: &'a Snapshot,
    succeeded: bool,
    /// The keys as the branch leaves them so far (`None`: missing).
    state: BTreeMap<String, Option<Current>>,
    /// Its writes and reads, in order, for the batch of phase 2.
    statements: Vec<String>,
    answers: Vec<Answer>,
    /// Its changes.
    rows: Vec<LogRow>,
    /// What it depends on, checked in phase 2.
    seen: Seen,
}

impl<'a> Branch<'a> {
    /// Evaluates the compares on `snapshot` and plays the chosen branch out.
    fn play(tables: &'a Tables, snapshot: &'a Snapshot, txn: &Txn, scope: Scope) -> Result<Self> {
        let succeeded = txn.compares.iter().all(|compare| snapshot.holds(compare));
        let mut branch = Self {
            tables,
            scope,
            snapshot,
            succeeded,
            state: snapshot
                .asked
                .iter()
                .map(|key| (key.clone(), snapshot.rows.get(key).copied()))
                .collect(),
            statements: Vec::new(),
            answers: Vec::new(),
            rows: Vec::new(),
            seen: Seen {
                exact: snapshot.guessed.clone(),
                ..Seen::default()
            },
        };
        for compare in &txn.compares {
            if compare.prefix {
                branch.see_under(&compare.key);
            } else {
                branch.see(&compare.key);
            }
        }
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        for (index, op) in ops.iter().enumerate() {
            let answer = branch.op(index, op)?;
            branch.answers.push(answer);
        }
        Ok(branch)
    }

    /// Records that the branch depends on `key`'s row as phase 1 read it.
    fn see(&mut self, key: &str) {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return;
        }
        let revision = self.snapshot.rows.get(key).map(|row| row.mod_revision);
        self.seen.keys.push((key.to_owned(), revision));
    }

    /// Records that the branch depends on which keys are under `prefix` and on each
    /// one's row, as phase 1 read them.
    fn see_under(&mut self, prefix: &str) {
        let under = self.snapshot.under(prefix).to_vec();
        for key in &under {
            self.see(key);
        }
        let filter = KeyFilter::new(prefix, true, None).literal();
        self.seen.sets.push((filter, under));
    }

    fn op(&mut self, index: usize, op: &TxnOp) -> Result<Answer> {
        match op {
            TxnOp::Put {
                key,
                value,
                lease,
                ignore_lease,
            } => {
                self.put(key, value, (!ignore_lease).then_some(*lease))?;
                Ok(Answer::Done(TxnOpResponse::Put))
            }
            TxnOp::Delete { key, prefix } => {
                if key.is_empty() && !prefix {
                    return Err(Error::InvalidArgument(
                        "delete: key is not provided".to_owned(),
                    ));
                }
                let deleted = if *prefix {
                    self.delete_prefix(key)
                } else {
                    self.delete(key)
                };
                Ok(Answer::Done(TxnOpResponse::Delete(deleted)))
            }
            TxnOp::Range(range) => {
                range.check(self.snapshot.current, self.snapshot.compacted, BACKEND)?;
                if range.revision.is_some_and(|at| at > 0) {
                    self.seen.compacted = Some(self.snapshot.compacted);
                }
                Ok(Answer::range(
                    self.tables,
                    range,
                    index,
                    &mut self.statements,
                    self.scope,
                ))
            }
        }
    }

    /// Writes `key`; `lease: None` keeps the key's current lease.
    fn put(&mut self, key: &str, value: &Bytes, lease: Option<LeaseId>) -> Result<()> {
        if key.is_empty() {
            return Err(Error::InvalidArgument(
                "put: key is not provided".to_owned(),
            ));
        }
        schema::check_key_size("put", key)?;
        self.see(key);
        let previous = self.state.get(key).copied().flatten();
        let lease = match (lease, previous) {
            (None, None) => return Err(StoreError::KeyNotFound(key.to_owned()).in_backend(BACKEND)),
            (None, Some(previous)) => previous.lease,
            (Some(lease), _) => {
                if lease != 0 {
                    // A lease seen expired or gone never comes back.
                    if !self.snapshot.live.contains(&lease) {
                        return Err(StoreError::LeaseNotFound(lease).in_backend(BACKEND));
                    }
                    self.seen.live.push(lease);
                }
                lease
            }
        };
        let create_revision = previous.map_or(0, |p| p.create_revision);
        let version = previous.map_or(1, |p| p.version.saturating_add(1));
        self.statements.push(format!(
            "INSERT INTO {} (k, create_revision, mod_revision, version, lease, v) \
             SELECT {}, {}, @r, {version}, {lease}, {} FROM DUAL WHERE @ok ON DUPLICATE KEY UPDATE \
             create_revision = VALUES(create_revision), mod_revision = VALUES(mod_revision), \
             version = VALUES(version), lease = VALUES(lease), v = VALUES(v)",
            self.tables.kv,
            batch::bytes(key.as_bytes()),
            revision_sql(create_revision),
            batch::bytes(value),
        ));
        self.state.insert(
            key.to_owned(),
            Some(Current {
                create_revision,
                mod_revision: 0,
                version,
                lease,
            }),
        );
        self.rows.push(LogRow {
            key: key.to_owned(),
            create_revision,
            version,
            lease,
            value: value.clone(),
            deleted: false,
        });
        Ok(())
    }

    /// Deletes `key`; whether it existed.
    fn delete(&mut self, key: &str) -> i64 {
        if key.len() > MAX_KEY_BYTES {
            return 0;
        }
        self.see(key);
        if self.state.get_mut(key).and_then(Option::take).is_none() {
            return 0;
        }
        let (kv, key_literal) = (&self.tables.kv, batch::bytes(key.as_bytes()));
        self.statements
            .push(format!("DELETE FROM {kv} WHERE k = {key_literal} AND @ok"));
        self.rows.push(LogRow::tombstone(key.to_owned()));
        1
    }

    /// Deletes every key starting with `prefix`; how many existed.
    fn delete_prefix(&mut self, prefix: &str) -> i64 {
        let under = self.snapshot.under(prefix).to_vec();
        let filter = KeyFilter::new(prefix, true, None).literal();
        for key in &under {
            // Only the keys the branch has not written yet are as phase 1 read them.
            self.state
                .entry(key.clone())
                .or_insert(Some(Current::default()));
        }
        self.seen.sets.push((filter.clone(), under));
        let doomed: Vec<String> = self
            .state
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .filter(|(_, row)| row.is_some())
            .map(|(key, _)| key.clone())
            .collect();
        if doomed.is_empty() {
            return 0;
        }
        let kv = &self.tables.kv;
        self.statements
            .push(format!("DELETE FROM {kv} WHERE {filter} AND @ok"));
        for key in &doomed {
            self.state.insert(key.clone(), None);
            self.rows.push(LogRow::tombstone(key.clone()));
        }
        i64::try_from(doomed.len()).unwrap_or(i64::MAX)
    }

    /// Phase 2: the branch's batch; its result, or `None` when what phase 1 read
    /// had changed (nothing was written).
    async fn commit(self, conn: &mut MySqlConnection) -> Result<Option<Applied>> {
        let tables = self.tables;
        let writes = !self.rows.is_empty();
        // In the caller's transaction the revision row is held since phase 1: what
        // it read cannot have changed (see `Scope`).
        let unchanged = match self.scope {
            Scope::Own => self.seen.condition(tables),
            Scope::Callers => "TRUE".to_owned(),
        };
        let statements = if writes {
            let mut body = self.statements;
            body.extend(log_rows(tables, &self.rows));
            let locked = optimistic::locked(tables, &unchanged, body, true);
            match self.scope {
                Scope::Own => locked,
                Scope::Callers => optimistic::inside_callers(locked),
            }
        } else {
            let mut statements = vec![tables.meta_row(&format!(
                "{OUTCOME}, CAST(({unchanged}) AS SIGNED), revision"
            ))];
            statements.extend(self.statements);
            self.scope.read_only(statements)
        };
        let rows = batch::run(conn, &statements).await?;
        let (outcome, tagged) = optimistic::sort(&rows)?;
        let revision = if writes {
            optimistic::outcome(outcome)?
        } else {
            let ok: i64 = outcome.try_get(1).map_err(map)?;
            (ok != 0)
                .then(|| outcome.try_get::<Revision, _>(2).map_err(map))
                .transpose()?
        };
        let Some(revision) = revision else {
            return Ok(None);
        };
        let response = respond(self.succeeded, self.answers, &tagged, revision)?;
        let events = self
            .rows
            .into_iter()
            .map(|row| event(row, revision))
            .collect();
        Ok(Some(Applied { response, events }))
    }
}

/// The watch event of `row`, written at `revision`.
pub(crate) fn event(row: LogRow, revision: Revision) -> WatchEvent {
    if row.deleted {
        return WatchEvent {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: row.key,
                mod_revision: revision,
                ..KeyValue::default()
            },
        };
    }
    WatchEvent {
        kind: EventKind::Put,
        kv: KeyValue {
            key: row.key,
            value: row.value,
            create_revision: if row.create_revision == 0 {
                revision
            } else {
                row.create_revision
            },
            mod_revision: revision,
            version: row.version,
            lease: row.lease,
        },
    }
}

/// `create_revision, mod_revision, version, lease` from column `from` on.
fn current_of(row: &sqlx::mysql::MySqlRow, from: usize) -> Result<Current> {
    Ok(Current {
        create_revision: row.try_get(from).map_err(map)?,
        mod_revision: row.try_get(from + 1).map_err(map)?,
        version: row.try_get(from + 2).map_err(map)?,
        lease: row.try_get(from + 3).map_err(map)?,
    })
}

/// The statements that write a locked batch's changes to the log at `@r`, in their
/// order (`sub`), each only if `@ok` ([`optimistic::locked`]).
pub(crate) fn log_rows(tables: &Tables, rows: &[LogRow]) -> Vec<String> {
    // A statement well under the server's default max_allowed_packet.
    const CHUNK: usize = 1000;
    let mut statements = Vec::new();
    for (chunk_index, chunk) in rows.chunks(CHUNK).enumerate() {
        let selects: Vec<String> = chunk
            .iter()
            .enumerate()
            .map(|(index, row)| {
                let sub = chunk_index * CHUNK + index;
                let create_revision = if row.deleted {
                    "0".to_owned()
                } else {
                    revision_sql(row.create_revision)
                };
                // The value is cast: a `UNION ALL` of bare literals types the column
                // from them, and MariaDB then keeps a value of 64 KiB or more modulo
                // 64 KiB, silently.
                format!(
                    "SELECT @r, {sub}, {}, {create_revision}, {}, {}, CAST({} AS BINARY), {} \
                     FROM DUAL WHERE @ok",
                    batch::bytes(row.key.as_bytes()),
                    row.version,
                    row.lease,
                    batch::bytes(&row.value),
                    u8::from(row.deleted)
                )
            })
            .collect();
        statements.push(format!(
            "INSERT INTO {} (revision, sub, k, create_revision, version, lease, v, deleted) {}",
            tables.log,
            selects.join(" UNION ALL ")
        ));
    }
    statements
}
