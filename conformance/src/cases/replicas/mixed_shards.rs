//! `replicas_shards_mixed_faults`: [`MEMBERS`] members of a sharded group of [`SHARDS`]
//! shards, each in this process through a partition proxy of its own, while a seeded
//! schedule (the mixed-fault cases' [`partition_schedule`]) cuts one member off at a
//! time, silent or reset, for up to 2.5 session TTLs: a cut longer than the TTL ends
//! the member's session, so its shards move to the others and back once it joins again.
//!
//! Every member's ownership of every shard is recorded from inside its work (see
//! [`super::shard_log`]), the cuts and heals beside it, and each shard's history is
//! judged by [`crate::history::check`]: one owner at a time (a hold ended by `lost()`
//! after a cut ends where the cut started), tokens ordered with real time, and the
//! shard owned again within the liveness bound (two TTLs, two polls and a second)
//! of the last fault's heal.

use std::sync::Arc;
use std::time::Duration;

use distsync_core::shards::{ShardOptions, Shards};
use distsync_core::Coordinator;
use tokio::time::Instant;

use super::shard_log::{ShardLog, Tracking};
use crate::cases::scenario::mixed::{partition_schedule, proxied_clients, seed, SEED_VAR};
use crate::check::{violated, within, Check, Context, Fail, Holds, PROMPT};
use crate::harness::Harness;
use crate::history::{self, Event, Kind, Liveness, Recorder, Rules};
use crate::rng::Rng;

/// Members, each through its own proxy.
const MEMBERS: usize = 4;

/// Shards in the group.
const SHARDS: u32 = 16;

/// How often the members read the member list.
const POLL: Duration = Duration::from_millis(100);

/// The run's length.
const LENGTH: Duration = Duration::from_secs(14);

/// The margin of the liveness bound.
const MARGIN: Duration = Duration::from_secs(1);

pub(crate) async fn run(h: Harness) -> Check {
    let seed = seed()?;
    run_seeded(&h, seed).await.map_err(|fail| match fail {
        Fail::Violated(evidence) => {
            Fail::Violated(format!("seed {seed} ({SEED_VAR}={seed}): {evidence}"))
        }
        other => other,
    })
}

async fn run_seeded(h: &Harness, seed: u64) -> Check {
    let ttl = h.fault_ttl();
    let bound = ttl * 2 + POLL * 2 + MARGIN;
    let quiet_tail = bound + MARGIN;
    let switches = proxied_clients(h, MEMBERS).await?;
    let group = h.key("sharded");
    let options = ShardOptions::default()
        .with_ttl(ttl)
        .with_poll(POLL)
        .with_retry(Duration::from_millis(50), Duration::from_millis(500));
    let clock = Recorder::new();
    let log = ShardLog::new(clock.clone(), SHARDS);
    let mut members: Vec<(Arc<Shards>, Tracking)> = Vec::new();
    for (client, switch) in switches.iter().enumerate() {
        let shards = Coordinator::from_arc(switch.backend())
            .shards(&group, &format!("m{client}"), SHARDS, options.clone())
            .ctx("starting a member")?;
        let shards = Arc::new(shards);
        let tracking = log.track(&shards, client);
        members.push((shards, tracking));
    }
    let started = Instant::now();
    let stop = started + LENGTH;
    let quiet = stop - quiet_tail;
    let counts = partition_schedule(&clock, ttl, (quiet, stop), &switches, Rng::new(seed)).await;
    let until = clock.now();
    let faults: Vec<Event> = clock.events();
    // Stop the members: trackers first (an open hold ends in its history now).
    let mut acquired = 0;
    let mut lost = 0;
    for (shards, tracking) in members {
        tracking.stop().await;
        let c = shards.counts();
        acquired += c.acquired;
        lost += c.lost;
        if let Ok(shards) = Arc::try_unwrap(shards) {
            within(PROMPT, "stopping a member", async {
                shards.stop().await;
                Ok(())
            })
            .await?;
        }
    }
    drop(switches);

    let healed = faults
        .iter()
        .filter(|event| event.kind == Kind::Heal)
        .map(|event| event.at)
        .max();
    let liveness = healed.map(|healed| Liveness {
        healed,
        bound,
        until,
    });
    let rules = Rules {
        capacity: 1,
        liveness,
    };
    let mut holds = 0;
    let mut lost_after_cut = 0;
    let mut after_heal = Duration::ZERO;
    let mut longest = Duration::ZERO;
    // Gaps are counted from the first grant of any shard (the group's start-up before
    // it is no gap).
    let first_grant = (0..SHARDS)
        .flat_map(|shard| log.history(shard, &[]))
        .filter(|event| matches!(event.kind, Kind::Grant(_)))
        .map(|event| event.at)
        .min()
        .unwrap_or(Duration::ZERO);
    for shard in 0..SHARDS {
        let events = log.history(shard, &faults);
        let verdict = history::check(&events, &rules);
        if let Some(violation) = verdict.violations.first() {
            let excerpt: Vec<String> = events.iter().map(ToString::to_string).collect();
            return violated(format!(
                "shard {shard}: {violation} ({} violations on it); its history: {}",
                verdict.violations.len(),
                excerpt.join(", ")
            ));
        }
        if verdict.holds.is_empty() {
            return violated(format!("shard {shard} was never owned in {LENGTH:?}"));
        }
        holds += verdict.holds.len();
        lost_after_cut += verdict
            .holds
            .iter()
            .filter(|hold| hold.ended_by == history::Ending::LostAfterFault)
            .count();
        let from = healed.unwrap_or(Duration::ZERO);
        after_heal = after_heal.max(longest_gap(&verdict.holds, from, until));
        longest = longest.max(longest_gap(&verdict.holds, first_grant, until));
    }
    Ok(Holds::figure(
        format!(
            "seed {seed}: {SHARDS} shards, {holds} owner changes, 0 double owners; {} partitions \
             ({} silent); longest without an owner {} ({} after the last heal)",
            counts.partitions,
            counts.silent,
            crate::check::secs(longest),
            crate::check::secs(after_heal)
        ),
        format!(
            "{MEMBERS} members through their own proxies for {}; session TTL {ttl:?}, list read \
             every {POLL:?}; {acquired} shards acquired, {lost} lost, {lost_after_cut} holds ended \
             by lost() after a cut; liveness bound {bound:?}",
            crate::check::secs(LENGTH)
        ),
    ))
}

/// The longest time in `[from, until]` during which none of `holds` was held.
fn longest_gap(holds: &[history::Hold], from: Duration, until: Duration) -> Duration {
    let mut spans: Vec<(Duration, Duration)> = holds
        .iter()
        .map(|hold| (hold.granted, hold.end))
        .filter(|(_, end)| *end > from)
        .collect();
    spans.sort();
    let (mut covered, mut longest) = (from, Duration::ZERO);
    for (start, end) in spans {
        if start > covered {
            longest = longest.max(start.min(until).saturating_sub(covered));
        }
        covered = covered.max(end);
        if covered >= until {
            break;
        }
    }
    if covered < until {
        longest = longest.max(until - covered);
    }
    longest
}
