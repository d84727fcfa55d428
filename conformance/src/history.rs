//! Histories of contended holds and the checker that judges them afterwards.
//!
//! A mixed-fault case records what its clients saw (a lock call started, a grant with
//! its fencing token, a release, a `lost()`, a kill) and what the harness did to them
//! (a pause, a partition, and their ends) or to the store's server (a restart: stopped,
//! then answering again, recorded for [`SERVER`]), each at a monotonic instant, in a
//! [`Recorder`]. [`check`] then judges the [`Event`]s alone: it never calls the
//! backend, so it is independent of the code under test, as Jepsen's checkers are.
//!
//! # What a hold is
//! A hold is a client's belief that it holds: it starts when its lock call returns a
//! grant and ends at the first of
//! - the client starting its release (it stops acting under the hold before the
//!   store can give the hold to anyone else);
//! - the client observing `lost()`;
//! - the client's process being killed.
//!
//! A pause or a partition of the holder changes that in two ways:
//! - a *paused* process acts on nothing, so the time it spends stopped is not part of
//!   its hold: exclusion is checked outside its pauses. A paused holder that wakes
//!   and still believes it holds is what fencing is for: the tokens (below) decide
//!   whether its late writes would be refused;
//! - if the holder's next event after the start of a pause or a partition during its
//!   hold is `lost()` (it did nothing under the hold in between: no release), the
//!   hold ends at the start of that pause or partition: from then on it did not act,
//!   and what it learned next is that it no longer holds;
//! - the same holds for a pause or a partition that started during the lock call
//!   (or was under way when the call started): a grant whose next event is `lost()`
//!   then ends where it started. A call in flight across a partition longer than the
//!   TTL may return a grant the store has already taken back and given on with a
//!   higher token; its holder learns `lost()` before it can act, and the tokens
//!   order the two grants.
//!
//! A restart of the store's server is a fault of every client at once, but it excuses
//! nothing: a hold across a restart ends only where its holder releases, observes
//! `lost()` or is killed. A restart may end every session (a store that forgets) or
//! none (one that keeps its leases); either way no one else may be granted before the
//! holder has learned that it lost its hold, which is what a store that claims holds
//! exclusive across a restart gives (a lock-delay after it forgot, or its kept
//! sessions). A partition or pause of the holder during the same hold still ends it
//! where that fault started, as above.
//!
//! # What is checked
//! - **Exclusion**: at no instant are more than `capacity` holds (one for a lock)
//!   live, with the holds cut as above.
//! - **Tokens**: a grant that completed before another grant's lock call started has
//!   a strictly smaller fencing token (grant order by real time; calls that overlap
//!   in time may be ordered either way), and no two grants share a token.
//! - **Liveness**: once the last fault has healed (a restart: once the server answers
//!   again), some client is granted within a bound; a hold granted before the heal and
//!   still held then moves the start of that bound to its end.
//!
//! Instants are taken in the recording process; a holder in a child process is
//! recorded when its parent reads what it said, so its grant is recorded a pipe's
//! latency late (a hold seen slightly shorter than the child believed it).

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::check::Fail;
use crate::cpu_pressure::{Contention, Sampler};

/// What happened to one client (or what the harness did to it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Its lock call started.
    Invoke,
    /// Its lock call returned a grant with this fencing token.
    Grant(u64),
    /// It started releasing what it held.
    Release,
    /// It observed `lost()`.
    Lost,
    /// Its process was killed (SIGKILL returned).
    Killed,
    /// Its process was paused (SIGSTOP, or a frozen lease in process).
    Pause,
    /// Its process was resumed.
    Resume,
    /// Its connection to the store was cut (a partition).
    Cut,
    /// Its partition healed.
    Heal,
    /// The store's server began to stop, for a restart (recorded for [`SERVER`]: a
    /// fault of every client at once).
    ServerStop,
    /// The restarted server answers again (recorded for [`SERVER`]).
    ServerStart,
}

/// The client a restart of the store's server is recorded for: it is no client, and
/// the checker applies its events to every client.
pub(crate) const SERVER: usize = usize::MAX;

/// One recorded event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Event {
    /// Since the start of the recording.
    pub(crate) at: Duration,
    /// The client.
    pub(crate) client: usize,
    /// What happened.
    pub(crate) kind: Kind,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.client == SERVER {
            return write!(f, "{:.3}s server {:?}", self.at.as_secs_f64(), self.kind);
        }
        write!(
            f,
            "{:.3}s c{} {:?}",
            self.at.as_secs_f64(),
            self.client,
            self.kind
        )
    }
}

/// Records events with the instant they are recorded at; clones share one history.
/// Events are appended under a lock with the instant taken inside it, so the history
/// is in time order.
/// Inside a tokio runtime it also reads the machine's CPU pressure beside the events
/// ([`Recorder::contention`]), for the liveness bound.
#[derive(Clone)]
pub(crate) struct Recorder {
    start: Instant,
    events: Arc<Mutex<Vec<Event>>>,
    pressure: Option<Arc<Sampler>>,
}

