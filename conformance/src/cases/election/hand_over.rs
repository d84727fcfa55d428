//! Handing leadership over ([`Leadership::resign_to`], see
//! [`distsync_core::hand_over`]): to the next candidate, to a named one behind others,
//! on a candidate's request, and with the named successor's session ended by the store
//! part-way.
//!
//! Every case watches the election with a reader that calls `leader()` in a loop while
//! the hand-over runs ([`Watch`]): it records every answer, so a moment without a
//! leader, an old term after a newer one, or the old term after the successor was
//! elected is evidence.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distsync_core::hand_over::{Successor, HAND_OVER_POLL};
use distsync_core::{Coordinator, Election, FencingToken, Leadership, Session, SessionId};
use tokio::time::Instant;

use crate::check::{
    ensure, eventually, lock_vec, ms, violated, within, within_check, Bounded, Check, Context,
    Holds, Task, PROMPT,
};
use crate::harness::Harness;

/// How long the candidates ahead of a named successor get to step back: a few polls
/// of the hand-over record plus prompt round trips.
fn step_back_within() -> Duration {
    HAND_OVER_POLL * 4 + PROMPT
}

/// A waiting candidate: its session and its campaign, running in a task.
struct Waiting {
    who: &'static str,
    session: Session,
    campaign: Task<(Leadership, Instant)>,
}

/// The election of a case: its name, a coordinator, and the leader's election handle.
struct Setup {
    name: String,
    coordinator: Coordinator,
}

impl Setup {
    fn new(h: &Harness) -> Self {
        Self {
            name: h.key("election"),
            coordinator: h.coordinator(),
        }
    }

    async fn election(&self, h: &Harness, who: &str) -> Check<(Session, Arc<dyn Election>)> {
        let session = h
            .session()
            .set_up(format!("opening {who}'s session"))
            .await?;
        let election = self
            .coordinator
            .election(&session, &self.name)
            .ctx(format!("making {who}'s election"))?;
        Ok((session, election))
    }

    /// `who` campaigning unopposed.
    async fn lead(&self, h: &Harness, who: &'static str) -> Check<(Session, Leadership)> {
        let (session, election) = self.election(h, who).await?;
        let leadership = within(
            PROMPT,
            format!("{who} campaigning unopposed"),
            election.campaign(who),
        )
        .await?;
        Ok((session, leadership))
    }

    /// `who` campaigning behind the current line; returns once the store lists it.
    async fn wait_in_line(&self, h: &Harness, who: &'static str) -> Check<Waiting> {
        let (session, election) = self.election(h, who).await?;
        let campaign = Task::spawn(format!("candidate {who}"), async move {
            let leadership = election
                .campaign(who)
                .await
                .ctx(format!("{who} campaigning"))?;
            Ok((leadership, Instant::now()))
        });
        let id = session.id();
        eventually(PROMPT, format!("{who} joining the line"), || async move {
            let line = self
                .coordinator
                .candidates(&self.name)
                .await
                .ctx("listing the candidates")?;
            Ok(line.position(id).map(|_| ()))
        })
        .await?;
        ensure!(
            !campaign.is_finished(),
            "{who} was elected while another candidate led"
        );
        Ok(Waiting {
            who,
            session,
            campaign,
        })
    }

    /// The waiting candidates' sessions, next in line first.
    async fn line(&self) -> Check<Vec<SessionId>> {
        let line = within(
            PROMPT,
            "listing the candidates",
            self.coordinator.candidates(&self.name),
        )
        .await?;
        Ok(line.waiting.iter().map(|c| c.session).collect())
    }
}

/// Checks that `who`, elected after a leader of term `old`, leads in a higher term.
fn elected_above(who: &str, won: &Leadership, old: FencingToken) -> Check<()> {
    ensure!(
        won.term() > old,
        "{who}'s term {} is not above the old leader's {}",
        won.term().0,
        old.0
    );
    Ok(())
}

/// Checks that `waiting` still campaigns (it was not elected too) while `leader` leads.
fn still_waiting(waiting: &Waiting, leader: &str) -> Check<()> {
    ensure!(
        !waiting.campaign.is_finished(),
        "{} was elected too (or stopped campaigning) while {leader} leads",
        waiting.who
    );
    Ok(())
}

