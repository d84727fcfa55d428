//! Election cases: one leader at a time, blocking campaigns, proclaim by a non-leader,
//! hand-over on resign, `leader()`, and `observe()`.

mod hand_over;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use distsync_core::{Bytes, Capabilities, Error, FencingToken, LeaderInfo, Leadership};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::scenario::{go_interop, partition, stay_leader, Held};
use super::{boxed, FENCING, PARTITION};
use crate::case::{Case, Claim, Group, Need};
use crate::check::{
    ensure, join_all, lock_vec, ms, secs, strictly_increasing, violated, within, within_check,
    Bounded, Check, Context, Fail, Holds, Task, LONG, PROMPT,
};
use crate::faults::{HoldKind, Hook, PartitionMode};
use crate::harness::Harness;

/// A hand-over leaves no moment without a leader ([`Capabilities::gapless_hand_over`]).
const GAPLESS: Claim = Claim::Flag("gapless_hand_over", |c: &Capabilities| c.gapless_hand_over);

/// The election cases, in matrix order.
pub(super) const CASES: &[Case] = &[
    Case {
        id: "election_one_leader",
        group: Group::Election,
        guarantee: "one leader at a time",
        needs: &[Need::Election],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(one_leader(h)),
    },
    Case {
        id: "election_leader_crash",
        group: Group::Election,
        guarantee: "a leader killed (SIGKILL) in a child process is succeeded",
        needs: &[Need::Election],
        claim: Claim::Offered,
        hooks: &[Hook::ChildHolder],
        run: |h| boxed(leader_crash(h)),
    },
    Case {
        id: "election_terms_increase",
        group: Group::Election,
        guarantee: "terms (fencing tokens) strictly increase",
        needs: &[Need::Election],
        claim: FENCING,
        hooks: &[],
        run: |h| boxed(terms_increase(h)),
    },
    Case {
        id: "election_campaign_blocks",
        group: Group::Election,
        guarantee: "campaign blocks until elected",
        needs: &[Need::Election],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(campaign_blocks(h)),
    },
    Case {
        id: "election_resign_hands_over",
        group: Group::Election,
        guarantee: "resign hands over to the next candidate",
        needs: &[Need::Election],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(resign_hands_over(h)),
    },
    Case {
        id: "election_proclaim_not_leader",
        group: Group::Election,
        guarantee: "proclaim after losing leadership is NotLeader",
        needs: &[Need::Election],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(proclaim_not_leader(h)),
    },
    Case {
        id: "election_leader_value_term",
        group: Group::Election,
        guarantee: "leader() returns value and term",
        needs: &[Need::Election],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(leader_value_and_term(h)),
    },
    Case {
        id: "election_observe_in_order",
        group: Group::Election,
        guarantee: "observe() sees every change in order",
        needs: &[Need::Election],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(observe_in_order(h)),
    },
    Case {
        id: "election_partition_silent",
        group: Group::Election,
        guarantee: "a leader cut off (silent partition) sees lost() before anyone else is granted",
        needs: &[Need::Election],
        claim: PARTITION,
        hooks: &[Hook::Partition],
        run: |h| {
            boxed(partition::cut_off_holder(
                h,
                Held::Leadership,
                PartitionMode::Silent,
            ))
        },
    },
    Case {
        id: "election_partition_reset",
        group: Group::Election,
        guarantee: "a leader cut off (connections reset) sees lost() before anyone else is granted",
        needs: &[Need::Election],
        claim: PARTITION,
        hooks: &[Hook::Partition],
        run: |h| {
            boxed(partition::cut_off_holder(
                h,
                Held::Leadership,
                PartitionMode::Reset,
            ))
        },
    },
    Case {
        id: "election_lead_partition",
        group: Group::Election,
        guarantee: "Coordinator::lead through a silent partition and heal: the cut-off leader's \
                    work stops before the next starts, and it campaigns again by itself",
        needs: &[Need::Election],
        claim: PARTITION,
        hooks: &[Hook::Partition],
        run: |h| boxed(stay_leader::through_partition(h, PartitionMode::Silent)),
    },
    Case {
        id: "election_interop_go",
        group: Group::Election,
        guarantee: "interoperates with etcd's Go concurrency.Election: one leader, proclamations seen across languages",
        needs: &[Need::Election],
        claim: Claim::Offered,
        hooks: &[Hook::GoPeer],
        run: |h| boxed(go_interop::election(h)),
    },
    Case {
        id: "election_resign_to_next",
        group: Group::Election,
        guarantee: "resign_to(Next) elects the next candidate in a higher term; the old term \
                    is never read once it is elected",
        needs: &[Need::Election, Need::HandOver],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(hand_over::to_next(h)),
    },
    Case {
        id: "election_resign_to_named",
        group: Group::Election,
        guarantee: "resign_to a candidate behind others elects it; those ahead step back and \
                    lead later",
        needs: &[Need::Election, Need::HandOver],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(hand_over::to_named(h)),
    },
    Case {
        id: "election_hand_over_no_gap",
        group: Group::Election,
        guarantee: "a hand-over leaves no moment without a leader (leader() read throughout)",
        needs: &[Need::Election, Need::HandOver],
        claim: GAPLESS,
        hooks: &[],
        run: |h| boxed(hand_over::no_gap(h)),
    },
    Case {
        id: "election_prefer_request",
        group: Group::Election,
        guarantee: "a candidate's preference request is seen by the leader of that term only, \
                    and handing over to it elects it",
        needs: &[Need::Election, Need::HandOver],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(hand_over::prefer(h)),
    },
    Case {
        id: "election_hand_over_successor_lost",
        group: Group::Election,
        guarantee: "the named successor's session ended by the store during a hand-over: the \
                    leader keeps leading, or the next is elected; never two leaders",
        needs: &[Need::Election, Need::HandOver],
        claim: Claim::Offered,
        hooks: &[Hook::KillSession],
        run: |h| boxed(hand_over::successor_lost(h)),
    },
];

