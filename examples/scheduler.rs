//! A scheduler that must run on exactly one replica: three replicas call
//! `Coordinator::lead` on one election; the leader runs its jobs until its session is
//! ended from the store side (as a crash, a partition or an operator would end it),
//! its work is dropped at once, and another replica takes over with a higher term.
//!
//! ```text
//! cargo run --example scheduler                               # memory://
//! cargo run --example scheduler --features etcd -- etcd://127.0.0.1:2379
//! ```

use std::time::Duration;

use distsync::{LeadOptions, Result, SessionId, SessionOptions};
use tokio::sync::mpsc;

const ELECTION: &str = "examples/scheduler";

#[tokio::main]
async fn main() -> Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "memory://".into());
    let coordinator = distsync::connect(&url).await?;
    let ttl = coordinator
        .capabilities()
        .min_session_ttl
        .max(Duration::from_secs(2));
    let options = LeadOptions::default().with_session(SessionOptions::with_ttl(ttl));
    let (terms, mut started) = mpsc::unbounded_channel();
    for replica in 0..3 {
        let (coordinator, options, terms) = (coordinator.clone(), options.clone(), terms.clone());
        tokio::spawn(async move {
            coordinator
                .lead_with(
                    ELECTION,
                    format!("replica-{replica}"),
                    &options,
                    |leadership| {
                        let terms = terms.clone();
                        async move {
                            let _ =
                                terms.send((replica, leadership.term(), leadership.session().id()));
                            // The jobs; pass the term to what they write (see docs/FENCING.md).
                            loop {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    },
                )
                .await
        });
    }
    for _ in 0..3 {
        let (replica, term, session): (usize, _, SessionId) =
            started.recv().await.expect("a replica leads");
        println!("replica {replica} leads in term {term}; ending its session");
        coordinator.backend().revoke_session(session).await?;
    }
    Ok(())
}