impl Recorder {
    /// An empty history starting now.
    pub(crate) fn new() -> Self {
        let start = Instant::now();
        Self {
            start,
            events: Arc::default(),
            pressure: Sampler::start(start).map(Arc::new),
        }
    }

    /// How long the machine's runnable tasks waited for a CPU, as read so far on the
    /// clock of the events (empty where it cannot be read; see [`crate::cpu_pressure`]).
    pub(crate) fn contention(&self) -> Contention {
        self.pressure
            .as_ref()
            .map_or_else(Contention::default, |sampler| sampler.contention())
    }

    /// Records `kind` for `client` now; returns the instant, since the start.
    pub(crate) fn record(&self, client: usize, kind: Kind) -> Duration {
        let mut events = crate::check::lock_vec(&self.events);
        let at = self.start.elapsed();
        events.push(Event { at, client, kind });
        at
    }

    /// The instant now, since the start, on the clock of the recorded events (for a
    /// record kept beside the history, as a queue's receipts).
    pub(crate) fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// `instant` on the clock of the recorded events (zero before the start).
    pub(crate) fn at(&self, instant: Instant) -> Duration {
        instant.saturating_duration_since(self.start)
    }

    /// The events so far.
    pub(crate) fn events(&self) -> Vec<Event> {
        crate::check::lock_vec(&self.events).clone()
    }
}

/// What the checker requires.
#[derive(Clone, Debug)]
pub(crate) struct Rules {
    /// How many holds may be live at once (1 for a lock).
    pub(crate) capacity: usize,
    /// The liveness requirement, if any.
    pub(crate) liveness: Option<Liveness>,
}

/// Some grant must come within `bound` of `healed`, the time the machine was starved
/// of CPU meanwhile not counted ([`crate::cpu_pressure`]).
#[derive(Clone, Debug)]
pub(crate) struct Liveness {
    /// When the last fault healed.
    pub(crate) healed: Duration,
    /// How long after it a grant may take.
    pub(crate) bound: Duration,
    /// When the run stopped calling: a hold that outlasts the heal and ends within the
    /// bound of this leaves nothing to require.
    pub(crate) until: Duration,
    /// The machine's CPU pressure over the run ([`Recorder::contention`]).
    pub(crate) contention: Contention,
}

/// The verdict on a history without a single grant, `what` saying whose, as [`check`]
/// judged it (`verdict`, with no violation): a violation, unless its liveness rule
/// passed only because the machine starved meanwhile. A run that ends before its bound
/// plus the starved time cannot show that a grant was late, so it cannot show that none
/// would come either: the case is [`Fail::Starved`], inconclusive.
pub(crate) fn never_granted(what: String, verdict: &Verdict, rules: &Rules) -> Fail {
    match (verdict.excused_by_starvation, &rules.liveness) {
        (Some(starved), Some(liveness)) => Fail::Starved {
            starved,
            bound: liveness.bound,
            why: format!("{what}, with no grant after the last fault's end"),
        },
        _ => Fail::Violated(what),
    }
}

/// One hold, as the checker cut it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Hold {
    /// The client.
    pub(crate) client: usize,
    /// The grant's fencing token.
    pub(crate) token: u64,
    /// When the lock call that got it started.
    pub(crate) invoked: Duration,
    /// When the grant was recorded.
    pub(crate) granted: Duration,
    /// When the hold ended (see the module docs).
    pub(crate) end: Duration,
    /// How it ended.
    pub(crate) ended_by: Ending,
    /// The parts of the hold outside the holder's pauses.
    pub(crate) live: Vec<(Duration, Duration)>,
    /// Whether a restart of the store's server began during the hold.
    pub(crate) across_restart: bool,
}

/// How a hold ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Its holder released it.
    Release,
    /// Its holder observed `lost()`.
    Lost,
    /// Its holder observed `lost()` as its next event after a pause or partition: the
    /// hold ends where that fault started.
    LostAfterFault,
    /// Its holder was killed.
    Killed,
    /// The history ended.
    EndOfHistory,
}

impl fmt::Display for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "c{} token {} (called {:.3}s, granted {:.3}s, ended {:.3}s by {:?})",
            self.client,
            self.token,
            self.invoked.as_secs_f64(),
            self.granted.as_secs_f64(),
            self.end.as_secs_f64(),
            self.ended_by
        )
    }
}