/// One leader at a time: 5 candidates, each with its own session, campaign 6 times
/// each; a leader checks an overlap detector, yields, and resigns.
async fn one_leader(h: Harness) -> Check {
    const CANDIDATES: usize = 5;
    const TERMS: usize = 6;
    let name = h.name("election").ctx("naming the election")?;
    let leaders = Arc::new(AtomicUsize::new(0));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    let started = Instant::now();
    for i in 0..CANDIDATES {
        let session = h.session().set_up("opening a session").await?;
        let election = h
            .backend()
            .election(&session, name.clone())
            .ctx("making an election")?;
        let (leaders, overlaps) = (leaders.clone(), overlaps.clone());
        tasks.push(Task::spawn(format!("candidate {i}"), async move {
            for term in 0..TERMS {
                let value = Bytes::from(format!("candidate-{i}-{term}"));
                let leadership = election
                    .campaign(value)
                    .await
                    .ctx(format!("candidate {i} campaigning"))?;
                if leaders.fetch_add(1, Ordering::SeqCst) != 0 {
                    overlaps.fetch_add(1, Ordering::SeqCst);
                }
                tokio::task::yield_now().await;
                leaders.fetch_sub(1, Ordering::SeqCst);
                leadership
                    .resign()
                    .bounded(format!("candidate {i} resigning"))
                    .await?;
            }
            drop(session);
            Ok(())
        }));
    }
    join_all(&mut tasks, LONG).await?;
    let terms = CANDIDATES * TERMS;
    let overlaps = overlaps.load(Ordering::SeqCst);
    ensure!(
        overlaps == 0,
        "{overlaps} of {terms} elections found another leader still leading"
    );
    Ok(Holds::figure(
        format!("{terms} terms in {}", ms(started.elapsed())),
        format!("{CANDIDATES} candidates x {TERMS} terms: never two leaders"),
    ))
}

/// Leadership terms strictly increase: 3 candidates campaign 8 times each and record
/// their term while leading.
async fn terms_increase(h: Harness) -> Check {
    const CANDIDATES: usize = 3;
    const TERMS: usize = 8;
    let name = h.name("election").ctx("naming the election")?;
    let terms = Arc::new(Mutex::new(Vec::<(usize, FencingToken)>::new()));
    let mut tasks = Vec::new();
    for i in 0..CANDIDATES {
        let session = h.session().set_up("opening a session").await?;
        let election = h
            .backend()
            .election(&session, name.clone())
            .ctx("making an election")?;
        let terms = terms.clone();
        tasks.push(Task::spawn(format!("candidate {i}"), async move {
            for _ in 0..TERMS {
                let leadership = election
                    .campaign(format!("candidate-{i}"))
                    .await
                    .ctx(format!("candidate {i} campaigning"))?;
                lock_vec(&terms).push((i, leadership.term()));
                leadership
                    .resign()
                    .bounded(format!("candidate {i} resigning"))
                    .await?;
            }
            drop(session);
            Ok(())
        }));
    }
    join_all(&mut tasks, LONG).await?;
    let terms = std::mem::take(&mut *lock_vec(&terms));
    strictly_increasing(&terms)?;
    Ok(Holds::figure(
        format!("{} terms increasing", terms.len()),
        "every new leadership's term is greater than the previous one's",
    ))
}

