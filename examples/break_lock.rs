//! An operator breaks a lock a stuck worker keeps renewing: the worker sees `lost()`,
//! the waiting worker is granted with a higher fencing token, and the stuck worker's
//! guarded write is refused.
//!
//! ```text
//! cargo run --example break_lock                               # memory://
//! cargo run --example break_lock --features etcd -- etcd://127.0.0.1:2379
//! ```

use distsync::{Error, Result};

const LOCK: &str = "examples/break-lock";

#[tokio::main]
async fn main() -> Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "memory://".into());
    let coordinator = distsync::connect(&url).await?;

    // The stuck worker and the waiting one, each with its own session.
    let stuck_session = coordinator.session().await?;
    let waiting_session = coordinator.session().await?;
    let stuck = coordinator.locker(&stuck_session, LOCK)?.lock().await?;
    let waiting = coordinator.locker(&waiting_session, LOCK)?;
    let waiter = tokio::spawn(async move { waiting.lock().await });

    // The operator: `distsync break examples/break-lock` does the same.
    match coordinator.break_lock(LOCK).await? {
        Some(hold) => println!("broke {hold}"),
        None => println!("nobody held {LOCK}"),
    }

    // The broken worker learns of it (its next renewal fails) ...
    stuck.lost().await;
    println!("the stuck worker saw lost()");
    let next = waiter.await.expect("the waiting task does not panic")?;
    println!("the waiting worker holds it with token {}", next.token());
    assert!(next.token() > stuck.token());
    // ... and what it still tries to write next to the lock is refused.
    if coordinator.capabilities().guarded_writes {
        match stuck.put_if_held("examples/break-lock-data", "stale").await {
            Err(Error::NotHeld | Error::SessionLost) => {
                println!("the stuck worker's guarded write was refused")
            }
            other => println!("unexpected answer to the stale write: {other:?}"),
        }
    }
    next.unlock().await?;
    waiting_session.close().await?;
    Ok(())
}
