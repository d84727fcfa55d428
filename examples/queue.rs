//! A durable priority queue: items come out by priority (lower number first), FIFO
//! within a priority; a consumer waiting on an empty queue wakes on the next push.
//!
//! ```text
//! cargo run --example queue                               # memory://
//! cargo run --example queue --features etcd -- etcd://127.0.0.1:2379
//! ```

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

    let queue = coordinator.queue("examples/my-queue")?;
    for (item, priority) in [
        ("report", 5),
        ("build-1", 1),
        ("build-2", 1),
        ("page-oncall", 0),
    ] {
        queue.enqueue_with_priority(item, priority).await?;
        println!("push {item} (priority {priority})");
    }
    println!("{} items queued", queue.len().await?);
    while let Some(item) = queue.try_dequeue().await? {
        println!("pop {}", String::from_utf8_lossy(&item));
    }

    // A consumer blocks on the empty queue until a producer pushes.
    let consumer = {
        let queue = coordinator.queue("examples/my-queue")?;
        tokio::spawn(async move { queue.dequeue().await })
    };
    queue.enqueue("late-item").await?;
    println!("push late-item");
    let item = consumer.await.expect("the consumer task does not panic")?;
    println!("waiting consumer popped {}", String::from_utf8_lossy(&item));
    Ok(())
}
