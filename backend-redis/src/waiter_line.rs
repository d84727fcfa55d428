//! The waiter line: the fair line of holders and waiters behind the lock, the
//! read-write lock, the election and the semaphore ([`WaiterLine`]; not the queue
//! primitive, which is `queue.rs`).
//!
//! Under the prefix `p = {<ns><name>}:<kind>`, every acquisition is an entry: a key
//! `p:e:<id>` held through the session (PX = session TTL, renewed with it), and its
//! id in the sorted set `p:q`, scored by arrival. The fair rule grants the first live
//! entry if it is a writer, and every reader with no live writer ahead of it; so a
//! waiting writer blocks the readers that arrive after it, and waiters are served in
//! arrival order. A lock and an election use writers only. A semaphore uses permit
//! entries only, and grants the first `N` live ones, `N` being the permit count
//! stored in `p:n` by the first entry to join and checked by every later one (a
//! joiner naming another count while an entry is live is refused); like writers,
//! permits get fencing tokens.
//!
//! Each grant, release and re-check is one script (`lua/fair_acquire.lua`,
//! `lua/release.lua`), which also forgets entries whose key expired (a crashed
//! waiter or holder), grants what that lets in, gives each newly granted writer the
//! next fencing token (`p:fence`, incremented in the granting script; seeded from the
//! server's clock when absent, see the crate docs) and publishes exactly
//! one wake-up on the channel `p:w:<id>` of each newly granted entry, other than the
//! caller's own (which learns of its grant from the script's reply). So only the
//! waiters next in line are woken, and a release that lets nobody in publishes
//! nothing.
//!
//! Acquiring:
//!
//! 1. The grant script enqueues the entry and settles the line. If that grants it
//!    (the uncontended case), the acquisition is over: one round trip, no
//!    subscription.
//! 2. Otherwise the waiter subscribes to its own channel and waits until the server
//!    has confirmed the SUBSCRIBE.
//! 3. It then re-checks (the script with `check`) once. A release that granted it
//!    between step 1 and the confirmed subscription published a wake-up nobody
//!    received; the re-check reads the grant from the store instead, so that race
//!    costs one round trip and no polling. Every wake-up published after the
//!    confirmation is delivered.
//! 4. It waits for a wake-up (or the safety net below, or the pub/sub connection's
//!    resync after a reconnect) and re-checks; repeat until granted. A wake-up is the
//!    grant itself (it carries the token), so a waiter that reads one holds without
//!    re-checking; only under replica acknowledgement (`wait_replicas`), where a grant
//!    counts once acknowledged, does the wake-up lead to a re-check instead.
//!
//! A dropped acquisition withdraws its entry in the background (releasing it if it
//! was granted meanwhile); should that fail, the entry expires with its session's TTL.
//!
//! Safety net: a waiter whose wake-up never comes (its predecessor crashed, so nobody
//! released; or the pub/sub connection dropped a message) re-checks when the shortest
//! TTL among the current holders runs out, the earliest moment the line can move
//! without a release. While holders keep renewing, that is once per TTL or so; it is
//! not a polling interval, and no waiter re-checks more often.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use distsync_core::{Error, FencingToken, Name, ReleaseFn, Result, Session};

use crate::error::{int, int_at, unexpected};
use crate::hold::{Cleanup, Hold};
use crate::keys::Kind;
use crate::notify::Event;
use crate::scripts::SCRIPTS;
use crate::session::RedisLease;
use crate::store::Shared;
use crate::waiting::{Waiting, RECHECK_MARGIN};

/// Shared, exclusive, or one of a semaphore's permits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Read,
    Write,
    /// A semaphore permit: the first `N` live entries hold one (`N` in `p:n`, the
    /// count passed as the entry's value when joining).
    Permit,
}

impl Mode {
    fn letter(self) -> &'static str {
        match self {
            Mode::Read => "r",
            Mode::Write => "w",
            Mode::Permit => "s",
        }
    }
}

enum Reply {
    Granted(FencingToken),
    Waiting(Duration),
    Refused,
    Lost,
    /// A semaphore joiner named another permit count than the one in use (given).
    OtherCount(i64),
}

/// A granted entry.
pub(crate) struct Granted {
    pub(crate) hold: Arc<Hold>,
    pub(crate) token: FencingToken,
}

impl Granted {
    pub(crate) fn key(&self) -> String {
        self.hold.key().to_owned()
    }

    pub(crate) fn release_fn(&self, session: &Session) -> ReleaseFn {
        Arc::clone(&self.hold).release_fn(session)
    }
}

