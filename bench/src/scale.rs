//! PostgreSQL at scale (issue 13): from one process (one backend), 10,000 sessions
//! each holding a lock of its own, and 1,000 more sessions waiting on 1,000 of those
//! locks; then the contended hand-off at 1, 10, 100 and 1,000 waiters while the
//! 10,000 holds stay held.
//!
//! Reported: the connections to the database (`SELECT count(*) FROM pg_stat_activity
//! WHERE datname = current_database()`, before the backend connects, at the peak with
//! everything held and waiting, and the most seen by a sampler during the hand-offs;
//! the counting connection is left out), the server's `max_connections`, the client's
//! resident memory (`VmRSS` of `/proc/self/status`) before and at the peak, the time
//! to open the sessions and the time to acquire all the locks, and hand-off p50/p99
//! per waiter count (measured as [`crate::handoff`] does, on this backend).
//!
//! The backend is a fresh one (`distsync::connect`), so the figures are its own; other
//! cases of the same run may still hold connections of their own when this one starts,
//! which the "before" column shows.

use std::time::Duration;

use crate::handoff::HandoffResult;
#[cfg(feature = "postgres")]
pub use measure::run;

/// What the case measured.
#[derive(Debug, Default)]
pub struct ScaleResult {
    /// Locks held at once (one per session).
    pub holds: usize,
    /// Sessions waiting, each on one of the held locks.
    pub waiting: usize,
    /// The server's `max_connections`.
    pub max_connections: Option<i64>,
    /// Connections to the database before the backend connected (without the probe).
    pub connections_before: Option<i64>,
    /// Connections with every hold held and every waiter waiting (without the probe).
    pub connections_peak: Option<i64>,
    /// The most connections seen during the hand-offs (without the probe).
    pub connections_handoff: Option<i64>,
    /// Client resident memory before the sessions were opened, in kB.
    pub rss_before_kb: Option<u64>,
    /// Client resident memory with everything held and waiting, in kB.
    pub rss_peak_kb: Option<u64>,
    /// Time to open the `holds` sessions.
    pub open_sessions: Option<Duration>,
    /// Time to acquire the `holds` locks (sessions already open).
    pub acquire_all: Option<Duration>,
    /// Time from releasing the `waiting` contended locks to every waiter holding.
    pub release_to_waiters: Option<Duration>,
    /// Hand-off per waiter count, with the holds held.
    pub handoff: Vec<HandoffResult>,
    /// Why the case stopped early or did not run.
    pub error: Option<String>,
}

/// The client's resident memory (`VmRSS`), in kB.
pub fn rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// The measurement itself (needs the `postgres` feature).
#[cfg(feature = "postgres")]
mod measure {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use distsync::{LockGuard, Session};
    use futures::stream::{self, StreamExt, TryStreamExt};
    use sqlx::{Connection, PgConnection};

    use super::{rss_kb, ScaleResult};
    use crate::args::Plan;
    use crate::handoff;
    use crate::target::Target;
    use crate::Result;

    /// Acquisitions in flight at once while the holds are taken.
    const IN_FLIGHT: usize = 64;

    /// Time added to the hand-off cap per waiter in line (its unmeasured first turn).
    const HANDOFF_TIME_PER_WAITER: Duration = Duration::from_millis(40);

    /// A connection that counts the database's connections (itself left out).
    struct Probe {
        conn: PgConnection,
        schema: String,
    }

    impl Probe {
        async fn connect(url: &str) -> Result<Self> {
            let parsed = distsync::postgres::PostgresConfig::parse(url)?;
            let conn = PgConnection::connect_with(&parsed.options).await?;
            Ok(Self {
                conn,
                schema: parsed.schema.replace('"', "\"\""),
            })
        }

        async fn connections(&mut self) -> Result<i64> {
            Ok(sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .fetch_one(&mut self.conn)
            .await?)
        }

        async fn max_connections(&mut self) -> Result<i64> {
            Ok(
                sqlx::query_scalar("SELECT current_setting('max_connections')::bigint")
                    .fetch_one(&mut self.conn)
                    .await?,
            )
        }

        /// Entries waiting (no grant yet) in lines whose name starts with `prefix`.
        async fn queued(&mut self, prefix: &str) -> Result<i64> {
            let schema = &self.schema;
            Ok(sqlx::query_scalar(&format!(
                "SELECT count(*) FROM \"{schema}\".semaphore_entries e \
             JOIN \"{schema}\".lock_names n ON n.id = e.name_id \
             WHERE n.name LIKE $1 AND e.token IS NULL AND NOT e.cancelled"
            ))
            .bind(format!("{prefix}%"))
            .fetch_one(&mut self.conn)
            .await?)
        }
    }

    /// Runs the case on `target` (PostgreSQL only; other backends are not measured).
    pub async fn run(target: &Target, run_id: &str, plan: &Plan) -> ScaleResult {
        let mut result = ScaleResult {
            holds: plan.scale_holds,
            waiting: plan.scale_waiting,
            ..ScaleResult::default()
        };
        if let Err(error) = measure(target, run_id, plan, &mut result).await {
            result.error = Some(error.to_string());
        }
        result
    }

