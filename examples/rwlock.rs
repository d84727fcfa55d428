//! Readers share a read-write lock; a writer waits until every reader has released.
//!
//! ```text
//! cargo run --example rwlock                               # memory://
//! cargo run --example rwlock --features postgres -- postgres://user@127.0.0.1:5432/db
//! ```

use distsync::Result;

const LOCK: &str = "examples/my-rwlock";

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

    let (s1, s2, s3) = (
        coordinator.session().await?,
        coordinator.session().await?,
        coordinator.session().await?,
    );
    let reader1 = coordinator.rwlock(&s1, LOCK)?;
    let reader2 = coordinator.rwlock(&s2, LOCK)?;
    let writer = coordinator.rwlock(&s3, LOCK)?;

    let r1 = reader1.read().await?;
    println!("reader 1 acquired read lock");
    let r2 = reader2.read().await?;
    println!("reader 2 acquired read lock while reader 1 holds it: readers share");

    assert!(writer.try_write().await?.is_none());
    println!("writer cannot have the lock while readers hold it; waiting");
    let waiting = tokio::spawn(async move { writer.write().await });

    r1.unlock().await?;
    println!("reader 1 released read lock");
    r2.unlock().await?;
    println!("reader 2 released read lock");

    let w = waiting.await.expect("the writer task does not panic")?;
    println!("writer acquired write lock, fencing token {}", w.token());
    w.unlock().await?;
    println!("writer released write lock");

    for session in [s1, s2, s3] {
        session.close().await?;
    }
    Ok(())
}
