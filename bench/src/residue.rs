//! Store-side residue of per-entity locking (issue 18, 3c): many distinct lock names
//! (100,000; `--quick` 1,000), each locked and released once by a few concurrent
//! sessions (32), then what the store keeps, and what is left after the backend's own
//! idle clean-up.
//!
//! Each run works in a namespace of its own, removed at the end, so earlier runs'
//! state does not count:
//! - memory: a fresh store; its keys and their key+value bytes;
//! - etcd: a key prefix of its own; the keys under it, and the server's db size and
//!   the part of it in use (`Status`), before and after (etcd keeps the history of
//!   deleted keys until a compaction, which the bench does not force on a shared
//!   server);
//! - Redis: a `namespace=` of its own; the keys matching `{<namespace>*` (`SCAN`),
//!   grouped by their last `:`-separated part, the sum of their `MEMORY USAGE`, and the
//!   server's `used_memory` (`INFO memory`) before and after; then each key's `PTTL`:
//!   the residue is bounded when every key expires, within the backend's
//!   `FAIR_IDLE_MS` (read from `backend-redis/lua/lib.lua`);
//! - PostgreSQL: a schema of its own; the rows of each of its tables and
//!   `pg_total_relation_size` of them together, before and after; then a second
//!   backend on that schema with `Limits::name_idle` of 1 s calls `sweep()` until
//!   the names are gone and a sweep prunes nothing, and the rows left are counted.
//!
//! Tokens must stay monotonic through the clean-up: the first name's token is kept,
//! and that name is locked again after the clean-up (on Redis, after deleting that
//! name's keys, which is what their expiry does); the new token must be greater.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use distsync::Coordinator;

use crate::args::Plan;
use crate::target::{BackendKind, Target};
use crate::Result;

/// What the clean-up left, and how it was done.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cleanup {
    /// How (e.g. "sweep with name_idle 1 s: 3 sweeps in 2.1 s").
    pub how: String,
    /// Keys or rows left (the whole namespace) after it.
    pub left: Option<u64>,
    /// Per table, the rows left (PostgreSQL).
    pub detail: Vec<(String, u64)>,
    /// Redis: the shortest and longest `PTTL` among the keys left.
    pub ttl_range: Option<(Duration, Duration)>,
    /// Redis: keys left with no TTL.
    pub no_ttl: Option<u64>,
    /// Redis: the longest a key may be kept idle (`FAIR_IDLE_MS`).
    pub expire_bound: Option<Duration>,
}

/// What the case measured on one backend.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResidueResult {
    /// Names asked for.
    pub names: usize,
    /// Names locked and released.
    pub locked: usize,
    /// Concurrent sessions locking them.
    pub tasks: usize,
    /// Time to lock and release them all.
    pub elapsed: Option<Duration>,
    /// The namespace (key prefix, Redis namespace, or schema) of the run.
    pub namespace: String,
    /// What is counted: "keys" or "rows".
    pub unit: &'static str,
    /// Keys or rows in the namespace before the names were locked.
    pub before: Option<u64>,
    /// After they were all released.
    pub after: Option<u64>,
    /// Per table (PostgreSQL) or key kind (Redis): before and after.
    pub detail: Vec<(String, u64, u64)>,
    /// What the bytes are (e.g. "used_memory").
    pub bytes_measure: &'static str,
    /// Store bytes before.
    pub bytes_before: Option<i64>,
    /// Store bytes after.
    pub bytes_after: Option<i64>,
    /// A second measure of bytes after, when the store has one (etcd: db size in use;
    /// Redis: `MEMORY USAGE` of the namespace's keys), with what it is.
    pub bytes_extra: Option<(&'static str, i64, i64)>,
    /// The idle clean-up and what it left.
    pub cleanup: Option<Cleanup>,
    /// The first name's token, and its token when locked again after the clean-up.
    pub tokens: Option<(u64, u64)>,
    /// Why the case stopped early.
    pub error: Option<String>,
}

impl ResidueResult {
    /// Keys or rows the released names left behind (after − before).
    pub fn left_behind(&self) -> Option<u64> {
        Some(self.after?.saturating_sub(self.before?))
    }