    async fn measure(
        target: &Target,
        run_id: &str,
        plan: &Plan,
        result: &mut ScaleResult,
    ) -> Result<()> {
        let mut probe = Probe::connect(&target.url).await?;
        result.max_connections = Some(probe.max_connections().await?);
        result.connections_before = Some(probe.connections().await?);
        result.rss_before_kb = rss_kb();
        let coordinator = distsync::connect(&target.url).await?;
        let prefix = format!("{run_id}/scale/");

        let started = Instant::now();
        let sessions: Vec<Session> = stream::iter(0..plan.scale_holds)
            .map(|_| coordinator.session())
            .buffered(IN_FLIGHT)
            .try_collect()
            .await?;
        result.open_sessions = Some(started.elapsed());
        tracing::info!(sessions = sessions.len(), elapsed = ?started.elapsed(), "scale: sessions open");

        let started = Instant::now();
        let mut guards: Vec<LockGuard> = stream::iter(sessions.iter().enumerate())
            .map(|(i, session)| {
                let coordinator = coordinator.clone();
                let name = format!("{prefix}{i}");
                async move { coordinator.locker(session, &name)?.lock().await }
            })
            .buffered(IN_FLIGHT)
            .try_collect()
            .await?;
        result.acquire_all = Some(started.elapsed());
        tracing::info!(holds = guards.len(), elapsed = ?started.elapsed(), "scale: all held");

        // The waiters: one on each of the first `waiting` held locks.
        let waiting = plan.scale_waiting.min(guards.len());
        let waiter_sessions: Vec<Session> = stream::iter(0..waiting)
            .map(|_| coordinator.session())
            .buffered(IN_FLIGHT)
            .try_collect()
            .await?;
        let mut waits = Vec::with_capacity(waiting);
        for (i, session) in waiter_sessions.iter().enumerate() {
            let locker = coordinator.locker(session, &format!("{prefix}{i}"))?;
            waits.push(tokio::spawn(async move { locker.lock().await }));
        }
        let deadline = Instant::now() + plan.case_time + Duration::from_secs(60);
        loop {
            let queued = probe.queued(&prefix).await?;
            if usize::try_from(queued)? >= waiting {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("only {queued} of {waiting} waiters queued in time").into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        result.connections_peak = Some(probe.connections().await?);
        result.rss_peak_kb = rss_kb();
        tracing::info!(
            connections = ?result.connections_peak,
            rss_kb = ?result.rss_peak_kb,
            "scale: everything held and waiting"
        );

        // Release the contended locks; every waiter is granted, then lets go.
        let started = Instant::now();
        for guard in guards.drain(..waiting) {
            guard.unlock().await?;
        }
        for wait in waits {
            wait.await??.unlock().await?;
        }
        result.release_to_waiters = Some(started.elapsed());
        close(waiter_sessions).await;

        // Hand-offs with the remaining holds held, sampled for connections meanwhile.
        let most = Arc::new(AtomicI64::new(0));
        let sampler = {
            let most = Arc::clone(&most);
            tokio::spawn(async move {
                loop {
                    match probe.connections().await {
                        Ok(now) => {
                            most.fetch_max(now, Ordering::Relaxed);
                        }
                        Err(error) => tracing::debug!(%error, "scale: sampling connections"),
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        let on_this_backend = Target {
            kind: target.kind,
            url: target.url.clone(),
            coordinator: coordinator.clone(),
        };
        for &waiters in &plan.scale_handoff_waiters {
            tracing::info!(waiters, "scale: hand-off with the holds held");
            // Every participant's first grant is not measured: with 1,000 waiters that
            // is a thousand hand-offs before the first sample, so the cap grows with
            // the line.
            let capped = Plan {
                case_time: plan.case_time + HANDOFF_TIME_PER_WAITER * waiters as u32,
                ..plan.clone()
            };
            let mut measured = handoff::run(
                &on_this_backend,
                &format!("{prefix}handoff"),
                waiters,
                &capped,
            )
            .await;
            if measured.samples.is_empty() && measured.error.is_none() {
                measured.error = Some(format!(
                    "no hand-off measured within {:?}",
                    capped.case_time
                ));
            }
            result.handoff.push(measured);
        }
        sampler.abort();
        result.connections_handoff = Some(most.load(Ordering::Relaxed));

        for guard in guards {
            guard.unlock().await?;
        }
        close(sessions).await;
        drop(coordinator);
        Ok(())
    }

    async fn close(sessions: Vec<Session>) {
        stream::iter(sessions)
            .for_each_concurrent(IN_FLIGHT, |session| async move {
                if let Err(error) = session.close().await {
                    tracing::debug!(%error, "closing a scale session failed; it expires");
                }
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_resident_memory() {
        let rss = rss_kb().expect("VmRSS in /proc/self/status");
        assert!(rss > 0);
    }
}
