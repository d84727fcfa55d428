//! `replicas_group_membership`: three members join a group: one in this process that
//! stays, one held by an external holder (a child process, SIGKILLed; on the memory
//! store an in-process holder whose lease is frozen, then dropped), and one whose
//! session the store ends ([`Harness::end_session`]). Each gone member must leave the
//! list ([`Group::members`]) within its session TTL and [`MARGIN`] of its fault, the
//! live one must stay listed with its metadata throughout, and
//! [`Group::changes`] must report the three joins and the two leaves, and no leave of
//! the live member.
//!
//! A member is an election candidacy on `<group>/members/<id>` (see
//! `distsync_core::group`), so the external holder campaigns there: it is a member
//! as any process that joined is.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use distsync_core::group::{Group, GroupChange, Membership};
use distsync_core::{Error, Session, SessionOptions};
use futures::StreamExt as _;
use tokio::time::Instant;

use crate::check::{
    lock_vec, violated, within, within_set_up, Check, Context, Holds, Task, PROMPT,
};
use crate::faults::{ExternalHolder, HoldKind};
use crate::harness::Harness;

/// How far past its TTL a gone member may still be listed: a second for the list's
/// read and the store's own expiry, and a second more because NATS ends a key whose
/// whole-second `Nats-TTL` ran out up to about a second late (a killed member with a
/// 2 s TTL left the list 2.43–3.46 s after its SIGKILL, where every other store's left
/// within 2 s).
const MARGIN: Duration = Duration::from_secs(2);

/// How often the case's own `changes()` reads the list.
const POLL: Duration = Duration::from_millis(100);

const LIVE: &str = "live";
const KILLED: &str = "killed";
const ENDED: &str = "ended";

/// The ids `changes` reported as joined, sorted.
fn joins(changes: &[(Instant, GroupChange)]) -> Vec<String> {
    let mut ids: Vec<String> = changes
        .iter()
        .filter_map(|(_, change)| match change {
            GroupChange::Joined(m) => Some(m.id.clone()),
            _ => None,
        })
        .collect();
    ids.sort();
    ids
}

pub(crate) async fn run(h: Harness) -> Check {
    let Members {
        group,
        seen,
        _follower,
        live_session,
        live,
        ended_session,
        ended,
        holder,
    } = join_three(&h).await?;
    all_three_listed(&group).await?;
    three_joins_reported(&seen).await?;
    let gone = fault_and_wait_gone(&h, &group, holder, &ended_session).await?;
    let (joined, left) = joins_and_leaves_reported(&seen).await?;
    let listed = group.members().await.ctx("listing the members")?;
    if listed.len() != 1 || listed[0].id != LIVE {
        return violated(format!("after the leaves the list reads {listed:?}"));
    }
    live.leave().await.ctx("leaving")?;
    let _ = ended;
    let _ = live_session.close().await;
    let Gone {
        killed_how,
        killed_gone,
        ended_gone,
        killed_bound,
        ended_bound,
    } = gone;
    Ok(Holds::figure(
        format!(
            "killed member gone {} after {killed_how}, ended session's {} after; live one listed \
             throughout; changes(): {} joins, {} leaves",
            crate::check::secs(killed_gone),
            crate::check::secs(ended_gone),
            joined.len(),
            left.len()
        ),
        format!(
            "bounds: TTL + {MARGIN:?} ({killed_bound:?} for the external member, {ended_bound:?} \
             for the ended session's); the list read every 20 ms, changes() every {POLL:?}"
        ),
    ))
}

/// Every change the stream reports, with when.
type Seen = Arc<Mutex<Vec<(Instant, GroupChange)>>>;

/// The group, its `changes()` follower and the three members.
struct Members {
    group: Group,
    seen: Seen,
    _follower: Task<()>,
    live_session: Session,
    live: Membership,
    ended_session: Session,
    ended: Membership,
    holder: Box<dyn ExternalHolder>,
}

/// Follows the group's changes, and joins the live member, the one whose session the
/// store ends and the external one.
async fn join_three(h: &Harness) -> Check<Members> {
    let coordinator = h.coordinator();
    let group: Group = coordinator
        .group(&h.key("group"))
        .ctx("naming the group")?
        .with_poll(POLL);
    let seen: Seen = Arc::default();
    let follower = {
        let (mut stream, seen) = (group.changes(), Arc::clone(&seen));
        Task::spawn("the changes() follower", async move {
            while let Some(change) = stream.next().await {
                if let Ok(change) = change {
                    lock_vec(&seen).push((Instant::now(), change));
                }
            }
            Ok(())
        })
    };

    let live_session = within(PROMPT, "opening the live member's session", h.session()).await?;
    let live = within(
        PROMPT,
        "joining the live member",
        group.join(&live_session, LIVE, "meta-live"),
    )
    .await?;
    let ended_session = within(
        PROMPT,
        "opening the ended member's session",
        coordinator.session_with(SessionOptions::with_ttl(h.fault_ttl())),
    )
    .await?;
    let ended = within(
        PROMPT,
        "joining the ended member",
        group.join(&ended_session, ENDED, "meta-ended"),
    )
    .await?;
    let entry = group.member_entry(KILLED).ctx("naming the killed member")?;
    let suffix = entry
        .as_str()
        .strip_prefix(&format!("{}/", h.prefix()))
        .unwrap_or(entry.as_str())
        .to_owned();
    let holder = within_set_up(
        PROMPT * 2,
        "starting the external member",
        h.spawn_holder(HoldKind::Leadership, &suffix),
    )
    .await?;
    Ok(Members {
        group,
        seen,
        _follower: follower,
        live_session,
        live,
        ended_session,
        ended,
        holder,
    })
}

