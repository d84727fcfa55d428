//! Three workers share one rate limiter of 5 calls per second in bursts of 2: the
//! first calls go at once, then one every 200 ms, whichever worker asks, decided on the
//! store's clock. A worker that must not wait uses `try_acquire` and learns when the
//! next permit is due.
//!
//! ```text
//! cargo run --example rate_limiter                              # memory://
//! cargo run --example rate_limiter --features redis -- redis://127.0.0.1:6379
//! ```

use std::time::Instant;

use distsync::rate_limiter::Rate;
use distsync::Result;

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
    if !coordinator.capabilities().rate_limiter {
        println!("this backend has no rate limiter (no store clock); try memory:// or redis://");
        return Ok(());
    }

    let rate = "5/1s".parse::<Rate>()?.with_burst(2)?;
    let started = Instant::now();
    let workers = (0..3).map(|worker| {
        let limiter = coordinator.rate_limiter("examples/api-calls", rate);
        async move {
            let limiter = limiter?;
            for call in 0..3 {
                limiter.acquire(1).await?;
                println!(
                    "{:>5} ms  worker {worker} call {call}",
                    started.elapsed().as_millis()
                );
            }
            Ok::<(), distsync::Error>(())
        }
    });
    for done in futures::future::join_all(workers).await {
        done?;
    }

    // Nine calls at 5/s in bursts of 2 take at least (9 - 2) / 5 s.
    let limiter = coordinator.rate_limiter("examples/api-calls", rate)?;
    match limiter.try_acquire(1).await?.retry_after() {
        None => println!("a tenth call went through at once"),
        Some(wait) => println!("a tenth call is due in {} ms", wait.as_millis()),
    }
    Ok(())
}
