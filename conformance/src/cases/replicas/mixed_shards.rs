//! `replicas_shards_mixed_faults`: [`MEMBERS`] members of a sharded group of [`SHARDS`]
//! shards, each in this process through a partition proxy of its own, while a seeded
//! schedule (the mixed-fault cases' [`partition_schedule`]) cuts one member off at a
//! time, silent or reset, for up to 2.5 session TTLs: a cut longer than the TTL ends
//! the member's session, so its shards move to the others and back once it joins again.
//! A fifth member runs in a child process ([`super::child_member`]) where the hooks
//! start children (not on the memory store, which lives in this process): from its own
//! seeded schedule it is SIGKILLed and started again at once as the same member
//! (its shards wait for the killed session's lease) or SIGSTOPped for up to 3 TTLs,
//! each fault ending (with its TTL) before the quiet tail. Its holds enter the
//! histories from its own lines, stamped on the monotonic clock before the library may
//! release the shard; a kill ends its holds, a pause (or a stall of its runtime) is an
//! excused window, and a hold whose next event after it is a loss ends where it began.
//!
//! Every member's ownership of every shard is recorded from inside its work (see
//! [`super::shard_log`]), the cuts and heals beside it, and each shard's history is
//! judged by [`crate::history::check`]: one owner at a time (a hold ended by `lost()`
//! after a cut or a pause ends where that fault started), tokens ordered with real
//! time, and the shard owned again within the liveness bound (two TTLs, two polls and
//! a second) of the last fault's end (a heal, a resume, a killed session's lease).

use std::sync::Arc;
use std::time::Duration;

use distsync_core::shards::{ShardOptions, Shards};
use distsync_core::Coordinator;
use tokio::time::Instant;

use super::child_member::{ChildCounts, ChildLog, ChildMember};
use super::shard_log::{ShardLog, Tracking};
use crate::cases::scenario::mixed::{partition_schedule, proxied_clients, seed, SEED_VAR};
use crate::check::{violated, within, Check, Context, Fail, Holds, LONG};
use crate::faults::shards_member::ShardsMemberSpec;
use crate::faults::{child, Hook, Partitioned};
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
    let clock = Recorder::new();
    let log = ShardLog::new(clock.clone(), SHARDS);
    let child_log = ChildLog::new(&clock, SHARDS);
    // The member in a child process, where the hooks start children (not on the
    // memory store, which lives in this process: there the members are cut off only).
    let child_url = h.faults().child_url().map(str::to_owned);
    let launcher = child::launcher();
    let child_member = match (&launcher, &child_url, h.offers(Hook::ChildHolder)) {
        (Ok(launcher), Some(url), Ok(())) => Some(ChildMember {
            launcher,
            url,
            group: &group,
            spec: ShardsMemberSpec {
                member: format!("m{MEMBERS}"),
                count: SHARDS,
                poll_ms: u64::try_from(POLL.as_millis()).unwrap_or(100),
            },
            ttl,
            client: MEMBERS,
        }),
        _ => None,
    };
    let members = start_members(&switches, &group, &log, ttl)?;
    let started = Instant::now();
    let stop = started + LENGTH;
    let quiet = stop - quiet_tail;
    let until = clock.now() + LENGTH;
    // The partitions as before for a seed; the child member's schedule from its own.
    let rng = Rng::new(seed);
    let child_rng = Rng::new(seed ^ 0x5eed_c41d);
    let (counts, child_counts) = tokio::join!(
        partition_schedule(&clock, ttl, (quiet, stop), &switches, rng),
        async {
            match &child_member {
                Some(member) => member
                    .run(&clock, &child_log, (quiet, stop), child_rng)
                    .await
                    .map(Some),
                None => Ok(None),
            }
        }
    );
    let child_counts: Option<ChildCounts> = child_counts?;
    let faults: Vec<Event> = clock.events();
    let (acquired, lost) = stop_members(members).await?;
    drop(switches);

    let healed = last_fault_end(&faults, until, ttl);
    let rules = Rules {
        capacity: 1,
        liveness: healed.map(|healed| Liveness {
            healed,
            bound,
            until,
            contention: clock.contention(),
        }),
    };
    let tally = judge_shards(&log, &child_log, &faults, &rules, healed, until)?;
    let child = match &child_counts {
        Some(c) => format!(
            ", {} kills, {} pauses ({} past the TTL) of the member in a child process",
            c.kills, c.pauses, c.long_pauses
        ),
        None => String::new(),
    };
    let child_detail = match &child_counts {
        Some(c) => format!(
            "; 1 member in a child process, started {} times, {} holds ({} ended by a kill, \
             {} by a loss, {} released or at the end), {} stalls of its runtime recorded as \
             pauses",
            c.starts,
            tally.child_holds.iter().sum::<usize>(),
            tally.child_holds[0],
            tally.child_holds[1],
            tally.child_holds[2],
            child_log.stalls()
        ),
        None => "; no member in a child process (the hooks start none on this store)".to_owned(),
    };
    let Tally {
        holds,
        lost_after_cut,
        after_heal,
        longest,
        ..
    } = tally;
    Ok(Holds::figure(
        format!(
            "seed {seed}: {SHARDS} shards, {holds} owner changes, 0 double owners; {} partitions \
             ({} silent){child}; longest without an owner {} ({} after the last fault)",
            counts.partitions,
            counts.silent,
            crate::check::secs(longest),
            crate::check::secs(after_heal)
        ),
        format!(
            "{MEMBERS} members through their own proxies for {}; session TTL {ttl:?}, list read \
             every {POLL:?}; {acquired} shards acquired, {lost} lost, {lost_after_cut} holds ended \
             by lost() after a cut or pause; liveness bound {bound:?}{child_detail}",
            crate::check::secs(LENGTH)
        ),
    ))
}

