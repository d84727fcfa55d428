//! Leader election: a waiter line of candidates whose granted head is the leader.
//!
//! Under `p = {<ns><name>}:elect`, candidates are writer entries of [`crate::waiter_line`]
//! with their value in the hash `p:v`; the term is the fencing token the granting
//! script gives the new leader. Every change (a new leader, no leader, a proclaim)
//! bumps `p:ver` and publishes the whole state on `p:ch` in the same script, so
//! `observe()` sees every change in order. An observer yields only
//! states with a higher change number than the last one it yielded, and re-reads the
//! state after a gap in the numbers, after a reconnection of the pub/sub connection,
//! and when the leader's key would expire (a crashed leader is then forgotten and
//! the next candidate promoted, by the read itself).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use distsync_core::{
    Election, Error, FencingToken, LeaderInfo, Leadership, Name, Proclaim, Result,
};
use futures::stream::BoxStream;
use redis::Value;
use tokio::time::Instant;

use crate::error::{array, bytes, int, string, unexpected};
use crate::hold::Hold;
use crate::keys::Kind;
use crate::notify::{Event, Subscription};
use crate::scripts::SCRIPTS;
use crate::status::time_left;
use crate::store::Shared;
use crate::waiter_line::{Mode, WaiterLine};
use crate::waiting::{sleep_until, RECHECK_MARGIN};
use distsync_core::raw::{observe_leaders, LeaderObserver, Make, OnSession, WaitRetry};

/// A Redis election.
pub(crate) struct RedisElection {
    queue: WaiterLine,
}

#[async_trait]
impl Election for RedisElection {
    fn name(&self) -> &Name {
        self.queue.name()
    }

    /// Cancel-safety: cancel-safe; a dropped campaign withdraws in the background
    /// (resigning if it had been elected meanwhile).
    async fn campaign_bytes(&self, value: Bytes) -> Result<Leadership> {
        let granted = self.queue.acquire(Mode::Write, Some(&value)).await?;
        let session = self.queue.session();
        let proclaim = Arc::new(LeaderProclaim {
            shared: Arc::clone(self.queue.shared()),
            prefix: self.queue.prefix().to_owned(),
            hold: Arc::clone(&granted.hold),
        });
        Ok(distsync_core::raw::leadership(
            granted.key(),
            granted.token,
            session,
            proclaim,
            granted.release_fn(session),
        ))
    }

    async fn leader(&self) -> Result<Option<LeaderInfo>> {
        Ok(read(self.queue.shared(), self.queue.prefix())
            .await?
            .leader
            .map(|(info, _)| info))
    }

    fn observe(&self) -> BoxStream<'static, Result<LeaderInfo>> {
        let observer = Observer {
            shared: Arc::clone(self.queue.shared()),
            prefix: self.queue.prefix().to_owned(),
            subscription: None,
            last: 0,
            reread: true,
            expires: None,
            backoff: WaitRetry::new("leader changes"),
        };
        observe_leaders(observer)
    }
}

struct LeaderProclaim {
    shared: Arc<Shared>,
    prefix: String,
    hold: Arc<Hold>,
}

#[async_trait]
impl Proclaim for LeaderProclaim {
    async fn proclaim_bytes(&self, value: Bytes) -> Result<()> {
        let id = self.hold.value().get(1..).unwrap_or_default();
        let mut call = self.shared.script(&SCRIPTS.proclaim);
        call.key(self.hold.key())
            .arg(&self.prefix)
            .arg(id)
            .arg(self.hold.value())
            .arg(value.as_ref());
        let reply = self.shared.eval(&call).await?;
        match int("proclaim", &reply)? {
            1 => Ok(()),
            _ => Err(Error::NotLeader),
        }
    }
}

/// The election's state at one change number.
struct State {
    version: i64,
    /// The leader and how long its key has left (`None`: no expiry).
    leader: Option<(LeaderInfo, Option<Duration>)>,
}

/// Reads the state, forgetting a dead leader (and promoting the next) first.
async fn read(shared: &Shared, prefix: &str) -> Result<State> {
    let call = shared.script_on(&SCRIPTS.leader, prefix);
    let reply = shared.eval(&call).await?;
    let fields = array("leader", reply)?;
    let mut fields = fields.into_iter();
    let version = int("leader", &fields.next().unwrap_or(Value::Nil))?;
    let Some(term) = fields.next() else {
        return Ok(State {
            version,
            leader: None,
        });
    };
    let term = u64::try_from(int("leader", &term)?).map_err(|_| unexpected("leader", &term))?;
    let key = string("leader", fields.next().unwrap_or(Value::Nil))?;
    let value = bytes("leader", fields.next().unwrap_or(Value::Nil))?.unwrap_or_default();
    let pttl = int("leader", &fields.next().unwrap_or(Value::Nil))?;
    Ok(State {
        version,
        leader: Some((
            LeaderInfo::new(Bytes::from(value), FencingToken(term), key),
            time_left(pttl),
        )),
    })
}

