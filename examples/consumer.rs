//! A job consumer with a dead-letter queue: each job is retried with a backoff, a
//! handler stuck past its deadline is dropped, and a job that keeps failing is moved
//! to `examples/jobs.dead` instead of blocking the jobs behind it.
//!
//! ```text
//! cargo run --example consumer                               # memory://
//! cargo run --example consumer --features etcd -- etcd://127.0.0.1:2379
//! ```

use std::time::Duration;

use distsync::queue::{BoxError, ConsumerOptions};
use distsync::{Result, SessionOptions};

#[tokio::main]
async fn main() -> Result<()> {
    let url = std::env::args().nth(1);
    let coordinator = distsync::connect(url.as_deref().unwrap_or("memory://")).await?;
    let options = ConsumerOptions::default()
        .max_deliveries(3)
        .processing_deadline(Duration::from_secs(10))
        .retry(Duration::from_millis(100), Duration::from_secs(5));
    let consumer = coordinator.consumer("examples/jobs", options)?;
    for job in ["1", "2", "oops", "3"] {
        consumer.queue().enqueue(job).await?;
    }

    // A new session after each loss; the run returns only on errors it cannot ride out.
    let sessions = coordinator.live_session(SessionOptions::default())?;
    let run = consumer.run_live(&sessions, |job| async move {
        let id: u32 = std::str::from_utf8(&job)?.parse()?;
        println!("resized image {id}");
        Ok::<(), BoxError>(())
    });

    // A service would just `run.await`; the example stops at the first dead letter.
    tokio::select! {
        error = run => Err(error),
        dead = consumer.dead_letter_queue().dequeue() => {
            println!("dead letter: job {}", String::from_utf8_lossy(&dead?));
            Ok(())
        }
    }
}