/// The in-process members, one through each proxy, each tracked by `log`.
fn start_members(
    switches: &[Box<dyn Partitioned>],
    group: &str,
    log: &ShardLog,
    ttl: Duration,
) -> Check<Vec<(Arc<Shards>, Tracking)>> {
    let options = ShardOptions::default()
        .with_ttl(ttl)
        .with_poll(POLL)
        .with_retry(Duration::from_millis(50), Duration::from_millis(500));
    let mut members: Vec<(Arc<Shards>, Tracking)> = Vec::new();
    for (client, switch) in switches.iter().enumerate() {
        let shards = Coordinator::from_arc(switch.backend())
            .shards(group, &format!("m{client}"), SHARDS, options.clone())
            .ctx("starting a member")?;
        let shards = Arc::new(shards);
        let tracking = log.track(&shards, client);
        members.push((shards, tracking));
    }
    Ok(members)
}

/// Stops the members, trackers first (an open hold ends in its history now), and
/// returns the shards they acquired and lost.
async fn stop_members(members: Vec<(Arc<Shards>, Tracking)>) -> Check<(u64, u64)> {
    let mut acquired = 0;
    let mut lost = 0;
    for (shards, tracking) in members {
        tracking.stop().await;
        let c = shards.counts();
        acquired += c.acquired;
        lost += c.lost;
        if let Ok(shards) = Arc::try_unwrap(shards) {
            // A stop releases every shard the member holds and leaves the group, one
            // store write each (on PostgreSQL a commit each, behind the fsyncs of a
            // loaded disk): a phase of work, bounded as one, not a prompt answer. The
            // case judges ownership and its liveness, above; a stop that never ends is
            // still a violation.
            within(LONG, "stopping a member", async {
                shards.stop().await;
                Ok(())
            })
            .await?;
        }
    }
    Ok((acquired, lost))
}

/// The last fault's end: a heal, a paused member's resume, a kill's lease (the
/// killed session's holds and member entry last until it ends, and the member
/// started again under the same id joins only then; the member killed at the end
/// of the run does not count: nothing is required after it).
fn last_fault_end(faults: &[Event], until: Duration, ttl: Duration) -> Option<Duration> {
    faults
        .iter()
        .filter(|event| matches!(event.kind, Kind::Heal | Kind::Resume | Kind::Killed))
        .filter(|event| event.at < until)
        .map(|event| match event.kind {
            Kind::Killed => event.at + ttl,
            _ => event.at,
        })
        .max()
}

/// What the shards' histories add up to.
struct Tally {
    holds: usize,
    lost_after_cut: usize,
    /// The child member's holds: ended by a kill, by a loss, otherwise.
    child_holds: [usize; 3],
    after_heal: Duration,
    longest: Duration,
}

/// Judges each shard's history by `rules`: no violation, and owned at least once.
fn judge_shards(
    log: &ShardLog,
    child_log: &ChildLog,
    faults: &[Event],
    rules: &Rules,
    healed: Option<Duration>,
    until: Duration,
) -> Check<Tally> {
    let mut tally = Tally {
        holds: 0,
        lost_after_cut: 0,
        child_holds: [0usize; 3],
        after_heal: Duration::ZERO,
        longest: Duration::ZERO,
    };
    // Gaps are counted from the first grant of any shard (the group's start-up before
    // it is no gap).
    let first_grant = (0..SHARDS)
        .flat_map(|shard| log.history(shard, &[]))
        .filter(|event| matches!(event.kind, Kind::Grant(_)))
        .map(|event| event.at)
        .min()
        .unwrap_or(Duration::ZERO);
    for shard in 0..SHARDS {
        let mut extra = faults.to_vec();
        extra.extend(child_log.events(shard));
        let events = log.history(shard, &extra);
        let verdict = history::check(&events, rules);
        if let Some(violation) = verdict.violations.first() {
            let excerpt: Vec<String> = events.iter().map(ToString::to_string).collect();
            return violated(format!(
                "shard {shard}: {violation} ({} violations on it); its history: {}",
                verdict.violations.len(),
                excerpt.join(", ")
            ));
        }
        if verdict.holds.is_empty() {
            return Err(history::never_granted(
                format!("shard {shard} was never owned in {LENGTH:?}"),
                &verdict,
                rules,
            ));
        }
        tally.holds += verdict.holds.len();
        tally.lost_after_cut += verdict
            .holds
            .iter()
            .filter(|hold| hold.ended_by == history::Ending::LostAfterFault)
            .count();
        for hold in verdict.holds.iter().filter(|hold| hold.client == MEMBERS) {
            tally.child_holds[match hold.ended_by {
                history::Ending::Killed => 0,
                history::Ending::LostAfterFault | history::Ending::Lost => 1,
                _ => 2,
            }] += 1;
        }
        let from = healed.unwrap_or(Duration::ZERO);
        tally.after_heal = tally
            .after_heal
            .max(longest_gap(&verdict.holds, from, until));
        tally.longest = tally
            .longest
            .max(longest_gap(&verdict.holds, first_grant, until));
    }
    Ok(tally)
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