/// `campaign` blocks while another candidate leads, and returns once it resigns.
async fn campaign_blocks(h: Harness) -> Check {
    let name = h.name("election").ctx("naming the election")?;
    let a = h.session().set_up("opening session A").await?;
    let b = h.session().set_up("opening session B").await?;
    let ea = h
        .backend()
        .election(&a, name.clone())
        .ctx("making election A")?;
    let eb = h.backend().election(&b, name).ctx("making election B")?;
    let lead_a = within(
        PROMPT,
        "A campaigning unopposed",
        ea.campaign(Bytes::from_static(b"a")),
    )
    .await?;
    let mut waiter = Task::spawn("candidate B", async move {
        let leadership = eb
            .campaign(Bytes::from_static(b"b"))
            .await
            .ctx("B campaigning")?;
        Ok((leadership, Instant::now()))
    });
    waiter.ensure_blocked(h.settle(), "A leads").await?;
    let current = within(PROMPT, "leader() while A leads", ea.leader()).await?;
    ensure!(
        current.as_ref().map(|l| l.value.as_ref()) == Some(&b"a"[..]),
        "while A leads and B campaigns, leader() is {current:?}"
    );
    let term_a = lead_a.term();
    let resigned = Instant::now();
    lead_a.resign().bounded("A resigning").await?;
    let (lead_b, elected_at) = waiter.join(PROMPT).await?;
    ensure!(
        lead_b.term() > term_a,
        "B's term {} is not above A's {term_a}",
        lead_b.term()
    );
    lead_b.resign().bounded("B resigning").await?;
    Ok(Holds::figure(
        format!(
            "elected {} after the resign",
            ms(elected_at.saturating_duration_since(resigned))
        ),
        "B's campaign stayed blocked while A led and returned once A resigned",
    ))
}

/// Resign hands over to the next candidate: A leads, B and C wait; A resigns; exactly
/// one of B and C becomes leader promptly while the other stays blocked; `leader()`
/// names the winner with a higher term; when it resigns the last one is elected.
async fn resign_hands_over(h: Harness) -> Check {
    let name = h.name("election").ctx("naming the election")?;
    let a = h.session().set_up("opening session A").await?;
    let ea = h
        .backend()
        .election(&a, name.clone())
        .ctx("making election A")?;
    let lead_a = within(
        PROMPT,
        "A campaigning unopposed",
        ea.campaign(Bytes::from_static(b"a")),
    )
    .await?;
    let mut waiters = Vec::new();
    for who in ["b", "c"] {
        let session = h.session().set_up("opening a session").await?;
        let election = h
            .backend()
            .election(&session, name.clone())
            .ctx("making an election")?;
        let waiter = Task::spawn(format!("candidate {who}"), async move {
            let leadership = election
                .campaign(who)
                .await
                .ctx(format!("{who} campaigning"))?;
            Ok((who, leadership, session))
        });
        waiter.ensure_blocked(h.settle(), "A leads").await?;
        waiters.push(waiter);
    }
    let term_a = lead_a.term();
    let resigned = Instant::now();
    lead_a.resign().bounded("A resigning").await?;
    let mut c = waiters
        .pop()
        .ok_or_else(|| Fail::Violated("lost track of candidate c".into()))?;
    let mut b = waiters
        .pop()
        .ok_or_else(|| Fail::Violated("lost track of candidate b".into()))?;
    let (won, b_won) = within_check(
        PROMPT,
        "a candidate being elected after A resigned",
        async {
            tokio::select! {
                won = b.wait() => won.map(|won| (won, true)),
                won = c.wait() => won.map(|won| (won, false)),
            }
        },
    )
    .await?;
    let (winner, leadership, _session) = won;
    let mut loser = if b_won { c } else { b };
    let handover = resigned.elapsed();
    loser
        .ensure_blocked(h.settle(), format!("{winner} leads"))
        .await?;
    let current = within(PROMPT, "leader() after the hand-over", ea.leader()).await?;
    match &current {
        Some(LeaderInfo { value, term, .. })
            if value.as_ref() == winner.as_bytes() && *term == leadership.term() => {}
        other => {
            return violated(format!(
                "{winner} leads with term {} but leader() says {other:?}",
                leadership.term()
            ))
        }
    }
    ensure!(
        leadership.term() > term_a,
        "the new leader's term {} is not above A's {term_a}",
        leadership.term()
    );
    leadership.resign().bounded("the winner resigning").await?;
    let (last, last_leadership, _last_session) = loser.join(PROMPT).await?;
    ensure!(
        last_leadership.term() > term_a,
        "{last}'s term {} is not above A's {term_a}",
        last_leadership.term()
    );
    last_leadership
        .resign()
        .bounded("the last candidate resigning")
        .await?;
    Ok(Holds::figure(
        format!("next leader in {}", ms(handover)),
        format!("A resigned -> {winner} elected (the other kept waiting) -> {last} elected"),
    ))
}

