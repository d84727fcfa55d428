//! `replicas_shards_rebalance`: [`MEMBERS`] members join a sharded group of
//! [`SHARDS`] shards one at a time, then leave one at a time (no fault, one client
//! each); after each change the case waits until the assignment is stable (every
//! shard owned by one member of the current list, as [`assign`] gives it for those
//! holds) and counts the shard moves the change took (the members' `acquired` counts,
//! summed). Each change must move at most `ceil(shards / members) + 1` shards (the
//! target; `members` after the change); the figure sets the largest beside it and the
//! owners that changed between the two stable assignments. Every shard's history (see
//! [`super::shard_log`]) is judged by [`crate::history::check`]: never two owners.

use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeMap;

use distsync_core::shards::{assign, ShardOptions, Shards};
use distsync_core::Coordinator;
use tokio::time::Instant;

use super::shard_log::{owners, ShardLog, Tracking};
use crate::check::{violated, within, Check, Context, Holds};
use crate::harness::Harness;
use crate::history::{self, Recorder, Rules};

/// Members joining and leaving.
const MEMBERS: usize = 8;

/// Shards in the group.
const SHARDS: u32 = 64;

/// How often the members read the member list.
const POLL: Duration = Duration::from_millis(100);

/// How long one change may take to reach its stable assignment.
const STABLE_LIMIT: Duration = Duration::from_secs(20);

/// One member: its id, its handle, its trackers.
struct Member {
    id: String,
    shards: Arc<Shards>,
    tracking: Tracking,
}

/// One change's moves beside the fewest.
struct Change {
    what: String,
    moves: u64,
    fewest: usize,
    target: usize,
}

pub(crate) async fn run(h: Harness) -> Check {
    let coordinator: Coordinator = h.coordinator();
    let group = h.key("sharded");
    let options = ShardOptions::default()
        .with_ttl(h.session_ttl())
        .with_poll(POLL);
    let ids: Vec<String> = (0..MEMBERS).map(|i| format!("m{i}")).collect();
    let log = ShardLog::new(Recorder::new(), SHARDS);
    let mut members: Vec<Member> = Vec::new();
    let mut changes: Vec<Change> = Vec::new();
    // `acquired` of the members that already left.
    let mut gone_acquired = 0;
    let mut previous: BTreeMap<u32, String> = BTreeMap::new();
    let started = Instant::now();
    let mut stable_times = Vec::new();
    for (client, id) in ids.iter().enumerate() {
        let shards = Arc::new(
            coordinator
                .shards(&group, id, SHARDS, options.clone())
                .ctx("starting a member")?,
        );
        let tracking = log.track(&shards, client);
        members.push(Member {
            id: id.clone(),
            shards,
            tracking,
        });
        let current: Vec<String> = members.iter().map(|m| m.id.clone()).collect();
        let (took, assignment) = stable(&members, &current).await?;
        stable_times.push(took);
        changes.push(change(
            format!("join of {id} ({} members)", current.len()),
            &previous,
            &assignment,
            current.len(),
            total_acquired(&members) + gone_acquired,
            &changes,
        ));
        previous = assignment;
    }
    while !members.is_empty() {
        let leaving = members.remove(0);
        let acquired = leaving.shards.counts().acquired;
        leaving.tracking.stop().await;
        let Ok(shards) = Arc::try_unwrap(leaving.shards) else {
            return violated("a member's handle is still shared after its trackers stopped");
        };
        within(STABLE_LIMIT, "stopping a member", async {
            shards.stop().await;
            Ok(())
        })
        .await?;
        gone_acquired += acquired;
        let current: Vec<String> = members.iter().map(|m| m.id.clone()).collect();
        if !current.is_empty() {
            let (took, assignment) = stable(&members, &current).await?;
            stable_times.push(took);
            changes.push(change(
                format!("leave of {} ({} members)", leaving.id, current.len()),
                &previous,
                &assignment,
                current.len(),
                total_acquired(&members) + gone_acquired,
                &changes,
            ));
            previous = assignment;
        }
    }
    let elapsed = started.elapsed();

    let holds = no_double_owner(&log)?;
    // The first join takes every shard: it is no move between members.
    let moves = &changes[1..];
    if let Some(over) = moves.iter().find(|c| c.moves as usize > c.target) {
        return violated(format!(
            "the {} moved {} shards, over the target of {} (every change, moves/owners \
             changed: {})",
            over.what,
            over.moves,
            over.target,
            summary(&changes)
        ));
    }
    let joins = moves.iter().filter(|c| c.what.starts_with("join"));
    let leaves = moves.iter().filter(|c| c.what.starts_with("leave"));
    let worst = |it: &mut dyn Iterator<Item = &Change>| {
        it.max_by_key(|c| (c.moves as usize).saturating_sub(c.target))
            .map_or_else(String::new, |c| {
                format!("{} (target {})", c.moves, c.target)
            })
    };
    let slowest = stable_times.iter().max().copied().unwrap_or_default();
    Ok(Holds::figure(
        format!(
            "{SHARDS} shards, {MEMBERS} members: most moves per join {}, per leave {}; {} \
             changes, none over ceil(shards/members)+1; 0 double owners in {holds} holds",
            worst(&mut joins.clone()),
            worst(&mut leaves.clone()),
            moves.len()
        ),
        format!(
            "moves against the owners that changed between stable assignments; stable within \
             {} of each change (slowest), {} in all; member list read every {POLL:?}; moves: {}",
            crate::check::secs(slowest),
            crate::check::secs(elapsed),
            summary(&changes)
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

fn total_acquired(members: &[Member]) -> u64 {
    members.iter().map(|m| m.shards.counts().acquired).sum()
}

/// The change from the stable assignment `previous` to `current` among `members`
/// members, `acquired` moves in all so far.
fn change(
    what: String,
    previous: &BTreeMap<u32, String>,
    current: &BTreeMap<u32, String>,
    members: usize,
    acquired: u64,
    before: &[Change],
) -> Change {
    let so_far: u64 = before.iter().map(|c| c.moves).sum();
    let fewest = (0..SHARDS)
        .filter(|shard| previous.get(shard) != current.get(shard))
        .count();
    Change {
        what,
        moves: acquired.saturating_sub(so_far),
        fewest,
        target: (SHARDS as usize).div_ceil(members.max(1)) + 1,
    }
}

fn summary(changes: &[Change]) -> String {
    changes
        .iter()
        .map(|c| format!("{} {}/{}", c.what, c.moves, c.fewest))
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
    let deadline = started + STABLE_LIMIT;
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
                if Instant::now() >= deadline {
                    return violated(format!(
                        "no stable assignment within {STABLE_LIMIT:?} of the change to {current:?}: \
                         shard {shard} owned by {:?}, the balanced assignment gives it to {:?}",
                        now.get(&shard),
                        wanted.get(&shard)
                    ));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
