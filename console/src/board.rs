//! The board: what the page shows, built from one read of the store, filtered by a
//! name prefix and cut into pages.
//!
//! Names are sorted into what an operator looks for by the layouts the replicated
//! primitives use: an election `<group>/members/<id>` is a member of a group, a lock
//! `<group>/shards/<n>` a shard's owner, a queue `<name>.dead` the dead-letter queue
//! of `<name>` (the [`Consumer`](distsync_core::Consumer)'s default). Every other line
//! is listed as what it is.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use distsync_core::consumer::DEAD_LETTER_SUFFIX;
use distsync_core::group::MEMBERS_SEGMENT;
use distsync_core::scheduled_job::JobStatus;
use distsync_core::shards::SHARDS_SEGMENT;
use distsync_core::status::{HoldStatus, LineKind, LineStatus, StatusReport};
use serde::{Deserialize, Serialize};

use crate::reading::{Snapshot, Store};

/// What a viewer asks for: names that start with `filter` (under the console's own
/// prefix), the `page`th page (from 0) of `per_page` names of each kind.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct BoardQuery {
    #[serde(default)]
    pub(crate) filter: String,
    #[serde(default)]
    pub(crate) page: usize,
    pub(crate) per_page: Option<usize>,
}

/// The page's whole content, as JSON.
#[derive(Debug, Serialize)]
pub(crate) struct Board {
    /// The backend's name (never its URL).
    backend: &'static str,
    /// The console's prefix.
    prefix: String,
    /// Whether actions are on.
    actions: bool,
    /// When the read began, in milliseconds since the Unix epoch (the page counts
    /// held times on from it).
    read_at_ms: u128,
    /// How long the read took, in milliseconds.
    read_ms: u128,
    /// Whether the store answered.
    up: bool,
    /// Why it did not.
    error: Option<String>,
    page: usize,
    pages: usize,
    locks: Section<LineView>,
    elections: Section<ElectionView>,
    groups: Section<GroupView>,
    shards: Section<ShardView>,
    queues: Section<QueueView>,
    jobs: Section<JobView>,
    sessions: Section<SessionView>,
}

/// One kind's names on this page, and how many match in all.
#[derive(Debug, Serialize)]
struct Section<T> {
    total: usize,
    items: Vec<T>,
}

/// A lock, read-write lock or semaphore.
#[derive(Debug, Serialize)]
struct LineView {
    kind: &'static str,
    name: String,
    holders: Vec<HoldView>,
    waiters: Vec<HoldView>,
    permits: Option<usize>,
}

/// One holder or waiter.
#[derive(Debug, Serialize)]
struct HoldView {
    key: String,
    mode: &'static str,
    session: Option<String>,
    token: Option<u64>,
    /// How long it had held or waited when the store was read, where the store records it.
    age_ms: Option<u128>,
    /// How long its session had left when the store was read, unless renewed, where the
    /// store says (the page counts it down between reads).
    expires_in_ms: Option<u128>,
}

/// An election.
#[derive(Debug, Serialize)]
struct ElectionView {
    name: String,
    leader: Option<HoldView>,
    /// The leader's value, as text.
    value: Option<String>,
    term: Option<u64>,
    /// The candidates waiting, next to lead first.
    candidates: Vec<HoldView>,
}

/// A group and its members.
#[derive(Debug, Serialize)]
struct GroupView {
    name: String,
    members: Vec<MemberView>,
}

/// One member of a group.
#[derive(Debug, Serialize)]
struct MemberView {
    id: String,
    session: Option<String>,
    metadata: Option<String>,
}

/// A shard and its owner.
#[derive(Debug, Serialize)]
struct ShardView {
    group: String,
    shard: String,
    owner: Option<HoldView>,
}

/// A queue with its dead-letter queue.
#[derive(Debug, Serialize)]
struct QueueView {
    name: String,
    ready: usize,
    in_flight: usize,
    oldest_age_ms: Option<u128>,
    dead_letters: usize,
}

