//! A shared counter that several workers add to at once, and a count-down latch that
//! holds a coordinator back until every worker has finished.
//!
//! ```text
//! cargo run --example counter                               # memory://
//! cargo run --example counter --features redis -- redis://127.0.0.1:6379
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use distsync::Result;

const WORKERS: u64 = 4;
const ADDS: i64 = 25;

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

    // A latch is one-shot: each run takes a name of its own.
    let run = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis());
    let latch_name = format!("examples/workers-done/{run}");

    let hits = coordinator.counter("examples/hits")?;
    let before = hits.get().await?;
    let done = coordinator.latch(&latch_name, WORKERS)?;
    let mut workers = Vec::new();
    for id in 0..WORKERS {
        let hits = coordinator.counter("examples/hits")?;
        let done = coordinator.latch(&latch_name, WORKERS)?;
        workers.push(tokio::spawn(async move {
            for _ in 0..ADDS {
                // One atomic add in the store: no update is lost between workers. It
                // is sent once; an error here may or may not have been applied.
                hits.add(1).await?;
            }
            let left = done.count_down().await?;
            println!("worker {id} done, {left} still working");
            Ok::<_, distsync::Error>(())
        }));
    }
    done.wait().await?;
    println!("all {WORKERS} workers done");
    for worker in workers {
        worker.await.expect("a worker task does not panic")?;
    }
    let after = hits.get().await?;
    println!("hits: {before} -> {after}");
    assert_eq!(after - before, ADDS * WORKERS as i64);

    // compare_and_set: only one of several racing swaps from one value wins.
    let leader = coordinator.counter("examples/elected")?;
    leader.set(0).await?;
    let mut racers = Vec::new();
    for id in 1..=3 {
        let leader = coordinator.counter("examples/elected")?;
        racers.push(tokio::spawn(
            async move { leader.compare_and_set(0, id).await },
        ));
    }
    let mut winners = 0;
    for racer in racers {
        winners += usize::from(racer.await.expect("a racer task does not panic")?);
    }
    println!(
        "{winners} of 3 racing swaps won; the value is {}",
        leader.get().await?
    );
    Ok(())
}
