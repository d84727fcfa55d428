//! The double barrier: session-held participant entries, a ready flag, a round counter.
//!
//! Under `p = {<ns><name>}:dbar`, each participant is an entry key `p:e:<id>` held
//! through its session (as the lock entries, renewed with the session) and its id in
//! the sorted set `p:p`. `enter` adds the entry and counts the live ones in one
//! script: over the count, the entry is removed again
//! ([`Error::TooManyParticipants`]); at the count, `p:ready` is set and `ready`
//! published. `leave` removes the entry; the one that leaves last (or finds only
//! dead entries left) deletes `p:ready`, bumps `p:gen` and publishes `left`. A
//! participant whose session ends drops out the same way. Leavers waiting on a crashed
//! participant re-check when its entry's TTL runs out.

use distsync_core::raw::{locked, Make, OnSession, WaitRetry};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use distsync_core::{DoubleBarrier, Error, Name, Result, Session};

use crate::error::{int_at, unexpected};
use crate::keys::Kind;
use crate::scripts::SCRIPTS;
use crate::session::RedisLease;
use crate::store::Shared;
use crate::waiting::{sleep_until, RECHECK_MARGIN};
use tokio::time::Instant;

/// A Redis double barrier.
pub(crate) struct RedisDoubleBarrier {
    shared: Arc<Shared>,
    session: Session,
    name: Name,
    prefix: String,
    count: usize,
    /// The id of this participant's entry since `enter`.
    entry: Mutex<Option<String>>,
}

impl RedisDoubleBarrier {
    fn entry_key(&self, id: &str) -> String {
        format!("{}:e:{id}", self.prefix)
    }

    async fn enter_call(&self, lease: &RedisLease, id: &str, check: bool) -> Result<i64> {
        let key = self.entry_key(id);
        let mut call = self.shared.script(&SCRIPTS.dbar_enter);
        call.key(&key);
        lease.session_keys(&mut call);
        call.arg(&self.prefix)
            .arg(id)
            .arg(lease.margin_ms())
            .arg(self.count)
            .arg(if check { "check" } else { "enter" })
            .arg(lease.session_check(&self.session))
            .arg(lease.ttl_ms());
        let value = format!("d{id}");
        let registry = lease.registry();
        // Pending for the session's renewals until listed or unlisted below; under
        // Cluster, an entry is listed in the store's session registry beside it.
        let (reply, _pending) = if check {
            let pending = registry.taking(&key);
            (self.shared.eval(&call).await?, pending)
        } else {
            registry
                .take(&self.shared, &call, &key, &value, lease.ttl_ms())
                .await?
        };
        let outcome = int_at("dbar_enter", &reply, 0)?;
        // The participant's entry is in the store while the reply is 0 or 1; over the
        // count (-2, only ever an entering call's) the script removed it again.
        match outcome {
            0.. => registry.listed(&key, &value),
            -2 => registry.refused_in_background(&self.shared, &self.session, &key),
            _ => registry.unlisted(&key),
        }
        Ok(outcome)
    }

    /// `Ok(None)` when everyone has left, else the generation and when to re-check.
    async fn leave_call(
        &self,
        lease: &RedisLease,
        id: &str,
        generation: Option<i64>,
    ) -> Result<Option<(i64, Option<Duration>)>> {
        let key = self.entry_key(id);
        let mut call = self.shared.script(&SCRIPTS.dbar_leave);
        call.key(&key);
        lease.registry().key_into(&mut call);
        call.arg(&self.prefix).arg(id);
        match generation {
            None => call.arg("leave"),
            Some(generation) => call.arg("check").arg(generation),
        };
        let reply = if generation.is_none() {
            lease.registry().release(&self.shared, &call, &key).await?
        } else {
            self.shared.eval(&call).await?
        };
        let number = |i: usize| int_at("dbar_leave", &reply, i);
        match number(0)? {
            1 => Ok(None),
            0 => {
                let recheck = u64::try_from(number(2)?)
                    .ok()
                    .map(|ms| Duration::from_millis(ms) + RECHECK_MARGIN);
                Ok(Some((number(1)?, recheck)))
            }
            _ => Err(unexpected("dbar_leave", &reply)),
        }
    }

