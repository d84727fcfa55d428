//! Who holds what under a prefix of names
//! ([`Backend::status`](distsync_core::Backend::status)), read from the recipes' nodes.
//!
//! For each kind, the subtree of `<root>/<kind>` under the prefix's last complete
//! segment is walked, each node's name decoded back from its path (keys.rs's escaping
//! undone), and the nodes whose names start with the prefix are read by their
//! children:
//!
//! - a lock is a node with `lock-` contenders: the lowest sequence holds, the others
//!   wait in sequence order (an unfair lock's holder node is a contender of sequence
//!   0); then come the unfair lock's waiters, from its wait line under
//!   `<root>/lock_wait` (a line holder keeps its place there, and is shown once, as
//!   the holder);
//! - a read-write lock's `__READ__` / `__WRIT__` contenders: a writer first in line
//!   holds alone, otherwise the readers before the first writer hold;
//! - a semaphore's holders are its `leases/` children (in sequence order), its waiters
//!   the acquirers lined up on `locks/`; its permit count is the one a distsync lease
//!   records (none for Curator's leases, which record no count);
//! - a barrier is held while its node exists: a node of the barrier tree without
//!   children (a node with children is an ancestor of longer names);
//! - a double barrier lists its participants (`ready` aside) and whether `ready` is set;
//! - a rate limiter's node gives its rate and TAT (see rate_limiter.rs), and its next
//!   due time is measured on the leader's clock, read by one write to `<root>/clock`
//!   (left out, `None`, where the login may not write there).
//!
//! A holder's token is its node's creation zxid (`czxid`), as its guard's is; its
//! session is the node's ephemeral owner, the distsync session id of its client's
//! ZooKeeper session. The walk runs on a short session of its own and only reads, but
//! for that one clock write when it finds a rate limiter.

use distsync_core::raw::StampedTat;
use distsync_core::status::{
    CounterStatus, DoubleBarrierStatus, HoldMode, HoldStatus, LatchStatus, LeaderStatus, LineKind,
    LineStatus, RateLimiterStatus, StatusReport,
};
use distsync_core::{Error, FencingToken, Result, SessionId};
use zookeeper_client as zk;

use crate::error::map;
use crate::keys::{self, Kind};
use crate::queue::nodes::server_now;
use crate::rate_limiter::{clock_path, ms_to_us};
use crate::store::Shared;

/// The nodes of the subtree at `path` (`path` included), parents first, each with its
/// children; empty if `path` does not exist.
pub(crate) async fn walk(client: &zk::Client, path: &str) -> Result<Vec<(String, Vec<String>)>> {
    let mut found = Vec::new();
    let mut stack = vec![path.to_owned()];
    while let Some(node) = stack.pop() {
        match client.list_children(&node).await {
            Ok(mut children) => {
                children.sort();
                for child in children.iter().rev() {
                    stack.push(format!("{node}/{child}"));
                }
                found.push((node, children));
            }
            // Gone since its parent was listed (a contender released).
            Err(zk::Error::NoNode) => {}
            Err(error) => return Err(map(error)),
        }
    }
    Ok(found)
}

/// The hold of the contender node `path` of `mode`, with its token when `holding`.
/// `None` when it is gone since its parent was listed.
async fn hold(
    shared: &Shared,
    client: &zk::Client,
    path: String,
    mode: HoldMode,
    holding: bool,
) -> Result<Option<HoldStatus>> {
    let stat = match client.check_stat(&path).await {
        Ok(Some(stat)) => stat,
        Ok(None) | Err(zk::Error::NoNode) => return Ok(None),
        Err(error) => return Err(map(error)),
    };
    let session =
        (stat.ephemeral_owner != 0).then(|| SessionId(stat.ephemeral_owner as u64).to_string());
    let token = holding.then_some(FencingToken(shared.amnesia.up(stat.czxid) as u64));
    Ok(Some(
        HoldStatus::new(path, mode)
            .with_session(session)
            .with_token(token),
    ))
}

/// The permit count a distsync lease under `leases` records, if any.
async fn permits(client: &zk::Client, leases: &str, children: &[String]) -> Option<usize> {
    for child in children {
        let Ok((data, _)) = client.get_data(&format!("{leases}/{child}")).await else {
            continue;
        };
        let text = String::from_utf8_lossy(&data);
        if let Some(count) = crate::semaphore::recorded_permits(&text) {
            return Some(count);
        }
    }
    None
}