/// A leader that lost its leadership cannot proclaim: after the store ends its session
/// (before and after another candidate wins) and after its own session is closed,
/// `proclaim` fails with `NotLeader` and the leader's value is untouched.
async fn proclaim_not_leader(h: Harness) -> Check {
    let name = h.name("election").ctx("naming the election")?;
    let a = h.fault_session().set_up("opening session A").await?;
    let ea = h
        .backend()
        .election(&a, name.clone())
        .ctx("making election A")?;
    let lead_a = within(
        PROMPT,
        "A campaigning",
        ea.campaign(Bytes::from_static(b"a1")),
    )
    .await?;
    within(
        PROMPT,
        "A proclaiming while leader",
        lead_a.proclaim(Bytes::from_static(b"a2")),
    )
    .await?;
    let seen = within(PROMPT, "leader() after the proclaim", ea.leader()).await?;
    ensure!(
        seen.as_ref().map(|l| l.value.as_ref()) == Some(&b"a2"[..]),
        "after proclaiming a2, leader() is {seen:?}"
    );
    h.end_session(&a)
        .bounded("ending A's session from the store side")
        .await?;
    expect_not_leader(&lead_a, "right after the store ended A's session").await?;

    let b = h.session().set_up("opening session B").await?;
    let eb = h.backend().election(&b, name).ctx("making election B")?;
    let lead_b = within(
        PROMPT,
        "B campaigning after A's session ended",
        eb.campaign(Bytes::from_static(b"b")),
    )
    .await?;
    expect_not_leader(&lead_a, "while B leads").await?;
    let seen = within(PROMPT, "leader() while B leads", eb.leader()).await?;
    ensure!(
        seen.as_ref().map(|l| l.value.as_ref()) == Some(&b"b"[..]),
        "A's refused proclaim still changed the value: leader() is {seen:?}"
    );

    within(PROMPT, "closing B's session", b.close()).await?;
    expect_not_leader(&lead_b, "after B closed its session").await?;
    Ok(Holds::new(
        "NotLeader after a store-side revoke (before and after a new leader) and after close()",
    ))
}

async fn expect_not_leader(leadership: &Leadership, when: &str) -> Check<()> {
    match tokio::time::timeout(PROMPT, leadership.proclaim(Bytes::from_static(b"stale"))).await {
        Ok(Err(Error::NotLeader)) => Ok(()),
        Ok(Ok(())) => violated(format!("a lost leadership's proclaim succeeded {when}")),
        Ok(Err(other)) => violated(format!(
            "proclaim {when} failed with {other}, not NotLeader"
        )),
        Err(_) => violated(format!("proclaim {when} did not return within {PROMPT:?}")),
    }
}

