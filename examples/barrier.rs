//! A barrier holds waiters back until it is released; a double barrier lets its
//! participants enter together and leave together.
//!
//! ```text
//! cargo run --example barrier                               # memory://
//! cargo run --example barrier --features redis -- redis://127.0.0.1:6379
//! ```

use distsync::Result;

const PARTICIPANTS: usize = 3;

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

    // Barrier: hold it, start waiters, release them all at once.
    let barrier = coordinator.barrier("examples/my-barrier")?;
    barrier.hold().await?;
    println!("barrier held");
    let mut waiters = Vec::new();
    for id in 0..PARTICIPANTS {
        let barrier = coordinator.barrier("examples/my-barrier")?;
        waiters.push(tokio::spawn(async move {
            barrier.wait().await?;
            println!("waiter {id} passed");
            Ok::<_, distsync::Error>(())
        }));
    }
    barrier.release().await?;
    println!("barrier released");
    for waiter in waiters {
        waiter.await.expect("a waiter task does not panic")?;
    }

    // Double barrier: nobody gets past `enter` before all have entered, nor past
    // `leave` before all have left.
    let mut participants = Vec::new();
    for id in 0..PARTICIPANTS {
        let session = coordinator.session().await?;
        let barrier =
            coordinator.double_barrier(&session, "examples/my-double-barrier", PARTICIPANTS)?;
        participants.push(tokio::spawn(async move {
            barrier.enter().await?;
            println!("participant {id} entered (all {PARTICIPANTS} are in)");
            barrier.leave().await?;
            println!("participant {id} left (all {PARTICIPANTS} are out)");
            session.close().await
        }));
    }
    for participant in participants {
        participant
            .await
            .expect("a participant task does not panic")?;
    }
    Ok(())
}