/// A violation the checker found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Violation {
    /// More than `capacity` holds were live at `at`.
    Overlap {
        /// The instant.
        at: Duration,
        /// The live holds.
        holds: Vec<Hold>,
    },
    /// `later` was called after `earlier` was granted, with a token not above it.
    TokenOrder {
        /// The earlier grant.
        earlier: Hold,
        /// The later grant.
        later: Hold,
    },
    /// Two grants share a token.
    DuplicateToken {
        /// One grant.
        first: Hold,
        /// The other.
        second: Hold,
    },
    /// No grant came within the bound after the last fault healed.
    NoGrantAfterHeal {
        /// When the last fault healed.
        healed: Duration,
        /// The bound.
        bound: Duration,
        /// The first grant after the heal, if any.
        first: Option<Duration>,
        /// How long the machine was starved of CPU between the heal and that grant (or
        /// the end of the history): time not counted against the bound.
        starved: Duration,
    },
    /// The history is not one a client could produce (a grant while holding).
    Malformed(String),
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Overlap { at, holds } => {
                write!(f, "{} holds live at {:.3}s:", holds.len(), at.as_secs_f64())?;
                for hold in holds {
                    write!(f, " [{hold}]")?;
                }
                Ok(())
            }
            Self::TokenOrder { earlier, later } => write!(
                f,
                "token order: [{later}] was called after [{earlier}] was granted, with a token \
                 not above it"
            ),
            Self::DuplicateToken { first, second } => {
                write!(
                    f,
                    "token {} granted twice: [{first}] [{second}]",
                    first.token
                )
            }
            Self::NoGrantAfterHeal {
                healed,
                bound,
                first,
                starved,
            } => write!(
                f,
                "no grant within {bound:?} (plus {starved:?} the machine's runnable tasks waited \
                 for a CPU) of the last fault's heal at {:.3}s (first grant after it: {})",
                healed.as_secs_f64(),
                first.map_or_else(
                    || "none".to_owned(),
                    |at| format!("{:.3}s", at.as_secs_f64())
                )
            ),
            Self::Malformed(why) => write!(f, "malformed history: {why}"),
        }
    }
}

/// What [`check`] found.
#[derive(Clone, Debug, Default)]
pub(crate) struct Verdict {
    /// Every hold, in grant order.
    pub(crate) holds: Vec<Hold>,
    /// What is violated (empty when the history passes).
    pub(crate) violations: Vec<Violation>,
    /// The machine's starved time that kept the liveness rule from being violated:
    /// `Some` when the first grant after the heal (or its absence) was past the bound
    /// and only the starved time taken off let it pass.
    pub(crate) excused_by_starvation: Option<Duration>,
}

/// How many violations of one kind a verdict lists (the first ones are the evidence;
/// the rest repeat it).
const MAX_REPORTED: usize = 10;

/// Judges `events` (in time order, as a [`Recorder`] keeps them) by `rules`.
pub(crate) fn check(events: &[Event], rules: &Rules) -> Verdict {
    let mut verdict = Verdict::default();
    let end = events.last().map_or(Duration::ZERO, |event| event.at);
    let mut clients: Vec<usize> = events
        .iter()
        .map(|event| event.client)
        .filter(|&client| client != SERVER)
        .collect();
    clients.sort_unstable();
    clients.dedup();
    for client in clients {
        // A restart is every client's: its events go into each client's history.
        let mine = events
            .iter()
            .filter(|event| event.client == client || event.client == SERVER);
        holds_of(client, mine, end, &mut verdict);
    }
    verdict
        .holds
        .sort_by_key(|hold| (hold.granted, hold.client));
    exclusion(rules.capacity.max(1), &mut verdict);
    tokens(&mut verdict);
    if let Some(liveness) = &rules.liveness {
        live(events, liveness, &mut verdict);
    }
    verdict
}

/// A hold being built.
struct Open {
    token: u64,
    invoked: Duration,
    granted: Duration,
    /// The start of the live part in progress (`None` while paused).
    since: Option<Duration>,
    live: Vec<(Duration, Duration)>,
    /// The start of the first pause or partition during the hold.
    fault: Option<Duration>,
    /// Whether a restart began during the hold.
    across_restart: bool,
}

impl Open {
    fn close(mut self, client: usize, at: Duration, end: Duration, ended_by: Ending) -> Hold {
        if let Some(since) = self.since {
            self.live.push((since, at));
        }
        let live = self
            .live
            .into_iter()
            .map(|(from, to)| (from, to.min(end)))
            .filter(|(from, to)| from < to)
            .collect();
        Hold {
            client,
            token: self.token,
            invoked: self.invoked,
            granted: self.granted,
            end,
            ended_by,
            live,
            across_restart: self.across_restart,
        }
    }
}

