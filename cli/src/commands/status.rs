//! `distsync status [PREFIX] [--format text|json]`: who holds what.
//!
//! Text (the default) is one aligned row per holder, waiter, queue or barrier, under
//! a header:
//!
//! ```text
//! KIND      NAME     ROLE      SESSION           TOKEN  AGE    KEY                   DETAIL
//! lock      jobs/a   holder    694d7a3c1b2e0f01  17     -      distsync/jobs/a/694…  -
//! lock      jobs/a   waiter-1  694d7a3c1b2e0f07  -      -      distsync/jobs/a/694…  -
//! election  leader   leader    694d7a3c1b2e0f01  21     -      distsync/leader/694…  value=node-1
//! member    workers  host-a    694d7a3c1b2e0f09  30     -      distsync/workers/m…   metadata=10.0.0.7
//! shard     workers  3         694d7a3c1b2e0f09  33     -      distsync/workers/s…   owner=host-a
//! queue     jobs     -         -                 -      -      -                     ready=2 in_flight=0
//! counter   visits   -         -                 -      -      -                     value=42
//! latch     ready    -         -                 -      -      -                     count=1 initial=3
//! ratelimit api      -         -                 -      -      -                     rate=10/1s burst=10 next_due=0ms
//! ```
//!
//! A group's members (see `distsync::replicas`) are `member` rows (ROLE: the member id) and
//! its shards' holders `shard` rows (ROLE: the shard, DETAIL: the owning member), in
//! place of the elections and locks they are made of.
//!
//! Roles: `holder` (`leader` for an election's holder), `waiter-N` in the order the
//! waiters will be served; `held` for a barrier, `open` for a latch whose count reached
//! zero, `-` for the others. Counters, latches and rate limiters are listed on every
//! backend that has them (ZooKeeper has none); a rate limiter's `next_due` is how long until
//! one permit is due, on the store's clock (`0ms`: one is available now).
//! A field the store does not record is `-`. JSON (`--format json`) is one object with
//! the fields of `distsync::store::status::StatusReport` (ages in milliseconds, values as
//! UTF-8 text).

use std::collections::BTreeMap;

use distsync::replicas::{MEMBERS_SEGMENT, SHARDS_SEGMENT};
use distsync::store::status::{HoldStatus, LineKind, LineStatus, RateLimiterStatus, StatusReport};
use serde_json::{json, Value};

use crate::args::{StatusArgs, StatusFormat};
use crate::context::Ctx;
use crate::exit::Failure;
use crate::output::{say, text};

/// Reads the store's state under the prefix and prints it.
///
/// # Errors
/// Exit code 2 on a backend that cannot list its state, 1 for a store error, 130 when
/// interrupted.
pub(super) async fn run(ctx: &mut Ctx, args: StatusArgs) -> Result<u8, Failure> {
    let coordinator = ctx.coordinator.clone();
    let prefix = args.prefix.unwrap_or_default();
    let report = ctx.wait(coordinator.status(&prefix), None).await?;
    match args.format {
        StatusFormat::Text => {
            for row in aligned(&rows(&report)) {
                say!("{row}");
            }
        }
        StatusFormat::Json => say!("{}", to_json(&report)),
    }
    Ok(0)
}

const HEADER: [&str; 8] = [
    "KIND", "NAME", "ROLE", "SESSION", "TOKEN", "AGE", "KEY", "DETAIL",
];

/// A missing field.
const NONE: &str = "-";

/// A row of the table, in [`HEADER`]'s order.
type Row = [String; 8];

/// The table's rows, header first: every line's holders and waiters, then the records
/// (queues, barriers, counters, latches, rate limiters).
fn rows(report: &StatusReport) -> Vec<Row> {
    let mut rows = vec![HEADER.map(str::to_owned)];
    let members = group_members(report);
    for line in &report.lines {
        rows.extend(line_rows(line, &members));
    }
    rows.extend(record_rows(report));
    rows
}

/// One line's rows: a group member's, a shard's owner and waiters, or a primitive's
/// holders and waiters.
fn line_rows(line: &LineStatus, members: &BTreeMap<(&str, &str), &str>) -> Vec<Row> {
    if let Some(row) = member_row(line) {
        return vec![row];
    }
    if let Some((group, shard)) = shard_of(line, members) {
        return shard_rows(line, group, shard, members);
    }
    let detail = match (&line.leader, line.permits) {
        (Some(leader), _) => format!("value={}", text(&leader.value)),
        (None, Some(permits)) => format!("permits={permits}"),
        (None, None) => NONE.to_owned(),
    };
    let holder_role = if line.kind == LineKind::Election {
        "leader"
    } else {
        "holder"
    };
    let kind = line.kind.as_str();
    let holders = (line.holders.iter())
        .map(|hold| entry_row(kind, &line.name, holder_role.to_owned(), hold, &detail));
    let waiters = line.waiters.iter().enumerate().map(|(rank, hold)| {
        entry_row(kind, &line.name, format!("waiter-{}", rank + 1), hold, NONE)
    });
    holders.chain(waiters).collect()
}

