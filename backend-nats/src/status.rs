//! Who holds what ([`Backend::status`](distsync_core::Backend::status)), read from
//! one batched direct get of every kind's keys under the prefix's whole segments, and
//! who holds one name ([`Backend::status_of`](distsync_core::Backend::status_of)),
//! read from one batched direct get of that name's lines only: a name's segments are
//! subject tokens and a closing token ends them (see `src/keys.rs`), so one filter per
//! kind selects the keys of a prefix or of a name's lines, and neither read grows with
//! the names outside them in the bucket. Both decode their keys alike.
//!
//! A line's entries are its live contender keys in token order (see `src/lock.rs`);
//! each names its session (the key's token after `q`, or an unfair holder's value), and
//! a holder's token is its create sequence. The store keeps no join time, so no age
//! is given. A lock's waiters include its unfair lock's wait line. The queues are
//! counted from the same listing of every key, tombstones included (see
//! `src/queue_status.rs`).
//!
//! A hold's time left is its contender key's: the key carries its session's TTL
//! (`Nats-TTL`, rewritten by every renewal, see `src/session.rs`), and the server ends
//! it that long after the time stamp of its last write, so the time left is that end
//! less the server's clock. A rate limiter's next due time is on the server's clock
//! too. The clock is read once, after the listing, by one write to the clock key, and
//! only when the report has a limiter, or a line and the time left is asked for (the
//! operators' view, `Backend::status_with_time_left`: the library's own reads, for
//! groups, shards, hand-over and breaks, write nothing) (see `src/clock.rs`); a login that may
//! not write it, or a clock that cannot be read, leaves both unknown rather than failing
//! the report.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use distsync_core::status::{
    CounterStatus, DoubleBarrierStatus, HoldMode, HoldStatus, LatchStatus, LeaderStatus, LineKind,
    LineStatus, RateLimiterStatus, StatusReport,
};
use distsync_core::{FencingToken, Name, Result};

use crate::amnesia::Amnesia;
use crate::clock;
use crate::counter::{parse_counter, parse_latch};
use crate::keys::{self, Kind};
use crate::lock::token_of;
use crate::queue_status;
use crate::rate_limiter::recorded;
use crate::shared::Shared;
use crate::store::Entry;

/// One live key of a line: its place, token, key, session and value.
struct Contender {
    /// Its place in line: its token, or 0 for an unfair lock's holder, which fair
    /// contenders take for the head.
    order: u64,
    /// Its fencing token, as its holder sees it (see `src/amnesia.rs`).
    shown: FencingToken,
    key: String,
    session: Option<String>,
    value: Bytes,
    /// How long until the server ends its key, if the key carries a TTL and the
    /// server's clock was read.
    expires_in: Option<Duration>,
}

impl Contender {
    /// The contender of `entry`, its time left counted from `now_us`, the server's
    /// clock (µs since the Unix epoch), if read.
    fn of(entry: Entry, amnesia: &Amnesia, now_us: Option<u64>) -> Self {
        let unfair = keys::is_unfair_holder(&entry.key);
        let session = if unfair {
            std::str::from_utf8(&entry.value)
                .ok()
                .and_then(|value| value.split('.').next())
                .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        } else {
            keys::session_of(&entry.key)
        };
        let token = token_of(&entry);
        let expires_in = now_us
            .zip(entry.ends_at_us())
            .map(|(now, ends)| Duration::from_micros(ends.saturating_sub(now)));
        Self {
            expires_in,
            order: if unfair { 0 } else { token },
            shown: amnesia.token(token),
            session: session.map(|id| distsync_core::SessionId(id).to_string()),
            key: entry.key,
            value: entry.value,
        }
    }

    /// Its hold, in `mode`, with its token if `holder`.
    fn hold(&self, mode: HoldMode, holder: bool) -> HoldStatus {
        HoldStatus::new(self.key.clone(), mode)
            .with_session(self.session.clone())
            .with_token(holder.then_some(self.shown))
            .with_expires_in(self.expires_in)
    }
}

/// The kinds of key a name's lines are made of: the lock (its unfair holder among
/// them) and its unfair lock's wait line, the election, the semaphore and the
/// read-write lock.
const LINES: [Kind; 5] = [
    Kind::Lock,
    Kind::UnfairWait,
    Kind::Election,
    Kind::Semaphore,
    Kind::RwLock,
];

/// The report of every name starting with `prefix`; with each hold's time left when
/// `with_time_left` (a reading of the server's clock, which is a write: see the module
/// docs), or when the clock is read for a rate limiter anyway.
pub(crate) async fn status(
    shared: &Shared,
    prefix: &str,
    with_time_left: bool,
) -> Result<StatusReport> {
    let (entries, _) = shared.store.list(&keys::every_key_under(prefix)).await?;
    report(shared, prefix, entries, with_time_left).await
}