/// Parses a change message: `<ver> <term> <pttl> <key length> <key><value>`, with a
/// term of 0 when there is no leader.
fn parse_change(message: &[u8]) -> Option<State> {
    let mut rest = message;
    let mut numbers = [0i64; 4];
    for number in &mut numbers {
        let space = rest.iter().position(|&b| b == b' ')?;
        *number = std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?;
        rest = &rest[space + 1..];
    }
    let [version, term, pttl, key_len] = numbers;
    if term == 0 {
        return Some(State {
            version,
            leader: None,
        });
    }
    let key_len = usize::try_from(key_len).ok()?;
    if rest.len() < key_len {
        return None;
    }
    let (key, value) = rest.split_at(key_len);
    Some(State {
        version,
        leader: Some((
            LeaderInfo::new(
                Bytes::copy_from_slice(value),
                FencingToken(u64::try_from(term).ok()?),
                String::from_utf8(key.to_vec()).ok()?,
            ),
            time_left(pttl),
        )),
    })
}

struct Observer {
    shared: Arc<Shared>,
    prefix: String,
    subscription: Option<Subscription>,
    /// The change number of the last state applied.
    last: i64,
    reread: bool,
    /// When the current leader's key expires unless renewed.
    expires: Option<Instant>,
    backoff: WaitRetry,
}

impl Observer {
    /// Applies a state newer than the last one; returns the leader to yield, if any.
    /// Also re-arms the re-read at the leader's expiry, whatever the state's age.
    fn apply(&mut self, state: State) -> Option<LeaderInfo> {
        self.expires = state
            .leader
            .as_ref()
            .and_then(|(_, left)| *left)
            .map(|left| Instant::now() + left + RECHECK_MARGIN);
        if state.version <= self.last {
            return None;
        }
        self.last = state.version;
        state.leader.map(|(info, _)| info)
    }
}

impl LeaderObserver for Observer {
    /// Re-reads after a resubscription, a gap in the change numbers or the leader's
    /// expiry; connection trouble is ridden out with the observer's pauses.
    async fn next_leader(&mut self) -> Result<LeaderInfo> {
        loop {
            let subscription = match &mut self.subscription {
                Some(subscription) => subscription,
                None => {
                    let channel = self.shared.keys.channel(&format!("{}:ch", self.prefix));
                    let subscribing = self
                        .shared
                        .notifier
                        .subscribe_waiting(channel, &mut self.backoff);
                    self.subscription.insert(subscribing.await?)
                }
            };
            if self.reread {
                subscription.drain();
                match read(&self.shared, &self.prefix).await {
                    Ok(state) => {
                        self.reread = false;
                        self.backoff.succeeded();
                        match self.apply(state) {
                            Some(info) => return Ok(info),
                            None => continue,
                        }
                    }
                    // Connection trouble is ridden out for a while: re-read later.
                    Err(error) => match self.backoff.failed(&error) {
                        Some(pause) => self.expires = Some(Instant::now() + pause),
                        None => return Err(error),
                    },
                }
            }
            let expires = self.expires;
            let event = tokio::select! {
                event = subscription.recv() => Some(event?),
                () = sleep_until(expires) => None,
            };
            match event {
                None | Some(Event::Resync) => self.reread = true,
                Some(Event::Message(message)) => match parse_change(&message) {
                    Some(state) if state.version <= self.last => {}
                    Some(state) if state.version == self.last + 1 => {
                        if let Some(info) = self.apply(state) {
                            return Ok(info);
                        }
                    }
                    _ => self.reread = true,
                },
            }
        }
    }
}

impl Make<Arc<Shared>, OnSession<()>> for RedisElection {
    fn make(shared: &Arc<Shared>, on: OnSession<()>) -> Result<Self> {
        Ok(Self {
            queue: WaiterLine::new(shared, &on.session, on.name, Kind::Election),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_change_messages() {
        let state = parse_change(b"7 3 900 5 {a}:xval ue").unwrap();
        assert_eq!(state.version, 7);
        let (info, left) = state.leader.unwrap();
        assert_eq!(info.term, FencingToken(3));
        assert_eq!(info.key, "{a}:x");
        assert_eq!(info.value, Bytes::from_static(b"val ue"));
        assert_eq!(left, Some(Duration::from_millis(900)));

        let none = parse_change(b"8 0 0 0 ").unwrap();
        assert_eq!(none.version, 8);
        assert!(none.leader.is_none());

        assert!(parse_change(b"garbage").is_none());
        assert!(parse_change(b"1 2 3 99 short").is_none());
    }
}