    /// Keys or rows left after the clean-up, less those there before.
    pub fn left_after_cleanup(&self) -> Option<u64> {
        let left = match &self.cleanup {
            Some(cleanup) => cleanup.left?,
            None => self.after?,
        };
        Some(left.saturating_sub(self.before?))
    }

    /// Whether the target is met ("a released, unused name leaves nothing behind, or a
    /// bounded amount, without giving up monotonic tokens"), and the figures why.
    pub fn verdict(&self) -> Option<(bool, String)> {
        if self.locked == 0 {
            return None;
        }
        let left = self.left_after_cleanup()?;
        let unit = self.unit;
        let mut met;
        let per_name_bytes = self
            .bytes_extra
            .map(|(_, before, after)| (after - before) as f64 / self.locked as f64)
            .filter(|bytes| *bytes > 0.0)
            .map_or(String::new(), |bytes| format!(", {bytes:.0} B per name"));
        let mut text = if left == 0 {
            met = true;
            match self.left_behind() {
                Some(kept) if kept > 0 => format!(
                    "0 {unit} left after the clean-up ({:.1} per name until then)",
                    kept as f64 / self.locked as f64
                ),
                _ => format!("0 {unit} left"),
            }
        } else {
            let per_name = left as f64 / self.locked as f64;
            let expiring = self.cleanup.as_ref().and_then(|cleanup| {
                Some((cleanup.no_ttl?, cleanup.ttl_range?.1, cleanup.expire_bound?))
            });
            match expiring {
                Some((0, longest, bound)) if longest <= bound => {
                    met = true;
                    format!(
                        "{left} {unit} left ({per_name:.1} per name{per_name_bytes}), every one expiring within {} (longest PTTL {})",
                        fmt_secs(bound),
                        fmt_secs(longest)
                    )
                }
                Some((no_ttl, longest, bound)) => {
                    met = false;
                    format!(
                        "{left} {unit} left ({per_name:.1} per name), {no_ttl} without a TTL, longest PTTL {} (bound {})",
                        fmt_secs(longest),
                        fmt_secs(bound)
                    )
                }
                None => {
                    met = false;
                    format!("{left} {unit} left ({per_name:.1} per name) after the clean-up")
                }
            }
        };
        match self.tokens {
            Some((first, again)) if again > first => {
                text.push_str(&format!("; token {first} → {again} after the clean-up"));
            }
            Some((first, again)) => {
                met = false;
                text.push_str(&format!(
                    "; token went from {first} to {again}: **not monotonic**"
                ));
            }
            None => {
                met = false;
                text.push_str("; token monotonicity not checked");
            }
        }
        Some((met, text))
    }
}

/// `duration` as seconds, minutes or hours, whichever reads best.
pub fn fmt_secs(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs >= 3600.0 {
        format!("{:.2} h", secs / 3600.0)
    } else if secs >= 60.0 {
        format!("{:.1} min", secs / 60.0)
    } else {
        format!("{secs:.1} s")
    }
}

/// The names of a run: `residue/<index>`, inside the run's own namespace.
fn name(index: usize) -> String {
    format!("residue/{index}")
}

/// Locks and releases `names` distinct names once each from `tasks` sessions of
/// `coordinator`, within `cap`. Returns how many were done and the first name's token.
///
/// # Errors
/// The first error of a session (the others stop too).
pub async fn lock_each_once(
    coordinator: &Coordinator,
    names: usize,
    tasks: usize,
    cap: Duration,
) -> Result<(usize, Option<u64>)> {
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + cap;
    let mut sessions = Vec::with_capacity(tasks);
    for _ in 0..tasks.max(1) {
        sessions.push(coordinator.session().await?);
    }
    let workers: Vec<_> = sessions
        .into_iter()
        .map(|session| {
            let coordinator = coordinator.clone();
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                let mut done = 0_usize;
                let mut first = None;
                let outcome: Result<()> = async {
                    while Instant::now() < deadline {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        if index >= names {
                            break;
                        }
                        let locker = coordinator.locker(&session, &name(index))?;
                        let guard = locker.lock().await?;
                        if index == 0 {
                            first = Some(guard.token().get());
                        }
                        guard.unlock().await?;
                        done += 1;
                    }
                    Ok(())
                }
                .await;
                let closed = session.close().await;
                outcome?;
                closed?;
                Ok::<_, crate::BoxError>((done, first))
            })
        })
        .collect();
    let mut done = 0;
    let mut first = None;
    let mut error = None;
    for worker in workers {
        match worker.await {
            Ok(Ok((count, token))) => {
                done += count;
                first = first.or(token);
            }
            Ok(Err(failed)) => {
                error.get_or_insert(failed.to_string());
            }
            Err(panicked) => {
                error.get_or_insert(panicked.to_string());
            }
        }
    }
    match error {
        Some(error) => Err(format!("after {done} names: {error}").into()),
        None => Ok((done, first)),
    }
}

