//! Guarded writes ([`distsync_core::LockGuard::put_if_held`]) on PostgreSQL: one
//! statement (`guarded_put`) writes the STM key only while the guard's entry is still
//! a current grant of its line.
//!
//! A guard's entry (see [`crate::waiter_line`]) is current while
//! - it is still in the line (`line_entries`: its row in `semaphore_entries`, or the
//!   name's solo holder in `lock_names`) with the token of the guard's grant (a
//!   release, a withdrawal or its session's end removes it);
//! - its session's row has not expired (the lease gate: once expired, a row is never
//!   renewed again, and the next waiter may be granted);
//! - it is still within the first `permits` live entries of its line (first in line for
//!   a lock or a write lock; entries only leave a line, so a granted entry stays there
//!   until it leaves, and the check states the rule rather than trusts it).
//!
//! The function takes the name's row (`lock_names`) `FOR SHARE` before it checks:
//! every grant of the line takes that row `FOR UPDATE` (`semaphore_check`), and a solo
//! take, a solo release and a solo holder's move into the line write it, so the next
//! holder's grant runs wholly before or wholly after a guarded write of the previous
//! one, and a write that passed its check commits before the next grant can be made. The write itself is
//! an upsert of the `kv` row, as an STM commit writes it, so [`distsync_core::Stm`]
//! reads it and STM transactions see it as a change. A holder whose session the store
//! has ended (revoked, expired while it was paused) writes nothing, even before its own
//! `lost()` fires.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use distsync_core::raw::GuardedWrite;
use distsync_core::{FencingToken, LockGuard, Name, Result, Session};

use crate::error::map;
use crate::session::LeaseInner;
use crate::waiter_line::{release_fn, Entry};

/// The guarded write of one granted exclusive entry (a lock, a write lock, a permit).
struct PgGuardedWrite {
    entry: Entry,
    token: i64,
}

/// The guard (named `key`) over `entry`, an exclusive entry granted with `token`, with
/// its guarded write.
pub(crate) fn lock_guard(
    lease: &Arc<LeaseInner>,
    session: &Session,
    key: String,
    entry: Entry,
    token: i64,
) -> LockGuard {
    let guarded = Arc::new(PgGuardedWrite {
        entry: entry.clone(),
        token,
    });
    distsync_core::raw::with_guarded_write(
        distsync_core::raw::lock_guard(
            key,
            FencingToken(u64::try_from(token).unwrap_or_default()),
            session,
            release_fn(lease, entry),
        ),
        guarded,
    )
}

#[async_trait]
impl GuardedWrite for PgGuardedWrite {
    async fn put_if_held_bytes(&self, key: &Name, value: Bytes) -> Result<bool> {
        let entry = &self.entry;
        let sql = entry
            .shared
            .sql("SELECT {s}.guarded_put($1, $2, $3, $4, $5, $6)");
        let mut taken = entry.shared.holds.take().await.map_err(map)?;
        let put = sqlx::query_scalar(&sql)
            .bind(entry.name_id)
            .bind(entry.session)
            .bind(entry.entry)
            .bind(self.token)
            .bind(key.as_str())
            .bind(value.as_ref())
            .fetch_one(taken.conn())
            .await;
        let written: Option<bool> = taken.settle(put).map_err(map)?;
        Ok(written == Some(true))
    }
}