/// One named waiter line (holders first, then waiters in arrival order), used
/// through one session by a lock, read-write lock, election or semaphore.
pub(crate) struct WaiterLine {
    shared: Arc<Shared>,
    session: Session,
    name: Name,
    prefix: String,
    /// The promotion record the grant script reads in the line's slot
    /// ([`crate::promotion_record`]).
    promotion_record: String,
}

impl WaiterLine {
    pub(crate) fn new(shared: &Arc<Shared>, session: &Session, name: Name, kind: Kind) -> Self {
        let prefix = shared.keys.primitive(&name, kind);
        Self {
            promotion_record: crate::promotion_record::key(shared, &prefix),
            prefix,
            shared: Arc::clone(shared),
            session: session.clone(),
            name,
        }
    }

    pub(crate) fn name(&self) -> &Name {
        &self.name
    }

    pub(crate) fn session(&self) -> &Session {
        &self.session
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    fn new_hold(&self, lease: &RedisLease, mode: Mode) -> (String, Arc<Hold>) {
        let id = lease.next_entry_id();
        let key = format!("{}:e:{id}", self.prefix);
        let value = format!("{}{id}", mode.letter());
        (id, Arc::new(Hold::new(lease, key, value)))
    }

    /// One call of the grant script, asked `how`: `wait` (join, then wait), `try`
    /// (take, or be refused) or `check` (a waiter asking again).
    async fn call(
        &self,
        lease: &RedisLease,
        id: &str,
        hold: &Hold,
        mode: Mode,
        how: &str,
        value: Option<&Bytes>,
    ) -> Result<Reply> {
        let mut call = self.shared.script(&SCRIPTS.fair_acquire);
        call.key(hold.key()).key(&self.promotion_record);
        lease.session_keys(&mut call);
        call.arg(&self.prefix)
            .arg(id)
            .arg(mode.letter())
            .arg(lease.ttl_ms())
            .arg(how)
            .arg(lease.margin_ms())
            .arg(lease.session_check(&self.session))
            .arg(crate::amnesia::max_ttl_ms(&self.shared))
            .arg(crate::amnesia::watch_arg(&self.shared))
            .arg(crate::amnesia::replid_arg(&self.shared));
        if let Some(value) = value {
            call.arg(value.as_ref());
        }
        // A take stays pending for the session's renewals until listed or unlisted
        // below (see `HeldKeys`).
        let registry = lease.registry();
        let (reply, _pending) = if how == "check" {
            (self.shared.eval(&call).await?, None)
        } else {
            let (reply, pending) = registry
                .take(
                    &self.shared,
                    &call,
                    hold.key(),
                    hold.value(),
                    lease.ttl_ms(),
                )
                .await?;
            (reply, Some(pending))
        };
        let number = |i: usize| int_at("fair_acquire", &reply, i);
        let reply = match (number(0)?, how) {
            (1, _) => Reply::Granted(FencingToken(
                u64::try_from(number(1)?).map_err(|_| unexpected("fair_acquire", &reply))?,
            )),
            (0, "try") => Reply::Refused,
            (0, _) => Reply::Waiting(Duration::from_millis(
                u64::try_from(number(1)?.max(0)).unwrap_or(0),
            )),
            (-1, _) => Reply::Lost,
            (-2, _) => Reply::OtherCount(number(1)?),
            _ => return Err(unexpected("fair_acquire", &reply)),
        };
        match reply {
            Reply::Granted(_) | Reply::Waiting(_) => hold.listed(),
            Reply::Lost => hold.unlisted(),
            // Only a take is refused (a try, or a join that names another count): the
            // entry is in no line, but under Cluster its take listed it in the store's
            // session registry, and a session that keeps trying would grow it.
            Reply::Refused | Reply::OtherCount(_) => {
                registry.refused_in_background(&self.shared, &self.session, hold.key());
            }
        }
        Ok(reply)
    }

    /// The error of a semaphore joiner whose count (`value`) is not the count in use.
    fn other_count(&self, in_use: i64, value: Option<&Bytes>) -> Error {
        let ours = value.map(|v| String::from_utf8_lossy(v).into_owned());
        Error::InvalidArgument(format!(
            "semaphore {:?} is in use with {in_use} permits, not {}",
            self.name.as_str(),
            ours.as_deref().unwrap_or("?")
        ))
    }

    /// Waits until granted in `mode`. An election candidate passes its `value`, a
    /// semaphore its permit count (decimal).
    ///
    /// The steps are the module docs' ("Acquiring").
    ///
    /// Cancel-safety: cancel-safe; a dropped call withdraws its entry in the
    /// background (or leaves it to the lease), releasing it if it had been granted.
    pub(crate) async fn acquire(&self, mode: Mode, value: Option<&Bytes>) -> Result<Granted> {
        let lease = RedisLease::live(&self.session)?;
        let (id, hold) = self.new_hold(lease, mode);
        let mut cleanup = Cleanup::arm(&hold, &self.session);
        // Joining reports connection trouble: nothing is in line to ride it out for.
        match self.call(lease, &id, &hold, mode, "wait", value).await? {
            Reply::Granted(token) => {
                cleanup.disarm();
                return Ok(Granted { hold, token });
            }
            Reply::Lost => {
                cleanup.disarm();
                return Err(Error::SessionLost);
            }
            Reply::OtherCount(in_use) => {
                cleanup.disarm();
                return Err(self.other_count(in_use, value));
            }
            Reply::Waiting(_) | Reply::Refused => {}
        }
        let channel = format!("{}:w:{id}", self.prefix);
        let mut waiting = Waiting::subscribe(&self.shared, &channel, "a place in line").await?;
        loop {
            // The first check runs as soon as the subscription is confirmed: a grant
            // published before that was missed, but the check sees it.
            let delay = match self.call(lease, &id, &hold, mode, "check", None).await {
                Ok(Reply::Granted(token)) => {
                    cleanup.disarm();
                    return Ok(Granted { hold, token });
                }
                Ok(Reply::Lost) => {
                    cleanup.disarm();
                    return Err(Error::SessionLost);
                }
                Ok(Reply::Waiting(delay)) => {
                    waiting.answered();
                    delay + RECHECK_MARGIN
                }
                // Only a try is refused, and only a join meets another count;
                // re-check at once should it ever happen.
                Ok(Reply::Refused | Reply::OtherCount(_)) => RECHECK_MARGIN,
                // Once in line, connection trouble is ridden out (re-checking is
                // idempotent).
                Err(error) => waiting.failed(error)?,
            };
            tokio::select! {
                biased;
                () = self.session.lost() => return Err(Error::SessionLost),
                event = waiting.recv() => {
                    if let Some(token) = self.granted_by(&event?) {
                        cleanup.disarm();
                        return Ok(Granted { hold, token });
                    }
                    waiting.drain();
                }
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// The grant a wake-up announces, when it may be acted on without a re-check.
    ///
    /// The script that grants an entry publishes its token on the entry's own channel
    /// (`p:w:<id>`, the id unique to this acquisition) in the same run, and publishes
    /// there for nothing else; so a message is the grant itself, and the waiter holds
    /// from the moment it reads it, one round trip sooner than a re-check would tell
    /// it. Whether the entry outlives the grant is what every hold's renewals watch
    /// (`lost()`), as after any grant. Under replica acknowledgement (a grant counts
    /// once acknowledged, see [`Shared::acknowledges`]), and for a resync (the pub/sub
    /// connection came back) or an unreadable message, a wake-up only prompts a re-check.
    fn granted_by(&self, event: &Event) -> Option<FencingToken> {
        if self.shared.acknowledges() {
            return None;
        }
        match event {
            Event::Message(payload) => std::str::from_utf8(payload)
                .ok()?
                .parse()
                .ok()
                .map(FencingToken),
            Event::Resync => None,
        }
    }

    /// Takes a grant in `mode` if the fair rule admits it now, passing a `value` as
    /// [`Self::acquire`] does (a semaphore's permit count).
    ///
    /// Cancel-safety: cancel-safe; a dropped call releases what it may have taken.
    pub(crate) async fn try_acquire(
        &self,
        mode: Mode,
        value: Option<&Bytes>,
    ) -> Result<Option<Granted>> {
        let lease = RedisLease::live(&self.session)?;
        let (id, hold) = self.new_hold(lease, mode);
        let mut cleanup = Cleanup::arm(&hold, &self.session);
        let reply = self.call(lease, &id, &hold, mode, "try", value).await?;
        cleanup.disarm();
        match reply {
            Reply::Granted(token) => Ok(Some(Granted { hold, token })),
            // In no line, and unlisted by `call`.
            Reply::Refused | Reply::Waiting(_) => Ok(None),
            Reply::Lost => Err(Error::SessionLost),
            Reply::OtherCount(in_use) => Err(self.other_count(in_use, value)),
        }
    }
}

/// The contenders of the line under `prefix`: its live entries and, for a lock, the
/// unfair holder and the unfair waiters whose marker lives (`lua/fair_count.lua`), one
/// read-only script call. An entry counts from the moment its joining script has run;
/// entries whose key expired are left out, as the grant script forgets them.
pub(crate) async fn contenders(shared: &Shared, prefix: &str) -> Result<usize> {
    let call = shared.script_on(&SCRIPTS.fair_count, prefix);
    let reply = shared.eval(&call).await?;
    let n = int("fair_count", &reply)?;
    usize::try_from(n).map_err(|_| unexpected("fair_count", &reply))
}