/// A shard's rows: its owner, named by the group member whose session holds it, and
/// its waiters.
fn shard_rows(
    line: &LineStatus,
    group: &str,
    shard: &str,
    members: &BTreeMap<(&str, &str), &str>,
) -> Vec<Row> {
    let holders = line.holders.iter().map(|hold| {
        let owner = (hold.session.as_ref())
            .and_then(|session| members.get(&(group, session.as_str())))
            .map_or(NONE, |id| id);
        entry_row(
            "shard",
            group,
            shard.to_owned(),
            hold,
            &format!("owner={owner}"),
        )
    });
    let waiters = line.waiters.iter().enumerate().map(|(rank, hold)| {
        entry_row(
            "shard",
            group,
            format!("{shard}:waiter-{}", rank + 1),
            hold,
            NONE,
        )
    });
    holders.chain(waiters).collect()
}

/// The rows of the records that have no holders: queues, barriers, double barriers,
/// counters, latches and rate limiters.
fn record_rows(report: &StatusReport) -> Vec<Row> {
    let queues = report.queues.iter().map(|queue| {
        let detail = format!("ready={} in_flight={}", queue.ready, queue.in_flight);
        plain_row("queue", &queue.name, NONE, detail)
    });
    let barriers = (report.barriers.iter())
        .map(|barrier| plain_row("barrier", barrier, "held", NONE.to_owned()));
    let double_barriers = report.double_barriers.iter().map(|barrier| {
        let detail = format!(
            "participants={} ready={}",
            barrier.participants, barrier.ready
        );
        plain_row("double-barrier", &barrier.name, NONE, detail)
    });
    let counters = report.counters.iter().map(|counter| {
        plain_row(
            "counter",
            &counter.name,
            NONE,
            format!("value={}", counter.value),
        )
    });
    let latches = report.latches.iter().map(|latch| {
        let role = if latch.is_open() { "open" } else { NONE };
        let detail = format!("count={} initial={}", latch.count, latch.initial);
        plain_row("latch", &latch.name, role, detail)
    });
    let limiters = (report.rate_limiters.iter())
        .map(|limiter| plain_row("ratelimit", &limiter.name, NONE, limiter_detail(limiter)));
    queues
        .chain(barriers)
        .chain(double_barriers)
        .chain(counters)
        .chain(latches)
        .chain(limiters)
        .collect()
}

/// A rate limiter's DETAIL: its rate and burst (`?` where the store does not keep
/// them) and when its next permit is due.
fn limiter_detail(limiter: &RateLimiterStatus) -> String {
    let mut detail = limiter.rate.map_or_else(
        || "rate=?".to_owned(),
        |rate| {
            format!(
                "rate={}/{:?} burst={}",
                rate.permits(),
                rate.period(),
                rate.burst()
            )
        },
    );
    if let Some(due) = limiter.next_due {
        detail.push_str(&format!(" next_due={}ms", due.as_millis()));
    }
    detail
}

/// A group member's entry (`GROUP/members/ID`, see `distsync::replicas`) as a `member`
/// row: NAME the group, ROLE the member id, DETAIL its metadata.
fn member_row(line: &LineStatus) -> Option<[String; 8]> {
    let (group, id) = member_entry(line)?;
    let hold = line.holders.first()?;
    let metadata = line
        .leader
        .as_ref()
        .map_or_else(String::new, |leader| text(&leader.value).into_owned());
    Some(entry_row(
        "member",
        group,
        id.to_owned(),
        hold,
        &format!("metadata={metadata}"),
    ))
}

/// `(group, member id)` when `line` is a member's entry.
fn member_entry(line: &LineStatus) -> Option<(&str, &str)> {
    if !matches!(line.kind, LineKind::Election | LineKind::Lock) {
        return None;
    }
    let (group, id) = line.name.rsplit_once('/')?;
    let group = group.strip_suffix(MEMBERS_SEGMENT)?.strip_suffix('/')?;
    Some((group, id))
}

/// Every listed member by (group, session id): who owns a shard.
fn group_members(report: &StatusReport) -> BTreeMap<(&str, &str), &str> {
    report
        .lines
        .iter()
        .filter_map(|line| {
            let (group, id) = member_entry(line)?;
            let session = line.holders.first()?.session.as_deref()?;
            Some(((group, session), id))
        })
        .collect()
}

