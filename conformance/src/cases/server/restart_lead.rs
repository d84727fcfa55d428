//! Staying leader through a server restart: two processes' worth of
//! [`Coordinator::lead_with`] (A leading, B campaigning) on a private server that is
//! stopped and started again. Whatever the store kept, the works never run at once,
//! neither contender gives up, and once the store is back one of them leads; when that
//! one steps down, the other takes over.
//!
//! Where the store keeps its leases (etcd) A usually leads on; where it forgets them
//! (Redis without persistence) or drops the connections that held them (PostgreSQL),
//! A's term ends and somebody leads in a new one. A store that forgets can grant B
//! while A's work still runs, before A's next renewal finds its session gone, unless
//! it waits out a lock-delay after forgetting (Redis with `max_session_ttl`): the case
//! claims `exclusive_across_restart`, holds and not data.

use distsync_core::Coordinator;
use tokio::time::Instant;

use super::restart::{private_server, restart, RECOVERY, TTL};
use crate::cases::scenario::stay_leader::{
    contender, next_event, options, started, still_campaigning, Event, Terms,
};
use crate::check::{ensure, ms, secs, violated, Check, Holds, PROMPT};
use crate::harness::Harness;

/// The case (see the module docs).
pub(super) async fn keeps_one_leader(h: Harness) -> Check {
    let (mut server, backend) = private_server(&h).await?;
    let ttl = TTL.max(backend.capabilities().min_session_ttl);
    let election = h.key("stay-leader-restart");
    let (terms, mut events) = Terms::new();
    let coordinator = Coordinator::from_arc(backend);
    let mut a = contender(
        coordinator.clone(),
        "A",
        election.clone(),
        options(ttl),
        &terms,
    );
    let (first, _) = started(next_event(&mut events, PROMPT, "A to lead").await?, "A")?;
    let mut b = contender(coordinator, "B", election, options(ttl), &terms);
    if let Ok(Some(event)) = tokio::time::timeout(h.settle(), events.recv()).await {
        return violated(format!("while A led, before the restart: {event:?}"));
    }

    let (restarted, away) = restart(&mut server).await?;
    // Somebody leads once the store is back: A on, or a new term. Events until the
    // works have been quiet for two TTLs (a lost session is noticed within one).
    let mut seen = Vec::new();
    let deadline = restarted + RECOVERY + ttl * 2;
    loop {
        let quiet = ttl * 2;
        match tokio::time::timeout(quiet, events.recv()).await {
            Ok(Some(event)) => seen.push(event),
            Ok(None) => return violated("the works' record closed"),
            Err(_) if terms.running() == 1 => break,
            Err(_) if Instant::now() > deadline => {
                return violated(format!(
                    "{} works ran {} after the restart (events: {seen:?})",
                    terms.running(),
                    secs(restarted.elapsed())
                ))
            }
            Err(_) => {}
        }
    }
    terms.no_overlap()?;
    let leader = match seen.iter().rev().find_map(|event| match event {
        Event::Started { who, term, .. } => Some((*who, *term)),
        Event::Stopped { .. } => None,
    }) {
        Some(new) => new,
        None => ("A", first),
    };
    ensure!(
        leader.1 >= first,
        "the term after the restart {} is below A's {first}",
        leader.1
    );
    still_campaigning(&mut a).await?;
    still_campaigning(&mut b).await?;

    // The leader steps down; the other, still campaigning, takes over.
    let (leading, other) = if leader.0 == "A" { (a, b) } else { (b, a) };
    let successor = if leader.0 == "A" { "B" } else { "A" };
    drop(leading);
    let stepped_down = Instant::now();
    let mut other = other;
    let handed = loop {
        let event = next_event(&mut events, ttl * 2 + PROMPT * 2, "the other to lead").await?;
        if let Event::Started { .. } = event {
            break started(event, successor)?;
        }
    };
    terms.no_overlap()?;
    ensure!(
        handed.0 > leader.1,
        "{successor}'s term {} is not above {}'s {}",
        handed.0,
        leader.0,
        leader.1
    );
    still_campaigning(&mut other).await?;
    let kept = if seen.is_empty() {
        "A led on through it".to_owned()
    } else {
        format!("{} led after it in term {}", leader.0, leader.1)
    };
    Ok(Holds::figure(
        format!(
            "restart of {}: {kept}; {successor} led {} after the leader stepped down",
            secs(away),
            ms(handed.1 - stepped_down)
        ),
        format!(
            "TTL {ttl:?}: never two works at once; after the restart: {}",
            describe(&seen)
        ),
    ))
}

/// `events` in words, for the evidence.
fn describe(events: &[Event]) -> String {
    if events.is_empty() {
        return "nothing changed".to_owned();
    }
    let words: Vec<String> = events
        .iter()
        .map(|event| match event {
            Event::Started { who, term, .. } => format!("{who} led in term {term}"),
            Event::Stopped { who, .. } => format!("{who}'s work stopped"),
        })
        .collect();
    words.join(", ")
}