/// The leader's clock in µs for the report's rate limiters; `None` where the login may
/// not write the clock node.
async fn report_clock(shared: &Shared, client: &zk::Client) -> Result<Option<u64>> {
    match server_now(shared, client, &clock_path(shared)).await {
        Ok(now) => Ok(Some(ms_to_us(now))),
        Err(Error::Authentication { .. }) => {
            tracing::debug!("status: the clock node is not writable; no next due times");
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// The report of every name under `prefix`.
pub(crate) async fn status(shared: &Shared, prefix: &str) -> Result<StatusReport> {
    let client = shared.connect(crate::MIN_SESSION_TTL * 4).await?;
    let root = shared.config.root();
    let mut report = StatusReport::new(crate::BACKEND, prefix);
    // Read once, on the first rate limiter found.
    let mut clock: Option<Option<u64>> = None;
    for kind in Kind::ALL {
        let top = keys::kind_root(root, *kind);
        // The deepest node every name under the prefix lies beneath.
        let start = match prefix.rsplit_once('/') {
            Some((dir, _)) if !dir.is_empty() => keys::under(&top, dir),
            _ => top.clone(),
        };
        for (path, children) in walk(&client, &start).await? {
            let Some(name) = path.strip_prefix(&format!("{top}/")).map(keys::decode) else {
                continue;
            };
            if !name.starts_with(prefix) {
                continue;
            }
            match kind {
                Kind::Lock | Kind::Election => {
                    let (lock_name, line_kind) = if *kind == Kind::Lock {
                        (keys::LOCK_NAME, LineKind::Lock)
                    } else {
                        (keys::LATCH_NAME, LineKind::Election)
                    };
                    let line = keys::contenders(children, lock_name);
                    let first = line.first().map(|(_, child)| child.clone());
                    let mut status = LineStatus::new(line_kind, name.clone());
                    for (index, (_, child)) in line.into_iter().enumerate() {
                        let path = format!("{path}/{child}");
                        let Some(entry) =
                            hold(shared, &client, path, HoldMode::Exclusive, index == 0).await?
                        else {
                            continue;
                        };
                        if index == 0 {
                            status.holders.push(entry);
                        } else {
                            status.waiters.push(entry);
                        }
                    }
                    if let (LineKind::Election, Some(child)) = (line_kind, first) {
                        let log_dir = keys::under(&keys::kind_root(root, Kind::ElectionLog), &name);
                        let current =
                            crate::election::current_value(&client, &path, &log_dir, &child);
                        if let Some((value, term)) = current.await.map_err(map)? {
                            let term = FencingToken(shared.amnesia.up(term) as u64);
                            status = status.with_leader(Some(LeaderStatus::new(value, term)));
                        }
                    }
                    if !status.holders.is_empty() || !status.waiters.is_empty() {
                        report.lines.push(status);
                    }
                }
                Kind::RwLock => {
                    let line = keys::rw_contenders(children);
                    let first_writer = line.iter().position(|(_, _, write)| *write);
                    let mut status = LineStatus::new(LineKind::RwLock, name);
                    for (index, (_, child, write)) in line.into_iter().enumerate() {
                        let holding = match first_writer {
                            Some(0) => index == 0,
                            Some(writer) => index < writer,
                            None => true,
                        };
                        let mode = if write {
                            HoldMode::Exclusive
                        } else {
                            HoldMode::Shared
                        };
                        let path = format!("{path}/{child}");
                        let Some(entry) = hold(shared, &client, path, mode, holding).await? else {
                            continue;
                        };
                        if holding {
                            status.holders.push(entry);
                        } else {
                            status.waiters.push(entry);
                        }
                    }
                    if !status.holders.is_empty() || !status.waiters.is_empty() {
                        report.lines.push(status);
                    }
                }
                Kind::Semaphore => {
                    if !children.iter().any(|child| child == "leases") {
                        continue;
                    }
                    let leases_path = format!("{path}/leases");
                    let leases = match client.list_children(&leases_path).await {
                        Ok(leases) => keys::contenders(leases, keys::LEASE_NAME),
                        Err(zk::Error::NoNode) => Vec::new(),
                        Err(error) => return Err(map(error)),
                    };
                    let lined = match client.list_children(&format!("{path}/locks")).await {
                        Ok(lined) => keys::contenders(lined, keys::LOCK_NAME),
                        Err(zk::Error::NoNode) => Vec::new(),
                        Err(error) => return Err(map(error)),
                    };
                    let names: Vec<String> = leases.iter().map(|(_, c)| c.clone()).collect();
                    let mut status = LineStatus::new(LineKind::Semaphore, name)
                        .with_permits(permits(&client, &leases_path, &names).await);
                    for (_, child) in leases {
                        let path = format!("{leases_path}/{child}");
                        if let Some(entry) =
                            hold(shared, &client, path, HoldMode::Shared, true).await?
                        {
                            status.holders.push(entry);
                        }
                    }
                    for (_, child) in lined {
                        let path = format!("{path}/locks/{child}");
                        if let Some(entry) =
                            hold(shared, &client, path, HoldMode::Shared, false).await?
                        {
                            status.waiters.push(entry);
                        }
                    }
                    if !status.holders.is_empty() || !status.waiters.is_empty() {
                        report.lines.push(status);
                    }
                }
                Kind::Barrier => {
                    if children.is_empty() {
                        report.barriers.push(name);
                    }
                }
                Kind::LockWait => {
                    let line = keys::contenders(children, keys::WAIT_NAME);
                    if line.is_empty() {
                        continue;
                    }
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
                    let status = &mut report.lines[index];
                    // A line holder's place shares its holder node's protected prefix.
                    let holding: Vec<String> = status
                        .holders
                        .iter()
                        .filter_map(|hold| hold.key.rsplit_once('/'))
                        .filter_map(|(_, child)| crate::unfair_lock::holder_prefix(child))
                        .map(str::to_owned)
                        .collect();
                    for (_, child) in line {
                        let prefix = child.rsplit_once(keys::WAIT_NAME).map(|(prefix, _)| prefix);
                        if prefix.is_some_and(|prefix| holding.iter().any(|held| held == prefix)) {
                            continue;
                        }
                        let path = format!("{path}/{child}");
                        if let Some(entry) =
                            hold(shared, &client, path, HoldMode::Exclusive, false).await?
                        {
                            status.waiters.push(entry);
                        }
                    }
                }
                // An election's proclaimed values are no line of their own.
                Kind::ElectionLog => {}
                // Durable values, held by nobody.
                Kind::Stm => {}
                // A node with no data is the ancestor of a longer name, no counter.
                Kind::Counter => match client.get_data(&path).await {
                    Ok((data, _)) if !data.is_empty() => {
                        if let Some(value) = std::str::from_utf8(&data)
                            .ok()
                            .and_then(|text| text.parse().ok())
                        {
                            report.counters.push(CounterStatus::new(name, value));
                        }
                    }
                    Ok(_) | Err(zk::Error::NoNode) => {}
                    Err(error) => return Err(map(error)),
                },
                Kind::Latch => match client.get_data(&path).await {
                    Ok((data, _)) => {
                        let parsed = std::str::from_utf8(&data)
                            .ok()
                            .and_then(crate::counter::parse_latch);
                        if let Some((initial, count)) = parsed {
                            report.latches.push(LatchStatus::new(name, initial, count));
                        }
                    }
                    Err(zk::Error::NoNode) => {}
                    Err(error) => return Err(map(error)),
                },
                Kind::RateLimit => {
                    let (data, stat) = match client.get_data(&path).await {
                        Ok(read) => read,
                        Err(zk::Error::NoNode) => continue,
                        Err(error) => return Err(map(error)),
                    };
                    // No data: the ancestor of a longer name. Other data: no limiter.
                    let Ok(Some(stored)) = StampedTat::parse(&data) else {
                        continue;
                    };
                    let now = match clock {
                        Some(now) => now,
                        None => *clock.insert(report_clock(shared, &client).await?),
                    };
                    let rate = stored.rate();
                    let next_due = rate.as_ref().zip(now).map(|(rate, now)| {
                        rate.next_due(Some(stored.tat_us(ms_to_us(stat.mtime))), now)
                    });
                    report.rate_limiters.push(
                        RateLimiterStatus::new(name)
                            .with_rate(rate)
                            .with_next_due(next_due),
                    );
                }
                Kind::Queue => {
                    let held = path.replacen(&top, &keys::kind_root(root, Kind::QueueLock), 1);
                    let (ready, in_flight) = crate::queue::counts(&client, &path, &held).await?;
                    if ready + in_flight > 0 {
                        report.queues.push(distsync_core::status::QueueStatus::new(
                            name, ready, in_flight,
                        ));
                    }
                }
                // A queue's held items and its records, counted with the queue.
                Kind::QueueLock | Kind::QueueMeta => {}
                Kind::DoubleBarrier => {
                    let ready = children.iter().any(|child| child == "ready");
                    let participants = children
                        .iter()
                        .filter(|child| keys::is_participant(child))
                        .count();
                    if participants > 0 || ready {
                        report.double_barriers.push(DoubleBarrierStatus::new(
                            name,
                            participants,
                            ready,
                        ));
                    }
                }
            }
        }
    }
    report
        .lines
        .sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    report.barriers.sort();
    report.counters.sort_by(|a, b| a.name.cmp(&b.name));
    report.latches.sort_by(|a, b| a.name.cmp(&b.name));
    report.rate_limiters.sort_by(|a, b| a.name.cmp(&b.name));
    report.double_barriers.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(report)
}