/// Locks the first name once more (after the clean-up) and returns its token.
async fn relock_first(coordinator: &Coordinator) -> Result<u64> {
    let session = coordinator.session().await?;
    let outcome = async {
        let guard = coordinator.locker(&session, &name(0))?.lock().await?;
        let token = guard.token().get();
        guard.unlock().await?;
        Ok::<_, crate::BoxError>(token)
    }
    .await;
    session.close().await?;
    outcome
}

/// The time cap of the locking: generous, scaled with the names.
/// [`lock_each_once`] over the plan's names and tasks, noting the time it took and the
/// names locked in `result`; returns the first name's token.
async fn lock_all(
    coordinator: &Coordinator,
    plan: &Plan,
    result: &mut ResidueResult,
) -> Result<Option<u64>> {
    let started = Instant::now();
    let (done, first) = lock_each_once(
        coordinator,
        plan.residue_names,
        plan.residue_tasks,
        cap(plan),
    )
    .await?;
    result.elapsed = Some(started.elapsed());
    result.locked = done;
    Ok(first)
}

fn cap(plan: &Plan) -> Duration {
    plan.case_time.max(Duration::from_secs(10))
        + Duration::from_millis(u64::try_from(plan.residue_names).unwrap_or(u64::MAX) * 5)
}

/// A namespace component unique to this run.
fn run_tag(run_id: &str) -> String {
    run_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect::<String>()
        .to_ascii_lowercase()
}

/// Runs the case on `target`.
pub async fn run(target: &Target, run_id: &str, plan: &Plan) -> ResidueResult {
    let mut result = ResidueResult {
        names: plan.residue_names,
        tasks: plan.residue_tasks,
        ..ResidueResult::default()
    };
    #[cfg_attr(
        not(any(feature = "etcd", feature = "redis", feature = "postgres")),
        allow(unused_variables)
    )]
    let tag = run_tag(run_id);
    let outcome = match target.kind {
        BackendKind::Memory => memory(&mut result, plan).await,
        #[cfg(feature = "etcd")]
        BackendKind::Etcd => etcd::run(&target.url, &tag, &mut result, plan).await,
        #[cfg(feature = "redis")]
        BackendKind::Redis => redis::run(&target.url, &tag, &mut result, plan).await,
        #[cfg(feature = "postgres")]
        BackendKind::Postgres => postgres::run(&target.url, &tag, &mut result, plan).await,
        #[allow(unreachable_patterns)]
        other => Err(format!("{other} is not compiled in").into()),
    };
    if let Err(error) = outcome {
        result.error = Some(error.to_string());
    }
    result
}

/// The memory backend: a fresh store, its keys and their bytes.
async fn memory(result: &mut ResidueResult, plan: &Plan) -> Result<()> {
    use distsync::raw::kv::{Kv, Range};
    let backend = distsync::MemoryBackend::new();
    let kv = Arc::clone(backend.kv());
    let coordinator = Coordinator::new(backend);
    let measure = || async {
        let all = kv.range(Range::prefix("")).await?;
        let bytes: usize = all
            .kvs
            .iter()
            .map(|pair| pair.key.len() + pair.value.len())
            .sum();
        Ok::<_, crate::BoxError>((all.count as u64, i64::try_from(bytes)?))
    };
    result.namespace = "a fresh memory:// store".into();
    result.unit = "keys";
    result.bytes_measure = "key and value bytes";
    let (keys, bytes) = measure().await?;
    result.before = Some(keys);
    result.bytes_before = Some(bytes);
    let first = lock_all(&coordinator, plan, result).await?;
    let (keys, bytes) = measure().await?;
    result.after = Some(keys);
    result.bytes_after = Some(bytes);
    result.cleanup = Some(Cleanup {
        how: "none needed (the lock key is deleted at release; tokens are revisions)".into(),
        left: Some(keys),
        ..Cleanup::default()
    });
    if let Some(first) = first {
        result.tokens = Some((first, relock_first(&coordinator).await?));
    }
    Ok(())
}