/// A scheduled job: its schedule, its last run, and its occurrences around the read
/// (times in milliseconds since the Unix epoch).
#[derive(Debug, Serialize)]
struct JobView {
    name: String,
    schedule: String,
    /// The occurrence the last run ran for.
    last_occurrence_ms: Option<u128>,
    /// When the last run started, on the clock of the replica that ran it.
    last_started_ms: Option<u128>,
    last_token: Option<u64>,
    runs: u64,
    /// The latest occurrence at or before the read.
    due_ms: Option<u128>,
    /// The next occurrence after the read.
    next_ms: Option<u128>,
    /// Whether an occurrence later than the last run's is due and has not run (yet:
    /// it may be starting, or be skipped by the job's options). A job that never ran
    /// shows no last run instead.
    behind: bool,
}

/// A session and what it holds or waits for.
#[derive(Debug, Serialize)]
struct SessionView {
    id: String,
    /// The least time left its holds report: they are all the session's, read at once.
    expires_in_ms: Option<u128>,
    holds: Vec<SessionHoldView>,
}

/// One thing a session holds or waits for.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SessionHoldView {
    kind: &'static str,
    name: String,
    holding: bool,
    token: Option<u64>,
    #[serde(skip)]
    expires_in_ms: Option<u128>,
}

impl Board {
    /// The board of `snapshot` for `query`; `actions` says whether actions are on and
    /// `default_per_page` how many names a page shows unless the query says.
    pub(crate) fn new(
        snapshot: &Snapshot,
        query: &BoardQuery,
        actions: bool,
        default_per_page: usize,
        backend: &'static str,
        prefix: &str,
    ) -> Self {
        let per_page = query.per_page.unwrap_or(default_per_page).clamp(1, 1000);
        let mut board = Board {
            backend,
            prefix: prefix.to_owned(),
            actions,
            read_at_ms: millis_since_epoch(snapshot.read_at),
            read_ms: snapshot.took.as_millis(),
            up: snapshot.outcome.is_ok(),
            error: snapshot.outcome.as_ref().err().cloned(),
            page: query.page,
            pages: 1,
            locks: Section::empty(),
            elections: Section::empty(),
            groups: Section::empty(),
            shards: Section::empty(),
            queues: Section::empty(),
            jobs: Section::empty(),
            sessions: Section::empty(),
        };
        if let Ok(store) = &snapshot.outcome {
            let sorted = Sorted::of(store, &query.filter);
            let page = Paging {
                page: query.page,
                per_page,
            };
            board.locks = page.cut(sorted.locks);
            board.elections = page.cut(sorted.elections);
            board.groups = page.cut(sorted.groups);
            board.shards = page.cut(sorted.shards);
            board.queues = page.cut(sorted.queues);
            board.jobs = page.cut(sorted.jobs);
            board.sessions = page.cut(sorted.sessions);
            let most = [
                board.locks.total,
                board.elections.total,
                board.groups.total,
                board.shards.total,
                board.queues.total,
                board.jobs.total,
                board.sessions.total,
            ]
            .into_iter()
            .max()
            .unwrap_or(0);
            board.pages = most.div_ceil(per_page).max(1);
        }
        board
    }
}

/// What `session` holds or waits for in `report` (for the confirmation before a break).
pub(crate) fn holds_of(report: &StatusReport, session: &str) -> Vec<SessionHoldView> {
    let mut sessions = BTreeMap::new();
    for line in &report.lines {
        add_session_holds(&mut sessions, line);
    }
    sessions.remove(session).unwrap_or_default()
}

impl<T> Section<T> {
    fn empty() -> Self {
        Self {
            total: 0,
            items: Vec::new(),
        }
    }
}

/// A page of each kind.
struct Paging {
    page: usize,
    per_page: usize,
}

impl Paging {
    fn cut<T>(&self, all: Vec<T>) -> Section<T> {
        let total = all.len();
        let items = all
            .into_iter()
            .skip(self.page.saturating_mul(self.per_page))
            .take(self.per_page)
            .collect();
        Section { total, items }
    }
}

