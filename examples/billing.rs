//! Billing under a lock per customer, with the fencing token checked where the money
//! is: four workers charge two customers at once; each charge runs under that
//! customer's lock (`while_held`: the charge is dropped the moment the hold is lost),
//! and the ledger admits a write only with a token at least as high as the last one it
//! saw, so a worker that was paused past its lease cannot charge twice.
//!
//! The ledger here is `distsync::fence::Fenced`, in this process. In PostgreSQL the
//! same check is one statement (see docs/FENCING.md):
//! `UPDATE accounts SET balance = balance - $2, fence = $3 WHERE id = $1 AND fence <= $3`.
//!
//! ```text
//! cargo run --example billing                               # memory://
//! cargo run --example billing --features redis -- redis://127.0.0.1:6379
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use distsync::fence::Fenced;
use distsync::Result;

#[tokio::main]
async fn main() -> Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "memory://".into());
    let coordinator = distsync::connect(&url).await?;
    // One fence per customer: tokens of different names are not ordered.
    let ledgers: Arc<HashMap<&str, Fenced<i64>>> = Arc::new(
        [("alice", Fenced::new(100)), ("bob", Fenced::new(100))]
            .into_iter()
            .collect(),
    );
    let mut workers = Vec::new();
    for worker in 0..4 {
        let customer = ["alice", "bob"][worker % 2];
        let (coordinator, ledgers) = (coordinator.clone(), Arc::clone(&ledgers));
        workers.push(tokio::spawn(async move {
            // A session per worker, as each would be a process of its own.
            let session = coordinator.session().await?;
            let locker = coordinator.locker(&session, &format!("examples/billing/{customer}"))?;
            let guard = locker.lock().await?;
            let token = guard.token();
            let charged = guard
                .while_held(async { ledgers[customer].write(token, |balance| *balance -= 10) })
                .await?;
            guard.unlock().await?;
            session.close().await?;
            Ok::<_, distsync::Error>((worker, customer, token, charged.is_ok()))
        }));
    }
    for worker in workers {
        let (worker, customer, token, admitted) = worker.await.expect("a worker panicked")?;
        println!("worker {worker} charged {customer} with token {token}: admitted {admitted}");
    }
    for (customer, ledger) in ledgers.iter() {
        println!("{customer}: balance {}", ledger.read(|balance| *balance));
    }
    Ok(())
}