/// `(group, shard)` when `line` is a shard's lock (`GROUP/shards/N`) of a group with
/// members listed.
fn shard_of<'a>(
    line: &'a LineStatus,
    members: &BTreeMap<(&str, &str), &str>,
) -> Option<(&'a str, &'a str)> {
    if line.kind != LineKind::Lock {
        return None;
    }
    let (group, shard) = line.name.rsplit_once('/')?;
    let group = group.strip_suffix(SHARDS_SEGMENT)?.strip_suffix('/')?;
    shard.parse::<u32>().ok()?;
    members
        .keys()
        .any(|(listed, _)| *listed == group)
        .then_some((group, shard))
}

fn entry_row(kind: &str, name: &str, role: String, hold: &HoldStatus, detail: &str) -> [String; 8] {
    let mode = match hold.mode {
        distsync::store::status::HoldMode::Shared => "(read)",
        _ => "",
    };
    [
        kind.to_owned(),
        name.to_owned(),
        format!("{role}{mode}"),
        hold.session.clone().unwrap_or_else(|| NONE.to_owned()),
        hold.token
            .map_or_else(|| NONE.to_owned(), |token| token.to_string()),
        hold.age
            .map_or_else(|| NONE.to_owned(), |age| format!("{}s", age.as_secs())),
        hold.key.clone(),
        detail.to_owned(),
    ]
}

fn plain_row(kind: &str, name: &str, role: &str, detail: String) -> [String; 8] {
    [
        kind.to_owned(),
        name.to_owned(),
        role.to_owned(),
        NONE.to_owned(),
        NONE.to_owned(),
        NONE.to_owned(),
        NONE.to_owned(),
        detail,
    ]
}

/// The rows as text, each column padded to its widest cell (two spaces between
/// columns, none after the last).
fn aligned(rows: &[[String; 8]]) -> Vec<String> {
    let mut widths = [0usize; 8];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    rows.iter()
        .map(|row| {
            let mut out = String::new();
            for (column, cell) in row.iter().enumerate() {
                out.push_str(cell);
                if column + 1 < row.len() {
                    let pad = widths[column] - cell.chars().count() + 2;
                    out.push_str(&" ".repeat(pad));
                }
            }
            out.trim_end().to_owned()
        })
        .collect()
}

fn hold_json(hold: &HoldStatus) -> Value {
    json!({
        "key": hold.key,
        "mode": hold.mode.as_str(),
        "session": hold.session,
        "token": hold.token.map(|token| token.0),
        "age_ms": hold.age.map(millis),
        "expires_in_ms": hold.expires_in.map(millis),
    })
}

/// The report as one JSON object.
fn to_json(report: &StatusReport) -> Value {
    json!({
        "backend": report.backend,
        "prefix": report.prefix,
        "lines": report.lines.iter().map(|line| json!({
            "kind": line.kind.as_str(),
            "name": line.name,
            "holders": line.holders.iter().map(hold_json).collect::<Vec<_>>(),
            "waiters": line.waiters.iter().map(hold_json).collect::<Vec<_>>(),
            "leader": line.leader.as_ref().map(|leader| json!({
                "value": text(&leader.value),
                "term": leader.term.0,
            })),
            "permits": line.permits,
        })).collect::<Vec<_>>(),
        "queues": report.queues.iter().map(|queue| json!({
            "name": queue.name,
            "ready": queue.ready,
            "in_flight": queue.in_flight,
        })).collect::<Vec<_>>(),
        "barriers": report.barriers,
        "double_barriers": report.double_barriers.iter().map(|barrier| json!({
            "name": barrier.name,
            "participants": barrier.participants,
            "ready": barrier.ready,
        })).collect::<Vec<_>>(),
        "counters": report.counters.iter().map(|counter| json!({
            "name": counter.name,
            "value": counter.value,
        })).collect::<Vec<_>>(),
        "latches": report.latches.iter().map(|latch| json!({
            "name": latch.name,
            "initial": latch.initial,
            "count": latch.count,
            "open": latch.is_open(),
        })).collect::<Vec<_>>(),
        "rate_limiters": report.rate_limiters.iter().map(|limiter| json!({
            "name": limiter.name,
            "permits": limiter.rate.map(|rate| rate.permits()),
            "period_ms": limiter.rate.map(|rate| millis(rate.period())),
            "burst": limiter.rate.map(|rate| rate.burst()),
            "next_due_ms": limiter.next_due.map(millis),
        })).collect::<Vec<_>>(),
    })
}

