//! A member of a sharded group (`Coordinator::shards`) in a child process, for the
//! cases that kill and pause members: the parent side ([`ShardsMember`]) and the child
//! side (`serve_member`, run by `child::serve` when the [`ChildSpec`] has a
//! [`ShardsMemberSpec`]).
//!
//! The child joins the group as the spec's member and prints, on stdout, lines
//! starting with [`MARKER`], each stamped with the monotonic clock (`CLOCK_MONOTONIC`
//! in ns, the clock of the parent's `Instant`s too):
//! - `ready` once the member's loop runs;
//! - `shard grant <shard> <token> <ns>` when it owns a shard: stamped once its work on
//!   the shard is pinned ([`distsync_core::shards::Shards::pin`]);
//! - `shard end <shard> <ns>` when that hold ends: stamped and printed when the pin's
//!   `ended()` fires, before the pin is dropped (so before the library releases the
//!   shard to anyone, and before a kill could hide it);
//! - `shard lost <shard> <ns>` after it (the same instant) when that end was a loss:
//!   the member counted a loss between the grant and half a second after the end (as
//!   the in-process shard log does); an end without it is a release;
//! - `stall <from ns> <to ns>` when its own runtime ran late by more than
//!   [`CHILD_STALL`] (a ticker's tick overshot): the member acted on nothing in
//!   between, as a paused process; the parent records it as a pause;
//! - `error <message>` when something fails (it then exits with status 1).
//!
//! The member runs until its stdin closes or it is killed.

use std::sync::Arc;
use std::time::Duration;

use distsync_core::shards::{ShardOptions, Shards};
use distsync_core::{Backend, Coordinator, Result};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::child::{ChildSpec, Launcher, ProtocolProcess, Say, MARKER, SPEC_VAR};
use super::{hook_error, HoldKind};

/// How long a member may take to start and connect.
const START_LIMIT: Duration = Duration::from_secs(30);

/// How long an end waits for the member's counts to say whether it was a loss.
const CLASSIFY: Duration = Duration::from_millis(500);

/// How often the child's stall ticker is due.
const TICK: Duration = Duration::from_millis(20);

/// A tick later than this is reported as a stall.
pub const CHILD_STALL: Duration = Duration::from_millis(100);

/// What a shards member is told, inside its [`ChildSpec`] (whose `name` is the group's
/// and `ttl_ms` the member session's TTL).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardsMemberSpec {
    /// The member's id.
    pub member: String,
    /// The group's shard count.
    pub count: u32,
    /// The member list's poll interval in ms.
    pub poll_ms: u64,
}

/// The monotonic clock's reading in ns.
pub fn mono_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(now.tv_nsec).unwrap_or(0)
}

/// One line of a shards member, its instants in [`mono_ns`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberEvent {
    /// It owns a shard.
    Grant {
        /// The shard.
        shard: u32,
        /// Its fencing token.
        token: u64,
        /// When its work was pinned.
        at: u64,
    },
    /// Its hold on a shard ended (a release, unless a [`MemberEvent::Lost`] follows).
    End {
        /// The shard.
        shard: u32,
        /// When its work was told to stop.
        at: u64,
    },
    /// The end of its hold on a shard at `at` was a loss.
    Lost {
        /// The shard.
        shard: u32,
        /// The end's instant.
        at: u64,
    },
    /// Its runtime stalled.
    Stall {
        /// The last tick on time.
        from: u64,
        /// The late tick.
        to: u64,
    },
}

impl MemberEvent {
    fn parse(message: &str) -> Option<Self> {
        let words: Vec<&str> = message.split_whitespace().collect();
        let n = |i: usize| words.get(i)?.parse::<u64>().ok();
        match words.as_slice() {
            ["shard", "grant", ..] => Some(Self::Grant {
                shard: u32::try_from(n(2)?).ok()?,
                token: n(3)?,
                at: n(4)?,
            }),
            ["shard", "end", ..] => Some(Self::End {
                shard: u32::try_from(n(2)?).ok()?,
                at: n(3)?,
            }),
            ["shard", "lost", ..] => Some(Self::Lost {
                shard: u32::try_from(n(2)?).ok()?,
                at: n(3)?,
            }),
            ["stall", ..] => Some(Self::Stall {
                from: n(1)?,
                to: n(2)?,
            }),
            _ => None,
        }
    }
}

/// A shards member in a child process (the parent's handle). Killed when dropped.
pub struct ShardsMember {
    process: ProtocolProcess,
    ended: bool,
}

impl std::fmt::Debug for ShardsMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardsMember")
            .field("pid", &self.process.pid())
            .finish_non_exhaustive()
    }
}