fn holds_of<'a>(
    client: usize,
    events: impl Iterator<Item = &'a Event>,
    history_end: Duration,
    verdict: &mut Verdict,
) {
    let mut open: Option<Open> = None;
    let mut invoked = None;
    let mut paused = false;
    let mut cut = false;
    // Whether a pause or partition touched the lock call in progress.
    let mut call_faulted = false;
    for event in events {
        let at = event.at;
        match event.kind {
            Kind::Invoke => {
                invoked = Some(at);
                call_faulted = paused || cut;
            }
            Kind::Grant(token) => {
                if let Some(previous) = open.take() {
                    verdict.violations.push(Violation::Malformed(format!(
                        "c{client} granted token {token} at {:.3}s while holding token {}",
                        at.as_secs_f64(),
                        previous.token
                    )));
                    let hold = previous.close(client, at, at, Ending::EndOfHistory);
                    verdict.holds.push(hold);
                }
                open = Some(Open {
                    token,
                    invoked: invoked.take().unwrap_or(at),
                    granted: at,
                    since: (!paused).then_some(at),
                    live: Vec::new(),
                    fault: std::mem::take(&mut call_faulted).then_some(at),
                    across_restart: false,
                });
            }
            Kind::Pause => {
                paused = true;
                call_faulted = true;
                if let Some(hold) = open.as_mut() {
                    hold.fault.get_or_insert(at);
                    if let Some(since) = hold.since.take() {
                        hold.live.push((since, at));
                    }
                }
            }
            Kind::Resume => {
                paused = false;
                if let Some(hold) = open.as_mut() {
                    hold.since.get_or_insert(at);
                }
            }
            Kind::Cut => {
                cut = true;
                call_faulted = true;
                if let Some(hold) = open.as_mut() {
                    hold.fault.get_or_insert(at);
                }
            }
            Kind::Heal => cut = false,
            // A restart excuses nothing (see the module docs): the hold goes on until
            // its holder releases, observes lost() or is killed.
            Kind::ServerStop => {
                if let Some(hold) = open.as_mut() {
                    hold.across_restart = true;
                }
            }
            Kind::ServerStart => {}
            Kind::Release | Kind::Lost | Kind::Killed => {
                let Some(hold) = open.take() else { continue };
                let (end, ended_by) = match (event.kind, hold.fault) {
                    (Kind::Lost, Some(fault)) => (fault, Ending::LostAfterFault),
                    (Kind::Lost, None) => (at, Ending::Lost),
                    (Kind::Killed, _) => (at, Ending::Killed),
                    _ => (at, Ending::Release),
                };
                verdict.holds.push(hold.close(client, at, end, ended_by));
                if event.kind == Kind::Killed {
                    paused = false;
                }
            }
        }
    }
    if let Some(hold) = open {
        verdict
            .holds
            .push(hold.close(client, history_end, history_end, Ending::EndOfHistory));
    }
}

/// A sweep over the live parts of every hold: at no instant more than `capacity`.
fn exclusion(capacity: usize, verdict: &mut Verdict) {
    // (instant, 0 = end before 1 = start at the same instant, hold index)
    let mut points: Vec<(Duration, u8, usize)> = Vec::new();
    for (index, hold) in verdict.holds.iter().enumerate() {
        for &(from, to) in &hold.live {
            points.push((from, 1, index));
            points.push((to, 0, index));
        }
    }
    points.sort_unstable();
    let mut live: Vec<usize> = Vec::new();
    let mut found = 0;
    for (at, start, index) in points {
        if start == 0 {
            if let Some(position) = live.iter().position(|&i| i == index) {
                live.swap_remove(position);
            }
            continue;
        }
        live.push(index);
        if live.len() > capacity && found < MAX_REPORTED {
            found += 1;
            let holds = live.iter().map(|&i| verdict.holds[i].clone()).collect();
            verdict.violations.push(Violation::Overlap { at, holds });
        }
    }
}

/// Grant order by real time, and unique tokens.
fn tokens(verdict: &mut Verdict) {
    let holds = &verdict.holds;
    let mut by_call: Vec<usize> = (0..holds.len()).collect();
    by_call.sort_by_key(|&i| holds[i].invoked);
    // `holds` is in grant order: walk it alongside, keeping the highest token granted
    // before the current call started.
    let mut granted = 0;
    let mut highest: Option<usize> = None;
    let mut found = Vec::new();
    for &later in &by_call {
        while granted < holds.len() && holds[granted].granted < holds[later].invoked {
            if highest.is_none_or(|h| holds[granted].token > holds[h].token) {
                highest = Some(granted);
            }
            granted += 1;
        }
        if let Some(earlier) = highest {
            if holds[earlier].token >= holds[later].token && found.len() < MAX_REPORTED {
                found.push(Violation::TokenOrder {
                    earlier: holds[earlier].clone(),
                    later: holds[later].clone(),
                });
            }
        }
    }
    let mut by_token: Vec<usize> = (0..holds.len()).collect();
    by_token.sort_by_key(|&i| holds[i].token);
    let mut duplicates = 0;
    for pair in by_token.windows(2) {
        if holds[pair[0]].token == holds[pair[1]].token && duplicates < MAX_REPORTED {
            duplicates += 1;
            found.push(Violation::DuplicateToken {
                first: holds[pair[0]].clone(),
                second: holds[pair[1]].clone(),
            });
        }
    }
    verdict.violations.extend(found);
}

