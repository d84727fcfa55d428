//! A job consumer with a dead-letter queue: each job is retried with a backoff, a
//! handler stuck past its deadline is dropped, and a job that keeps failing is moved
//! to `examples/jobs.dead` instead of blocking the jobs behind it.
//!
//! ```text
//! cargo run --example consumer                               # memory://
//! cargo run --example consumer --features etcd -- etcd://127.0.0.1:2379
//! ```

use std::time::Duration;

use distsync::{BoxError, ConsumerOptions, Result, SessionOptions};

#[tokio::main]
async fn main() -> Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "memory://".into());
    let coordinator = distsync::connect(&url).await?;
    let options = ConsumerOptions::default()
        .max_deliveries(3)
        .processing_deadline(Duration::from_secs(10))
        .retry(Duration::from_millis(100), Duration::from_secs(5));
    let consumer = coordinator.consumer("examples/jobs", options)?;
    for job in ["1", "2", "oops", "3"] {
        consumer.queue().enqueue(job.into()).await?;
    }

    // A new session after each loss; the run returns only on errors it cannot ride out.
    let sessions = coordinator.live_session(SessionOptions::default())?;
    let run = consumer.run_live(&sessions, |job| async move {
        let id: u32 = std::str::from_utf8(&job)?.parse()?;
        println!("resized image {id}");
        Ok::<(), BoxError>(())
    });

    // A service would just `run.await`; the example stops once the bad job is dead.
    let dead_lettered = async {
        while consumer.dead_letter_queue().is_empty().await? {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok::<(), distsync::Error>(())
    };
    tokio::select! {
        error = run => return Err(error),
        done = dead_lettered => done?,
    }
    for job in consumer.dead_letters().await? {
        println!("dead letter: job {}", String::from_utf8_lossy(&job));
    }
    println!("purged {} dead letters", consumer.purge().await?);
    Ok(())
}
