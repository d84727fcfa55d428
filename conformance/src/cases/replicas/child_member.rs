//! The member of `replicas_shards_mixed_faults` that runs in a child process
//! ([`crate::faults::shards_member`]), SIGKILLed (and started again at once, as the same
//! member) or SIGSTOPped at seeded times.
//!
//! Its holds go into the shards' histories from what it prints: each grant and end
//! stamped by the child itself on the monotonic clock the parent's [`Recorder`] runs
//! on, an end before the library may release the shard (see the module docs of
//! [`crate::faults::shards_member`]). What the parent does to it goes into the
//! recorder with the partitions: a kill (`Killed`, recorded once the process is
//! reaped: it acts on nothing after) and a pause (`Pause` once stopped, `Resume` before
//! it is continued: an excused window; a hold whose next event after it is a loss ends
//! where the pause began). A stall of the child's own runtime it reports (a tick
//! later than [`crate::faults::shards_member::CHILD_STALL`]) is recorded as a pause
//! too: a starved process acted on nothing in between, as a stopped one, so a busy
//! test machine is not taken for a store that failed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::check::{lock_vec, Check, Fail};
use crate::faults::child::Launcher;
use crate::faults::shards_member::{mono_ns, MemberEvent, ShardsMember, ShardsMemberSpec};
use crate::history::{Event, Kind, Recorder};
use crate::rng::Rng;

/// How long a woken member is left to say which of its ends were losses (the child
/// waits up to half a second for its counts) before the next fault.
const CLASSIFIED: Duration = Duration::from_millis(600);

/// How long a started member may take to be ready.
const SPAWN_LIMIT: Duration = Duration::from_secs(10);

/// What the child member's events add to the histories.
#[derive(Clone)]
pub(super) struct ChildLog {
    /// The recorder's start on the monotonic clock, in ns.
    base: u64,
    /// Per shard, the child's grants and ends.
    shards: Arc<Vec<Mutex<Vec<Event>>>>,
    /// The child's stalls, as pauses (every shard's).
    stalls: Arc<Mutex<Vec<Event>>>,
}

impl ChildLog {
    pub(super) fn new(clock: &Recorder, count: u32) -> Self {
        let before = mono_ns();
        let at = clock.now();
        let after = mono_ns();
        let now = before / 2 + after / 2;
        let base = now.saturating_sub(u64::try_from(at.as_nanos()).unwrap_or(u64::MAX));
        Self {
            base,
            shards: Arc::new((0..count).map(|_| Mutex::default()).collect()),
            stalls: Arc::default(),
        }
    }

    fn at(&self, ns: u64) -> Duration {
        Duration::from_nanos(ns.saturating_sub(self.base))
    }

    fn add(&self, client: usize, event: MemberEvent) {
        match event {
            MemberEvent::Grant { shard, token, at } => {
                if let Some(events) = self.shards.get(shard as usize) {
                    lock_vec(events).push(Event {
                        at: self.at(at),
                        client,
                        kind: Kind::Grant(token),
                    });
                }
            }
            MemberEvent::End { shard, at } => {
                if let Some(events) = self.shards.get(shard as usize) {
                    lock_vec(events).push(Event {
                        at: self.at(at),
                        client,
                        kind: Kind::Release,
                    });
                }
            }
            // The end it was said of (the last one, at that instant) was a loss.
            MemberEvent::Lost { shard, at } => {
                if let Some(events) = self.shards.get(shard as usize) {
                    let at = self.at(at);
                    let mut events = lock_vec(events);
                    if let Some(end) = events
                        .iter_mut()
                        .rev()
                        .find(|event| event.at == at && event.kind == Kind::Release)
                    {
                        end.kind = Kind::Lost;
                    }
                }
            }
            MemberEvent::Stall { from, to } => {
                let mut stalls = lock_vec(&self.stalls);
                stalls.push(Event {
                    at: self.at(from),
                    client,
                    kind: Kind::Pause,
                });
                stalls.push(Event {
                    at: self.at(to),
                    client,
                    kind: Kind::Resume,
                });
            }
        }
    }

    /// Shard `shard`'s events from the child, its stalls included.
    pub(super) fn events(&self, shard: u32) -> Vec<Event> {
        let mut events = self
            .shards
            .get(shard as usize)
            .map(|events| lock_vec(events).clone())
            .unwrap_or_default();
        events.extend(lock_vec(&self.stalls).iter().copied());
        events
    }

    /// How many stalls the child reported.
    pub(super) fn stalls(&self) -> usize {
        lock_vec(&self.stalls).len() / 2
    }
}

/// What the child member's schedule did.
#[derive(Default)]
pub(super) struct ChildCounts {
    pub(super) kills: usize,
    pub(super) pauses: usize,
    pub(super) long_pauses: usize,
    pub(super) starts: usize,
}