/// The report of the lines named `name`.
pub(crate) async fn status_of(shared: &Shared, name: &Name) -> Result<StatusReport> {
    let entries = lines_of(shared, name).await?;
    report(shared, name.as_str(), entries, false).await
}

/// The keys of the lines named `name`, tombstones included: one listing of a filter
/// per kind of line, `<kind>.<name>.q.>`, which no other name's key matches.
async fn lines_of(shared: &Shared, name: &Name) -> Result<Vec<Entry>> {
    let filters: Vec<String> = LINES
        .iter()
        .map(|kind| keys::every_in(&keys::line(*kind, name)))
        .collect();
    let (entries, _) = shared.store.list(&filters).await?;
    Ok(entries)
}

/// The report of the names starting with `covers`, filled in from `entries`, the
/// latest message of each key read: the live keys of those names.
async fn report(
    shared: &Shared,
    covers: &str,
    entries: Vec<Entry>,
    with_time_left: bool,
) -> Result<StatusReport> {
    let mut report = StatusReport::new(crate::BACKEND, covers);
    report.queues = queue_status::queues(&report, &entries);
    let covered = Covered::of(&report, entries);
    let now = if covered.needs_clock(with_time_left) {
        server_clock(shared).await
    } else {
        None
    };
    report.rate_limiters = rate_limiters(covered.limiters, now);
    let mut unfair_waiting: BTreeMap<String, Vec<Contender>> = BTreeMap::new();
    for ((kind, name), entries) in covered.by_kind {
        let mut line: Vec<Contender> = entries
            .into_iter()
            .map(|entry| Contender::of(entry, &shared.amnesia, now))
            .collect();
        line.sort_by_key(|contender| contender.order);
        match kind {
            "lock" => report.lines.push(lock(name, &line)),
            "unfair" => {
                unfair_waiting.insert(name, line);
            }
            "election" => report.lines.push(election(name, &line)),
            "rwlock" => report.lines.push(rw_lock(name, &line)),
            "semaphore" => report.lines.push(semaphore(name, &line)),
            "barrier" => report.barriers.push(name),
            "dbarrier" => report.double_barriers.push(double_barrier(name, &line)),
            "counter" => report.counters.extend(counter(name, &line)),
            "latch" => report.latches.extend(latch(name, &line)),
            _ => {}
        }
    }
    add_unfair_waiters(&mut report.lines, unfair_waiting);
    report.sort();
    Ok(report)
}

/// The live entries of the names a report covers, by kind.
struct Covered {
    /// By kind and name, every kind's but the rate limiters'.
    by_kind: BTreeMap<(&'static str, String), Vec<Entry>>,
    /// The rate limiters', by name, read with their time stamps.
    limiters: Vec<(String, Entry)>,
}

impl Covered {
    /// The live entries among `entries` of the names `report` covers.
    fn of(report: &StatusReport, entries: Vec<Entry>) -> Self {
        let mut covered = Self {
            by_kind: BTreeMap::new(),
            limiters: Vec::new(),
        };
        for entry in entries.into_iter().filter(Entry::live) {
            let Some(name) = keys::name_of(&entry.key) else {
                continue;
            };
            let proclaim =
                keys::parts(&entry.key).is_some_and(|parts| parts.rest.first() == Some(&"p"));
            if !report.covers(&name) || proclaim {
                // A proclaim's own key (see `src/election.rs`) is no candidate.
                continue;
            }
            let Some(kind) = Kind::of(&entry.key) else {
                continue;
            };
            if kind == Kind::RateLimit {
                covered.limiters.push((name, entry));
                continue;
            }
            covered
                .by_kind
                .entry((kind.token(), name))
                .or_default()
                .push(entry);
        }
        covered
    }

