//! Per-shard histories of shard ownership, for [`crate::history::check`].
//!
//! Every member's ownership of every shard is recorded from inside its work: a
//! tracker per (member, shard) runs [`Shards::while_owned`] whenever the member's
//! [`Shards::changes`] lists the shard, and the work records a grant (with the shard's
//! fencing token) when it starts and the hold's end when it is dropped. The library
//! stops that work before it releases the shard (the release waits for it), so a
//! recorded end comes before the store can grant the shard to anyone else: a hold is
//! never seen shorter on its end than the member believed it, only a little shorter at
//! its start (the tracker starts once the change is published).
//!
//! An end is recorded as a release, or as `lost()` when the member counted a loss
//! between the grant and the end's classification ([`Shards::counts`]): a loss after a
//! partition then ends the hold where the partition started, as the history checker
//! cuts every hold whose next event after a fault is `lost()`. A release taken for a
//! loss only makes the check more lenient, never a false violation.
//!
//! An end is stamped when the work is dropped, or at the session's client-side
//! deadline ([`Session::valid_until`], the last one the work saw) if that came first:
//! from the deadline on [`Session::is_lost`] is true, whatever the runtime's lag, and
//! that is what the library promises to come before the store may grant the shard
//! again. The drop itself waits for the keepalive task that fires `lost()` and for the
//! work's own task: on a starved runner that lag alone outlasts a session's margin,
//! and a store that kept its promise would read as violated.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distsync_core::shards::Shards;
use distsync_core::Session;
use tokio::task::JoinHandle;

use crate::check::lock_vec;
use crate::history::{Event, Kind, Recorder};

/// How long an end waits for the member's counts to say whether it was a loss.
const CLASSIFY: Duration = Duration::from_millis(500);

/// The histories of every shard of a group, on one clock: the [`Recorder`] whose
/// [`Recorder::now`] stamps them (the same one the fault schedule records cuts in).
#[derive(Clone)]
pub(super) struct ShardLog {
    clock: Recorder,
    shards: Arc<Vec<Mutex<Vec<Event>>>>,
}

impl ShardLog {
    /// Empty histories for `count` shards, stamped by `clock`.
    pub(super) fn new(clock: Recorder, count: u32) -> Self {
        Self {
            clock,
            shards: Arc::new((0..count).map(|_| Mutex::default()).collect()),
        }
    }

    /// Records `kind` for `client` on `shard` now, or at `until` if that came first,
    /// but not before `not_before`; returns its index in the history and its stamp.
    fn record(
        &self,
        shard: u32,
        client: usize,
        kind: Kind,
        until: Option<std::time::Instant>,
        not_before: Duration,
    ) -> (usize, Duration) {
        let mut events = lock_vec(&self.shards[shard as usize]);
        let now = self.clock.now();
        let at = until
            .map_or(now, |until| {
                now.min(self.clock.at(tokio::time::Instant::from_std(until)))
            })
            .max(not_before);
        events.push(Event { at, client, kind });
        (events.len() - 1, at)
    }

    fn reclassify(&self, shard: u32, index: usize, kind: Kind) {
        if let Some(event) = lock_vec(&self.shards[shard as usize]).get_mut(index) {
            event.kind = kind;
        }
    }

    /// Shard `shard`'s history, with `extra` (the clock's own events: faults of the
    /// members) merged in, in time order.
    pub(super) fn history(&self, shard: u32, extra: &[Event]) -> Vec<Event> {
        let mut events = lock_vec(&self.shards[shard as usize]).clone();
        events.extend_from_slice(extra);
        events.sort_by_key(|event| event.at);
        events
    }

    /// How many shards.
    pub(super) fn count(&self) -> u32 {
        u32::try_from(self.shards.len()).unwrap_or(u32::MAX)
    }

    /// Starts recording `member` (client `client` in the histories): one tracker per
    /// shard. Stop them with [`Tracking::stop`] before the member stops.
    pub(super) fn track(&self, member: &Arc<Shards>, client: usize) -> Tracking {
        let tasks = (0..self.count())
            .map(|shard| {
                let (log, member) = (self.clone(), Arc::clone(member));
                tokio::spawn(async move { log.follow(&member, client, shard).await })
            })
            .collect();
        Tracking { tasks }
    }

