//! A scheduler that must run on exactly one replica: three replicas call
//! `Coordinator::lead` on one election; the leader runs its jobs until its session is
//! ended from the store side (as a crash, a partition or an operator would end it),
//! its work is dropped at once, and another replica takes over with a higher term.
//!
//! ```text
//! cargo run --example scheduler                               # memory://
//! cargo run --example scheduler --features etcd -- etcd://127.0.0.1:2379
//! ```

use distsync::Result;
use tokio::sync::mpsc;

#[tokio::main]
async fn main() -> Result<()> {
    let url = std::env::args().nth(1);
    let coordinator = distsync::connect(url.as_deref().unwrap_or("memory://")).await?;
    let (leaders, mut leading) = mpsc::unbounded_channel();
    for replica in 0..3 {
        let (coordinator, leaders) = (coordinator.clone(), leaders.clone());
        tokio::spawn(async move {
            let value = format!("replica-{replica}");
            coordinator
                .lead("examples/scheduler", value, |leadership| {
                    let _ = leaders.send((replica, leadership.term(), leadership.session().id()));
                    // The jobs would run here, passing the term to what they write (see
                    // docs/FENCING.md); `lead` drops them as soon as the leadership is lost.
                    std::future::pending()
                })
                .await
        });
    }
    for _ in 0..3 {
        let (replica, term, session) = leading.recv().await.expect("a replica leads");
        println!("replica {replica} leads in term {term}; ending its session");
        coordinator.backend().revoke_session(session).await?;
    }
    Ok(())
}
