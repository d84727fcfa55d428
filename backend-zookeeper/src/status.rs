//! Who holds what under a prefix of names
//! ([`Backend::status`](distsync_core::Backend::status)), read from the recipes' nodes.
//!
//! For each kind, the subtree of `<root>/<kind>` under the prefix's last complete
//! segment is walked, each node's name decoded back from its path (keys.rs's escaping
//! undone), and the nodes whose names start with the prefix are read by their
//! children; what each kind's children say (holders, waiters, permit counts, tokens and
//! sessions) is in docs/ZOOKEEPER.md, "Status". Two kinds are read beyond their own
//! node:
//!
//! - an unfair lock's waiters come after the lock's contenders, from its wait line
//!   under `<root>/lock_wait` (a line holder keeps its place there, and is shown once,
//!   as the holder);
//! - a rate limiter's node gives its rate and TAT (see rate_limiter.rs), and its next
//!   due time is measured on the leader's clock, read by one write to `<root>/clock`
//!   (left out, `None`, where the login may not write there).
//!
//! A barrier's nodes with children are ancestors of longer names, not held barriers.
//! A holder's session is the distsync session id of its client's ZooKeeper session. A
//! holder's session time left (`expires_in`) is not reported: a session's timeout and
//! last heartbeat are known to the server only, and no request reads another client's.
//! The walk runs on a short session of its own and only reads, but for that one clock
//! write when it finds a rate limiter.

use distsync_core::raw::StampedTat;
use distsync_core::status::{
    CounterStatus, DoubleBarrierStatus, HoldMode, HoldStatus, LatchStatus, LeaderStatus, LineKind,
    LineStatus, QueueStatus, RateLimiterStatus, StatusReport,
};
use distsync_core::{Error, FencingToken, Result, SessionId};
use zookeeper_client as zk;

use crate::error::{found, map};
use crate::keys::{self, Kind};
use crate::queue::nodes::{server_now, Paths};
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
    let mut reader = Reader {
        shared,
        client: shared.connect(crate::MIN_SESSION_TTL * 4).await?,
        clock: None,
    };
    let mut report = StatusReport::new(crate::BACKEND, prefix);
    // In `Kind::ALL`'s order: an unfair lock's wait line joins its lock's line, read
    // before it.
    for kind in Kind::ALL {
        for node in reader.named(*kind, prefix).await? {
            reader.add(&mut report, *kind, node).await?;
        }
    }
    report.sort();
    Ok(report)
}

/// A node of a kind's subtree whose name starts with the report's prefix.
struct Node {
    /// The name it stands for, decoded from its path.
    name: String,
    path: String,
    children: Vec<String>,
}

/// What the report's nodes are read with: the store, the report's own session, and the
/// leader's clock once read.
struct Reader<'a> {
    shared: &'a Shared,
    client: zk::Client,
    /// Read once, on the first rate limiter found.
    clock: Option<Option<u64>>,
}