/// `leader()` returns the leader's value and term: none before anyone campaigns, the
/// leader's value and term, the proclaimed value with the same term, none after the
/// resign, and a higher term for the next leader.
async fn leader_value_and_term(h: Harness) -> Check {
    let name = h.name("election").ctx("naming the election")?;
    let a = h.session().set_up("opening session A").await?;
    let b = h.session().set_up("opening session B").await?;
    let ea = h
        .backend()
        .election(&a, name.clone())
        .ctx("making election A")?;
    let eb = h.backend().election(&b, name).ctx("making election B")?;
    let nobody = within(PROMPT, "leader() of a fresh election", eb.leader()).await?;
    ensure!(nobody.is_none(), "a fresh election has leader {nobody:?}");
    let lead_a = within(
        PROMPT,
        "A campaigning",
        ea.campaign(Bytes::from_static(b"a")),
    )
    .await?;
    expect_leader(&*eb, b"a", lead_a.term(), "after A was elected").await?;
    within(
        PROMPT,
        "A proclaiming",
        lead_a.proclaim(Bytes::from_static(b"a2")),
    )
    .await?;
    expect_leader(&*eb, b"a2", lead_a.term(), "after A proclaimed a2").await?;
    let term_a = lead_a.term();
    lead_a.resign().bounded("A resigning").await?;
    let after = within(PROMPT, "leader() after A resigned", eb.leader()).await?;
    ensure!(
        after.is_none(),
        "after the only leader resigned, leader() is {after:?}"
    );
    let lead_b = within(
        PROMPT,
        "B campaigning",
        eb.campaign(Bytes::from_static(b"b")),
    )
    .await?;
    expect_leader(&*ea, b"b", lead_b.term(), "after B was elected").await?;
    ensure!(
        lead_b.term() > term_a,
        "B's term {} is not above A's {term_a}",
        lead_b.term()
    );
    lead_b.resign().bounded("B resigning").await?;
    Ok(Holds::new(
        "none / value+term / proclaimed value, same term / none / next term higher",
    ))
}

async fn expect_leader(
    election: &dyn distsync_core::Election,
    value: &[u8],
    term: FencingToken,
    when: &str,
) -> Check<()> {
    let seen = within(PROMPT, format!("leader() {when}"), election.leader()).await?;
    match seen {
        Some(info) if info.value.as_ref() == value && info.term == term => Ok(()),
        other => violated(format!(
            "{when}, leader() is {other:?}; expected value {:?} with term {term}",
            String::from_utf8_lossy(value)
        )),
    }
}

/// `observe()` starts with the current leader and then sees every change in order:
/// three proclaims in a row, the resign, the next leader and its proclaim; terms never
/// decrease and no stale value comes after a newer one. A repeat of the value just
/// seen (same value and term) is tolerated and counted.
async fn observe_in_order(h: Harness) -> Check {
    let name = h.name("election").ctx("naming the election")?;
    let a = h.session().set_up("opening session A").await?;
    let b = h.session().set_up("opening session B").await?;
    let o = h.session().set_up("opening the observer's session").await?;
    let ea = h
        .backend()
        .election(&a, name.clone())
        .ctx("making election A")?;
    let eb = h
        .backend()
        .election(&b, name.clone())
        .ctx("making election B")?;
    let eo = h
        .backend()
        .election(&o, name)
        .ctx("making the observer's election")?;
    let lead_a = within(
        PROMPT,
        "A campaigning",
        ea.campaign(Bytes::from_static(b"a1")),
    )
    .await?;

    let (tx, rx) = mpsc::unbounded_channel();
    let mut stream = eo.observe();
    let _forwarder = Task::spawn("observer", async move {
        while let Some(item) = stream.next().await {
            if tx.send(item).is_err() {
                break;
            }
        }
        Ok(())
    });
    let mut observer = Observer {
        rx,
        seen: Vec::new(),
        last: None,
        repeats: 0,
    };
    let term_a = lead_a.term();
    observer
        .expect(b"a1", term_a, "the current leader first")
        .await?;
    for value in [&b"a2"[..], b"a3", b"a4"] {
        within(
            PROMPT,
            "A proclaiming",
            lead_a.proclaim(Bytes::copy_from_slice(value)),
        )
        .await?;
    }
    for value in [&b"a2"[..], b"a3", b"a4"] {
        observer
            .expect(value, term_a, "A's proclaims, in order")
            .await?;
    }
    lead_a.resign().bounded("A resigning").await?;
    let lead_b = within(
        PROMPT,
        "B campaigning",
        eb.campaign(Bytes::from_static(b"b1")),
    )
    .await?;
    let term_b = lead_b.term();
    observer.expect(b"b1", term_b, "the next leader").await?;
    within(
        PROMPT,
        "B proclaiming",
        lead_b.proclaim(Bytes::from_static(b"b2")),
    )
    .await?;
    observer
        .expect(b"b2", term_b, "the next leader's proclaim")
        .await?;
    ensure!(
        term_b > term_a,
        "B's term {term_b} is not above A's {term_a}"
    );
    tokio::time::sleep(h.settle()).await;
    while let Ok(extra) = observer.rx.try_recv() {
        let extra = extra.ctx("observe() after the last change")?;
        ensure!(
            extra.term == term_b && extra.value.as_ref() == b"b2",
            "after b2 (term {term_b}) observe() yielded {:?} (term {}): stale or spurious",
            String::from_utf8_lossy(&extra.value),
            extra.term
        );
        observer.repeats += 1;
    }
    lead_b.resign().bounded("B resigning").await?;
    Ok(Holds::figure(
        format!("{} changes in order", observer.seen.len()),
        format!(
            "saw {}; {} repeat(s) of the value just seen",
            observer.seen.join(", "),
            observer.repeats
        ),
    ))
}

