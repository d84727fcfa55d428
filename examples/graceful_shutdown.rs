//! A service that holds a lock, leads an election and consumes a queue, and on Ctrl-C
//! or SIGTERM gives everything back, in order, before it exits: it stops taking jobs
//! (the job in hand goes back to the queue), resigns, unlocks, then closes its session.
//!
//! Why explicitly: a guard, a leadership or a delivery dropped without its release
//! call is released by a background task, which needs the tokio runtime to still run.
//! When `main` returns, the runtime shuts down and those tasks may never run; the
//! holds then stay in the store until the session's TTL expires there (15 s by
//! default: see `distsync::session`), and the next holder or leader waits that long.
//! A crash (SIGKILL, power loss) ends the same way. Release what you hold and close
//! the session before returning, as below, and the next process takes over at once.
//!
//! ```text
//! cargo run --example graceful_shutdown                               # memory://
//! cargo run --example graceful_shutdown --features etcd -- etcd://127.0.0.1:2379
//! ```

use distsync::queue::{BoxError, ConsumerOptions};
use distsync::Result;

#[tokio::main]
async fn main() -> Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "memory://".into());
    let coordinator = distsync::connect(&url).await?;
    let session = coordinator.session().await?;
    let guard = coordinator
        .locker(&session, "examples/shutdown/lock")?
        .lock()
        .await?;
    let election = coordinator.election(&session, "examples/shutdown/leader")?;
    let leadership = election.campaign("replica-1").await?;
    let consumer = coordinator.consumer("examples/shutdown/jobs", ConsumerOptions::default())?;
    consumer.queue().enqueue("job-1").await?;
    println!(
        "locked (token {}), leading (term {}), consuming; Ctrl-C to stop",
        guard.token(),
        leadership.term()
    );

    let consuming = consumer.run(&session, |job| async move {
        println!("handled {}", String::from_utf8_lossy(&job));
        Ok::<(), BoxError>(())
    });
    tokio::select! {
        // The session was lost: the store has ended every hold already.
        error = consuming => return Err(error),
        () = shutdown() => println!("shutting down"),
    }
    // `consuming` is dropped: no new job is taken, and one in hand goes back.
    leadership.resign().await?;
    guard.unlock().await?;
    session.close().await?;
    println!("released everything");
    Ok(())
}

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM (what `kill` and Kubernetes send).
async fn shutdown() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending().await
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
