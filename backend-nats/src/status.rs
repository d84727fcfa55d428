//! Who holds what ([`Backend::status`](distsync_core::Backend::status)), read from
//! one batched direct get of every kind's keys.
//!
//! A line's entries are its live contender keys in token order (see `src/lock.rs`);
//! each names its session (the key's fourth token, or an unfair holder's value), and
//! a holder's token is its create sequence. The store keeps no join time, so no age
//! is given. A lock's waiters include its unfair lock's wait line. A rate limiter's
//! next due time is on the server's clock, read by one write to the clock key when the
//! report has limiters (see `src/clock.rs`).

use std::collections::BTreeMap;

use bytes::Bytes;
use distsync_core::status::{
    CounterStatus, DoubleBarrierStatus, HoldMode, HoldStatus, LatchStatus, LeaderStatus, LineKind,
    LineStatus, RateLimiterStatus, StatusReport,
};
use distsync_core::{FencingToken, Result};

use crate::amnesia::Amnesia;
use crate::clock;
use crate::counter::{parse_counter, parse_latch};
use crate::keys::{self, Kind};
use crate::rate_limiter::recorded;
use crate::session::CREATE_HEADER;
use crate::shared::Shared;
use crate::store::Entry;

/// One live key of a line: its place, token, key, session and value.
struct Contender {
    /// Its place in line: its token, or 0 for an unfair lock's holder, which fair
    /// contenders take for the head.
    order: u64,
    /// Its fencing token, as its holder sees it (see `src/amnesia.rs`).
    shown: FencingToken,
    key: String,
    session: Option<String>,
    value: Bytes,
}

impl Contender {
    fn of(entry: Entry, amnesia: &Amnesia) -> Self {
        let unfair = keys::is_unfair_holder(&entry.key);
        let session = if unfair {
            std::str::from_utf8(&entry.value)
                .ok()
                .and_then(|value| value.split('.').next())
                .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        } else {
            entry
                .key
                .split('.')
                .nth(3)
                .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        };
        let token = entry
            .header(CREATE_HEADER)
            .and_then(|create| create.parse().ok())
            .unwrap_or(entry.seq);
        Self {
            order: if unfair { 0 } else { token },
            shown: amnesia.token(token),
            session: session.map(|id| distsync_core::SessionId(id).to_string()),
            key: entry.key,
            value: entry.value,
        }
    }

    /// Its hold, in `mode`, with its token if `holder`.
    fn hold(&self, mode: HoldMode, holder: bool) -> HoldStatus {
        HoldStatus::new(self.key.clone(), mode)
            .with_session(self.session.clone())
            .with_token(holder.then_some(self.shown))
    }
}

