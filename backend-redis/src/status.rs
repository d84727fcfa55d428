//! Who holds what ([`distsync_core::Backend::status`]) on Redis.
//!
//! Two steps, as [`crate::export`]: a `SCAN` of the namespace (`MATCH {<ns>*`, cursor
//! by cursor, never `KEYS`) finds the primitives by their keys' shapes
//! ([`crate::keys`]), then one read-only script (`lua/status.lua`) reads them all at
//! one instant; on a Redis Cluster the scan covers every master (`crate::scan`) and
//! the script runs once per hash slot (no script reads two slots), so each primitive
//! is read at one instant and the report as a whole is not:
//!
//! | found by | read |
//! |---|---|
//! | `{<ns><name>}:<kind>:q`, kind `lock`, `rw`, `elect`, `sem` (the waiter line, [`crate::waiter_line`]) | every entry in arrival order: its entry key's value (mode letter; gone once its session expired: skipped), its grant's token in `p:g` (granted entries are the holders, the others the waiters), an election's value in `p:v`, a semaphore's permit count `p:n` |
//! | `{<ns><name>}:lock:u`, `…:lock:uq` (the unfair lock, [`crate::unfair_lock`]) | with the lock's line: the unfair holder (its session and token, in the value of `p:u`), an exclusive holder; then the unfair waiters whose marker lives |
//! | `{<ns><name>}:queue:items`, `…:queue:inflight`, `…:queue:held` | the number of items waiting, and of items popped and not yet acknowledged or received (`receive`) and not yet acknowledged; a received item whose receiver's session has ended counts as waiting |
//! | `{<ns><name>}:barrier` | a held barrier |
//! | `{<ns><name>}:dbar:p`, `…:dbar:ready` | the live participants (entry keys present) and whether the count was reached |
//! | `{<ns><name>}:counter` | the counter's value |
//! | `{<ns><name>}:latch` | the latch's initial and remaining counts |
//! | `{<ns><name>}:ratelimit` | the limiter's TAT and rate, and the server's `TIME`: its next due time is computed on the server's clock |
//!
//! A key is matched exactly on what follows the hash tag, so an STM key (whose name may
//! contain `}` and `:`) is never taken for a primitive. An entry's session is the part
//! of its id before the `.` (shown in hex, as [`SessionId`] displays it); Redis records
//! no grant time, so ages are `None`. A primitive whose keys exist throughout the scan
//! is listed; one created or removed during it may or may not be (the scan is not
//! atomic); what each script call reads is consistent.
//!
//! An entry's [`HoldStatus::expires_in`] is the `PTTL` of its session's key
//! (`{<ns>session:<id>}`, [`crate::keys`]), `None` once that key is gone. On one server
//! (or the Sentinels' primary) the script reads it beside the entries, once per session
//! and call. Under Redis Cluster a session key lies in a slot of its own, which no
//! script of another slot may read: there, when the time left is asked for (the
//! operators' view, `Backend::status_with_time_left`; the library's own reads do not
//! pay for it), once every line is read, the client reads one
//! `PTTL` per distinct session, each routed by its key to the master of its slot, at
//! most [`SESSION_READS_AT_ONCE`] at a time ([`read_session_expiry`]), so there a
//! session's time left is read a moment after its entries.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::LazyLock;
use std::time::Duration;

use bytes::Bytes;
use distsync_core::rate_limiter::Rate;
use distsync_core::status::{
    CounterStatus, DoubleBarrierStatus, HoldMode, HoldStatus, LatchStatus, LeaderStatus, LineKind,
    LineStatus, QueueStatus, RateLimiterStatus, StatusReport,
};
use distsync_core::{FencingToken, Result, SessionId};
use futures::{StreamExt as _, TryStreamExt as _};
use redis::Value;

use crate::capabilities::BACKEND;
use crate::cluster::slot_groups;
use crate::error::{array, bytes, int, unexpected};
use crate::scripts::Lua;
use crate::store::Shared;

/// The script, compiled (hashed) once per process.
static STATUS: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("../lua/status.lua")));

/// How many session keys' `PTTL` one report reads at a time under Redis Cluster: enough
/// to read a busy namespace's sessions in a few round trips, few enough to leave the
/// connection to the other callers.
const SESSION_READS_AT_ONCE: usize = 16;