impl Reader<'_> {
    /// The nodes of `kind`'s subtree whose names start with `prefix`, parents first.
    async fn named(&self, kind: Kind, prefix: &str) -> Result<Vec<Node>> {
        let top = keys::kind_root(self.shared.config.root(), kind);
        // The deepest node every name under the prefix lies beneath.
        let start = match prefix.rsplit_once('/') {
            Some((dir, _)) if !dir.is_empty() => keys::under(&top, dir),
            _ => top.clone(),
        };
        let below = format!("{top}/");
        let nodes = walk(&self.client, &start).await?.into_iter();
        Ok(nodes
            .filter_map(|(path, children)| {
                let name = keys::decode(path.strip_prefix(&below)?);
                name.starts_with(prefix).then_some(Node {
                    name,
                    path,
                    children,
                })
            })
            .collect())
    }

    /// `node` of `kind`, added to `report`.
    async fn add(&mut self, report: &mut StatusReport, kind: Kind, node: Node) -> Result<()> {
        match kind {
            Kind::Lock => push_occupied(&mut report.lines, self.lock(node).await?),
            Kind::Election => push_occupied(&mut report.lines, self.election(node).await?),
            Kind::RwLock => push_occupied(&mut report.lines, self.rw_lock(node).await?),
            Kind::Semaphore => {
                if let Some(line) = self.semaphore(node).await? {
                    push_occupied(&mut report.lines, line);
                }
            }
            // Held while it exists: a node with children is an ancestor of longer names.
            Kind::Barrier => {
                if node.children.is_empty() {
                    report.barriers.push(node.name);
                }
            }
            Kind::LockWait => self.unfair_waiters(&mut report.lines, node).await?,
            // An election's proclaimed values are no line of their own.
            Kind::ElectionLog => {}
            // Durable values, held by nobody.
            Kind::Stm => {}
            Kind::Counter => report.counters.extend(self.counter(node).await?),
            Kind::Latch => report.latches.extend(self.latch(node).await?),
            Kind::RateLimit => report.rate_limiters.extend(self.rate_limiter(node).await?),
            Kind::Queue => report.queues.extend(self.queue(node).await?),
            // A queue's held items and its records, counted with the queue.
            Kind::QueueLock | Kind::QueueMeta => {}
            Kind::DoubleBarrier => report.double_barriers.extend(double_barrier(node)),
        }
        Ok(())
    }

    /// The hold of the contender node `path` of `mode` added to `status`: to its
    /// holders, with its token, when `holding`, else to its waiters. Left out when it
    /// is gone since its parent was listed.
    async fn add_hold(
        &self,
        status: &mut LineStatus,
        path: String,
        mode: HoldMode,
        holding: bool,
    ) -> Result<()> {
        let Some(stat) = found(self.client.check_stat(&path).await)
            .map_err(map)?
            .flatten()
        else {
            return Ok(());
        };
        let session =
            (stat.ephemeral_owner != 0).then(|| SessionId(stat.ephemeral_owner as u64).to_string());
        let token = holding.then_some(FencingToken(self.shared.amnesia.up(stat.czxid) as u64));
        let hold = HoldStatus::new(path, mode)
            .with_session(session)
            .with_token(token);
        match holding {
            true => status.holders.push(hold),
            false => status.waiters.push(hold),
        }
        Ok(())
    }

    /// A lock's line: its `lock-` contenders.
    async fn lock(&self, node: Node) -> Result<LineStatus> {
        let line = keys::contenders(node.children, keys::LOCK_NAME);
        self.exclusive_line(LineKind::Lock, node.name, &node.path, line)
            .await
    }

    /// An election's line: its candidates, and the value its leader proclaims.
    async fn election(&self, node: Node) -> Result<LineStatus> {
        let line = keys::contenders(node.children, keys::LATCH_NAME);
        let head = line.first().map(|(_, child)| child.clone());
        let status = self
            .exclusive_line(LineKind::Election, node.name.clone(), &node.path, line)
            .await?;
        let Some(head) = head else {
            return Ok(status);
        };
        let root = self.shared.config.root();
        let log_dir = keys::under(&keys::kind_root(root, Kind::ElectionLog), &node.name);
        let current = crate::election::current_value(&self.client, &node.path, &log_dir, &head);
        Ok(match current.await.map_err(map)? {
            Some((value, term)) => {
                let term = FencingToken(self.shared.amnesia.up(term) as u64);
                status.with_leader(Some(LeaderStatus::new(value, term)))
            }
            None => status,
        })
    }

    /// The line of `kind` named `name` whose contenders are `line`, the children of
    /// `path` in sequence order: the first holds, the others wait.
    async fn exclusive_line(
        &self,
        kind: LineKind,
        name: String,
        path: &str,
        line: Vec<(u64, String)>,
    ) -> Result<LineStatus> {
        let mut status = LineStatus::new(kind, name);
        for (index, (_, child)) in line.into_iter().enumerate() {
            let path = format!("{path}/{child}");
            self.add_hold(&mut status, path, HoldMode::Exclusive, index == 0)
                .await?;
        }
        Ok(status)
    }

    /// A read-write lock's line, held as the module docs say.
    async fn rw_lock(&self, node: Node) -> Result<LineStatus> {
        let line = keys::rw_contenders(node.children);
        let first_writer = line.iter().position(|(_, _, write)| *write);
        let mut status = LineStatus::new(LineKind::RwLock, node.name);
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
            let path = format!("{}/{child}", node.path);
            self.add_hold(&mut status, path, mode, holding).await?;
        }
        Ok(status)
    }

    /// A semaphore's line: its leases hold, the acquirers lined up on `locks/` wait.
    /// `None` for a node without leases (an ancestor of longer names).
    async fn semaphore(&self, node: Node) -> Result<Option<LineStatus>> {
        if !node.children.iter().any(|child| child == "leases") {
            return Ok(None);
        }
        let leases_path = format!("{}/leases", node.path);
        let leases = self.contenders(&leases_path, keys::LEASE_NAME).await?;
        let locks_path = format!("{}/locks", node.path);
        let lined = self.contenders(&locks_path, keys::LOCK_NAME).await?;
        let names: Vec<String> = leases.iter().map(|(_, c)| c.clone()).collect();
        let mut status = LineStatus::new(LineKind::Semaphore, node.name)
            .with_permits(permits(&self.client, &leases_path, &names).await);
        let leases = leases
            .into_iter()
            .map(|(_, child)| (leases_path.as_str(), child, true));
        let lined = lined
            .into_iter()
            .map(|(_, child)| (locks_path.as_str(), child, false));
        for (dir, child, holding) in leases.chain(lined) {
            let path = format!("{dir}/{child}");
            self.add_hold(&mut status, path, HoldMode::Shared, holding)
                .await?;
        }
        Ok(Some(status))
    }

    /// The `lock_name` contenders among the children of `path`, in sequence order;
    /// none if `path` does not exist.
    async fn contenders(&self, path: &str, lock_name: &str) -> Result<Vec<(u64, String)>> {
        let children = found(self.client.list_children(path).await).map_err(map)?;
        Ok(keys::contenders(children.unwrap_or_default(), lock_name))
    }

    /// An unfair lock's wait line, `node`, added to its lock's line in `lines` (made if
    /// the lock has no contender) as waiters; a line holder keeps its place there, and
    /// is shown once, as the holder.
    async fn unfair_waiters(&self, lines: &mut Vec<LineStatus>, node: Node) -> Result<()> {
        let line = keys::contenders(node.children, keys::WAIT_NAME);
        if line.is_empty() {
            return Ok(());
        }
        let at = lines
            .iter()
            .position(|line| line.kind == LineKind::Lock && line.name == node.name);
        let status = match at {
            Some(at) => &mut lines[at],
            None => {
                lines.push(LineStatus::new(LineKind::Lock, node.name));
                lines.last_mut().expect("just pushed")
            }
        };
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
            let path = format!("{}/{child}", node.path);
            self.add_hold(status, path, HoldMode::Exclusive, false)
                .await?;
        }
        Ok(())
    }

    /// A counter's value; `None` for a node with no data (the ancestor of a longer
    /// name) or one gone since it was listed.
    async fn counter(&self, node: Node) -> Result<Option<CounterStatus>> {
        match self.client.get_data(&node.path).await {
            Ok((data, _)) if !data.is_empty() => Ok(std::str::from_utf8(&data)
                .ok()
                .and_then(|text| text.parse().ok())
                .map(|value| CounterStatus::new(node.name, value))),
            Ok(_) | Err(zk::Error::NoNode) => Ok(None),
            Err(error) => Err(map(error)),
        }
    }

    /// A latch's initial and current counts; `None` for a node that holds no latch.
    async fn latch(&self, node: Node) -> Result<Option<LatchStatus>> {
        let read = found(self.client.get_data(&node.path).await).map_err(map)?;
        Ok(read
            .and_then(|(data, _)| crate::counter::parse_latch(std::str::from_utf8(&data).ok()?))
            .map(|(initial, count)| LatchStatus::new(node.name, initial, count)))
    }

    /// A rate limiter's rate and next due time, on the leader's clock (read on the
    /// first limiter); `None` for a node that holds no limiter.
    async fn rate_limiter(&mut self, node: Node) -> Result<Option<RateLimiterStatus>> {
        let Some((data, stat)) = found(self.client.get_data(&node.path).await).map_err(map)? else {
            return Ok(None);
        };
        // No data: the ancestor of a longer name. Other data: no limiter.
        let Ok(Some(stored)) = StampedTat::parse(&data) else {
            return Ok(None);
        };
        let now = match self.clock {
            Some(now) => now,
            None => *self
                .clock
                .insert(report_clock(self.shared, &self.client).await?),
        };
        let rate = stored.rate();
        let next_due = rate
            .as_ref()
            .zip(now)
            .map(|(rate, now)| rate.next_due(Some(stored.tat_us(ms_to_us(stat.mtime))), now));
        Ok(Some(
            RateLimiterStatus::new(node.name)
                .with_rate(rate)
                .with_next_due(next_due),
        ))
    }

    /// A queue's ready and in-flight counts; `None` for an empty queue.
    async fn queue(&self, node: Node) -> Result<Option<QueueStatus>> {
        let paths = Paths::of_items(self.shared.config.root(), &node.path);
        let (ready, in_flight) = crate::queue::counts(&self.client, &paths).await?;
        Ok((ready + in_flight > 0).then(|| QueueStatus::new(node.name, ready, in_flight)))
    }
}

/// `line` added to `lines` if anyone holds or waits in it.
fn push_occupied(lines: &mut Vec<LineStatus>, line: LineStatus) {
    if !line.holders.is_empty() || !line.waiters.is_empty() {
        lines.push(line);
    }
}

/// A double barrier's participants (`ready` aside) and whether `ready` is set; `None`
/// for a node with neither (an ancestor of longer names).
fn double_barrier(node: Node) -> Option<DoubleBarrierStatus> {
    let ready = node.children.iter().any(|child| child == "ready");
    let participants = node
        .children
        .iter()
        .filter(|child| keys::is_participant(child))
        .count();
    (participants > 0 || ready).then(|| DoubleBarrierStatus::new(node.name, participants, ready))
}
