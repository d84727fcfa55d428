//! The double barrier: one entry row per participant, and an open flag per barrier. A
//! participant is a handle (`Primitives::double_barrier`): N tasks sharing one session, each
//! with its own handle, are N participants, as on etcd and Redis. Its entry row is keyed
//! by (barrier, session, participant number), the number drawn from a counter of this
//! process (session ids are unique, so the pair is). `enter` adds the entry and, when it
//! completes the count, opens the barrier, under the barrier row's lock (schema function
//! `dbarrier_enter`); the others wait for the `NOTIFY` of the flag's change. `leave`
//! deletes the entry (closing the barrier when nobody is left) and waits until no live
//! participant remains. Entries reference their session row, so they are deleted with it;
//! the entries of an expired session are ignored, and a waiter ends that session when it
//! finds one (and wakes at the next participant's expiry while it waits for them to
//! leave).

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use distsync_core::raw::Look::{self, NotYet, Ready};
use distsync_core::raw::{Make, OnSession, RetryPolicy};
use distsync_core::{DoubleBarrier, Error, Name, Result};

use crate::error::map;
use crate::notify::{Subscription, Wake};
use crate::session::LeaseInner;
use crate::store::Shared;
use crate::waiter_line::seconds;

/// Participant numbers of this process.
static PARTICIPANTS: AtomicI64 = AtomicI64::new(1);

pub(crate) struct PgDoubleBarrier {
    pub(crate) lease: Arc<LeaseInner>,
    /// This handle's participant number (see the module docs).
    pub(crate) participant: i64,
    pub(crate) name: Name,
    pub(crate) count: usize,
    /// `count` as the `integer` the schema's functions take.
    pub(crate) count_sql: i32,
}

type State = (Option<bool>, Option<i32>, Option<f64>);

impl PgDoubleBarrier {
    async fn state(&self) -> Result<(bool, i32, Option<Duration>)> {
        let (ready, others, next): State = sqlx::query_as(
            &self
                .lease
                .shared
                .sql("SELECT ready, others, next_expiry FROM {s}.dbarrier_state($1, $2, $3)"),
        )
        .bind(self.name.as_str())
        .bind(self.lease.id)
        .bind(self.participant)
        .fetch_one(self.lease.shared.bounded())
        .await
        .map_err(map)?;
        Ok((ready.unwrap_or(false), others.unwrap_or(0), seconds(next)))
    }

    /// Runs core's waiting loop ([`RetryPolicy::wait_woken`]) on `subscription` until
    /// `look` is ready, or the session is lost ([`Error::SessionLost`]).
    async fn wait<F, Fut>(
        &self,
        what: &'static str,
        subscription: Subscription,
        look: F,
    ) -> Result<()>
    where
        F: FnMut(Option<Wake>) -> Fut,
        Fut: std::future::Future<Output = Result<Look<(), Option<Duration>>>>,
    {
        let lost = self.lease.lost_token();
        tokio::select! {
            biased;
            () = lost.cancelled() => Err(Error::SessionLost),
            result = RetryPolicy::default().wait_woken(what, None, subscription, look) => result,
        }
    }
}

#[async_trait]
impl DoubleBarrier for PgDoubleBarrier {
    fn name(&self) -> &Name {
        &self.name
    }

    fn count(&self) -> usize {
        self.count
    }

    /// Cancel-safety: dropping the future leaves this participant's entry until its session
    /// ends or `leave` is called.
    async fn enter(&self) -> Result<()> {
        if self.lease.is_lost() {
            return Err(Error::SessionLost);
        }
        let shared = &self.lease.shared;
        let subscription = shared.hub.subscribe(format!("d:{}", self.name)).await?;
        let entered: i32 =
            sqlx::query_scalar(&shared.sql("SELECT {s}.dbarrier_enter($1, $2, $3, $4)"))
                .bind(self.name.as_str())
                .bind(self.lease.id)
                .bind(self.participant)
                .bind(self.count_sql)
                .fetch_one(shared.bounded())
                .await
                .map_err(|error| self.lease.statement_error(error))?;
        match entered {
            -1 => Err(Error::TooManyParticipants {
                name: self.name.as_str().to_owned(),
                count: self.count,
            }),
            1 => Ok(()),
            _ => {
                let filled = |_| async {
                    Ok(if self.state().await?.0 {
                        Ready(())
                    } else {
                        NotYet(None)
                    })
                };
                self.wait("a double barrier to fill", subscription, filled)
                    .await
            }
        }
    }

    /// Cancel-safety: dropping the future may leave this participant's entry deleted or not;
    /// either way it ends with the session.
    async fn leave(&self) -> Result<()> {
        let shared = &self.lease.shared;
        let subscription = shared.hub.subscribe(format!("d:{}", self.name)).await?;
        sqlx::query(&shared.sql("SELECT {s}.dbarrier_leave($1, $2, $3)"))
            .bind(self.name.as_str())
            .bind(self.lease.id)
            .bind(self.participant)
            .execute(shared.bounded())
            .await
            .map_err(map)?;
        // Besides a notification, a participant's expiry (its session ended without a
        // word) changes the count: look again just after the next one.
        let emptied = |_| async {
            let (_, others, next_expiry) = self.state().await?;
            Ok(if others == 0 {
                Ready(())
            } else {
                NotYet(next_expiry.map(|until| until + Duration::from_millis(20)))
            })
        };
        self.wait("a double barrier to empty", subscription, emptied)
            .await
    }
}
/// The count is an `int` in the tables: a count above `i32::MAX` is refused.
impl Make<Arc<Shared>, (OnSession<Arc<LeaseInner>>, NonZeroUsize)> for PgDoubleBarrier {
    fn make(
        _: &Arc<Shared>,
        (on, count): (OnSession<Arc<LeaseInner>>, NonZeroUsize),
    ) -> Result<Self> {
        let count = count.get();
        let count_sql = i32::try_from(count).map_err(|_| {
            Error::InvalidArgument(format!("double barrier count {count} is too large"))
        })?;
        Ok(Self {
            lease: on.lease,
            participant: PARTICIPANTS.fetch_add(1, Ordering::Relaxed),
            name: on.name,
            count,
            count_sql,
        })
    }
}
