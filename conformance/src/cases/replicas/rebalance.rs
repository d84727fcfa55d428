//! `replicas_shards_rebalance`: [`MEMBERS`] members join a sharded group of
//! [`SHARDS`] shards one at a time, then leave one at a time (no fault, one client
//! each); after each change the case waits until the assignment is stable (every
//! shard owned by one member of the current list, as [`assign`] gives it for those
//! holds) and counts the shard moves the change took (the members' `acquired` counts,
//! summed). Each change must move at most `ceil(shards / members) + 1` shards (the
//! target; `members` after the change); the figure sets the largest beside it and the
//! owners that changed between the two stable assignments. Every shard's history (see
//! [`super::shard_log`]) is judged by [`crate::history::check`]: never two owners.
//!
//! A member that loses shards without a fault (its session lapsed) takes them back, and
//! those takes count as moves. A loss while the machine's runnable tasks waited for a
//! CPU at least a session's ride-out ([`crate::cpu_pressure::ride_out`]) is the
//! machine's doing: that change's moves are shown, not judged. A loss on a machine with
//! CPU to spare is a violation, and a run where no change could be judged measured
//! nothing ([`Fail::SetUpLapsed`], so it runs again). So is a change that reaches no
//! stable assignment: a violation when the machine gave it [`STABLE_LIMIT`] of a CPU,
//! inconclusive when the starvation cap cut the wait short
//! ([`crate::check::unfinished_wait`]).

use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeMap;

use distsync_core::shards::{assign, ShardOptions, Shards};
use distsync_core::Coordinator;
use tokio::time::Instant;

use super::shard_log::{owners, ShardLog, Tracking};
use crate::check::{unfinished_wait, violated, within, Check, Context, Fail, Holds};
use crate::cpu_pressure::{ride_out, Starved};
use crate::harness::Harness;
use crate::history::{self, Recorder, Rules};

/// Members joining and leaving.
const MEMBERS: usize = 8;

/// Shards in the group.
const SHARDS: u32 = 64;

/// How often the members read the member list.
const POLL: Duration = Duration::from_millis(100);

/// How long one change may take to reach its stable assignment on a machine with a CPU
/// free (stretched by the time it was starved, [`Starved::stretch`]).
const STABLE_LIMIT: Duration = Duration::from_secs(20);

/// One member: its id, its handle, its trackers.
struct Member {
    id: String,
    shards: Arc<Shards>,
    tracking: Tracking,
}

/// One change's moves beside the fewest, and the shards lost meanwhile.
struct Change {
    what: String,
    moves: u64,
    fewest: usize,
    target: usize,
    /// Shards the members lost without releasing them during the change.
    lost: u64,
    /// How long the machine was CPU-starved during the change.
    starved: Duration,
}

impl Change {
    /// Whether the change's moves are judged: no shard lost, or a loss the machine's
    /// starvation explains is not (see the module docs).
    fn judged(&self) -> bool {
        self.lost == 0
    }
}

/// The members' moves and losses so far, those of members gone included.
#[derive(Clone, Copy, Default)]
struct Tally {
    acquired: u64,
    lost: u64,
}

impl Tally {
    fn of(members: &[Member], gone: Tally) -> Tally {
        members.iter().fold(gone, |tally, m| {
            let counts = m.shards.counts();
            Tally {
                acquired: tally.acquired + counts.acquired,
                lost: tally.lost + counts.lost,
            }
        })
    }
}

/// The changes so far: each one's moves, the members' tallies of those gone, the last
/// stable assignment and how long each change took to reach its own.
#[derive(Default)]
struct Changes {
    list: Vec<Change>,
    gone: Tally,
    previous: BTreeMap<u32, String>,
    stable_times: Vec<Duration>,
}

impl Changes {
    /// Waits for the stable assignment of `members` after the change `what` (the
    /// machine starved since `starved` began) and records the change.
    async fn settle(&mut self, what: String, members: &[Member], starved: Starved) -> Check<()> {
        let current: Vec<String> = members.iter().map(|m| m.id.clone()).collect();
        let (took, assignment) = stable(members, &current).await?;
        self.stable_times.push(took);
        let change = change(
            format!("{what} ({} members)", current.len()),
            (&self.previous, &assignment),
            current.len(),
            Tally::of(members, self.gone),
            &self.list,
            starved.so_far(),
        );
        self.list.push(change);
        self.previous = assignment;
        Ok(())
    }
}

