//! The rate limiter: GCRA (see [`distsync_core::rate_limiter`]) on one persistent
//! node, `<root>/ratelimit/<name>`, changed by compare-and-swap on its data version,
//! with the ZooKeeper leader's clock as the only clock.
//!
//! # The clock
//!
//! ZooKeeper has no request that reads the time. A write's time is visible only
//! afterwards, as the written node's `mtime`: the leader's wall clock, in
//! milliseconds, when it ordered the write. Two writes show it:
//!
//! - a write to `<root>/clock` (`server_now`, shared with the queue's oldest age and
//!   the break of a lock) reads "now" before a decision;
//! - the limiter node's own `mtime` is the time of the grant that wrote it.
//!
//! # The node
//!
//! The node holds a [`StampedTat`] record, `<base µs> <added µs> <rate fingerprint>` in
//! decimal text, and its theoretical arrival time (TAT) is `max(base, mtime) + added`.
//! A grant of `n` permits at interval `T` writes `base` = the TAT it read and `added` =
//! `n·T`, without knowing when its write lands: ZooKeeper fills in the `mtime`. So
//! every grant is GCRA's step at the instant the leader applies it, not at the earlier
//! instant its "now" was read: a limiter idle when read starts its TAT from the grant's
//! own time, never from a stale reading.
//!
//! A request writes the clock, then reads the node, runs GCRA ([`StampedTat::decide`])
//! at that "now", and, when granted, writes the new node with `setData` at the version
//! read (`create` where it is missing). The read comes after the clock write on the
//! same session, so even a follower answers it with every write the leader ordered
//! before that clock write: the read is not older than "now". A write that lost a race
//! (`BadVersion`, `NodeExists`, `NoNode`) wrote nothing; the request reads the node
//! again and decides at the same "now" (still earlier than its next write), and reads
//! the clock again only if that decision is a refusal. A denial writes nothing but the
//! clock.
//!
//! # Why a "now" read early is only stricter
//!
//! The clock is read before the grant is applied, so `now ≤ t`, the grant's time. GCRA
//! grants at `now` only when `max(TAT, now) + n·T − B·T ≤ now`, and the left side
//! minus `now` does not grow as time passes: a request granted at `now` is granted at
//! `t` too, and the node records the step at `t`. An early `now` can refuse what `t`
//! would have granted, and its `retry_after` is then up to one round trip too long;
//! it never grants more. The grants applied in any window `[t0, t1]` of the leader's
//! clock number at most `B + (t1 − t0)/T`, as on the stores that read their clock in
//! the same step (Redis, PostgreSQL).
//!
//! `mtime` counts whole milliseconds: that is the store's clock here, with which
//! intervals finer than a millisecond still add up exactly (the TAT is kept in µs).
//! After a failover, `base` keeps a TAT from moving back; what the new leader's clock
//! does to the limit is in docs/ZOOKEEPER.md, "STM, guarded writes, counters and
//! latches", and so are the limiter's session, the cost of asking again at once, lost
//! replies, a change of rate, foreign data, `status` and `export`.

use std::sync::Arc;

use async_trait::async_trait;
use distsync_core::rate_limiter::{Admission, Rate};
use distsync_core::raw::{Make, RateStep, RateStepLimiter, StampedRead, StampedStore, StampedTat};
use distsync_core::{Error, Name, Result};
use zookeeper_client as zk;

use crate::counter::swap;
use crate::direct::{request_found, Direct};
use crate::keys::{self, Kind};
use crate::queue::nodes::server_now;
use crate::store::Shared;
use crate::BACKEND;

/// A ZooKeeper time (ms since the epoch) in µs; times before the epoch are 0.
pub(crate) fn ms_to_us(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0).saturating_mul(1_000)
}

/// The path of the clock node under the root, as every reader of the server's time
/// writes it.
pub(crate) fn clock_path(shared: &Shared) -> String {
    format!("{}/clock", shared.config.root())
}

/// The rate limiter `name` at `rate` (see the module docs).
pub(crate) type ZkRateLimiter = RateStepLimiter<ZkRateStep>;

/// A limiter's node and the clock node it reads "now" from.
pub(crate) struct ZkRateStep {
    /// The backend's client for requests of no session, shared by every handle.
    direct: Arc<Direct>,
    path: String,
    clock: String,
}

#[async_trait]
impl RateStep for ZkRateStep {
    async fn step(&self, name: &Name, rate: &Rate, permits: u32) -> Result<Admission> {
        let client = self.direct.client().await?;
        let node = LimiterNode { step: self, client };
        StampedTat::acquire(&node, rate, name, permits).await
    }
}

impl Make<Arc<Direct>, Name> for ZkRateStep {
    fn make(direct: &Arc<Direct>, name: Name) -> Result<Self> {
        let shared = &direct.shared;
        Ok(Self {
            path: keys::path(shared.config.root(), Kind::RateLimit, &name),
            clock: clock_path(shared),
            direct: Arc::clone(direct),
        })
    }
}

/// A limiter's node as one request reads and writes it: through one client, so
/// that every read follows the clock write before it on the same session.
struct LimiterNode<'a> {
    step: &'a ZkRateStep,
    client: zk::Client,
}

#[async_trait]
impl StampedStore for LimiterNode<'_> {
    /// The node's data version (`None`: missing).
    type Version = Option<i32>;

    async fn read(&self, kept_now_us: Option<u64>) -> Result<StampedRead<Option<i32>>> {
        let path = &self.step.path;
        let shared = &self.step.direct.shared;
        let now_us = match kept_now_us {
            Some(now) => now,
            // The leader's "now": the `mtime` of a write to the clock node.
            None => ms_to_us(server_now(shared, &self.client, &self.step.clock).await?),
        };
        let (record, version) = match request_found(shared, self.client.get_data(path)).await? {
            Some((data, stat)) => {
                let stored = StampedTat::parse(&data).map_err(|_| {
                    Error::backend(BACKEND, format!("{path} does not hold a rate limiter"))
                })?;
                // A node without data is the ancestor of a longer name: an idle limiter.
                let record = stored.map(|stored| {
                    let tat = stored.tat_us(ms_to_us(stat.mtime));
                    (stored, tat)
                });
                (record, Some(stat.version))
            }
            None => (None, None),
        };
        Ok(StampedRead {
            now_us,
            record,
            version,
        })
    }

    async fn write_if(&self, version: Option<i32>, record: &StampedTat) -> Result<bool> {
        let shared = &self.step.direct.shared;
        swap(
            shared,
            &self.client,
            &self.step.path,
            version,
            &record.render(),
        )
        .await
    }
}