/// The status script's answer for each `(what, p)` pair (`what` as the script names
/// it, `p` a primitive's prefix), in one call: it gets the channel prefix, then the
/// session keys' prefix on one server only (see the module docs), so that the script
/// reads each entry's session `PTTL` there; and it declares the first `p` as its key, so
/// that under Redis Cluster it runs on the master of that slot (every `p` of one call
/// must share it, see `slot_groups`).
pub(crate) async fn read(shared: &Shared, pairs: &[(&str, &str)]) -> Result<Vec<Value>> {
    let mut call = shared.script(&STATUS);
    if shared.is_cluster() {
        call.arg("");
    } else {
        call.arg(shared.keys.session_prefix());
    }
    if let Some((_, p)) = pairs.first() {
        call.key(*p);
    }
    for (what, p) in pairs {
        call.arg(*what).arg(*p);
    }
    let reply = shared.eval(&call).await?;
    let answers = array("status", reply.clone())?;
    if answers.len() != pairs.len() {
        return Err(unexpected("status", &reply));
    }
    Ok(answers)
}

/// What a key after the hash tag says the primitive is, and what the script reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum What {
    Line(LineKind),
    Queue,
    Barrier,
    DoubleBarrier,
    Counter,
    Latch,
    RateLimiter,
}

/// The primitive a key's tail (what follows `}`) belongs to, and the suffix that
/// makes its prefix `p` when removed.
fn classify(tail: &str) -> Option<(What, &'static str)> {
    Some(match tail {
        ":lock:q" => (What::Line(LineKind::Lock), ":q"),
        ":lock:u" => (What::Line(LineKind::Lock), ":u"),
        ":lock:uq" => (What::Line(LineKind::Lock), ":uq"),
        ":rw:q" => (What::Line(LineKind::RwLock), ":q"),
        ":elect:q" => (What::Line(LineKind::Election), ":q"),
        ":sem:q" => (What::Line(LineKind::Semaphore), ":q"),
        ":queue:items" => (What::Queue, ":items"),
        ":queue:inflight" => (What::Queue, ":inflight"),
        ":queue:held" => (What::Queue, ":held"),
        ":barrier" => (What::Barrier, ""),
        ":dbar:p" => (What::DoubleBarrier, ":p"),
        ":dbar:ready" => (What::DoubleBarrier, ":ready"),
        ":counter" => (What::Counter, ""),
        ":latch" => (What::Latch, ""),
        ":ratelimit" => (What::RateLimiter, ""),
        _ => return None,
    })
}

/// `(escaped name, tail)` of a key's part after `{<ns>`: the name runs to the first
/// `}` (escaped names hold no brace).
fn split(relative: &str) -> Option<(&str, &str)> {
    let end = relative.find('}')?;
    Some((&relative[..end], &relative[end + 1..]))
}