    async fn wake_channel(&self) -> Result<crate::notify::Subscription> {
        let channel = self.shared.keys.channel(&format!("{}:ch", self.prefix));
        self.shared.notifier.subscribe(channel).await
    }
}

#[async_trait]
impl DoubleBarrier for RedisDoubleBarrier {
    fn name(&self) -> &Name {
        &self.name
    }

    fn count(&self) -> usize {
        self.count
    }

    /// Cancel-safety: a dropped call leaves this participant's entry until its
    /// session ends or `leave` is called.
    async fn enter(&self) -> Result<()> {
        let lease = RedisLease::live(&self.session)?;
        let id = lease.next_entry_id();
        let mut wake = self.wake_channel().await?;
        *locked(&self.entry) = Some(id.clone());
        let mut outcome = self.enter_call(lease, &id, false).await?;
        let mut backoff = WaitRetry::new("double barrier enter");
        let mut retry = None;
        loop {
            match outcome {
                1 => return Ok(()),
                -2 => {
                    *locked(&self.entry) = None;
                    return Err(Error::TooManyParticipants {
                        name: self.name.to_string(),
                        count: self.count,
                    });
                }
                -1 => return Err(Error::SessionLost),
                _ => {}
            }
            tokio::select! {
                biased;
                () = self.session.lost() => return Err(Error::SessionLost),
                event = wake.recv() => { event?; wake.drain(); }
                () = sleep_until(retry.map(|delay| Instant::now() + delay)) => {}
            }
            // Checking is idempotent: connection trouble is ridden out.
            match self.enter_call(lease, &id, true).await {
                Ok(next) => {
                    backoff.succeeded();
                    outcome = next;
                    retry = None;
                }
                Err(error) => retry = Some(backoff.failed(&error).ok_or(error)?),
            }
        }
    }

    /// # Errors
    /// [`Error::NotHeld`] without a prior `enter`.
    ///
    /// Cancel-safety: a dropped call may or may not have removed this participant's
    /// entry; either way it is bounded by the session.
    async fn leave(&self) -> Result<()> {
        let lease = RedisLease::live(&self.session)?;
        let Some(id) = locked(&self.entry).clone() else {
            return Err(Error::NotHeld);
        };
        let mut wake = self.wake_channel().await?;
        let mut state = self.leave_call(lease, &id, None).await?;
        *locked(&self.entry) = None;
        let mut backoff = WaitRetry::new("double barrier leave");
        while let Some((generation, recheck)) = state {
            // This entry is gone already: the session no longer matters here.
            tokio::select! {
                event = wake.recv() => { event?; wake.drain(); }
                () = sleep_until(recheck.map(|delay| Instant::now() + delay)) => {}
            }
            // Checking is idempotent: connection trouble is ridden out.
            state = match self.leave_call(lease, &id, Some(generation)).await {
                Ok(next) => {
                    backoff.succeeded();
                    next
                }
                Err(error) => Some((generation, Some(backoff.failed(&error).ok_or(error)?))),
            };
        }
        Ok(())
    }
}

impl Make<Arc<Shared>, (OnSession<()>, NonZeroUsize)> for RedisDoubleBarrier {
    fn make(shared: &Arc<Shared>, (on, count): (OnSession<()>, NonZeroUsize)) -> Result<Self> {
        Ok(Self {
            prefix: shared.keys.primitive(&on.name, Kind::DoubleBarrier),
            shared: Arc::clone(shared),
            session: on.session,
            name: on.name,
            count: count.get(),
            entry: Mutex::new(None),
        })
    }
}