    /// Whether the report needs the server's clock: it has a rate limiter (its next due
    /// time), or a line and `with_time_left` (its holds' time left).
    fn needs_clock(&self, with_time_left: bool) -> bool {
        !self.limiters.is_empty()
            || with_time_left
                && self
                    .by_kind
                    .keys()
                    .any(|(kind, _)| LINES.iter().any(|line| line.token() == *kind))
    }
}

/// `status` with `line`, in token order, in it: the first `holding` hold in `mode`,
/// the others wait.
fn with_holders(
    mut status: LineStatus,
    line: &[Contender],
    holding: usize,
    mode: HoldMode,
) -> LineStatus {
    let (holders, waiters) = line.split_at(holding.min(line.len()));
    status
        .holders
        .extend(holders.iter().map(|c| c.hold(mode, true)));
    status
        .waiters
        .extend(waiters.iter().map(|c| c.hold(mode, false)));
    status
}

/// A lock's line: its first contender (its unfair lock's holder, if any) holds.
fn lock(name: String, line: &[Contender]) -> LineStatus {
    let status = LineStatus::new(LineKind::Lock, name);
    with_holders(status, line, 1, HoldMode::Exclusive)
}

/// An election's line: its first candidate leads, with the value it proclaims.
fn election(name: String, line: &[Contender]) -> LineStatus {
    let leader = line
        .first()
        .map(|first| LeaderStatus::new(first.value.clone(), first.shown));
    let status = LineStatus::new(LineKind::Election, name).with_leader(leader);
    with_holders(status, line, 1, HoldMode::Exclusive)
}

/// A read-write lock's line: a writer first in line holds alone, otherwise the readers
/// before the first writer hold.
fn rw_lock(name: String, line: &[Contender]) -> LineStatus {
    let mut status = LineStatus::new(LineKind::RwLock, name);
    let writer = |contender: &Contender| contender.value.as_ref() == b"w";
    // A writer shows its token only as a holder, a reader never.
    let hold = |contender: &Contender, holds: bool| {
        let writes = writer(contender);
        let mode = if writes {
            HoldMode::Exclusive
        } else {
            HoldMode::Shared
        };
        contender.hold(mode, holds && writes)
    };
    let holding = line
        .iter()
        .position(writer)
        .map_or(line.len(), |at| at.max(1));
    let (holders, waiters) = line.split_at(holding);
    status.holders.extend(holders.iter().map(|c| hold(c, true)));
    status
        .waiters
        .extend(waiters.iter().map(|c| hold(c, false)));
    status
}

/// A semaphore's line: its permit count is the first contender's value, and as many
/// contenders as it has permits hold.
fn semaphore(name: String, line: &[Contender]) -> LineStatus {
    let permits = line
        .first()
        .and_then(|first| std::str::from_utf8(&first.value).ok()?.parse().ok());
    let status = LineStatus::new(LineKind::Semaphore, name).with_permits(permits);
    with_holders(status, line, permits.unwrap_or(0), HoldMode::Permit)
}

/// A double barrier's participants (`ready` aside) and whether `ready` is set.
fn double_barrier(name: String, line: &[Contender]) -> DoubleBarrierStatus {
    let ready = line.iter().any(|c| c.key.ends_with(".ready"));
    let participants = line.iter().filter(|c| !c.key.ends_with(".ready")).count();
    DoubleBarrierStatus::new(name, participants, ready)
}

/// A counter's value; `None` if its key holds none.
fn counter(name: String, line: &[Contender]) -> Option<CounterStatus> {
    let value = line.first().and_then(|c| parse_counter(&c.value))?;
    Some(CounterStatus::new(name, value))
}

/// A latch's initial and current counts; `None` if its key holds no latch.
fn latch(name: String, line: &[Contender]) -> Option<LatchStatus> {
    let (initial, count) = line.first().and_then(|c| parse_latch(&c.value))?;
    Some(LatchStatus::new(name, initial, count))
}

/// The unfair locks' wait lines, `waiting` by name, added to their locks' lines in
/// `lines` (made where a lock has no contender) as waiters.
fn add_unfair_waiters(lines: &mut Vec<LineStatus>, waiting: BTreeMap<String, Vec<Contender>>) {
    for (name, waiting) in waiting {
        let lock = |line: &LineStatus| line.kind == LineKind::Lock && line.name == name;
        let index = lines.iter().position(lock).unwrap_or_else(|| {
            lines.push(LineStatus::new(LineKind::Lock, name));
            lines.len() - 1
        });
        let hold = |contender: Contender| contender.hold(HoldMode::Exclusive, false);
        lines[index].waiters.extend(waiting.into_iter().map(hold));
    }
}

/// The server's clock, in µs since the Unix epoch (see `src/clock.rs`: a reading is a
/// write to the clock key); `None`, logged, when a login may not write it or the clock
/// cannot be read.
async fn server_clock(shared: &Shared) -> Option<u64> {
    match clock::now_with(&shared.store, &[]).await {
        Ok((now, _)) => Some(now),
        Err(error) => {
            tracing::debug!(
                %error,
                "status: the server's clock cannot be read; no time left nor next due times"
            );
            None
        }
    }
}

/// The rate limiters' rates and next due times on the server's clock `now_us`, if
/// read; a key that holds no limiter's record is left out.
fn rate_limiters(limiters: Vec<(String, Entry)>, now_us: Option<u64>) -> Vec<RateLimiterStatus> {
    limiters
        .into_iter()
        .filter_map(|(name, entry)| {
            let (record, tat) = recorded(&entry).ok().flatten()?;
            let rate = record.rate();
            let next_due = rate
                .zip(now_us)
                .map(|(rate, now)| rate.next_due(Some(tat), now));
            Some(
                RateLimiterStatus::new(name)
                    .with_rate(rate)
                    .with_next_due(next_due),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use distsync_core::Primitives;
    use std::collections::BTreeSet;
    use std::time::Duration;

    use distsync_core::status::{LineKind, LineStatus};
    use distsync_core::{Backend, Name, SessionOptions};
    use futures::{StreamExt, TryStreamExt};

    use crate::keys;
    use crate::store::Write;

    /// The other names' keys the bucket holds beside the name read: more than one
    /// batched direct get returns, so that a read of the bucket would walk pages.
    const NOISE: usize = 5_000;
    /// How long the noise keys live: past the test, so that runs in a row rewrite the
    /// same keys rather than grow the bucket.
    const NOISE_TTL: Duration = Duration::from_secs(120);
    /// The most the test's waits take.
    const WITHIN: Duration = Duration::from_secs(30);

    /// `lines` with no hold's time left.
    fn without_time_left(mut lines: Vec<LineStatus>) -> Vec<LineStatus> {
        for line in &mut lines {
            for hold in line.holders.iter_mut().chain(&mut line.waiters) {
                hold.expires_in = None;
            }
        }
        lines
    }

    /// The keys a line of `kind` named `name` may hold, by the filters `status_of`
    /// reads: every key of `name`'s lock, unfair wait line, election, semaphore and
    /// read-write lock, and no other.
    fn of_lines(key: &str, name: &Name) -> bool {
        super::LINES
            .iter()
            .any(|kind| key.starts_with(&format!("{}.", keys::line(*kind, name))))
    }

    /// `status_of` reads the keys of the name's lines and nothing else, in a bucket of
    /// thousands of other keys: names that start with the name, the name's other
    /// kinds (a counter, a barrier, a proclaim's key), other elections. Its report
    /// is the one the listing of the whole bucket gives for that name.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_status_of_a_name_reads_its_lines_alone() {
        let Some(backend) = crate::test_server::backend("DISTSYNC_NATS_URL", "status_of").await
        else {
            return;
        };
        let name = Name::new(format!("status-of-{}", distsync_core::raw::call_id())).unwrap();
        let segment = keys::escape(name.as_str());
        let tokens = keys::name_tokens(name.as_str());

        // Keys of names that start with the name's text or lie under it, and the name's
        // tokens under other kinds.
        let mut noise: Vec<String> = [
            format!("election.{segment}-1.=.q.00000000000000aa.1"),
            format!("election.{segment}x.=.q.00000000000000aa.1"),
            format!("lock.{segment}=2Ea.=.q.00000000000000aa.1"),
            format!("election.{segment}.child.=.q.00000000000000aa.1"),
            format!("lock.{segment}.q.=.q.00000000000000aa.1"),
            format!("election.{tokens}.p.00000000000000aa.1.1"),
            format!("counter.{tokens}"),
            format!("barrier.{tokens}"),
            format!("queue.{tokens}.i.1"),
        ]
        .into();
        noise.extend(
            (0..NOISE).map(|n| format!("election.status-of-noise-{n}.=.q.00000000000000bb.1")),
        );
        let store = &backend.shared.store;
        tokio::time::timeout(
            WITHIN * 4,
            futures::stream::iter(&noise)
                .map(|key| store.publish(Write::put(key.as_str(), "noise").ttl(NOISE_TTL)))
                .buffer_unordered(64)
                .try_collect::<Vec<_>>(),
        )
        .await
        .expect("the noise written in time")
        .unwrap();

        // The name's election, with a leader and a waiting candidate, and its lock.
        let first = backend.session(SessionOptions::default()).await.unwrap();
        let second = backend.session(SessionOptions::default()).await.unwrap();
        let leadership = backend
            .election(&first, name.clone())
            .unwrap()
            .campaign("first")
            .await
            .unwrap();
        let election = backend.election(&second, name.clone()).unwrap();
        let waiting = tokio::spawn(async move { election.campaign("second").await });
        let guard = backend
            .locker(&second, name.clone())
            .unwrap()
            .lock()
            .await
            .unwrap();

        let deadline = tokio::time::Instant::now() + WITHIN;
        let read = loop {
            let read = super::lines_of(&backend.shared, &name).await.unwrap();
            if read.iter().filter(|entry| entry.live()).count() == 3 {
                break read;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the waiting candidate's key not read within {WITHIN:?}: {read:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        // What was read: the name's lines' keys only, none of the noise.
        let strays: Vec<&str> = read
            .iter()
            .map(|entry| entry.key.as_str())
            .filter(|key| !of_lines(key, &name))
            .collect();
        assert!(
            strays.is_empty(),
            "read beside the name's lines: {strays:?}"
        );
        let live: BTreeSet<&str> = read
            .iter()
            .filter(|entry| entry.live())
            .map(|entry| entry.key.as_str())
            .collect();
        // The name is new: its lines' three keys, no tombstone.
        assert_eq!(read.len(), 3, "{read:?}");

        let report = backend.status_of(&name).await.unwrap();
        let line = report.line(LineKind::Election, name.as_str()).unwrap();
        let leader = line.leader.as_ref().unwrap();
        assert_eq!(leader.value.as_ref(), b"first");
        assert_eq!(leader.term, leadership.term());
        let sessions = |holds: &[distsync_core::status::HoldStatus]| -> Vec<Option<String>> {
            holds.iter().map(|hold| hold.session.clone()).collect()
        };
        assert_eq!(sessions(&line.holders), [Some(first.id().to_string())]);
        assert_eq!(sessions(&line.waiters), [Some(second.id().to_string())]);
        let lock = report.line(LineKind::Lock, name.as_str()).unwrap();
        assert_eq!(lock.holders[0].token, Some(guard.token()));
        assert_eq!(report.lines.len(), 2, "{report:?}");
        let reported: BTreeSet<&str> = report
            .lines
            .iter()
            .flat_map(|line| line.holders.iter().chain(&line.waiters))
            .map(|hold| hold.key.as_str())
            .collect();
        assert_eq!(reported, live);

        // The listing of the whole bucket (in pages: it holds the noise) tells the same.
        let listed = backend.status(name.as_str()).await.unwrap();
        let exactly: Vec<_> = listed
            .lines
            .iter()
            .filter(|line| line.name == name.as_str())
            .cloned()
            .collect();
        // Two reads, two clock readings: the time left is the one field that moves.
        assert_eq!(without_time_left(exactly), without_time_left(report.lines));

        guard.unlock().await.unwrap();
        leadership.resign().await.unwrap();
        let succeeded = tokio::time::timeout(WITHIN, waiting)
            .await
            .expect("the second candidate elected in time")
            .unwrap()
            .unwrap();
        succeeded.resign().await.unwrap();
        first.close().await.unwrap();
        second.close().await.unwrap();
    }

    /// A report of a prefix reads the keys under the prefix's whole segments alone (a
    /// group's member list reads its group, not the bucket): what it lists beside the
    /// names the prefix covers is only a name its last segment's filter also matches,
    /// and the report keeps the covered names alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_prefixs_status_reads_the_names_under_it_alone() {
        let Some(backend) = crate::test_server::backend("DISTSYNC_NATS_URL", "status_under").await
        else {
            return;
        };
        let root = format!("status-under-{}", distsync_core::raw::call_id());
        let prefix = format!("{root}/group/");
        let inside: BTreeSet<String> = ["m1", "m2", "deep/m3"]
            .iter()
            .map(|member| format!("{prefix}{member}"))
            .collect();
        // The group's own name, matched by the prefix's filter but not covered by it.
        let group = format!("{root}/group");
        let outside = [
            group.clone(),
            format!("{root}/groupx/m1"),
            format!("{root}/other/m1"),
            format!("{root}x/group/m1"),
        ];
        let session = backend.session(SessionOptions::default()).await.unwrap();
        let mut guards = Vec::new();
        for name in inside.iter().chain(&outside) {
            let locker = backend
                .locker(&session, Name::new(name.as_str()).unwrap())
                .unwrap();
            guards.push(
                tokio::time::timeout(WITHIN, locker.lock())
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }

        let (entries, _) = backend
            .shared
            .store
            .list(&keys::every_key_under(&prefix))
            .await
            .unwrap();
        let listed: BTreeSet<String> = entries
            .iter()
            .filter(|entry| entry.live())
            .filter_map(|entry| keys::name_of(&entry.key))
            .collect();
        let mut expected = inside.clone();
        expected.insert(group);
        assert_eq!(listed, expected);

        let report = backend.status(&prefix).await.unwrap();
        let reported: BTreeSet<String> =
            report.lines.iter().map(|line| line.name.clone()).collect();
        assert_eq!(reported, inside);

        for guard in guards {
            guard.unlock().await.unwrap();
        }
        session.close().await.unwrap();
    }
}