/// One answer of `leader()`: when it was read (the call's start) and the term.
#[derive(Clone, Copy, Debug)]
struct Read {
    started: Instant,
    term: Option<FencingToken>,
}

/// A reader calling `leader()` in a loop until stopped.
struct Watch {
    stop: Arc<AtomicBool>,
    reads: Arc<Mutex<Vec<Read>>>,
    task: Task<()>,
}

impl Watch {
    fn start(election: Arc<dyn Election>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(Mutex::new(Vec::new()));
        let task = Task::spawn("the watching reader", {
            let (stop, reads) = (Arc::clone(&stop), Arc::clone(&reads));
            async move {
                while !stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    let leader = within(PROMPT, "reading the leader", election.leader()).await?;
                    lock_vec(&reads).push(Read {
                        started,
                        term: leader.map(|leader| leader.term),
                    });
                    // A sampling pace, not a wait for a condition: the reads go on
                    // until the case stops them.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Ok(())
            }
        });
        Self { stop, reads, task }
    }

    /// Stops the reader and checks what it saw: terms never go back, and the old term
    /// is never read after `elected` (the successor's campaign returned). Returns how
    /// many reads were made and how many saw no leader.
    async fn finish(mut self, old: FencingToken, elected: Instant) -> Check<(usize, usize)> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.join(PROMPT * 2).await?;
        let reads = lock_vec(&self.reads).clone();
        let mut last = FencingToken(0);
        let mut empty = 0;
        for read in &reads {
            match read.term {
                None => empty += 1,
                Some(term) => {
                    ensure!(
                        term >= last,
                        "leader() answered term {} after term {}",
                        term.0,
                        last.0
                    );
                    ensure!(
                        !(term == old && read.started > elected),
                        "leader() still answered the old term {} in a read started {} after \
                         the successor was elected",
                        old.0,
                        ms(read.started - elected)
                    );
                    last = term;
                }
            }
        }
        Ok((reads.len(), empty))
    }
}

/// `election_resign_to_next`: a leader and two candidates; `resign_to(Next)` elects the
/// first candidate (not the second), in a higher term, and the old term is never read
/// once it is elected.
pub(in crate::cases) async fn to_next(h: Harness) -> Check {
    let setup = Setup::new(&h);
    let (_a, leader) = setup.lead(&h, "a").await?;
    let (_w, watcher) = setup.election(&h, "the watcher").await?;
    let mut b = setup.wait_in_line(&h, "b").await?;
    let c = setup.wait_in_line(&h, "c").await?;
    let old = leader.term();
    let watch = Watch::start(watcher);
    let handed = within(PROMPT, "a handing over to the next candidate", async {
        leader
            .resign_to(Successor::Next, PROMPT)
            .await
            .map_err(Into::into)
    })
    .await?;
    ensure!(
        handed.to.session == b.session.id(),
        "resign_to(Next) named {} rather than b (session {})",
        handed.to,
        b.session.id()
    );
    let (won, elected) = b.campaign.join(PROMPT).await?;
    let (reads, _) = watch.finish(old, elected).await?;
    elected_above("b", &won, old)?;
    still_waiting(&c, "b")?;
    let term = won.term();
    won.resign().bounded("b resigning").await?;
    Ok(Holds::new(format!(
        "b elected in term {} after a's {}; c still waiting; {reads} leader() reads in order",
        term.0, old.0
    )))
}

/// `election_hand_over_no_gap`: five hand-overs to the next candidate, with a reader
/// calling `leader()` throughout: it never answers "no leader".
pub(in crate::cases) async fn no_gap(h: Harness) -> Check {
    const ROUNDS: usize = 5;
    let setup = Setup::new(&h);
    let (_a, mut leader) = setup.lead(&h, "a").await?;
    let (_w, watcher) = setup.election(&h, "the watcher").await?;
    let watch = Watch::start(watcher);
    let first = leader.term();
    let mut last_elected = Instant::now();
    for _ in 0..ROUNDS {
        let mut next = setup.wait_in_line(&h, "next").await?;
        within(PROMPT, "handing over to the next candidate", async {
            leader
                .resign_to(Successor::Next, PROMPT)
                .await
                .map_err(Into::into)
        })
        .await?;
        let (won, elected) = next.campaign.join(PROMPT).await?;
        leader = won;
        last_elected = elected;
    }
    let last = leader.term();
    let (reads, empty) = watch.finish(first, last_elected).await?;
    leader.resign().bounded("the last leader resigning").await?;
    ensure!(
        empty == 0,
        "leader() answered \"no leader\" {empty} times out of {reads} during {ROUNDS} hand-overs"
    );
    Ok(Holds::new(format!(
        "{ROUNDS} hand-overs (terms {} to {}), {reads} leader() reads, never without a leader",
        first.0, last.0
    )))
}

