//! Three candidates campaign for one election; an observer prints every leader change
//! while the leader proclaims a new value and then resigns, handing over to the next.
//!
//! ```text
//! cargo run --example election                               # memory://
//! cargo run --example election --features redis -- redis://127.0.0.1:6379
//! ```

use distsync::Result;
use futures::StreamExt;

const ELECTION: &str = "examples/my-election";

#[tokio::main]
async fn main() -> Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "memory://".into());
    let coordinator = distsync::connect(&url).await?;
    println!(
        "connected to {} ({})",
        distsync::store::redact_url(&url),
        coordinator.capabilities().backend
    );

    // The observer: the current leader first, then every change and proclaim.
    let watcher = coordinator.session().await?;
    let mut leaders = coordinator.election(&watcher, ELECTION)?.observe();

    // Three candidates, each with its own session (as three nodes).
    let mut sessions = Vec::new();
    let mut campaigns = Vec::new();
    for id in 0..3 {
        let session = coordinator.session().await?;
        let election = coordinator.election(&session, ELECTION)?;
        campaigns.push(tokio::spawn(async move {
            let leadership = election.campaign(format!("value-{id}-0")).await;
            (id, leadership)
        }));
        sessions.push(session);
    }

    // Whoever wins proclaims once, then resigns; the next candidate takes over.
    for _round in 0..3 {
        let (index, joined) = next_finished(&mut campaigns).await;
        let (id, leadership) = joined;
        let leadership = leadership?;
        campaigns.remove(index);
        println!("node {id} elected, term {}", leadership.term());
        let leader = leaders
            .next()
            .await
            .expect("the stream ends only with an error")?;
        println!(
            "  observer: leader is {} (term {})",
            String::from_utf8_lossy(&leader.value),
            leader.term
        );

        leadership.proclaim(format!("value-{id}-1")).await?;
        let leader = leaders
            .next()
            .await
            .expect("the stream ends only with an error")?;
        println!(
            "  observer: leader is {} (term {})",
            String::from_utf8_lossy(&leader.value),
            leader.term
        );

        leadership.resign().await?;
        println!("node {id} resigned");
    }

    for session in sessions.iter().chain([&watcher]) {
        session.close().await?;
    }
    Ok(())
}

/// Waits for the first campaign to finish; returns its index and result.
async fn next_finished(
    campaigns: &mut [tokio::task::JoinHandle<(i32, Result<distsync::Leadership>)>],
) -> (usize, (i32, Result<distsync::Leadership>)) {
    let (joined, index, _) = futures::future::select_all(campaigns.iter_mut()).await;
    (index, joined.expect("a campaign task does not panic"))
}