    /// One member's ownership of one shard, hold after hold.
    async fn follow(&self, member: &Shards, client: usize, shard: u32) {
        let mut changes = member.changes();
        loop {
            if changes
                .wait_for(|owned| owned.contains(shard))
                .await
                .is_err()
            {
                return;
            }
            let before = member.counts();
            let recorded: Arc<Mutex<Option<usize>>> = Arc::default();
            let work = {
                let (mut changes, recorded) = (member.changes(), Arc::clone(&recorded));
                let session = member.session();
                async move {
                    // While this work runs the hold it entered is the one published.
                    let token = match changes.wait_for(|owned| owned.contains(shard)).await {
                        Ok(owned) => owned.token(shard),
                        Err(_) => None,
                    };
                    let Some(token) = token else {
                        return std::future::pending::<()>().await;
                    };
                    let mut health = session.as_ref().map(Session::health_watch);
                    let until = health.as_ref().and_then(|h| h.current().valid_until());
                    let (_, granted) = self.record(
                        shard,
                        client,
                        Kind::Grant(token.get()),
                        None,
                        Duration::ZERO,
                    );
                    let end = End {
                        log: self,
                        shard,
                        client,
                        recorded: Arc::clone(&recorded),
                        until,
                        granted,
                    };
                    follow_deadline(end, health.as_mut()).await;
                }
            };
            let _ = member.while_owned(shard, |_| work).await;
            let index = *lock_vec(&recorded);
            let Some(index) = index else {
                // Not entered (the shard went before the work started): wait for the
                // published change rather than spin.
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            // A loss counted since the grant, now or just after (a release is counted
            // after its work stopped; a loss about when it is seen), makes it a loss.
            let at_end = member.counts();
            let mut lost = at_end.lost > before.lost;
            let deadline = tokio::time::Instant::now() + CLASSIFY;
            while !lost && tokio::time::Instant::now() < deadline {
                let now = member.counts();
                if now.lost > at_end.lost {
                    lost = true;
                } else if now.released > at_end.released {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if lost {
                self.reclassify(shard, index, Kind::Lost);
            }
        }
    }
}

/// Keeps `end`'s deadline the session's latest until the work is dropped (never
/// returns).
async fn follow_deadline(
    mut end: End<'_>,
    health: Option<&mut distsync_core::session::HealthWatch>,
) {
    if let Some(health) = health {
        // Lost: the last deadline seen is the one that passed (or the loss came earlier,
        // and the drop's own instant is the earlier one).
        crate::last_deadline::follow(health, &mut end.until).await;
    }
    std::future::pending().await
}

/// Records the end of a hold when the work on it is dropped, or at `until` (the
/// session's client-side deadline) if that came first, never before its grant: a
/// starved runner can start the work after the deadline it read has passed (the
/// member had not yet seen the loss), and that hold is empty, not one that ends before
/// it began and leaves its grant open in the history.
struct End<'a> {
    log: &'a ShardLog,
    shard: u32,
    client: usize,
    recorded: Arc<Mutex<Option<usize>>>,
    until: Option<std::time::Instant>,
    granted: Duration,
}

impl Drop for End<'_> {
    fn drop(&mut self) {
        let (index, _) = self.log.record(
            self.shard,
            self.client,
            Kind::Release,
            self.until,
            self.granted,
        );
        *lock_vec(&self.recorded) = Some(index);
    }
}

/// One member's trackers.
pub(super) struct Tracking {
    tasks: Vec<JoinHandle<()>>,
}

impl Tracking {
    /// Stops the trackers (a hold still open is ended in its history now, before the
    /// member releases it) and waits until they are gone, so that the member's handle
    /// is no longer shared.
    pub(super) async fn stop(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Per shard, who owns it now according to the members' published sets: for the
/// stable-assignment checks.
pub(super) fn owners<'a>(
    members: impl IntoIterator<Item = (&'a str, &'a Shards)>,
) -> BTreeMap<u32, Vec<&'a str>> {
    let mut owners: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
    for (id, member) in members {
        for shard in member.owned().shards() {
            owners.entry(shard).or_default().push(id);
        }
    }
    owners
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{check, Rules, Violation};

    /// A hold whose work starts after the session deadline it read (a starved runner)
    /// is empty: its end is stamped at its grant, not at the earlier deadline, so the
    /// next grant of the same member is no grant "while holding".
    #[tokio::test]
    async fn a_hold_that_starts_past_its_deadline_ends_at_its_grant() {
        let log = ShardLog::new(Recorder::new(), 1);
        let past = std::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let recorded = Arc::default();
        let (_, granted) = log.record(0, 0, Kind::Grant(1), None, Duration::ZERO);
        drop(End {
            log: &log,
            shard: 0,
            client: 0,
            recorded: Arc::clone(&recorded),
            until: Some(past),
            granted,
        });
        log.record(0, 0, Kind::Grant(2), None, Duration::ZERO);
        let history = log.history(0, &[]);
        assert_eq!(history[1].at, granted, "{history:?}");
        let verdict = check(
            &history,
            &Rules {
                capacity: 1,
                liveness: None,
            },
        );
        assert!(
            !verdict
                .violations
                .iter()
                .any(|violation| matches!(violation, Violation::Malformed(_))),
            "{:?}",
            verdict.violations
        );
        assert_eq!(*lock_vec(&recorded), Some(1));
    }
}