/// `election_resign_to_named`: a leader and three candidates; handing over to the last
/// one elects it (not those ahead of it), and the two that stepped back still
/// campaign and lead afterwards, one after the other.
pub(in crate::cases) async fn to_named(h: Harness) -> Check {
    let setup = Setup::new(&h);
    let (_a, leader) = setup.lead(&h, "a").await?;
    let (_w, watcher) = setup.election(&h, "the watcher").await?;
    let b = setup.wait_in_line(&h, "b").await?;
    let c = setup.wait_in_line(&h, "c").await?;
    let mut d = setup.wait_in_line(&h, "d").await?;
    let old = leader.term();
    let watch = Watch::start(watcher);
    let started = Instant::now();
    let handed = within(step_back_within() + PROMPT, "a handing over to d", async {
        leader
            .resign_to(Successor::Candidate(d.session.id()), step_back_within())
            .await
            .map_err(Into::into)
    })
    .await?;
    ensure!(
        handed.to.session == d.session.id(),
        "the hand-over went to {} rather than d",
        handed.to
    );
    let (won, elected) = d.campaign.join(PROMPT).await?;
    let took = elected - started;
    let (reads, _) = watch.finish(old, elected).await?;
    elected_above("d", &won, old)?;
    for waiting in [&b, &c] {
        still_waiting(waiting, "d")?;
    }
    let (b_id, c_id) = (b.session.id(), c.session.id());
    let line = eventually(
        step_back_within(),
        "b and c campaigning again behind d",
        || async {
            let line = setup.line().await?;
            Ok((line.len() == 2 && line.contains(&b_id) && line.contains(&c_id)).then_some(line))
        },
    )
    .await?;
    // The stepped-back candidates lead in turn.
    let mut terms = vec![won.term()];
    won.resign().bounded("d resigning").await?;
    let mut rest = vec![b, c];
    while !rest.is_empty() {
        let next = line[terms.len() - 1];
        let index = rest
            .iter()
            .position(|w| w.session.id() == next)
            .ok_or_else(|| crate::check::Fail::Violated(format!("lost track of {next}")))?;
        let mut waiting = rest.remove(index);
        let (leadership, _) = waiting.campaign.join(PROMPT).await?;
        ensure!(
            leadership.term() > terms[terms.len() - 1],
            "{}'s term {} is not above the previous {}",
            waiting.who,
            leadership.term().0,
            terms[terms.len() - 1].0
        );
        terms.push(leadership.term());
        leadership
            .resign()
            .bounded(format!("{} resigning", waiting.who))
            .await?;
    }
    Ok(Holds::figure(
        format!("d elected {} after the hand-over began", ms(took)),
        format!(
            "b and c stepped back and led afterwards (terms {:?}); {reads} leader() reads in order",
            terms.iter().map(|t| t.0).collect::<Vec<_>>()
        ),
    ))
}