/// Liveness: a grant within the bound of the heal or, when holds granted before the
/// heal are still held then, of the end of the last of them (a hold that outlasts the
/// fault is progress, not a stall, and nobody else can be granted while it holds; one
/// held to the end of the history, or ending within the bound of the run's end, leaves
/// nothing to require).
fn live(events: &[Event], liveness: &Liveness, verdict: &mut Verdict) {
    let outlasting: Vec<&Hold> = verdict
        .holds
        .iter()
        .filter(|hold| hold.granted <= liveness.healed && hold.end > liveness.healed)
        .collect();
    if outlasting
        .iter()
        .any(|hold| hold.ended_by == Ending::EndOfHistory)
    {
        return;
    }
    let from = outlasting
        .iter()
        .map(|hold| hold.end)
        .fold(liveness.healed, Duration::max);
    if from > liveness.healed && from + liveness.bound > liveness.until {
        return;
    }
    let first = events
        .iter()
        .filter(|event| event.at >= from)
        .find_map(|event| matches!(event.kind, Kind::Grant(_)).then_some(event.at));
    // The machine's starved time between the heal and the grant is not the store's:
    // it is taken off the time the grant took (see `crate::cpu_pressure`).
    // Without a grant, the bound is held to the end of what the case watched (the run,
    // or its last event if later): a run that ends before the bound plus the starved
    // time has passed cannot show that the grant was late, only one that outlasts it.
    let end = first.unwrap_or_else(|| {
        events
            .last()
            .map_or(from, |event| event.at)
            .max(liveness.until)
    });
    if end <= from + liveness.bound {
        return;
    }
    let starved = liveness.contention.within(from, end);
    if end > from + liveness.bound + starved {
        verdict.violations.push(Violation::NoGrantAfterHeal {
            healed: from,
            bound: liveness.bound,
            first,
            starved,
        });
    } else {
        verdict.excused_by_starvation = Some(starved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCK: Rules = Rules {
        capacity: 1,
        liveness: None,
    };

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    /// A history from `(ms, client, kind)` triples (in time order).
    fn history(events: &[(u64, usize, Kind)]) -> Vec<Event> {
        events
            .iter()
            .map(|&(at, client, kind)| Event {
                at: ms(at),
                client,
                kind,
            })
            .collect()
    }

    fn only(verdict: &Verdict) -> &Violation {
        assert_eq!(verdict.violations.len(), 1, "{:?}", verdict.violations);
        &verdict.violations[0]
    }

    use Kind::*;

    #[test]
    fn a_clean_history_passes() {
        let events = history(&[
            (0, 0, Invoke),
            (1, 1, Invoke),
            (2, 0, Grant(1)),
            (10, 0, Release),
            (12, 1, Grant(2)),
            (13, 0, Invoke),
            (20, 1, Release),
            (21, 0, Grant(3)),
            (30, 0, Release),
        ]);
        let verdict = check(&events, &LOCK);
        assert!(verdict.violations.is_empty(), "{:?}", verdict.violations);
        assert_eq!(verdict.holds.len(), 3);
        assert_eq!(verdict.holds[1].live, vec![(ms(12), ms(20))]);
    }

    #[test]
    fn overlapping_holds_are_caught() {
        let events = history(&[
            (0, 0, Invoke),
            (1, 0, Grant(1)),
            (2, 1, Invoke),
            (5, 1, Grant(2)),
            (8, 0, Release),
            (9, 1, Release),
        ]);
        match only(&check(&events, &LOCK)) {
            Violation::Overlap { at, holds } => {
                assert_eq!(*at, ms(5));
                assert_eq!(holds.len(), 2);
            }
            other => panic!("{other}"),
        }
        // Two of them fit a semaphore of two permits.
        let permits = Rules {
            capacity: 2,
            liveness: None,
        };
        assert!(check(&events, &permits).violations.is_empty());
    }

    #[test]
    fn a_grant_at_the_instant_of_a_release_is_no_overlap() {
        let events = history(&[
            (0, 0, Grant(1)),
            (5, 0, Release),
            (5, 1, Grant(2)),
            (9, 1, Release),
        ]);
        assert!(check(&events, &LOCK).violations.is_empty());
    }

    #[test]
    fn a_paused_holder_that_wakes_into_lost_ends_its_hold_at_the_pause() {
        let events = history(&[
            (0, 0, Grant(1)),
            (10, 0, Pause),
            (20, 1, Grant(2)),
            (30, 0, Resume),
            (31, 0, Lost),
            (40, 1, Release),
        ]);
        let verdict = check(&events, &LOCK);
        assert!(verdict.violations.is_empty(), "{:?}", verdict.violations);
        assert_eq!(verdict.holds[0].end, ms(10));
        assert_eq!(verdict.holds[0].ended_by, Ending::LostAfterFault);
    }

    #[test]
    fn a_paused_holder_is_excused_while_stopped_but_not_after_waking() {
        // It wakes, does not see lost() and releases later: the other hold overlaps
        // it after the resume.
        let events = history(&[
            (0, 0, Grant(1)),
            (10, 0, Pause),
            (20, 1, Grant(2)),
            (30, 0, Resume),
            (35, 0, Release),
            (40, 1, Release),
        ]);
        match only(&check(&events, &LOCK)) {
            Violation::Overlap { at, .. } => assert_eq!(*at, ms(30)),
            other => panic!("{other}"),
        }
        // Granted and released while the holder slept: exclusion is not checked
        // inside its pause.
        let events = history(&[
            (0, 0, Grant(1)),
            (10, 0, Pause),
            (20, 1, Grant(2)),
            (25, 1, Release),
            (30, 0, Resume),
            (35, 0, Release),
        ]);
        let verdict = check(&events, &LOCK);
        assert!(verdict.violations.is_empty(), "{:?}", verdict.violations);
        assert_eq!(
            verdict.holds[0].live,
            vec![(ms(0), ms(10)), (ms(30), ms(35))]
        );
    }

    #[test]
    fn a_cut_holder_whose_next_event_is_lost_ends_at_the_cut() {
        let events = history(&[
            (0, 0, Grant(1)),
            (10, 0, Cut),
            (25, 0, Lost),
            (20, 1, Grant(2)),
            (30, 0, Heal),
            (40, 1, Release),
        ]);
        let mut events = events;
        events.sort_by_key(|event| event.at);
        assert!(check(&events, &LOCK).violations.is_empty());
    }

    #[test]
    fn a_cut_holder_that_releases_before_lost_holds_until_its_release() {
        let events = history(&[
            (0, 0, Grant(1)),
            (10, 0, Cut),
            (20, 1, Grant(2)),
            (22, 0, Release),
            (30, 0, Heal),
            (40, 1, Release),
        ]);
        assert!(matches!(
            only(&check(&events, &LOCK)),
            Violation::Overlap { .. }
        ));
    }

    #[test]
    fn a_grant_cut_off_during_its_call_and_lost_at_once_is_empty() {
        // c1's call is cut off; the store gives the lock on to c0 with a higher
        // token; c1's call returns the stale grant and lost() at once.
        let events = history(&[
            (0, 1, Invoke),
            (5, 1, Cut),
            (10, 0, Invoke),
            (50, 1, Heal),
            (60, 0, Grant(8)),
            (61, 1, Grant(7)),
            (62, 1, Lost),
            (70, 0, Release),
        ]);
        let verdict = check(&events, &LOCK);
        assert!(verdict.violations.is_empty(), "{:?}", verdict.violations);
        assert!(verdict.holds.iter().any(|hold| hold.live.is_empty()));
        // Without the cut, the same history overlaps.
        let healthy: Vec<Event> = events
            .iter()
            .copied()
            .filter(|event| !matches!(event.kind, Cut | Heal))
            .collect();
        assert!(matches!(
            only(&check(&healthy, &LOCK)),
            Violation::Overlap { .. }
        ));
        // And a stale grant that the holder acts on (releases) before lost() overlaps.
        let acted = history(&[
            (0, 1, Invoke),
            (5, 1, Cut),
            (50, 1, Heal),
            (60, 0, Grant(8)),
            (61, 1, Grant(7)),
            (62, 1, Release),
            (70, 0, Release),
        ]);
        assert!(matches!(
            only(&check(&acted, &LOCK)),
            Violation::Overlap { .. }
        ));
    }

    #[test]
    fn a_holder_across_a_restart_must_see_lost_before_a_new_grant() {
        // c0 learns of the restart only after c1 is granted: two holders.
        let late = history(&[
            (0, 0, Grant(1)),
            (10, SERVER, ServerStop),
            (20, SERVER, ServerStart),
            (25, 1, Invoke),
            (26, 1, Grant(2)),
            (30, 0, Lost),
            (40, 1, Release),
        ]);
        match only(&check(&late, &LOCK)) {
            Violation::Overlap { at, holds } => {
                assert_eq!(*at, ms(26));
                assert!(holds.iter().any(|hold| hold.across_restart));
            }
            other => panic!("{other}"),
        }
        // c0 learns first: its hold ends at its lost(), not at the restart.
        let early = history(&[
            (0, 0, Grant(1)),
            (10, SERVER, ServerStop),
            (20, SERVER, ServerStart),
            (22, 0, Lost),
            (25, 1, Invoke),
            (26, 1, Grant(2)),
            (40, 1, Release),
        ]);
        let verdict = check(&early, &LOCK);
        assert!(verdict.violations.is_empty(), "{:?}", verdict.violations);
        assert_eq!(verdict.holds.len(), 2, "the server is no client");
        assert_eq!(verdict.holds[0].end, ms(22));
        assert_eq!(verdict.holds[0].ended_by, Ending::Lost);
        assert!(verdict.holds[0].across_restart);
        assert!(!verdict.holds[1].across_restart);
    }

    #[test]
    fn a_holder_cut_off_before_a_restart_ends_at_the_cut() {
        let events = history(&[
            (0, 0, Grant(1)),
            (5, 0, Cut),
            (10, SERVER, ServerStop),
            (20, SERVER, ServerStart),
            (26, 1, Grant(2)),
            (30, 0, Lost),
            (35, 0, Heal),
            (40, 1, Release),
        ]);
        let verdict = check(&events, &LOCK);
        assert!(verdict.violations.is_empty(), "{:?}", verdict.violations);
        assert_eq!(verdict.holds[0].ended_by, Ending::LostAfterFault);
        assert_eq!(verdict.holds[0].end, ms(5));
    }

    #[test]
    fn a_restart_is_shown_as_the_servers() {
        let event = Event {
            at: ms(1500),
            client: SERVER,
            kind: ServerStop,
        };
        assert_eq!(event.to_string(), "1.500s server ServerStop");
    }

    #[test]
    fn a_killed_holder_ends_at_its_kill() {
        let events = history(&[
            (0, 0, Grant(1)),
            (10, 0, Killed),
            (11, 1, Grant(2)),
            (20, 1, Release),
        ]);
        assert!(check(&events, &LOCK).violations.is_empty());
        let events = history(&[
            (0, 0, Grant(1)),
            (9, 1, Grant(2)),
            (10, 0, Killed),
            (20, 1, Release),
        ]);
        assert!(matches!(
            only(&check(&events, &LOCK)),
            Violation::Overlap { .. }
        ));
    }

    #[test]
    fn tokens_going_backwards_in_real_time_are_caught() {
        let events = history(&[
            (0, 0, Invoke),
            (1, 0, Grant(5)),
            (2, 0, Release),
            (3, 1, Invoke),
            (4, 1, Grant(4)),
            (5, 1, Release),
        ]);
        match only(&check(&events, &LOCK)) {
            Violation::TokenOrder { earlier, later } => {
                assert_eq!((earlier.token, later.token), (5, 4));
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn calls_that_overlap_in_time_may_be_ordered_either_way() {
        // c1's call started before c0's grant: the store may have ordered it first
        // (a permit of two, so exclusion has nothing to say).
        let events = history(&[
            (0, 0, Invoke),
            (1, 1, Invoke),
            (2, 0, Grant(5)),
            (3, 1, Grant(4)),
            (4, 0, Release),
            (5, 1, Release),
        ]);
        let permits = Rules {
            capacity: 2,
            liveness: None,
        };
        assert!(check(&events, &permits).violations.is_empty());
    }

    #[test]
    fn a_token_granted_twice_is_caught() {
        let events = history(&[
            (0, 0, Invoke),
            (1, 1, Invoke),
            (2, 0, Grant(7)),
            (3, 1, Grant(7)),
            (4, 0, Release),
            (5, 1, Release),
        ]);
        let permits = Rules {
            capacity: 2,
            liveness: None,
        };
        assert!(matches!(
            only(&check(&events, &permits)),
            Violation::DuplicateToken { .. }
        ));
    }

    #[test]
    fn a_hold_that_outlasts_the_heal_moves_the_liveness_bound_to_its_end() {
        let events = history(&[
            (0, 0, Invoke),
            (5, 0, Grant(1)),
            (10, 1, Cut),
            (20, 1, Heal),
            (21, 1, Invoke),
            (200, 0, Release),
            (210, 1, Grant(2)),
            (220, 1, Release),
        ]);
        let rules = |until| Rules {
            capacity: 1,
            liveness: Some(Liveness {
                healed: ms(20),
                bound: ms(50),
                until: ms(until),
                contention: Contention::default(),
            }),
        };
        assert!(check(&events, &rules(1000)).violations.is_empty());
        // The next grant long after the long hold's release is still a stall.
        let late = history(&[
            (5, 0, Grant(1)),
            (10, 1, Cut),
            (20, 1, Heal),
            (200, 0, Release),
            (400, 1, Grant(2)),
        ]);
        assert!(matches!(
            only(&check(&late, &rules(1000))),
            Violation::NoGrantAfterHeal { first: Some(_), .. }
        ));
        // ... unless the run stopped within the bound of that release.
        assert!(check(&late, &rules(220)).violations.is_empty());
    }

    #[test]
    fn liveness_needs_a_grant_within_the_bound_after_the_heal() {
        let events = history(&[
            (0, 0, Grant(1)),
            (10, 1, Cut),
            (20, 1, Heal),
            (30, 0, Release),
            (100, 1, Grant(2)),
            (110, 1, Release),
        ]);
        let rules = |bound| Rules {
            capacity: 1,
            liveness: Some(Liveness {
                healed: ms(20),
                bound: ms(bound),
                until: ms(1000),
                contention: Contention::default(),
            }),
        };
        assert!(check(&events, &rules(80)).violations.is_empty());
        assert!(matches!(
            only(&check(&events, &rules(50))),
            Violation::NoGrantAfterHeal { first: Some(_), .. }
        ));
        let silent = &events[..4];
        assert!(matches!(
            only(&check(silent, &rules(80))),
            Violation::NoGrantAfterHeal { first: None, .. }
        ));
    }

    #[test]
    fn the_time_the_machine_was_starved_is_not_counted_against_the_bound() {
        let events = history(&[
            (0, 0, Grant(1)),
            (10, 1, Cut),
            (20, 1, Heal),
            (30, 0, Release),
            (100, 1, Grant(2)),
            (110, 1, Release),
        ]);
        // The bound runs from the release of the hold that outlasted the heal (30 ms):
        // the grant took 70 ms, the bound 50 ms.
        let rules = |readings: &[(u64, u64)]| Rules {
            capacity: 1,
            liveness: Some(Liveness {
                healed: ms(20),
                bound: ms(50),
                until: ms(1000),
                contention: Contention::from_readings(
                    &readings
                        .iter()
                        .map(|&(at, stalled)| (ms(at), ms(stalled)))
                        .collect::<Vec<_>>(),
                ),
            }),
        };
        // Starved 40 ms within the window: the grant took 30 ms of CPU-available time.
        assert!(check(&events, &rules(&[(35, 0), (95, 40)]))
            .violations
            .is_empty());
        // Starved only 10 ms: still 10 ms late.
        assert!(matches!(
            only(&check(&events, &rules(&[(35, 0), (95, 10)]))),
            Violation::NoGrantAfterHeal { starved, .. } if *starved == ms(10)
        ));
        // Starvation outside the window excuses nothing.
        assert!(matches!(
            only(&check(&events, &rules(&[(0, 0), (15, 500), (101, 500)]))),
            Violation::NoGrantAfterHeal { .. }
        ));
        // A grant that never comes is late once the run outlasts the bound and the
        // starved time.
        assert!(matches!(
            only(&check(&events[..4], &rules(&[(30, 0), (30, 900)]))),
            Violation::NoGrantAfterHeal { first: None, .. }
        ));
        // One whose run (to 1,000 ms) ends before the bound and the starved time have
        // passed (30 + 50 + 990 ms) shows nothing late.
        assert!(check(&events[..4], &rules(&[(30, 0), (1000, 990)]))
            .violations
            .is_empty());
    }

    #[test]
    fn a_history_never_granted_is_inconclusive_only_when_starvation_excused_it() {
        // A cut and its heal at 200 ms; nothing granted until the run's end (1,000 ms).
        let events = history(&[(100, 0, Invoke), (150, 0, Cut), (200, 0, Heal)]);
        let rules = |stalled: Option<u64>| Rules {
            capacity: 1,
            liveness: stalled.map(|stalled| Liveness {
                healed: ms(200),
                bound: ms(100),
                until: ms(1000),
                contention: Contention::from_readings(&[(ms(200), ms(0)), (ms(1000), ms(stalled))]),
            }),
        };
        let never = |rules: &Rules| {
            let verdict = check(&events, rules);
            (
                verdict.violations.len(),
                never_granted("never owned".to_owned(), &verdict, rules),
            )
        };
        // Without a liveness requirement (no fault): a violation.
        assert!(matches!(never(&rules(None)), (0, Fail::Violated(_))));
        // 800 ms without a grant against a 100 ms bound, 100 ms of it starved: the
        // liveness rule is violated, and so is the case.
        assert!(matches!(never(&rules(Some(100))), (1, Fail::Violated(_))));
        // 750 ms of it starved: the run could show no grant late, nor one missing.
        match never(&rules(Some(750))) {
            (
                0,
                Fail::Starved {
                    starved,
                    bound,
                    why,
                },
            ) => {
                assert_eq!((starved, bound), (ms(750), ms(100)));
                assert!(why.starts_with("never owned, with no grant"), "{why}");
            }
            (violations, other) => panic!("not starved ({violations} violations): {other:?}"),
        }
        // A heal too close to the run's end to require a grant: nothing excused by
        // starvation, so a history never granted is a violation.
        let late = Rules {
            capacity: 1,
            liveness: Some(Liveness {
                healed: ms(950),
                ..rules(Some(750)).liveness.unwrap()
            }),
        };
        assert!(matches!(never(&late), (0, Fail::Violated(_))));
    }

    #[test]
    fn a_grant_while_holding_is_malformed() {
        let events = history(&[(0, 0, Grant(1)), (1, 0, Grant(2)), (2, 0, Release)]);
        assert!(check(&events, &LOCK)
            .violations
            .iter()
            .any(|v| matches!(v, Violation::Malformed(_))));
    }

    #[test]
    fn the_recorder_keeps_time_order() {
        let recorder = Recorder::new();
        recorder.record(0, Invoke);
        recorder.record(1, Grant(3));
        let events = recorder.events();
        assert_eq!(events.len(), 2);
        assert!(events[0].at <= events[1].at);
        assert_eq!(
            events[1].to_string().split_once(' ').unwrap().1,
            "c1 Grant(3)"
        );
    }
}