pub(crate) async fn run(h: Harness) -> Check {
    let log = ShardLog::new(Recorder::new(), SHARDS);
    let started = Instant::now();
    let mut changes = Changes::default();
    let members = join_one_by_one(&h, &log, &mut changes).await?;
    leave_one_by_one(members, &mut changes).await?;
    verdict(&h, &log, &changes, started.elapsed())
}

/// The set-up: [`MEMBERS`] members join, one at a time, each change settled.
async fn join_one_by_one(h: &Harness, log: &ShardLog, changes: &mut Changes) -> Check<Vec<Member>> {
    let coordinator: Coordinator = h.coordinator();
    let group = h.key("sharded");
    let options = ShardOptions::default()
        .with_ttl(h.session_ttl())
        .with_poll(POLL);
    let mut members: Vec<Member> = Vec::new();
    for client in 0..MEMBERS {
        let id = format!("m{client}");
        let starved = Starved::since_now();
        let shards = Arc::new(
            coordinator
                .shards(&group, &id, SHARDS, options.clone())
                .ctx("starting a member")?,
        );
        let tracking = log.track(&shards, client);
        members.push(Member {
            id: id.clone(),
            shards,
            tracking,
        });
        changes
            .settle(format!("join of {id}"), &members, starved)
            .await?;
    }
    Ok(members)
}

/// The members leave, one at a time, each change settled while any is left.
async fn leave_one_by_one(mut members: Vec<Member>, changes: &mut Changes) -> Check<()> {
    while !members.is_empty() {
        let starved = Starved::since_now();
        let leaving = members.remove(0);
        let counts = leaving.shards.counts();
        leaving.tracking.stop().await;
        let Ok(shards) = Arc::try_unwrap(leaving.shards) else {
            return violated("a member's handle is still shared after its trackers stopped");
        };
        within(STABLE_LIMIT, "stopping a member", async {
            shards.stop().await;
            Ok(())
        })
        .await?;
        changes.gone.acquired += counts.acquired;
        changes.gone.lost += counts.lost;
        if !members.is_empty() {
            changes
                .settle(format!("leave of {}", leaving.id), &members, starved)
                .await?;
        }
    }
    Ok(())
}

/// The verdict: never two owners of a shard, no shard lost on a machine with CPU to
/// spare, and no judged change over its target.
fn verdict(h: &Harness, log: &ShardLog, changes: &Changes, elapsed: Duration) -> Check {
    let holds = no_double_owner(log)?;
    let list = &changes.list;
    let ride_out = ride_out(h.session_ttl());
    if let Some(unexplained) = list.iter().find(|c| c.lost > 0 && c.starved < ride_out) {
        return violated(format!(
            "during the {}, members lost {} shards without a fault while the machine was \
             CPU-starved only {} (a session rides out {}); every change, moves/owners \
             changed: {}",
            unexplained.what,
            unexplained.lost,
            crate::check::secs(unexplained.starved),
            crate::check::secs(ride_out),
            summary(list)
        ));
    }
    // The first join takes every shard: it is no move between members.
    let moves: Vec<&Change> = list[1..].iter().filter(|c| c.judged()).collect();
    if moves.is_empty() {
        return Err(Fail::SetUpLapsed(format!(
            "every change lost shards on a machine CPU-starved past a session's ride-out, so \
             none could be judged: {}",
            summary(list)
        )));
    }
    if let Some(over) = moves.iter().find(|c| c.moves as usize > c.target) {
        return violated(format!(
            "the {} moved {} shards, over the target of {} (every change, moves/owners \
             changed: {})",
            over.what,
            over.moves,
            over.target,
            summary(list)
        ));
    }
    let unjudged = list.len() - 1 - moves.len();
    let joins = moves.iter().copied().filter(|c| c.what.starts_with("join"));
    let leaves = moves
        .iter()
        .copied()
        .filter(|c| c.what.starts_with("leave"));
    let worst = |it: &mut dyn Iterator<Item = &Change>| {
        it.max_by_key(|c| (c.moves as usize).saturating_sub(c.target))
            .map_or_else(String::new, |c| {
                format!("{} (target {})", c.moves, c.target)
            })
    };
    let slowest = changes
        .stable_times
        .iter()
        .max()
        .copied()
        .unwrap_or_default();
    Ok(Holds::figure(
        format!(
            "{SHARDS} shards, {MEMBERS} members: most moves per join {}, per leave {}; {} \
             changes, none over ceil(shards/members)+1{}; 0 double owners in {holds} holds",
            worst(&mut joins.clone()),
            worst(&mut leaves.clone()),
            moves.len(),
            if unjudged > 0 {
                format!(" ({unjudged} more not judged: shards lost on a CPU-starved machine)")
            } else {
                String::new()
            }
        ),
        format!(
            "moves against the owners that changed between stable assignments; stable within \
             {} of each change (slowest), {} in all; member list read every {POLL:?}; moves: {}",
            crate::check::secs(slowest),
            crate::check::secs(elapsed),
            summary(list)
        ),
    ))
}

