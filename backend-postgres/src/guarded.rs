//! Guarded writes ([`distsync_core::LockGuard::put_if_held`]) on PostgreSQL: one
//! statement (`guarded_put`) writes the STM key only while the guard's entry is still
//! a current grant of its line.
//!
//! A guard's entry (see [`crate::hold`] and [`crate::semaphore`]) is current while
//! - its row is still in `semaphore_entries` with the token of the guard's grant (a
//!   release, a withdrawal or its session's end deletes it);
//! - its session's row has not expired (the lease gate: once expired, a row is never
//!   renewed again, and the next waiter may be granted);
//! - it is still within the first `permits` live entries of its line (first in line for
//!   a lock or a write lock; entries only leave a line, so a granted entry stays there
//!   until it leaves, and the check states the rule rather than trusts it).
//!
//! The function takes the name's row (`semaphores`) `FOR SHARE` before it checks: every
//! grant takes that row `FOR UPDATE` (`semaphore_check2`), so the next holder's grant
//! runs wholly before or wholly after a guarded write of the previous one, and a write
//! that passed its check commits before the next grant can be made. The write itself is
//! an upsert of the `kv` row, as an STM commit writes it, so [`distsync_core::Stm`]
//! reads it and STM transactions see it as a change. A holder whose session the store
//! has ended (revoked, expired while it was paused) writes nothing, even before its own
//! `lost()` fires.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use distsync_core::raw::GuardedWrite;
use distsync_core::{Name, Result};

use crate::error::map;
use crate::semaphore::Entry;

/// The function of the guarded write (`{s}`: the quoted schema), created by
/// [`crate::schema`] after the semaphore's DDL.
pub(crate) const DDL: &str = r#"
-- Writes p_value to STM key p_key if entry (p_session, p_entry) of name k is still a
-- current grant with token p_token: its row present, its session live, fewer than
-- `permits` live entries ahead of it (see crate::guarded). True if written.
CREATE OR REPLACE FUNCTION {s}.guarded_put(k integer, p_session bigint, p_entry bigint,
                                           p_token bigint, p_key text, p_value bytea)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    n integer;
    my_ord bigint;
    ahead integer;
BEGIN
    SELECT permits INTO n FROM {s}.semaphores WHERE name_id = k FOR SHARE;
    SELECT e.ord INTO my_ord
      FROM {s}.semaphore_entries e
      JOIN {s}.sessions x ON x.id = e.session_id
     WHERE e.session_id = p_session AND e.entry = p_entry AND e.name_id = k
       AND NOT e.cancelled AND e.token = p_token AND x.expires_at > clock_timestamp();
    IF my_ord IS NULL THEN
        RETURN false;
    END IF;
    SELECT count(*) INTO ahead
      FROM {s}.semaphore_entries e
      JOIN {s}.sessions x ON x.id = e.session_id
     WHERE e.name_id = k AND e.ord < my_ord AND NOT e.cancelled
       AND x.expires_at > clock_timestamp();
    IF ahead >= coalesce(n, 1) THEN
        RETURN false;
    END IF;
    INSERT INTO {s}.kv (key, value) VALUES (p_key, p_value)
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
    RETURN true;
END
$$;
"#;

/// The guarded write of one granted exclusive entry (a lock, a write lock, a permit).
struct PgGuardedWrite {
    entry: Entry,
    token: i64,
}

/// The hook for a guard over `entry`, granted with `token`: attach it with
/// [`distsync_core::LockGuard::with_guarded_write`].
pub(crate) fn hook(entry: &Entry, token: i64) -> Arc<dyn GuardedWrite> {
    Arc::new(PgGuardedWrite {
        entry: entry.clone(),
        token,
    })
}

#[async_trait]
impl GuardedWrite for PgGuardedWrite {
    async fn put_if_held(&self, key: &Name, value: Bytes) -> Result<bool> {
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