impl ShardsMember {
    /// Starts member `member` of `group` (`count` shards, sessions of `ttl`, the list
    /// read every `poll`) in a child process on the store at `url`; returns once its
    /// loop runs.
    ///
    /// # Errors
    /// When the child cannot be started, fails, or is not ready within its limit.
    pub async fn spawn(
        launcher: &Launcher,
        url: &str,
        group: &str,
        member: &ShardsMemberSpec,
        ttl: Duration,
    ) -> Result<Self> {
        let spec = ChildSpec {
            url: url.to_owned(),
            // Unused: the shards spec says what the child does.
            kind: HoldKind::Lock,
            name: group.to_owned(),
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            shards: Some(member.clone()),
        };
        let mut process = ProtocolProcess::start(launcher, SPEC_VAR, &spec, "shards member")?;
        tokio::time::timeout(START_LIMIT, async {
            loop {
                let line = process.next_line().await?;
                let Some((_, message)) = line.split_once(MARKER) else {
                    continue;
                };
                match message.trim() {
                    "ready" => return Ok(()),
                    other => {
                        if let Some(error) = other.strip_prefix("error ") {
                            return Err(process.reported(error));
                        }
                    }
                }
            }
        })
        .await
        .map_err(|_| hook_error("starting a shards member", "not ready in time"))??;
        Ok(Self {
            process,
            ended: false,
        })
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Its next event; `None` once its output ended (it was killed or exited).
    ///
    /// # Errors
    /// An `error` line.
    pub async fn next_event(&mut self) -> Result<Option<MemberEvent>> {
        while !self.ended {
            let Ok(line) = self.process.next_line().await else {
                self.ended = true;
                break;
            };
            let Some((_, message)) = line.split_once(MARKER) else {
                continue;
            };
            let message = message.trim();
            if let Some(error) = message.strip_prefix("error ") {
                return Err(self.process.reported(error));
            }
            if let Some(event) = MemberEvent::parse(message) {
                return Ok(Some(event));
            }
        }
        Ok(None)
    }

    /// SIGKILLs the member and reaps it (its output stays readable to its end).
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub async fn kill(&mut self) -> Result<()> {
        self.process.kill().await
    }

    /// SIGSTOPs the member.
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub fn pause(&self) -> Result<()> {
        self.process.signal(libc::SIGSTOP)
    }

    /// SIGCONTs the member.
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub fn resume(&self) -> Result<()> {
        self.process.signal(libc::SIGCONT)
    }
}

/// The child's side: runs the member `member` of `spec.name` on `backend` and speaks the
/// protocol (see the module docs) until its stdin closes.
///
/// # Errors
/// When the member cannot be started.
pub(crate) async fn serve_member(
    backend: Arc<dyn Backend>,
    spec: &ChildSpec,
    member: &ShardsMemberSpec,
    say: &Say,
) -> Result<()> {
    let options = ShardOptions::default()
        .with_ttl(Duration::from_millis(spec.ttl_ms))
        .with_poll(Duration::from_millis(member.poll_ms))
        .with_retry(Duration::from_millis(50), Duration::from_millis(500));
    let shards = Arc::new(Coordinator::from_arc(backend).shards(
        &spec.name,
        &member.member,
        member.count,
        options,
    )?);
    let mut tasks = Vec::new();
    {
        let say = say.clone();
        tasks.push(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(TICK);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last = mono_ns();
            loop {
                ticker.tick().await;
                let now = mono_ns();
                let late = Duration::from_nanos(now.saturating_sub(last)).saturating_sub(TICK);
                if late > CHILD_STALL {
                    say.line(format!("stall {last} {now}"));
                }
                last = now;
            }
        }));
    }
    for shard in 0..member.count {
        let (shards, say) = (Arc::clone(&shards), say.clone());
        tasks.push(tokio::spawn(
            async move { follow(&shards, shard, &say).await },
        ));
    }
    say.line("ready");
    let mut commands = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(command)) = commands.next_line().await {
        if command.trim() == "exit" {
            break;
        }
    }
    for task in tasks {
        task.abort();
    }
    Ok(())
}

/// One shard's holds by this member, each printed as a grant and an end.
async fn follow(shards: &Shards, shard: u32, say: &Say) {
    let mut changes = shards.changes();
    let mut last = 0;
    loop {
        if changes
            .wait_for(|owned| owned.token(shard).is_some_and(|token| token.get() > last))
            .await
            .is_err()
        {
            return;
        }
        let before = shards.counts();
        let Ok(pin) = shards.pin(shard).await else {
            // Already ending: wait for the next change.
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        last = pin.token().get();
        say.line(format!("shard grant {shard} {last} {}", mono_ns()));
        pin.ended().await;
        let at = mono_ns();
        say.line(format!("shard end {shard} {at}"));
        // The release waits for the pin: dropped only once the end is said.
        drop(pin);
        let at_end = shards.counts();
        let mut lost = at_end.lost > before.lost;
        let deadline = tokio::time::Instant::now() + CLASSIFY;
        while !lost && tokio::time::Instant::now() < deadline {
            let now = shards.counts();
            if now.lost > at_end.lost {
                lost = true;
            } else if now.released > at_end.released {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if lost {
            say.line(format!("shard lost {shard} {at}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse() {
        assert_eq!(
            MemberEvent::parse("shard grant 3 17 1000"),
            Some(MemberEvent::Grant {
                shard: 3,
                token: 17,
                at: 1000
            })
        );
        assert_eq!(
            MemberEvent::parse("shard end 3 2000"),
            Some(MemberEvent::End { shard: 3, at: 2000 })
        );
        assert_eq!(
            MemberEvent::parse("shard lost 3 2000"),
            Some(MemberEvent::Lost { shard: 3, at: 2000 })
        );
        assert_eq!(
            MemberEvent::parse("stall 5 9"),
            Some(MemberEvent::Stall { from: 5, to: 9 })
        );
        assert_eq!(MemberEvent::parse("ready"), None);
    }
}