#[cfg(feature = "etcd")]
mod etcd {

    use etcd_client::{DeleteOptions, GetOptions};

    use super::{lock_all, relock_first, Cleanup, ResidueResult};
    use crate::args::Plan;
    use crate::Result;

    pub(super) async fn run(
        url: &str,
        tag: &str,
        result: &mut ResidueResult,
        plan: &Plan,
    ) -> Result<()> {
        let base = distsync::etcd::EtcdConfig::parse(url)?
            .namespace()
            .to_owned();
        let namespace = format!("{base}distsync-bench-residue/{tag}/");
        let mut client = crate::raw::etcd::client(url).await?;
        let backend = distsync::etcd::backend_from_client(client.clone(), &namespace)?;
        let coordinator = distsync::Coordinator::new(backend);
        result.namespace = format!("key prefix `{namespace}`");
        result.unit = "keys";
        result.bytes_measure = "db size (Status)";
        let outcome = async {
            let keys = count(&mut client, &namespace).await?;
            let status = client.status().await?;
            result.before = Some(keys);
            result.bytes_before = Some(status.db_size());
            let in_use_before = status.raft_used_db_size();
            let first = lock_all(&coordinator, plan, result).await?;
            let keys = count(&mut client, &namespace).await?;
            let status = client.status().await?;
            result.after = Some(keys);
            result.bytes_after = Some(status.db_size());
            result.bytes_extra = Some((
                "db size in use (history kept until a compaction)",
                in_use_before,
                status.raft_used_db_size(),
            ));
            result.cleanup = Some(Cleanup {
                how: "none needed (the lock key is deleted at release; tokens are revisions)"
                    .into(),
                left: Some(keys),
                ..Cleanup::default()
            });
            if let Some(first) = first {
                result.tokens = Some((first, relock_first(&coordinator).await?));
            }
            Ok::<_, crate::BoxError>(())
        }
        .await;
        let cleaned = client
            .delete(namespace.as_str(), Some(DeleteOptions::new().with_prefix()))
            .await;
        outcome?;
        cleaned?;
        Ok(())
    }

    async fn count(client: &mut etcd_client::Client, prefix: &str) -> Result<u64> {
        let response = client
            .get(
                prefix,
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await?;
        Ok(u64::try_from(response.count())?)
    }
}

#[cfg(feature = "redis")]
mod redis {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use redis::aio::MultiplexedConnection;

    use super::{lock_all, name, relock_first, Cleanup, ResidueResult};
    use crate::args::Plan;
    use crate::Result;

    /// The shared functions of the backend's scripts, where `FAIR_IDLE_MS` is set.
    const LIB: &str = include_str!("../../backend-redis/lua/lib.lua");

    /// Keys per pipeline.
    const BATCH: usize = 1000;

    /// `FAIR_IDLE_MS` of the backend's scripts.
    pub(super) fn fair_idle() -> Option<Duration> {
        LIB.lines()
            .find_map(|line| line.trim().strip_prefix("local FAIR_IDLE_MS ="))
            .and_then(|value| value.trim().parse().ok())
            .map(Duration::from_millis)
    }

    /// `url` with its `namespace` replaced by `namespace`.
    fn with_namespace(url: &str, namespace: &str) -> Result<String> {
        let mut parsed = url::Url::parse(url)?;
        let kept: Vec<(String, String)> = parsed
            .query_pairs()
            .filter(|(key, _)| key != "namespace")
            .map(|(key, value)| (key.into_owned(), value.into_owned()))
            .collect();
        parsed
            .query_pairs_mut()
            .clear()
            .extend_pairs(kept)
            .append_pair("namespace", namespace);
        Ok(parsed.into())
    }

