//! Staying leader through faults: processes that call [`Coordinator::lead_with`] on one
//! election keep running their work on exactly one of them at a time, whatever
//! happens to the store or to their connection, and a process that lost its term
//! campaigns again by itself.
//!
//! Each contender's work announces, when it starts and when it is dropped, to one
//! [`Terms`] record in the case's process: a start while another contender's work
//! still runs is an overlap, the violation these cases look for. Both contenders live
//! in the case's process, so the record's order is the real order of the works.
//!
//! - [`through_partition`]: the leader is cut off (silent or reset); its work stops
//!   before the other contender's starts, and after the heal it is a candidate again,
//!   elected when the other resigns.
//! - The server group's restart case (`server/restart_lead.rs`) restarts the store
//!   under a leader and a candidate with the same record.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distsync_core::{Coordinator, FencingToken, LeadOptions, Leadership};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::check::{
    ensure, lapsed, lock_vec, ms, partitioned_client_with_timeouts, secs, set_up, violated,
    within_check, Check, Fail, Holds, Task, PROMPT,
};
use crate::faults::PartitionMode;
use crate::harness::Harness;

/// The first and longest pause of the contenders' campaign retries: short, so a case
/// sees a re-campaign soon after the store is back.
const RETRY: (Duration, Duration) = (Duration::from_millis(50), Duration::from_millis(500));

/// The cut-off client's `timeout=` and `connect_timeout=`.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(1000);

/// Something that happened to a contender's work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// The work of `who` started in `term`.
    Started {
        /// The contender.
        who: &'static str,
        /// Its term's fencing token.
        term: FencingToken,
        /// When.
        at: Instant,
    },
    /// The work of `who` was dropped (its term ended).
    Stopped {
        /// The contender.
        who: &'static str,
        /// When.
        at: Instant,
    },
}

/// The works' record: how many run now, every overlap seen, and every start and stop
/// in order.
pub(crate) struct Terms {
    running: AtomicUsize,
    overlaps: Mutex<Vec<String>>,
    events: mpsc::UnboundedSender<Event>,
}

/// A running work's mark in the [`Terms`]; dropping it (with the work) records the
/// stop.
struct Running {
    terms: Arc<Terms>,
    who: &'static str,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.terms.running.fetch_sub(1, Ordering::SeqCst);
        let _ = self.terms.events.send(Event::Stopped {
            who: self.who,
            at: Instant::now(),
        });
    }
}

impl Terms {
    /// An empty record and the stream of its events.
    pub(crate) fn new() -> (Arc<Self>, mpsc::UnboundedReceiver<Event>) {
        let (events, receiver) = mpsc::unbounded_channel();
        let terms = Self {
            running: AtomicUsize::new(0),
            overlaps: Mutex::new(Vec::new()),
            events,
        };
        (Arc::new(terms), receiver)
    }

    fn start(self: &Arc<Self>, who: &'static str, term: FencingToken) -> Running {
        let others = self.running.fetch_add(1, Ordering::SeqCst);
        if others > 0 {
            lock_vec(&self.overlaps).push(format!(
                "{who}'s work started in term {term} while {others} other work(s) still ran"
            ));
        }
        let _ = self.events.send(Event::Started {
            who,
            term,
            at: Instant::now(),
        });
        Running {
            terms: Arc::clone(self),
            who,
        }
    }

    /// Fails with every overlap seen so far.
    pub(crate) fn no_overlap(&self) -> Check<()> {
        let overlaps = lock_vec(&self.overlaps);
        if overlaps.is_empty() {
            Ok(())
        } else {
            violated(format!("two leaders at once: {}", overlaps.join("; ")))
        }
    }

    /// How many works run now.
    pub(crate) fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }
}

/// The options of every contender: sessions of `ttl`, quick campaign retries.
pub(crate) fn options(ttl: Duration) -> LeadOptions {
    LeadOptions::default()
        .with_ttl(ttl)
        .with_retry(RETRY.0, RETRY.1)
}

/// `who` leading `election` through `coordinator` until the task is dropped; its work
/// marks itself in `terms` and runs until its term ends. `lead_with` returning at all
/// is a violation: a contender whose work never ends campaigns for ever.
pub(crate) fn contender(
    coordinator: Coordinator,
    who: &'static str,
    election: String,
    options: LeadOptions,
    terms: &Arc<Terms>,
) -> Task<()> {
    let terms = Arc::clone(terms);
    Task::spawn(format!("{who} leading"), async move {
        let outcome = coordinator
            .lead_with(&election, who, &options, |leadership: Arc<Leadership>| {
                let terms = Arc::clone(&terms);
                async move {
                    let _running = terms.start(who, leadership.term());
                    std::future::pending::<()>().await;
                    Ok(())
                }
            })
            .await;
        violated(format!(
            "{who}'s lead_with returned ({outcome:?}) instead of campaigning again"
        ))
    })
}