/// The report of every name starting with `prefix`.
pub(crate) async fn status(shared: &Shared, prefix: &str) -> Result<StatusReport> {
    let (entries, _) = shared.store.list(&Kind::every_key()).await?;
    let mut report = StatusReport::new(crate::BACKEND, prefix);
    // By kind and name: the live entries; the rate limiters' apart, read with their
    // time stamps.
    let mut grouped: BTreeMap<(&'static str, String), Vec<Entry>> = BTreeMap::new();
    let mut limiters = Vec::new();
    for entry in entries.into_iter().filter(Entry::live) {
        let Some(name) = keys::name_of(&entry.key) else {
            continue;
        };
        if !report.covers(&name) || entry.key.split('.').nth(2) == Some("p") {
            // A proclaim's own key (see `src/election.rs`) is no candidate.
            continue;
        }
        let Some(kind) = Kind::of(&entry.key) else {
            continue;
        };
        if kind == Kind::RateLimit {
            limiters.push((name, entry));
            continue;
        }
        grouped.entry((kind.token(), name)).or_default().push(entry);
    }
    report.rate_limiters = rate_limiters(shared, limiters).await;
    let mut unfair_waiting: BTreeMap<String, Vec<Contender>> = BTreeMap::new();
    for ((kind, name), entries) in grouped {
        let mut line: Vec<Contender> = entries
            .into_iter()
            .map(|entry| Contender::of(entry, &shared.amnesia))
            .collect();
        line.sort_by_key(|contender| contender.order);
        match kind {
            "lock" => {
                let mut status = LineStatus::new(LineKind::Lock, name);
                for (at, contender) in line.iter().enumerate() {
                    if at == 0 {
                        status
                            .holders
                            .push(contender.hold(HoldMode::Exclusive, true));
                    } else {
                        status
                            .waiters
                            .push(contender.hold(HoldMode::Exclusive, false));
                    }
                }
                report.lines.push(status);
            }
            "unfair" => {
                unfair_waiting.insert(name, line);
            }
            "election" => {
                let leader = line
                    .first()
                    .map(|first| LeaderStatus::new(first.value.clone(), first.shown));
                let mut status = LineStatus::new(LineKind::Election, name).with_leader(leader);
                for (at, contender) in line.iter().enumerate() {
                    if at == 0 {
                        status
                            .holders
                            .push(contender.hold(HoldMode::Exclusive, true));
                    } else {
                        status
                            .waiters
                            .push(contender.hold(HoldMode::Exclusive, false));
                    }
                }
                report.lines.push(status);
            }
            "rwlock" => {
                let mut status = LineStatus::new(LineKind::RwLock, name);
                let mut holding = true;
                for (at, contender) in line.iter().enumerate() {
                    let writer = contender.value.as_ref() == b"w";
                    if writer && at > 0 {
                        holding = false;
                    }
                    let mode = if writer {
                        HoldMode::Exclusive
                    } else {
                        HoldMode::Shared
                    };
                    if holding {
                        status.holders.push(contender.hold(mode, writer));
                        if writer {
                            holding = false;
                        }
                    } else {
                        status.waiters.push(contender.hold(mode, false));
                    }
                }
                report.lines.push(status);
            }
            "semaphore" => {
                let permits = line
                    .first()
                    .and_then(|first| std::str::from_utf8(&first.value).ok()?.parse().ok());
                let mut status = LineStatus::new(LineKind::Semaphore, name).with_permits(permits);
                for (at, contender) in line.iter().enumerate() {
                    if at < permits.unwrap_or(0) {
                        status.holders.push(contender.hold(HoldMode::Permit, true));
                    } else {
                        status.waiters.push(contender.hold(HoldMode::Permit, false));
                    }
                }
                report.lines.push(status);
            }
            "barrier" => report.barriers.push(name),
            "dbarrier" => {
                let ready = line.iter().any(|c| c.key.ends_with(".ready"));
                let participants = line.iter().filter(|c| !c.key.ends_with(".ready")).count();
                report
                    .double_barriers
                    .push(DoubleBarrierStatus::new(name, participants, ready));
            }
            "counter" => {
                if let Some(value) = line.first().and_then(|c| parse_counter(&c.value)) {
                    report.counters.push(CounterStatus::new(name, value));
                }
            }
            "latch" => {
                if let Some((initial, count)) = line.first().and_then(|c| parse_latch(&c.value)) {
                    report.latches.push(LatchStatus::new(name, initial, count));
                }
            }
            _ => {}
        }
    }
    for (name, waiting) in unfair_waiting {
        let index = match report
            .lines
            .iter()
            .position(|line| line.kind == LineKind::Lock && line.name == name)
        {
            Some(index) => index,
            None => {
                report.lines.push(LineStatus::new(LineKind::Lock, name));
                report.lines.len() - 1
            }
        };
        let line = &mut report.lines[index];
        for contender in waiting {
            line.waiters
                .push(contender.hold(HoldMode::Exclusive, false));
        }
    }
    report.sort();
    Ok(report)
}

/// The rate limiters' rates and next due times on the server's clock, read once and
/// only when there are limiters (see `src/clock.rs`: a reading is a write to the clock
/// key). A login that may not write it, or a clock that cannot be read, leaves the
/// next due times unknown rather than failing the report; a key that holds no
/// limiter's record is left out.
async fn rate_limiters(shared: &Shared, limiters: Vec<(String, Entry)>) -> Vec<RateLimiterStatus> {
    if limiters.is_empty() {
        return Vec::new();
    }
    let now = match clock::now_with(&shared.store, &[]).await {
        Ok((now, _)) => Some(now),
        Err(error) => {
            tracing::debug!(%error, "status: the server's clock cannot be read; no next due times");
            None
        }
    };
    limiters
        .into_iter()
        .filter_map(|(name, entry)| {
            let (record, tat) = recorded(&entry).ok().flatten()?;
            let rate = record.rate();
            let next_due = rate
                .zip(now)
                .map(|(rate, now)| rate.next_due(Some(tat), now));
            Some(
                RateLimiterStatus::new(name)
                    .with_rate(rate)
                    .with_next_due(next_due),
            )
        })
        .collect()
}