/// Every name of a read that passes the filter, sorted into kinds.
#[derive(Default)]
struct Sorted {
    locks: Vec<LineView>,
    elections: Vec<ElectionView>,
    groups: Vec<GroupView>,
    shards: Vec<ShardView>,
    queues: Vec<QueueView>,
    jobs: Vec<JobView>,
    sessions: Vec<SessionView>,
}

impl Sorted {
    fn of(store: &Store, filter: &str) -> Self {
        let mut sorted = Sorted::default();
        let mut groups: BTreeMap<String, Vec<MemberView>> = BTreeMap::new();
        let mut sessions = BTreeMap::new();
        for line in store
            .report
            .lines
            .iter()
            .filter(|line| line.name.starts_with(filter))
        {
            add_session_holds(&mut sessions, line);
            if let Some((group, id)) = member_of(line) {
                groups
                    .entry(group.to_owned())
                    .or_default()
                    .push(MemberView {
                        id: id.to_owned(),
                        session: line.holders.first().and_then(|hold| hold.session.clone()),
                        metadata: line.leader.as_ref().map(|leader| shown(&leader.value)),
                    });
            } else if let Some((group, shard)) =
                split_at_segment(&line.name, SHARDS_SEGMENT).filter(|_| line.kind == LineKind::Lock)
            {
                sorted.shards.push(ShardView {
                    group: group.to_owned(),
                    shard: shard.to_owned(),
                    owner: line.holders.first().map(hold_view),
                });
            } else if line.kind == LineKind::Election {
                sorted.elections.push(election_view(line));
            } else {
                sorted.locks.push(line_view(line));
            }
        }
        sorted.groups = groups
            .into_iter()
            .map(|(name, members)| GroupView { name, members })
            .collect();
        sorted.queues = queue_views(store, filter);
        sorted.jobs = store
            .jobs
            .iter()
            .filter(|job| job.name.starts_with(filter))
            .map(job_view)
            .collect();
        sorted.sessions = sessions
            .into_iter()
            .map(|(id, holds)| SessionView {
                id,
                expires_in_ms: holds.iter().filter_map(|hold| hold.expires_in_ms).min(),
                holds,
            })
            .collect();
        sorted
    }
}

/// The queues that pass the filter, each with its dead-letter queue's length; a
/// dead-letter queue whose queue is empty is listed under its queue's name.
fn queue_views(store: &Store, filter: &str) -> Vec<QueueView> {
    let mut queues: BTreeMap<&str, QueueView> = BTreeMap::new();
    for queue in &store.report.queues {
        let (name, dead) = match dead_letters_of(&queue.name) {
            Some(base) => (base, true),
            None => (queue.name.as_str(), false),
        };
        if !name.starts_with(filter) {
            continue;
        }
        let view = queues.entry(name).or_insert_with(|| QueueView {
            name: name.to_owned(),
            ready: 0,
            in_flight: 0,
            oldest_age_ms: None,
            dead_letters: 0,
        });
        if dead {
            view.dead_letters = queue.ready + queue.in_flight;
        } else {
            view.ready = queue.ready;
            view.in_flight = queue.in_flight;
            view.oldest_age_ms = store.oldest.get(name).map(Duration::as_millis);
        }
    }
    queues.into_values().collect()
}

/// `(group, member id)` when `line` is a group member's entry.
pub(crate) fn member_of(line: &LineStatus) -> Option<(&str, &str)> {
    split_at_segment(&line.name, MEMBERS_SEGMENT).filter(|_| line.kind == LineKind::Election)
}

/// The queue whose dead-letter queue `name` is, if it is one.
pub(crate) fn dead_letters_of(name: &str) -> Option<&str> {
    name.strip_suffix(DEAD_LETTER_SUFFIX)
}

/// `(group, rest)` when `name` is `<group>/<segment>/<rest>`.
fn split_at_segment<'a>(name: &'a str, segment: &str) -> Option<(&'a str, &'a str)> {
    let marker = format!("/{segment}/");
    let at = name.rfind(&marker)?;
    let rest = &name[at + marker.len()..];
    (!rest.is_empty() && !rest.contains('/')).then(|| (&name[..at], rest))
}

