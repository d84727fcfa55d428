//! A timed loop of lock/unlock cycles: how many write transactions a second the store
//! serializes on its revision row, with one client and with several at once.
//!
//! ```text
//! cargo run -p distsync-mysql --example lock_cycles -- mysql://user:pw@127.0.0.1:3306/db [SECONDS] [CLIENTS]
//! ```
//!
//! Each client locks and unlocks a name of its own, so the only contention is the
//! store's: every lock and every unlock is one write transaction.

use std::time::{Duration, Instant};

use distsync_core::Result;

/// The cycles one client runs in `seconds` on its own name.
async fn cycles(url: String, name: String, seconds: Duration) -> Result<u64> {
    let coordinator = distsync::connect(&url).await?;
    let session = coordinator.session().await?;
    let locker = coordinator.locker(&session, &name)?;
    let start = Instant::now();
    let mut done = 0;
    while start.elapsed() < seconds {
        locker.lock().await?.unlock().await?;
        done += 1;
    }
    session.close().await?;
    Ok(done)
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_default();
    let seconds = Duration::from_secs(args.next().and_then(|s| s.parse().ok()).unwrap_or(10));
    let clients: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(8);
    for parallel in [1, clients] {
        let runs = (0..parallel).map(|i| {
            tokio::spawn(cycles(
                url.clone(),
                format!("bench/cycles/{parallel}/{i}"),
                seconds,
            ))
        });
        let mut total = 0;
        for run in futures::future::join_all(runs).await {
            total +=
                run.map_err(|error| distsync_core::Error::InvalidArgument(error.to_string()))??;
        }
        let per_second = total as f64 / seconds.as_secs_f64();
        println!(
            "{parallel} client(s): {total} lock/unlock cycles in {seconds:?}: {per_second:.1} cycles/s, \
             {:.1} write transactions/s",
            per_second * 2.0
        );
    }
    Ok(())
}