/// A duration in whole milliseconds, as JSON carries ages.
fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use distsync::store::status::{HoldMode, LeaderStatus, LineStatus, QueueStatus};
    use distsync::FencingToken;

    use super::*;

    fn report() -> StatusReport {
        let hold = |key: &str, token: Option<u64>| {
            HoldStatus::new(key, HoldMode::Exclusive)
                .with_session(Some("1f".into()))
                .with_token(token.map(FencingToken))
                .with_age(Some(Duration::from_millis(2500)))
                .with_expires_in(Some(Duration::from_millis(9000)))
        };
        let mut report = StatusReport::new("memory", "jobs/");
        let mut lock = LineStatus::new(LineKind::Lock, "jobs/a");
        lock.holders = vec![hold("k1", Some(7))];
        lock.waiters = vec![hold("k2", None), hold("k3", None)];
        report.lines.push(lock);
        let mut election = LineStatus::new(LineKind::Election, "jobs/leader")
            .with_leader(Some(LeaderStatus::new("node-1", FencingToken(9))));
        election.holders = vec![hold("k4", Some(9))];
        report.lines.push(election);
        report.queues.push(QueueStatus::new("jobs/q", 2, 1));
        report
    }

    #[test]
    fn counters_latches_and_rate_limiters_have_rows_and_json() {
        use distsync::store::status::{CounterStatus, LatchStatus, RateLimiterStatus};
        let mut report = StatusReport::new("memory", "");
        report.counters.push(CounterStatus::new("visits", -3));
        report.latches.push(LatchStatus::new("ready", 3, 0));
        let rate = distsync::rate_limiter::Rate::new(5, Duration::from_secs(60)).unwrap();
        report.rate_limiters.push(
            RateLimiterStatus::new("api")
                .with_rate(Some(rate))
                .with_next_due(Some(Duration::from_millis(1500))),
        );
        let lines = aligned(&rows(&report));
        let cells: Vec<Vec<&str>> = lines
            .iter()
            .map(|line| line.split_whitespace().collect())
            .collect();
        assert_eq!(
            cells[1],
            ["counter", "visits", "-", "-", "-", "-", "-", "value=-3"]
        );
        assert_eq!(cells[2][..3], ["latch", "ready", "open"]);
        assert_eq!(cells[2][7..], ["count=0", "initial=3"]);
        assert_eq!(cells[3][..2], ["ratelimit", "api"]);
        assert_eq!(cells[3][7..], ["rate=5/60s", "burst=5", "next_due=1500ms"]);

        let value = to_json(&report);
        assert_eq!(value["counters"][0]["value"], -3);
        assert_eq!(value["latches"][0]["open"], true);
        assert_eq!(value["rate_limiters"][0]["period_ms"], 60_000);
        assert_eq!(value["rate_limiters"][0]["next_due_ms"], 1500);
    }

    #[test]
    fn text_rows_are_aligned_with_waiters_in_order() {
        let lines = aligned(&rows(&report()));
        assert_eq!(lines.len(), 6, "{lines:#?}");
        assert!(
            lines[0].starts_with("KIND      NAME         ROLE"),
            "{}",
            lines[0]
        );
        let role_column = lines[0].find("ROLE").unwrap();
        let cells: Vec<Vec<&str>> = lines
            .iter()
            .map(|line| line.split_whitespace().collect())
            .collect();
        assert_eq!(
            cells[1][..7],
            ["lock", "jobs/a", "holder", "1f", "7", "2s", "k1"]
        );
        assert_eq!(cells[2][2], "waiter-1");
        assert_eq!(cells[2][6], "k2");
        assert_eq!(cells[3][2], "waiter-2");
        assert_eq!(cells[4][..3], ["election", "jobs/leader", "leader"]);
        assert_eq!(cells[4][7], "value=node-1");
        assert_eq!(
            cells[5],
            [
                "queue",
                "jobs/q",
                "-",
                "-",
                "-",
                "-",
                "-",
                "ready=2",
                "in_flight=1"
            ]
        );
        // Every row's ROLE starts at the header's ROLE column.
        for line in &lines[1..] {
            assert_ne!(line.as_bytes()[role_column], b' ', "{line}");
            assert_eq!(line.as_bytes()[role_column - 1], b' ', "{line}");
        }
    }

    #[test]
    fn json_carries_every_field() {
        let value = to_json(&report());
        assert_eq!(value["backend"], "memory");
        assert_eq!(value["prefix"], "jobs/");
        let lock = &value["lines"][0];
        assert_eq!(lock["kind"], "lock");
        assert_eq!(lock["holders"][0]["token"], 7);
        assert_eq!(lock["holders"][0]["age_ms"], 2500);
        assert_eq!(lock["holders"][0]["expires_in_ms"], 9000);
        assert_eq!(lock["waiters"][1]["key"], "k3");
        assert_eq!(lock["waiters"][1]["token"], Value::Null);
        assert_eq!(value["lines"][1]["leader"]["value"], "node-1");
        assert_eq!(value["lines"][1]["leader"]["term"], 9);
        assert_eq!(value["queues"][0]["in_flight"], 1);
    }
}
