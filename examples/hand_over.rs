//! Taking leadership and locks back politely: a standby candidate asks the leader to
//! prefer it, the leader sees the request and hands the election over to it (no moment
//! without a leader where the store allows it, never two leaders), and an operator asks
//! a lock's holder to give the lock back, which it does.
//!
//! ```text
//! cargo run --example hand_over                               # memory://
//! cargo run --example hand_over --features etcd -- etcd://127.0.0.1:2379
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use distsync::election::Successor;
use distsync::{Coordinator, Result};

/// How long each step may take before the example gives up.
const BOUND: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "memory://".into());
    let coordinator = distsync::connect(&url).await?;
    let backend = coordinator.capabilities().backend;
    println!(
        "connected to {} ({backend})",
        distsync::store::redact_url(&url)
    );
    // Each run takes names of its own, so runs against a shared store do not meet.
    let run = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis());

    if coordinator.capabilities().hand_over {
        hand_over(&coordinator, &format!("examples/scheduler/{run}")).await?;
    } else {
        println!("{backend} cannot hand an election over; skipping that part");
    }
    if coordinator.capabilities().release_request {
        give_back(&coordinator, &format!("examples/report/{run}")).await?;
    } else {
        println!("{backend} has no release requests; skipping that part");
    }
    Ok(())
}

/// node-1 leads; node-2 and node-3 wait in that order; node-3 asks to be preferred, and
/// node-1 hands over to it, ahead of node-2.
async fn hand_over(coordinator: &Coordinator, election: &str) -> Result<()> {
    let first = coordinator.session().await?;
    let leader = coordinator
        .election(&first, election)?
        .campaign("node-1")
        .await?;
    println!("node-1 leads in term {}", leader.term().0);

    let mut standbys = Vec::new();
    for value in ["node-2", "node-3"] {
        let session = coordinator.session().await?;
        let candidate = coordinator.election(&session, election)?;
        let id = session.id();
        let campaign = tokio::spawn(async move { candidate.campaign(value).await });
        wait_in_line(coordinator, election, id).await?;
        standbys.push((value, session, campaign));
    }

    let (_, preferred, _) = &standbys[1];
    coordinator.prefer(election, preferred.id()).await?;
    let request = tokio::time::timeout(BOUND, leader.preference_requested())
        .await
        .map_err(|_| distsync::Error::Timeout(BOUND))??;
    println!(
        "node-1 sees a request to prefer session {}",
        request.candidate
    );

    let from = leader.term();
    let handed = leader
        .resign_to(Successor::Candidate(request.candidate), BOUND)
        .await?;
    println!("node-1 handed term {} over to {}", from.0, handed.to);

    let (_, _, node3) = standbys.pop().expect("two standbys");
    let leadership = node3.await.expect("the campaign task does not panic")?;
    assert!(leadership.term() > from);
    println!("node-3 leads in term {}", leadership.term().0);
    leadership.resign().await?;

    let (_, _, node2) = standbys.pop().expect("one standby left");
    let leadership = node2.await.expect("the campaign task does not panic")?;
    println!("node-2 leads next, in term {}", leadership.term().0);
    leadership.resign().await
}

/// Waits (bounded) until the session `id` campaigns in `election`.
async fn wait_in_line(
    coordinator: &Coordinator,
    election: &str,
    id: distsync::session::SessionId,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + BOUND;
    while coordinator
        .candidates(election)
        .await?
        .position(id)
        .is_none()
    {
        if tokio::time::Instant::now() >= deadline {
            return Err(distsync::Error::Timeout(BOUND));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// A holder writes a report under a lock until someone asks for the lock back.
async fn give_back(coordinator: &Coordinator, lock: &str) -> Result<()> {
    let session = coordinator.session().await?;
    let guard = coordinator.locker(&session, lock)?.lock().await?;
    let requested = guard.release_requested();
    let holder = tokio::spawn(async move {
        // The holder's work would run here, checking `requested` between steps.
        requested.await?;
        println!("the holder was asked to give the lock back; releasing it");
        guard.unlock().await
    });

    let asked = coordinator.request_release(lock).await?;
    println!(
        "asked the holder of {lock} (token {:?}) to release it",
        asked.and_then(|request| request.token).map(|token| token.0)
    );
    tokio::time::timeout(BOUND, holder)
        .await
        .map_err(|_| distsync::Error::Timeout(BOUND))?
        .expect("the holder task does not panic")?;

    let other = coordinator.session().await?;
    let locker = coordinator.locker(&other, lock)?;
    let next = tokio::time::timeout(BOUND, locker.lock())
        .await
        .map_err(|_| distsync::Error::Timeout(BOUND))??;
    println!("the lock is free again; taken with token {}", next.token());
    next.unlock().await
}