/// All three listed, the live one with its metadata.
async fn all_three_listed(group: &Group) -> Check<()> {
    let deadline = Instant::now() + PROMPT;
    loop {
        let members = group.members().await.ctx("listing the members")?;
        let ids: Vec<&str> = members.iter().map(|m| m.id.as_str()).collect();
        if ids == [ENDED, KILLED, LIVE] {
            let live = &members[2];
            if live.metadata.as_ref() != b"meta-live" {
                return violated(format!(
                    "the live member's metadata reads {:?}",
                    live.metadata
                ));
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            return violated(format!(
                "three members joined, the list reads {ids:?} after {PROMPT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// changes() must have seen the three joins before the faults: a member that joins
/// and leaves between two of its reads is not reported (see `distsync_core::group`).
async fn three_joins_reported(seen: &Seen) -> Check<()> {
    let deadline = Instant::now() + POLL * 10 + PROMPT;
    loop {
        let joined = joins(&lock_vec(seen));
        if joined == [ENDED, KILLED, LIVE] {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return violated(format!(
                "changes() reported the joins {joined:?} of three listed members within {:?}",
                POLL * 10 + PROMPT
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How the two faulted members left the list, and the bounds they met.
struct Gone {
    killed_how: &'static str,
    killed_gone: Duration,
    ended_gone: Duration,
    killed_bound: Duration,
    ended_bound: Duration,
}

/// The faults, at once: the external member killed and the other's session ended;
/// both must leave the list within their bounds while the live one stays.
async fn fault_and_wait_gone(
    h: &Harness,
    group: &Group,
    mut holder: Box<dyn ExternalHolder>,
    ended_session: &Session,
) -> Check<Gone> {
    let faulted = Instant::now();
    let killed_how = match holder.kill().await {
        Ok(()) => "SIGKILL",
        Err(Error::Unsupported { .. }) => {
            // The memory store's in-process holder: its lease frozen, then dropped.
            let _ = holder.pause().await;
            "a frozen lease"
        }
        Err(error) => return violated(format!("killing the external member: {error}")),
    };
    h.end_session(ended_session)
        .await
        .ctx("ending the member's session in the store")?;
    let killed_bound = h.holder_ttl() + MARGIN;
    let ended_bound = h.fault_ttl() + MARGIN;
    let (mut killed_gone, mut ended_gone) = (None, None);
    let deadline = faulted + killed_bound.max(ended_bound);
    loop {
        let members = group.members().await.ctx("listing the members")?;
        let at = faulted.elapsed();
        let listed = |id: &str| members.iter().any(|m| m.id == id);
        if !listed(LIVE) {
            return violated(format!(
                "the live member is not listed {} after the other two's faults",
                crate::check::secs(at)
            ));
        }
        if killed_gone.is_none() && !listed(KILLED) {
            killed_gone = Some(at);
        }
        if ended_gone.is_none() && !listed(ENDED) {
            ended_gone = Some(at);
        }
        if killed_gone.is_some() && ended_gone.is_some() {
            break;
        }
        if Instant::now() >= deadline {
            return violated(format!(
                "{} listed {} after the fault (bounds: killed {killed_bound:?}, ended session \
                 {ended_bound:?})",
                if killed_gone.is_none() {
                    "the killed member still"
                } else {
                    "the ended session's member still"
                },
                crate::check::secs(at)
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(holder);
    Ok(Gone {
        killed_how,
        killed_gone: killed_gone.unwrap_or_default(),
        ended_gone: ended_gone.unwrap_or_default(),
        killed_bound,
        ended_bound,
    })
}

/// changes(): the joins and the leaves, within a few of its reads, and never the live
/// member's leave.
async fn joins_and_leaves_reported(seen: &Seen) -> Check<(Vec<String>, Vec<String>)> {
    let deadline = Instant::now() + POLL * 10 + PROMPT;
    loop {
        let seen = lock_vec(seen).clone();
        let ids = |joins: bool| {
            let mut ids: Vec<String> = seen
                .iter()
                .filter_map(|(_, change)| match change {
                    GroupChange::Joined(m) if joins => Some(m.id.clone()),
                    GroupChange::Left(m) if !joins => Some(m.id.clone()),
                    _ => None,
                })
                .collect();
            ids.sort();
            ids
        };
        let (joined, left) = (ids(true), ids(false));
        if left.iter().any(|id| id == LIVE) {
            return violated(format!(
                "changes() reported the live member as left: {left:?}"
            ));
        }
        if joined == [ENDED, KILLED, LIVE] && left == [ENDED, KILLED] {
            return Ok((joined, left));
        }
        if Instant::now() >= deadline {
            return violated(format!(
                "changes() reported joins {joined:?} and leaves {left:?} (want 3 joins, 2 leaves)"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