/// The next event within `limit`.
pub(crate) async fn next_event(
    events: &mut mpsc::UnboundedReceiver<Event>,
    limit: Duration,
    waiting_for: &str,
) -> Check<Event> {
    within_check(limit, format!("waiting for {waiting_for}"), async {
        match events.recv().await {
            Some(event) => Ok(event),
            None => violated("the works' record closed"),
        }
    })
    .await
}

/// Expects `event` to be `who`'s start; returns its term and instant.
pub(crate) fn started(event: Event, who: &str) -> Check<(FencingToken, Instant)> {
    match event {
        Event::Started { who: w, term, at } if w == who => Ok((term, at)),
        other => violated(format!("expected {who}'s work to start, saw {other:?}")),
    }
}

/// Expects `event` to be `who`'s stop; returns its instant.
pub(crate) fn stopped(event: Event, who: &str) -> Check<Instant> {
    match event {
        Event::Stopped { who: w, at } if w == who => Ok(at),
        other => violated(format!("expected {who}'s work to stop, saw {other:?}")),
    }
}

/// Fails when `task` (a contender) has returned: it must still be campaigning or
/// leading.
pub(crate) async fn still_campaigning(task: &mut Task<()>) -> Check<()> {
    if task.is_finished() {
        task.join(PROMPT).await?;
        return violated(format!("{} ended", task.what()));
    }
    Ok(())
}

/// The partition case: A leads through a client the harness cuts off (`mode`), B
/// campaigns through a healthy one. A's work stops before B's starts; after the heal A
/// is a candidate again, by itself, and leads once B resigns, in a higher term.
pub(crate) async fn through_partition(h: Harness, mode: PartitionMode) -> Check {
    let ttl = h.fault_ttl();
    // A leading before any fault, with B campaigning beside it for a settle period, is
    // set-up: a store or a machine too slow to keep A's session says nothing of the
    // partition, so a try whose A stops leading starts again, on an election of its own.
    // B starting while A still leads is an overlap, a violation in any try.
    let (partition, terms, mut events, mut lead_a, mut lead_b, first) =
        set_up("A leading before the cut", |attempt| {
            let h = &h;
            async move {
                let election = h.key(&format!("stay-leader-{attempt}"));
                // Bounded requests, so that a campaign or session grant sent into the
                // partition fails and is retried rather than hanging on a connection the
                // cut left open.
                let partition =
                    partitioned_client_with_timeouts(h, REQUEST_TIMEOUT, REQUEST_TIMEOUT).await?;
                let (terms, mut events) = Terms::new();
                let a = Coordinator::from_arc(partition.backend());
                let lead_a = contender(a, "A", election.clone(), options(ttl), &terms);
                let led = next_event(&mut events, PROMPT, "A to lead")
                    .await
                    .map_err(lapsed)?;
                let (first, _) = started(led, "A")?;
                let b = Coordinator::from_arc(Arc::clone(h.backend()));
                let lead_b = contender(b, "B", election, options(ttl), &terms);
                match tokio::time::timeout(h.settle(), events.recv()).await {
                    Ok(Some(Event::Stopped { who: "A", .. })) => {
                        return Err(Fail::SetUpLapsed(
                            "A stopped leading before any fault, with no other leader".to_owned(),
                        ))
                    }
                    Ok(Some(event)) => {
                        return violated(format!("while A led, before any fault: {event:?}"))
                    }
                    _ => {}
                }
                Ok((partition, terms, events, lead_a, lead_b, first))
            }
        })
        .await?;

    partition.set(mode);
    let cut = Instant::now();
    let grant = ttl * 3 + PROMPT * 2;
    let a_stopped = stopped(
        next_event(&mut events, grant, "A's work to stop").await?,
        "A",
    )?;
    let (b_term, b_started) = started(next_event(&mut events, grant, "B to lead").await?, "B")?;
    terms.no_overlap()?;
    ensure!(
        b_term > first,
        "B's term {b_term} is not above A's earlier term {first}"
    );

    partition.set(PartitionMode::Forward);
    still_campaigning(&mut lead_a).await?;
    still_campaigning(&mut lead_b).await?;
    // B steps down (its lead_with dropped: work dropped, leadership resigned); A,
    // campaigning again since its loss, takes over.
    drop(lead_b);
    let resigned = Instant::now();
    stopped(
        next_event(&mut events, PROMPT, "B's work to stop").await?,
        "B",
    )?;
    let again = ttl * 2 + PROMPT * 2;
    let (second, a_again) = started(
        next_event(&mut events, again, "A to lead again").await?,
        "A",
    )?;
    terms.no_overlap()?;
    ensure!(
        second > b_term,
        "A's new term {second} is not above B's term {b_term}"
    );
    ensure!(terms.running() == 1, "{} works run", terms.running());
    still_campaigning(&mut lead_a).await?;
    drop(lead_a);
    drop(partition);
    Ok(Holds::figure(
        format!(
            "A stopped {} after the cut, B led {} later; A led again {} after B resigned",
            secs(a_stopped - cut),
            ms(b_started - a_stopped),
            ms(a_again - resigned)
        ),
        format!(
            "{} of the leader (TTL {ttl:?}): never two works at once; terms {first} < {b_term} < \
             {second}",
            mode.describe()
        ),
    ))
}