/// Never two owners, tokens growing, per shard; returns the holds judged.
fn no_double_owner(log: &ShardLog) -> Check<usize> {
    let rules = Rules {
        capacity: 1,
        liveness: None,
    };
    let mut holds = 0;
    for shard in 0..SHARDS {
        let events = log.history(shard, &[]);
        let verdict = history::check(&events, &rules);
        if let Some(violation) = verdict.violations.first() {
            return violated(format!(
                "shard {shard}: {violation} ({} violations on it)",
                verdict.violations.len()
            ));
        }
        holds += verdict.holds.len();
    }
    Ok(holds)
}

/// The change from the stable assignment `previous` to `current` (`assignments`) among
/// `members` members, at `tally` so far, the machine starved `starved` during it.
fn change(
    what: String,
    (previous, current): (&BTreeMap<u32, String>, &BTreeMap<u32, String>),
    members: usize,
    tally: Tally,
    before: &[Change],
    starved: Duration,
) -> Change {
    let moved: u64 = before.iter().map(|c| c.moves).sum();
    let lost: u64 = before.iter().map(|c| c.lost).sum();
    let fewest = (0..SHARDS)
        .filter(|shard| previous.get(shard) != current.get(shard))
        .count();
    Change {
        what,
        moves: tally.acquired.saturating_sub(moved),
        fewest,
        target: (SHARDS as usize).div_ceil(members.max(1)) + 1,
        lost: tally.lost.saturating_sub(lost),
        starved,
    }
}

fn summary(changes: &[Change]) -> String {
    changes
        .iter()
        .map(|c| {
            let lost = if c.lost > 0 {
                format!(
                    " ({} lost, machine starved {}, not judged)",
                    c.lost,
                    crate::check::secs(c.starved)
                )
            } else {
                String::new()
            };
            format!("{} {}/{}{lost}", c.what, c.moves, c.fewest)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Waits until every shard is owned by one member of `current`, in the assignment
/// [`assign`] keeps as it is, and stays so for a few polls; returns how long it took
/// and the assignment.
async fn stable(
    members: &[Member],
    current: &[String],
) -> Check<(Duration, BTreeMap<u32, String>)> {
    let started = Instant::now();
    let starved = Starved::since_now();
    let ids: Vec<&str> = current.iter().map(String::as_str).collect();
    let mut since: Option<Instant> = None;
    loop {
        let now = owners(members.iter().map(|m| (m.id.as_str(), &*m.shards)));
        let held: BTreeMap<u32, &str> = now
            .iter()
            .filter(|(_, owners)| owners.len() == 1)
            .map(|(shard, owners)| (*shard, owners[0]))
            .collect();
        let wanted = assign(&ids, &held, SHARDS);
        let wrong = (0..SHARDS).find(|shard| {
            now.get(shard).map(Vec::as_slice) != wanted.get(shard).map(|w| vec![*w]).as_deref()
        });
        match wrong {
            None => {
                let at = *since.get_or_insert_with(Instant::now);
                // Stable across two reads of the list: no late move is left to count.
                if at.elapsed() >= POLL * 2 {
                    let assignment = held.into_iter().map(|(s, m)| (s, m.to_owned())).collect();
                    return Ok((at - started, assignment));
                }
            }
            Some(shard) => {
                since = None;
                if started.elapsed() >= starved.stretch(STABLE_LIMIT) {
                    let doing = format!(
                        "the stable assignment of the change to {current:?} (shard {shard} owned \
                         by {:?}, the balanced assignment gives it to {:?})",
                        now.get(&shard),
                        wanted.get(&shard)
                    );
                    return unfinished_wait(doing, STABLE_LIMIT, starved.so_far());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