/// The report of everything under `namespace` whose name starts with `prefix`.
/// `with_time_left`: under Redis Cluster, read each session's time left too (see the
/// module docs); on one server the script reads it anyway.
pub(crate) async fn status(
    shared: &Shared,
    namespace: &str,
    prefix: &str,
    with_time_left: bool,
) -> Result<StatusReport> {
    let keys = crate::export::scan(shared, namespace, |relative| {
        split(relative).is_some_and(|(_, tail)| classify(tail).is_some())
    })
    .await?;
    // (what, name) -> p, each primitive once.
    let mut found: BTreeMap<(What, String), String> = BTreeMap::new();
    for key in &keys {
        let relative = key
            .strip_prefix('{')
            .and_then(|key| key.strip_prefix(namespace));
        let Some((escaped, tail)) = relative.and_then(split) else {
            continue;
        };
        let Some((what, suffix)) = classify(tail) else {
            continue;
        };
        let name = crate::keys::unescape_name(escaped).filter(|name| name.starts_with(prefix));
        if let Some((name, p)) = name.zip(key.strip_suffix(suffix)) {
            found.insert((what, name), p.to_owned());
        }
    }
    let mut report = StatusReport::new(BACKEND, prefix);
    if found.is_empty() {
        return Ok(report);
    }
    let mut answered = Vec::with_capacity(found.len());
    for group in slot_groups(found, shared.is_cluster(), |(_, p)| p.as_str()) {
        let pairs: Vec<(&str, &str)> = (group.iter())
            .map(|((what, _), p)| (what.word(), p.as_str()))
            .collect();
        let answers = read(shared, &pairs).await?;
        answered.extend(
            (group.into_iter().zip(answers)).map(|((found, p), answer)| (found, p, answer)),
        );
    }
    for ((what, name), p, answer) in answered {
        let fields = array("status", answer)?;
        match what {
            What::Line(kind) => report.lines.push(line(kind, name, &p, fields)?),
            What::Queue => {
                let [ready, in_flight] = counts::<2>(&fields)?;
                report.queues.push(QueueStatus::new(name, ready, in_flight));
            }
            What::Barrier => {
                if counts::<1>(&fields)? == [1] {
                    report.barriers.push(name);
                }
            }
            What::DoubleBarrier => {
                let [participants, ready] = counts::<2>(&fields)?;
                report.double_barriers.push(DoubleBarrierStatus::new(
                    name,
                    participants,
                    ready == 1,
                ));
            }
            What::Counter => {
                let [value] = texts::<1>(fields)?;
                if let Ok(value) = value.parse::<i64>() {
                    report.counters.push(CounterStatus::new(name, value));
                }
            }
            What::Latch => {
                let [initial, remaining] = texts::<2>(fields)?;
                if let (Ok(initial), Ok(remaining)) = (initial.parse(), remaining.parse()) {
                    report
                        .latches
                        .push(LatchStatus::new(name, initial, remaining));
                }
            }
            What::RateLimiter => {
                let [tat, fingerprint, seconds, micros] = texts::<4>(fields)?;
                // The key expires when its TAT passes: one read between the scan and
                // the script finds it gone, an idle limiter with nothing to show.
                let Ok(tat) = tat.parse::<u64>() else {
                    continue;
                };
                let rate = Rate::from_fingerprint(&fingerprint);
                let now = seconds
                    .parse::<u64>()
                    .ok()
                    .zip(micros.parse::<u64>().ok())
                    .map(|(seconds, micros)| seconds * 1_000_000 + micros);
                let next_due = rate
                    .as_ref()
                    .zip(now)
                    .map(|(rate, now)| rate.next_due(Some(tat), now));
                report.rate_limiters.push(
                    RateLimiterStatus::new(name)
                        .with_rate(rate)
                        .with_next_due(next_due),
                );
            }
        }
    }
    if shared.is_cluster() && with_time_left {
        read_session_expiry(shared, &mut report.lines).await?;
    }
    report.sort();
    Ok(report)
}

/// Sets every hold's [`HoldStatus::expires_in`] in `lines` under Redis Cluster: one
/// `PTTL` per distinct session (its id read back from the hex [`line()`] shows), each
/// routed by the session key to its slot's master, at most [`SESSION_READS_AT_ONCE`] at
/// a time.
///
/// Cancel safety: cancel-safe (it only reads).
async fn read_session_expiry(shared: &Shared, lines: &mut [LineStatus]) -> Result<()> {
    let session_of = |hold: &HoldStatus| {
        hold.session
            .as_deref()
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
    };
    let sessions: BTreeSet<u64> = lines
        .iter()
        .flat_map(|line| line.holders.iter().chain(&line.waiters))
        .filter_map(session_of)
        .collect();
    let left: HashMap<u64, Option<Duration>> = futures::stream::iter(sessions)
        .map(|id| async move {
            let key = shared.keys.session(id);
            let reply = shared.query(redis::cmd("PTTL").arg(&key)).await?;
            Ok::<_, distsync_core::Error>((id, time_left(int("PTTL", &reply)?)))
        })
        .buffer_unordered(SESSION_READS_AT_ONCE)
        .try_collect()
        .await?;
    for hold in lines
        .iter_mut()
        .flat_map(|line| line.holders.iter_mut().chain(&mut line.waiters))
    {
        hold.expires_in = session_of(hold)
            .and_then(|id| left.get(&id).copied())
            .flatten();
    }
    Ok(())
}