fn add_session_holds(sessions: &mut BTreeMap<String, Vec<SessionHoldView>>, line: &LineStatus) {
    let entries = line
        .holders
        .iter()
        .map(|hold| (hold, true))
        .chain(line.waiters.iter().map(|hold| (hold, false)));
    for (hold, holding) in entries {
        if let Some(session) = &hold.session {
            sessions
                .entry(session.clone())
                .or_default()
                .push(SessionHoldView {
                    kind: line.kind.as_str(),
                    name: line.name.clone(),
                    holding,
                    token: hold.token.map(|token| token.0),
                    expires_in_ms: hold.expires_in.map(|left| left.as_millis()),
                });
        }
    }
}

fn line_view(line: &LineStatus) -> LineView {
    LineView {
        kind: line.kind.as_str(),
        name: line.name.clone(),
        holders: line.holders.iter().map(hold_view).collect(),
        waiters: line.waiters.iter().map(hold_view).collect(),
        permits: line.permits,
    }
}

fn election_view(line: &LineStatus) -> ElectionView {
    ElectionView {
        name: line.name.clone(),
        leader: line.holders.first().map(hold_view),
        value: line.leader.as_ref().map(|leader| shown(&leader.value)),
        term: line.leader.as_ref().map(|leader| leader.term.0),
        candidates: line.waiters.iter().map(hold_view).collect(),
    }
}

fn job_view(job: &JobStatus) -> JobView {
    let last = job.last_run.as_ref();
    JobView {
        name: job.name.clone(),
        schedule: job.schedule.to_string(),
        last_occurrence_ms: last.map(|run| millis_since_epoch(run.occurrence)),
        last_started_ms: last.map(|run| millis_since_epoch(run.started)),
        last_token: last.map(|run| run.token.get()),
        runs: last.map_or(0, |run| run.runs),
        due_ms: job.due.map(millis_since_epoch),
        next_ms: job.next.map(millis_since_epoch),
        behind: job
            .due
            .is_some_and(|due| last.is_some_and(|run| run.occurrence < due)),
    }
}

fn hold_view(hold: &HoldStatus) -> HoldView {
    HoldView {
        key: hold.key.clone(),
        mode: hold.mode.as_str(),
        session: hold.session.clone(),
        token: hold.token.map(|token| token.0),
        age_ms: hold.age.map(|age| age.as_millis()),
        expires_in_ms: hold.expires_in.map(|left| left.as_millis()),
    }
}

/// A value as the page shows it: its text when it is UTF-8, else `base64:` and its
/// bytes in base64.
pub(crate) fn shown(value: &Bytes) -> String {
    match std::str::from_utf8(value) {
        Ok(text) => text.to_owned(),
        Err(_) => format!("base64:{}", STANDARD.encode(value)),
    }
}

fn millis_since_epoch(at: SystemTime) -> u128 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map(|since| since.as_millis())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_and_shards_are_told_by_their_layout() {
        assert_eq!(
            split_at_segment("web/members/node-1", MEMBERS_SEGMENT),
            Some(("web", "node-1"))
        );
        assert_eq!(
            split_at_segment("a/b/shards/7", SHARDS_SEGMENT),
            Some(("a/b", "7"))
        );
        assert_eq!(split_at_segment("web/members/", MEMBERS_SEGMENT), None);
        assert_eq!(split_at_segment("web/members/a/b", MEMBERS_SEGMENT), None);
        assert_eq!(split_at_segment("members/a", MEMBERS_SEGMENT), None);
    }

    #[test]
    fn pages_cut_each_kind_and_count_all() {
        let paging = Paging {
            page: 1,
            per_page: 2,
        };
        let section = paging.cut((0..5).collect::<Vec<_>>());
        assert_eq!(section.total, 5);
        assert_eq!(section.items, [2, 3]);
        assert!(Paging {
            page: usize::MAX,
            per_page: 2
        }
        .cut(vec![1])
        .items
        .is_empty());
    }
}