    async fn keys(conn: &mut MultiplexedConnection, pattern: &str) -> Result<Vec<String>> {
        let mut cursor = 0_u64;
        let mut found = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(BATCH)
                .query_async(conn)
                .await?;
            found.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        found.sort();
        found.dedup();
        Ok(found)
    }

    async fn used_memory(conn: &mut MultiplexedConnection) -> Result<i64> {
        let info: String = redis::cmd("INFO").arg("memory").query_async(conn).await?;
        info.lines()
            .find_map(|line| line.strip_prefix("used_memory:"))
            .and_then(|value| value.trim().parse().ok())
            .ok_or_else(|| "INFO memory has no used_memory".into())
    }

    /// Runs `command key` for every key, in pipelines.
    async fn per_key<T: redis::FromRedisValue>(
        conn: &mut MultiplexedConnection,
        command: &[&str],
        keys: &[String],
    ) -> Result<Vec<T>> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.cmd(command[0]).arg(&command[1..]).arg(key);
            }
            let replies: Vec<T> = pipe.query_async(conn).await?;
            out.extend(replies);
        }
        Ok(out)
    }

    /// Keys by kind: their last `:`-separated part (`fence`, `seq`, ...).
    fn kinds(keys: &[String]) -> BTreeMap<String, u64> {
        let mut kinds = BTreeMap::new();
        for key in keys {
            let kind = key.rsplit(':').next().unwrap_or(key);
            let kind = if kind.chars().all(|c| c.is_ascii_digit()) {
                "<id>".to_owned()
            } else {
                kind.to_owned()
            };
            *kinds.entry(kind).or_insert(0) += 1;
        }
        kinds
    }

    pub(super) async fn run(
        url: &str,
        tag: &str,
        result: &mut ResidueResult,
        plan: &Plan,
    ) -> Result<()> {
        let namespace = format!("distsync-bench-residue:{tag}:");
        let pattern = format!("{{{namespace}*");
        let coordinator = distsync::connect(&with_namespace(url, &namespace)?).await?;
        let client = crate::raw::redis::client(url)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        result.namespace = format!("namespace `{namespace}`");
        result.unit = "keys";
        result.bytes_measure = "used_memory (INFO memory; the whole server)";
        let outcome = async {
            let before = keys(&mut conn, &pattern).await?;
            result.before = Some(before.len() as u64);
            result.bytes_before = Some(used_memory(&mut conn).await?);
            let usage_before: Vec<Option<i64>> =
                per_key(&mut conn, &["MEMORY", "USAGE"], &before).await?;
            let first = lock_all(&coordinator, plan, result).await?;
            let after = keys(&mut conn, &pattern).await?;
            result.after = Some(after.len() as u64);
            result.bytes_after = Some(used_memory(&mut conn).await?);
            let usage: Vec<Option<i64>> = per_key(&mut conn, &["MEMORY", "USAGE"], &after).await?;
            result.bytes_extra = Some((
                "MEMORY USAGE of the namespace's keys",
                usage_before.into_iter().flatten().sum(),
                usage.into_iter().flatten().sum(),
            ));
            let (kinds_before, kinds_after) = (kinds(&before), kinds(&after));
            result.detail = kinds_after
                .iter()
                .map(|(kind, &count)| {
                    (
                        kind.clone(),
                        kinds_before.get(kind).copied().unwrap_or(0),
                        count,
                    )
                })
                .collect();
            // The clean-up is the keys' expiry: what is left, and when it goes.
            let ttls: Vec<i64> = per_key(&mut conn, &["PTTL"], &after).await?;
            let live: Vec<u64> = ttls
                .iter()
                .filter_map(|&ttl| u64::try_from(ttl).ok())
                .collect();
            let no_ttl = ttls.iter().filter(|&&ttl| ttl == -1).count() as u64;
            result.cleanup = Some(Cleanup {
                how: "the keys' own expiry (PEXPIRE FAIR_IDLE_MS when a line empties); \
                      nothing to trigger"
                    .into(),
                left: Some(after.len() as u64),
                detail: Vec::new(),
                ttl_range: live
                    .iter()
                    .min()
                    .zip(live.iter().max())
                    .map(|(&low, &high)| (Duration::from_millis(low), Duration::from_millis(high))),
                no_ttl: Some(no_ttl),
                expire_bound: fair_idle(),
            });
            if let Some(first) = first {
                // What the first name's keys expiring does: they are gone.
                let gone = keys(&mut conn, &format!("{{{namespace}{}}}*", name(0))).await?;
                if !gone.is_empty() {
                    let _: i64 = redis::cmd("DEL").arg(&gone).query_async(&mut conn).await?;
                }
                result.tokens = Some((first, relock_first(&coordinator).await?));
            }
            Ok::<_, crate::BoxError>(())
        }
        .await;
        drop(coordinator);
        let cleaned = async {
            let left = keys(&mut conn, &pattern).await?;
            for chunk in left.chunks(BATCH) {
                let _: i64 = redis::cmd("UNLINK")
                    .arg(chunk)
                    .query_async(&mut conn)
                    .await?;
            }
            Ok::<_, crate::BoxError>(())
        }
        .await;
        outcome?;
        cleaned
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use std::time::{Duration, Instant};

    use sqlx::{Connection, PgConnection};

    use super::{lock_all, relock_first, Cleanup, ResidueResult};
    use crate::args::Plan;
    use crate::Result;

    /// `name_idle` of the clean-up's backend.
    const NAME_IDLE: Duration = Duration::from_secs(1);
    /// How long the sweeps may take to prune every name.
    const SWEEP_DEADLINE: Duration = Duration::from_secs(60);
    /// Between sweeps that still found names too recent.
    const SWEEP_POLL: Duration = Duration::from_millis(250);

    /// Rows per table of `schema`, in table order.
    async fn rows(conn: &mut PgConnection, schema: &str) -> Result<Vec<(String, u64)>> {
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = $1 AND table_type = 'BASE TABLE' ORDER BY table_name",
        )
        .bind(schema)
        .fetch_all(&mut *conn)
        .await?;
        let mut counts = Vec::with_capacity(tables.len());
        for table in tables {
            let count: i64 = sqlx::query_scalar(&format!(
                "SELECT count(*) FROM \"{}\".\"{}\"",
                schema.replace('"', "\"\""),
                table.replace('"', "\"\"")
            ))
            .fetch_one(&mut *conn)
            .await?;
            counts.push((table, u64::try_from(count)?));
        }
        Ok(counts)
    }

    async fn bytes(conn: &mut PgConnection, schema: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind = 'r'",
        )
        .bind(schema)
        .fetch_one(&mut *conn)
        .await?)
    }

    fn total(rows: &[(String, u64)]) -> u64 {
        rows.iter().map(|(_, count)| count).sum()
    }

    fn of(rows: &[(String, u64)], table: &str) -> u64 {
        rows.iter()
            .find(|(name, _)| name == table)
            .map_or(0, |(_, count)| *count)
    }

    pub(super) async fn run(
        url: &str,
        tag: &str,
        result: &mut ResidueResult,
        plan: &Plan,
    ) -> Result<()> {
        let mut config = distsync::postgres::PostgresConfig::parse(url)?;
        let schema: String = format!("dsb_residue_{tag}").chars().take(63).collect();
        config.schema.clone_from(&schema);
        let mut probe = PgConnection::connect_with(&config.options).await?;
        result.namespace = format!("schema `{schema}`");
        result.unit = "rows";
        result.bytes_measure = "pg_total_relation_size of the schema's tables";
        let outcome = async {
            let coordinator =
                distsync::Coordinator::new(distsync::postgres::backend_with_config(&config).await?);
            let before = rows(&mut probe, &schema).await?;
            result.before = Some(total(&before));
            result.bytes_before = Some(bytes(&mut probe, &schema).await?);
            let first = lock_all(&coordinator, plan, result).await?;
            let after = rows(&mut probe, &schema).await?;
            result.after = Some(total(&after));
            result.bytes_after = Some(bytes(&mut probe, &schema).await?);
            result.detail = after
                .iter()
                .map(|(table, count)| (table.clone(), of(&before, table), *count))
                .collect();
            // The clean-up: a backend on the same schema whose names go after 1 s idle,
            // swept until the names are gone and a sweep prunes nothing.
            let sweeper = distsync::postgres::backend_with_config(&config).await?;
            let mut limits = sweeper.limits();
            limits.name_idle = NAME_IDLE;
            sweeper.set_limits(limits);
            let swept_from = Instant::now();
            let deadline = swept_from + SWEEP_DEADLINE;
            let mut sweeps = 0;
            let mut pruned_total = 0_i64;
            let left = loop {
                let (_, pruned, _) = sweeper.sweep().await?;
                sweeps += 1;
                pruned_total += pruned;
                let now = rows(&mut probe, &schema).await?;
                let names_left = of(&now, "lock_names");
                if (pruned == 0 && names_left <= of(&before, "lock_names"))
                    || Instant::now() >= deadline
                {
                    break now;
                }
                if pruned == 0 {
                    tokio::time::sleep(SWEEP_POLL).await;
                }
            };
            result.cleanup = Some(Cleanup {
                how: format!(
                    "sweep() of a backend with name_idle {} s: {sweeps} sweeps pruned \
                     {pruned_total} names in {:.1} s",
                    NAME_IDLE.as_secs(),
                    swept_from.elapsed().as_secs_f64()
                ),
                left: Some(total(&left)),
                detail: left,
                ..Cleanup::default()
            });
            if let Some(first) = first {
                result.tokens = Some((first, relock_first(&coordinator).await?));
            }
            Ok::<_, crate::BoxError>(())
        }
        .await;
        let dropped = sqlx::query(&format!(
            "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
            schema.replace('"', "\"\"")
        ))
        .execute(&mut probe)
        .await;
        let _ = probe.close().await;
        outcome?;
        dropped?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(after: u64, cleanup: Option<Cleanup>, tokens: Option<(u64, u64)>) -> ResidueResult {
        ResidueResult {
            names: 10,
            locked: 10,
            unit: "keys",
            before: Some(2),
            after: Some(after),
            cleanup,
            tokens,
            ..ResidueResult::default()
        }
    }

    #[test]
    fn verdicts() {
        let (met, text) = result(2, None, Some((5, 9))).verdict().unwrap();
        assert!(met, "{text}");
        assert!(text.starts_with("0 keys left"), "{text}");
        let (met, text) = result(2, None, Some((5, 5))).verdict().unwrap();
        assert!(!met && text.contains("not monotonic"), "{text}");
        let bounded = Cleanup {
            left: Some(22),
            ttl_range: Some((Duration::from_secs(3000), Duration::from_secs(3600))),
            no_ttl: Some(0),
            expire_bound: Some(Duration::from_secs(3600)),
            ..Cleanup::default()
        };
        let (met, text) = result(22, Some(bounded.clone()), Some((1, 2)))
            .verdict()
            .unwrap();
        assert!(met, "{text}");
        assert!(text.contains("20 keys left (2.0 per name)"), "{text}");
        let forever = Cleanup {
            no_ttl: Some(3),
            ..bounded
        };
        let (met, _) = result(22, Some(forever), Some((1, 2))).verdict().unwrap();
        assert!(!met);
        let swept = Cleanup {
            left: Some(2),
            ..Cleanup::default()
        };
        let (met, text) = result(22, Some(swept), Some((1, 2))).verdict().unwrap();
        assert!(met, "{text}");
        assert!(
            text.starts_with("0 keys left after the clean-up (2.0 per name until then)"),
            "{text}"
        );
        let rows = Cleanup {
            left: Some(12),
            ..Cleanup::default()
        };
        let (met, text) = result(22, Some(rows), Some((1, 2))).verdict().unwrap();
        assert!(!met && text.contains("10 keys left"), "{text}");
    }

    #[tokio::test]
    async fn memory_leaves_nothing_and_tokens_grow() {
        let plan = Plan::from_args(&<crate::args::Args as clap::Parser>::parse_from([
            "distsync-bench",
            "--quick",
            "--residue-names",
            "20",
        ]));
        let mut result = ResidueResult {
            names: 20,
            tasks: plan.residue_tasks,
            ..ResidueResult::default()
        };
        memory(&mut result, &plan).await.unwrap();
        assert_eq!(result.locked, 20);
        assert_eq!(result.left_behind(), Some(0));
        let (met, text) = result.verdict().unwrap();
        assert!(met, "{text}");
    }
}