/// A key's time left from its `PTTL`: `None` for a key that is gone (`-2`) or has no
/// expiry (`-1`, which no session key has).
pub(crate) fn time_left(pttl: i64) -> Option<Duration> {
    u64::try_from(pttl).ok().map(Duration::from_millis)
}

impl What {
    /// What the status script calls it.
    fn word(self) -> &'static str {
        match self {
            What::Line(_) => "line",
            What::Queue => "queue",
            What::Barrier => "barrier",
            What::DoubleBarrier => "dbar",
            What::Counter => "counter",
            What::Latch => "latch",
            What::RateLimiter => "limit",
        }
    }
}

/// `N` texts from the script (`''` for a nil).
fn texts<const N: usize>(fields: Vec<Value>) -> Result<[String; N]> {
    if fields.len() != N {
        return Err(unexpected("status", &Value::Array(fields)));
    }
    let mut out: [String; N] = std::array::from_fn(|_| String::new());
    for (slot, field) in out.iter_mut().zip(fields) {
        *slot = match field {
            Value::Int(number) => number.to_string(),
            field => text(field)?,
        };
    }
    Ok(out)
}

/// A text from the script, lossily decoded (`''` for a nil).
fn text(field: Value) -> Result<String> {
    Ok(bytes("status", field)?
        .map(|raw| String::from_utf8_lossy(&raw).into_owned())
        .unwrap_or_default())
}

/// `N` counts from the script.
fn counts<const N: usize>(fields: &[Value]) -> Result<[usize; N]> {
    let mut out = [0; N];
    if fields.len() != N {
        return Err(unexpected("status", &Value::Array(fields.to_vec())));
    }
    for (slot, field) in out.iter_mut().zip(fields) {
        *slot = usize::try_from(int("status", field)?).unwrap_or(0);
    }
    Ok(out)
}

/// One line (prefix `p`) from the script's answer: the permit count, then per entry
/// its id, entry value, token, election value and session `PTTL` (`''` where the script
/// reads none; a lock's unfair holder and waiters come as entries too, their values
/// starting with `u`).
pub(crate) fn line(
    kind: LineKind,
    name: String,
    p: &str,
    fields: Vec<Value>,
) -> Result<LineStatus> {
    let mut fields = fields.into_iter();
    let next_text =
        |field: Option<Value>| text(field.ok_or_else(|| unexpected("status", &Value::Nil))?);
    let permits = next_text(fields.next())?.parse::<usize>().ok();
    let mut status =
        LineStatus::new(kind, name).with_permits(permits.filter(|_| kind == LineKind::Semaphore));
    while let Some(id) = fields.next() {
        let id = text(id)?;
        let entry = next_text(fields.next())?;
        let token = next_text(fields.next())?;
        let value = fields
            .next()
            .map(|field| bytes("status", field))
            .transpose()?
            .flatten()
            .unwrap_or_default();
        let expires_in = match fields.next() {
            Some(Value::Int(pttl)) => time_left(pttl),
            _ => None,
        };
        let mode = match entry.as_bytes().first() {
            // The entry key expired with its session: not live.
            None => continue,
            Some(b'r') => HoldMode::Shared,
            Some(b's') => HoldMode::Permit,
            Some(_) => HoldMode::Exclusive,
        };
        let granted = token.parse::<u64>().ok();
        // An unfair holder is the key `p:u`, an unfair waiter its marker.
        let key = match (entry.as_bytes().first(), granted) {
            (Some(b'u'), Some(_)) => format!("{p}:u"),
            (Some(b'u'), None) => format!("{p}:um:{id}"),
            _ => format!("{p}:e:{id}"),
        };
        let hold = HoldStatus::new(key, mode)
            .with_session(
                id.split_once('.')
                    .and_then(|(session, _)| session.parse::<u64>().ok())
                    .map(|session| SessionId(session).to_string()),
            )
            .with_token(
                granted
                    .filter(|_| mode != HoldMode::Shared)
                    .map(FencingToken),
            )
            .with_expires_in(expires_in);
        match granted {
            Some(term) => {
                if kind == LineKind::Election && status.leader.is_none() {
                    status.leader = Some(LeaderStatus::new(Bytes::from(value), FencingToken(term)));
                }
                status.holders.push(hold);
            }
            None => status.waiters.push(hold),
        }
    }
    Ok(status)
}
