//! Two sessions compete for one lock, as etcd's `ExampleMutex_Lock`: the second waits
//! until the first releases, and gets a higher fencing token.
//!
//! ```text
//! cargo run --example lock                               # memory://
//! cargo run --example lock --features etcd -- etcd://127.0.0.1:2379
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

    // Two sessions, as two processes would have.
    let s1 = coordinator.session().await?;
    let s2 = coordinator.session().await?;
    let m1 = coordinator.locker(&s1, "examples/my-lock")?;
    let m2 = coordinator.locker(&s2, "examples/my-lock")?;

    let g1 = m1.lock().await?;
    println!(
        "acquired lock for s1: key {} token {}",
        g1.key(),
        g1.token()
    );

    // s2 waits in the background; `try_lock` shows it cannot have the lock yet.
    assert!(m2.try_lock().await?.is_none());
    let waiter = tokio::spawn(async move { m2.lock().await });

    let first_token = g1.token();
    g1.unlock().await?;
    println!("released lock for s1");

    let g2 = waiter.await.expect("the waiting task does not panic")?;
    println!(
        "acquired lock for s2: key {} token {}",
        g2.key(),
        g2.token()
    );
    // The protected resource should refuse writes carrying a token below the highest
    // it has seen: a paused s1 waking up with its old token is then rejected.
    assert!(g2.token() > first_token);
    g2.unlock().await?;

    s1.close().await?;
    s2.close().await?;
    Ok(())
}