/// Where the child member runs and what it is.
pub(super) struct ChildMember<'a> {
    pub(super) launcher: &'a Launcher,
    pub(super) url: &'a str,
    pub(super) group: &'a str,
    pub(super) spec: ShardsMemberSpec,
    pub(super) ttl: Duration,
    /// Its client number in the histories.
    pub(super) client: usize,
}

impl ChildMember<'_> {
    async fn start(&self) -> Check<ShardsMember> {
        match tokio::time::timeout(
            SPAWN_LIMIT,
            ShardsMember::spawn(self.launcher, self.url, self.group, &self.spec, self.ttl),
        )
        .await
        {
            Ok(Ok(member)) => Ok(member),
            // Not the store failing a guarantee: the case measured nothing.
            Ok(Err(error)) => Err(Fail::SetUpLapsed(format!(
                "starting the member in a child process: {error}"
            ))),
            Err(_) => Err(Fail::SetUpLapsed(format!(
                "the member in a child process was not ready within {SPAWN_LIMIT:?}"
            ))),
        }
    }

    /// Runs the member until `stop`, killing or pausing it at seeded times while a
    /// fault (with its TTL's consequences) ends before `quiet`; kills it at `stop`.
    pub(super) async fn run(
        &self,
        clock: &Recorder,
        log: &ChildLog,
        (quiet, stop): (Instant, Instant),
        mut rng: Rng,
    ) -> Check<ChildCounts> {
        let mut counts = ChildCounts::default();
        let mut member = self.start().await?;
        counts.starts += 1;
        let margin = Duration::from_secs(1);
        loop {
            let gap = Duration::from_millis(300 + rng.below(1200) as u64);
            let pause = self.ttl * u32::try_from(20 + rng.below(280)).unwrap_or(100) / 100;
            let kill = rng.below(2) == 0;
            let now = Instant::now();
            let fits = |lasts: Duration| now + gap + lasts < quiet;
            if kill && fits(self.ttl) {
                self.pump(&mut member, log, now + gap).await?;
                member
                    .kill()
                    .await
                    .map_err(|error| Fail::SetUpLapsed(format!("killing the member: {error}")))?;
                self.drain(&mut member, log).await?;
                clock.record(self.client, Kind::Killed);
                counts.kills += 1;
                member = self.start().await?;
                counts.starts += 1;
            } else if !kill && fits(pause + self.ttl + margin) {
                self.pump(&mut member, log, now + gap).await?;
                member
                    .pause()
                    .map_err(|error| Fail::SetUpLapsed(format!("pausing the member: {error}")))?;
                clock.record(self.client, Kind::Pause);
                counts.pauses += 1;
                counts.long_pauses += usize::from(pause > self.ttl);
                tokio::time::sleep(pause).await;
                clock.record(self.client, Kind::Resume);
                member
                    .resume()
                    .map_err(|error| Fail::SetUpLapsed(format!("resuming the member: {error}")))?;
                // The losses it learns on waking are said to be losses before a kill
                // could cut that short.
                self.pump(&mut member, log, Instant::now() + CLASSIFIED)
                    .await?;
            } else if now + gap >= quiet {
                break;
            } else {
                // This fault does not fit before the quiet tail: a shorter one might.
                self.pump(&mut member, log, now + gap.min(Duration::from_millis(300)))
                    .await?;
            }
        }
        self.pump(&mut member, log, stop).await?;
        member
            .kill()
            .await
            .map_err(|error| Fail::SetUpLapsed(format!("killing the member: {error}")))?;
        self.drain(&mut member, log).await?;
        clock.record(self.client, Kind::Killed);
        Ok(counts)
    }

    /// Records the member's events until `until`.
    async fn pump(&self, member: &mut ShardsMember, log: &ChildLog, until: Instant) -> Check<()> {
        loop {
            tokio::select! {
                // An event the member printed before the end is read before the end
                // is taken, whatever a late poll finds ready: a loss left unread would
                // stretch the hold it ends.
                biased;
                event = member.next_event() => match event {
                    Ok(Some(event)) => log.add(self.client, event),
                    Ok(None) => {
                        return Err(Fail::SetUpLapsed(format!(
                            "the member in child process {} exited by itself",
                            member.pid()
                        )))
                    }
                    Err(error) => {
                        return Err(Fail::SetUpLapsed(format!("the member in a child process: {error}")))
                    }
                },
                () = tokio::time::sleep_until(until) => return Ok(()),
            }
        }
    }

    /// Records what a killed member printed before it died.
    async fn drain(&self, member: &mut ShardsMember, log: &ChildLog) -> Check<()> {
        loop {
            match member.next_event().await {
                Ok(Some(event)) => log.add(self.client, event),
                Ok(None) => return Ok(()),
                Err(error) => {
                    return Err(Fail::SetUpLapsed(format!(
                        "the member in a child process: {error}"
                    )))
                }
            }
        }
    }
}
