//! The mutex: an exclusive session-level advisory lock (see [`crate::hold`]).

use std::sync::Arc;

use async_trait::async_trait;
use distsync_core::{FencingToken, LockGuard, Locker, Name, ReleaseFn, Result, Session};

use crate::error::map;
use crate::hold::{self, Grant, Hold};
use crate::session::LeaseInner;
use crate::shared::{LockKind, Shared};

pub(crate) struct PgLocker {
    pub(crate) lease: Arc<LeaseInner>,
    pub(crate) session: Session,
    pub(crate) name: Name,
}

/// The guard over a granted exclusive hold of `kind` `name`.
pub(crate) fn guard(
    lease: &Arc<LeaseInner>,
    session: &Session,
    kind: &str,
    name: &Name,
    hold: Arc<Hold>,
    token: i64,
) -> LockGuard {
    LockGuard::new(
        hold_key(lease, kind, name),
        FencingToken(token.max(0) as u64),
        session,
        release_fn(lease, hold),
    )
}

/// The key string of a hold: `<schema>/<kind>/<name>/<session id hex>`.
pub(crate) fn hold_key(lease: &LeaseInner, kind: &str, name: &Name) -> String {
    format!("{}/{kind}/{name}/{:x}", lease.shared.schema, lease.id)
}

/// The release step of a guard: unlock on the hold's connection.
pub(crate) fn release_fn(lease: &Arc<LeaseInner>, hold: Arc<Hold>) -> ReleaseFn {
    let lease = Arc::clone(lease);
    Box::new(move || Box::pin(async move { hold.release(&lease).await }))
}

#[async_trait]
impl Locker for PgLocker {
    fn name(&self) -> &Name {
        &self.name
    }

    /// Waits in PostgreSQL's lock queue (FIFO) on a dedicated connection.
    ///
    /// Cancel-safety: cancel-safe; a dropped wait terminates its backend, which leaves
    /// the queue (or releases a lock granted in the meantime).
    async fn lock(&self) -> Result<LockGuard> {
        let (hold, token) = hold::acquire_waiting(
            &self.lease,
            LockKind::Lock,
            self.name.as_str(),
            Grant::Lock { exclusive: true },
        )
        .await?;
        Ok(guard(
            &self.lease,
            &self.session,
            "lock",
            &self.name,
            hold,
            token,
        ))
    }

    async fn try_lock(&self) -> Result<Option<LockGuard>> {
        let granted = hold::acquire(
            &self.lease,
            LockKind::Lock,
            self.name.as_str(),
            Grant::Lock { exclusive: true },
            false,
        )
        .await?;
        Ok(granted.map(|(hold, token)| {
            guard(&self.lease, &self.session, "lock", &self.name, hold, token)
        }))
    }

    /// The backends holding or queued for the lock's advisory key, as `pg_locks` shows
    /// them: one read, which registers nothing (a name never locked counts 0).
    ///
    /// Cancel-safety: cancel-safe (a read).
    async fn contenders(&self) -> Result<usize> {
        advisory_contenders(&self.lease.shared, &self.name).await
    }
}

/// How many backends hold or wait for the advisory lock of mutex `name` (granted and
/// waiting `pg_locks` entries of its two-key `(schema oid, name id)`), in one statement
/// that looks the name up in `lock_names` without creating it.
async fn advisory_contenders(shared: &Shared, name: &Name) -> Result<usize> {
    let sql = shared.sql(
        "SELECT count(DISTINCT l.pid) FROM pg_locks l \
         JOIN {s}.lock_names n ON l.objid = n.id::oid \
         WHERE n.kind = $3 AND n.name = $1 \
           AND l.locktype = 'advisory' AND l.objsubid = 2 AND l.classid = $2::oid \
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    );
    let n: i64 = sqlx::query_scalar(&sql)
        .bind(name.as_str())
        .bind(shared.key1())
        .bind(LockKind::Lock.as_str())
        .fetch_one(&shared.pool)
        .await
        .map_err(map)?;
    Ok(usize::try_from(n).unwrap_or(0))
}