struct Observer {
    rx: mpsc::UnboundedReceiver<distsync_core::Result<LeaderInfo>>,
    seen: Vec<String>,
    last: Option<(Bytes, FencingToken)>,
    repeats: usize,
}

impl Observer {
    async fn expect(&mut self, value: &[u8], term: FencingToken, what: &str) -> Check<()> {
        let wanted = String::from_utf8_lossy(value).into_owned();
        loop {
            let item = match tokio::time::timeout(PROMPT, self.rx.recv()).await {
                Ok(Some(item)) => item.ctx("observe()")?,
                Ok(None) => return violated(format!("observe() ended before {what} ({wanted}); saw {:?}", self.seen)),
                Err(_) => {
                    return violated(format!(
                        "observe() yielded nothing for {PROMPT:?} while waiting for {what} ({wanted}); saw {:?}",
                        self.seen
                    ))
                }
            };
            let got = String::from_utf8_lossy(&item.value).into_owned();
            if item.value.as_ref() == value && item.term == term {
                self.seen.push(got);
                self.last = Some((item.value, item.term));
                return Ok(());
            }
            if self.last.as_ref() == Some(&(item.value.clone(), item.term)) {
                self.repeats += 1;
                continue;
            }
            return violated(format!(
                "waiting for {what} ({wanted}, term {term}), observe() yielded {got} (term {}) after {:?}",
                item.term, self.seen
            ));
        }
    }
}

/// A leader in a child process killed with SIGKILL (it resigns nothing): its election is
/// won by the next candidate with a higher term, and `leader()` then names the new
/// leader. The figure is the time from the kill to the election: about one session
/// TTL where the store waits for the lease to expire.
async fn leader_crash(h: Harness) -> Check {
    let mut holder = h
        .spawn_holder(HoldKind::Leadership, "election")
        .await
        .set_up_ctx("starting a leader in a child process")?;
    let name = h.name("election").ctx("naming the election")?;
    let session = h
        .session()
        .set_up("opening the candidate's session")
        .await?;
    let election = h
        .backend()
        .election(&session, name)
        .ctx("making an election")?;
    let current = within(PROMPT, "leader() while the child leads", election.leader()).await?;
    ensure!(
        current.as_ref().map(|leader| leader.term) == Some(holder.token()),
        "while {} leads with term {}, leader() says {current:?}",
        holder.describe(),
        holder.token()
    );
    let candidate = Task::spawn("the candidate", async move {
        let leadership = election
            .campaign(Bytes::from_static(b"next"))
            .await
            .ctx("the candidate campaigning")?;
        Ok((leadership, Instant::now(), election))
    });
    candidate
        .ensure_blocked(h.settle(), "the child leads")
        .await?;
    let mut candidate = candidate;
    let killed = Instant::now();
    holder.kill().await.ctx("killing the child")?;
    let limit = h.holder_ttl() * 3 + PROMPT;
    let (leadership, elected_at, election) = candidate.join(limit).await?;
    let took = elected_at.saturating_duration_since(killed);
    ensure!(
        leadership.term() > holder.token(),
        "the new leader's term {} is not above the killed leader's {}",
        leadership.term(),
        holder.token()
    );
    let now = within(PROMPT, "leader() after the election", election.leader()).await?;
    ensure!(
        now.as_ref().is_some_and(
            |leader| leader.value.as_ref() == b"next" && leader.term == leadership.term()
        ),
        "after the new leader (term {}) was elected, leader() says {now:?}",
        leadership.term()
    );
    leadership.resign().bounded("resigning").await?;
    Ok(Holds::figure(
        format!("new leader {} after SIGKILL", secs(took)),
        format!(
            "{} (term {}) was killed; the waiting candidate was elected with a higher term",
            holder.describe(),
            holder.token()
        ),
    ))
}