/// `election_prefer_request`: a candidate asks to be preferred; the leader sees the
/// request (naming it, for its term) within one poll interval, and handing over to it
/// elects it ahead of the candidate in front of it.
pub(in crate::cases) async fn prefer(h: Harness) -> Check {
    let setup = Setup::new(&h);
    let (_a, leader) = setup.lead(&h, "a").await?;
    let b = setup.wait_in_line(&h, "b").await?;
    let mut c = setup.wait_in_line(&h, "c").await?;
    let asked_at = Instant::now();
    let asked = within(
        PROMPT,
        "c asking to be preferred",
        setup.coordinator.prefer(&setup.name, c.session.id()),
    )
    .await?;
    ensure!(
        asked.is_some_and(|asked| asked.term == leader.term()),
        "prefer() answered {asked:?} while a leads in term {}",
        leader.term().0
    );
    let seen = within(
        HAND_OVER_POLL + PROMPT,
        "a seeing the preference request",
        leader.preference_requested(),
    )
    .await?;
    let took = asked_at.elapsed();
    ensure!(
        seen.candidate == c.session.id() && seen.term == leader.term(),
        "a saw {seen:?}, not c's request (session {}) for term {}",
        c.session.id(),
        leader.term().0
    );
    let old = leader.term();
    within_check(step_back_within() + PROMPT, "a handing over to c", async {
        leader
            .resign_to(Successor::Candidate(seen.candidate), step_back_within())
            .await
            .map_err(|failed| crate::check::Fail::Violated(failed.to_string()))
    })
    .await?;
    let (won, _) = c.campaign.join(PROMPT).await?;
    elected_above("c", &won, old)?;
    still_waiting(&b, "c")?;
    // A request is for the leader it was made to: c's leadership sees none.
    let quiet = tokio::time::timeout(HAND_OVER_POLL * 3, won.preference_requested()).await;
    if let Ok(request) = quiet {
        return violated(format!(
            "c's new term {} saw the request made to a's term: {request:?}",
            won.term().0
        ));
    }
    won.resign().bounded("c resigning").await?;
    Ok(Holds::figure(
        format!("request seen in {}", ms(took)),
        "the leader saw the candidate's request for its term and handed over to it; the \
         next term saw no request",
    ))
}

/// `election_hand_over_successor_lost`: the named successor's session is ended by the
/// store while the candidate ahead of it steps back. Either the hand-over fails and the
/// leader still leads (its proclaim succeeds, `leader()` names its term, nobody else
/// is elected), or it had resigned and a candidate is elected in a higher term; never
/// two leaders.
pub(in crate::cases) async fn successor_lost(h: Harness) -> Check {
    let setup = Setup::new(&h);
    let (_a, leader) = setup.lead(&h, "a").await?;
    let (_w, watcher) = setup.election(&h, "the watcher").await?;
    let mut b = setup.wait_in_line(&h, "b").await?;
    let c = setup.wait_in_line(&h, "c").await?;
    let old = leader.term();
    let target = c.session.id();
    let mut hand_over = Task::spawn("a handing over to c", async move {
        Ok(leader
            .resign_to(Successor::Candidate(target), step_back_within())
            .await)
    });
    h.end_session(&c.session)
        .bounded("ending c's session in the store")
        .await?;
    let ended = Instant::now();
    let watch = Watch::start(watcher);
    match hand_over.join(step_back_within() + PROMPT).await? {
        Err(failed) => {
            let Some(leadership) = failed.leadership else {
                return violated(format!(
                    "the hand-over failed ({}) without giving the leadership back",
                    failed.error
                ));
            };
            within(
                PROMPT,
                "a proclaiming after the failed hand-over",
                leadership.proclaim("still a"),
            )
            .await?;
            let (reads, empty) = watch.finish(old, Instant::now() + PROMPT).await?;
            ensure!(
                empty == 0,
                "leader() answered \"no leader\" while a kept leading"
            );
            still_waiting(&b, "a")?;
            let detail = format!(
                "the hand-over failed ({}); a kept leading term {}; {reads} leader() reads",
                failed.error, old.0
            );
            leadership.resign().bounded("a resigning").await?;
            let (won, _) = b.campaign.join(PROMPT).await?;
            elected_above("b", &won, old)?;
            won.resign().bounded("b resigning").await?;
            Ok(Holds::new(detail))
        }
        Ok(handed) => {
            // a resigned for c before c's session ended: c's campaign fails or c leads
            // a dead term, and b is elected within the TTL.
            let limit = h.holder_ttl() * 3 + PROMPT;
            let (won, elected) = b.campaign.join(limit).await?;
            let (reads, _) = watch.finish(old, elected).await?;
            elected_above("b", &won, old)?;
            won.resign().bounded("b resigning").await?;
            Ok(Holds::figure(
                format!("b elected {} after c's session ended", ms(elected - ended)),
                format!(
                    "a had resigned for {} before the loss; {reads} leader() reads in order",
                    handed.to
                ),
            ))
        }
    }
}
